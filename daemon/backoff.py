"""Waiting: backoff delays, a sleep that ends when asked to stop, and one
retry loop for every reconnect of the daemon."""
from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from .errors import Shutdown

T = TypeVar("T")
StopSignal = threading.Event | Callable[[], bool]


def compute_backoff(attempt: int, base: float = 0.5, cap: float = 30.0, jitter: bool = True) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based).

    Exponential (base * 2**attempt) up to ``cap``; with ``jitter`` the delay is
    drawn uniformly from [delay/2, delay] ("equal jitter") so that many workers
    reconnecting after the same outage do not stampede.
    """
    delay = min(cap, base * (2 ** max(0, attempt)))
    if jitter:
        delay = random.uniform(delay / 2, delay)
    return delay


class Backoff:
    """Successive delays of one thing that keeps failing; ``reset`` on success."""

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        delay = compute_backoff(self.attempt, self.base, self.cap)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


def _stopped(stop: StopSignal) -> bool:
    return stop.is_set() if isinstance(stop, threading.Event) else stop()


def sleep(seconds: float, stop: StopSignal, step: float = 0.2) -> bool:
    """Sleep up to ``seconds``; True as soon as ``stop`` is set (or was).

    ``stop`` is an event (woken at once) or a function, asked every ``step``
    seconds (it may do work, such as telling systemd the process is alive)."""
    if isinstance(stop, threading.Event):
        return stop.wait(max(0.0, seconds))
    deadline = time.monotonic() + seconds
    while not stop():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(step, left))
    return True


def keep_trying(action: Callable[[], T], *, stop: StopSignal, errors: tuple[type[BaseException], ...],
                on_retry: Callable[[BaseException, float], None], cap: float = 30.0) -> T:
    """Run ``action`` until it returns, waiting with backoff after each of
    ``errors``; raises ``Shutdown`` when ``stop`` is set while waiting.

    An action that ran longer than ``cap`` before failing (a connection that
    lasted) starts again from the shortest delay."""
    backoff = Backoff(cap=cap)
    while True:
        started = time.monotonic()
        try:
            return action()
        except errors as exc:
            if time.monotonic() - started > cap:
                backoff.reset()
            delay = backoff.next_delay()
            on_retry(exc, delay)
            if sleep(delay, stop):
                raise Shutdown() from None


def log_retry(logger: logging.Logger, message: str, **fields: object) -> Callable[[BaseException, float], None]:
    """An ``on_retry`` that logs a warning with the error and the delay."""
    def on_retry(exc: BaseException, delay: float) -> None:
        logger.warning(message, extra={**fields, "status": "retry", "error": str(exc) or type(exc).__name__,
                                       "retry_in_s": round(delay, 2)})
    return on_retry
