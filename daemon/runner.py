"""Run roles in threads of one process, supervise them, stop them gracefully.

First SIGTERM/SIGINT: stop taking new work, finish what is in hand, exit 0.
A second signal exits at once (the broker redelivers anything unacked).
A role thread that dies unexpectedly stops the whole process with status 1,
so that systemd or Docker restarts it rather than leaving it half alive.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

from .health import Health
from .systemd import notify, watchdog_interval

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, health: Health | None = None) -> None:
        self.stop = threading.Event()
        self.health = health or Health()
        self._threads: list[tuple[str, threading.Thread]] = []
        self._signals = 0
        # Called on a second signal, before the process exits at once (its child processes go too).
        self.on_force: list[Callable[[], None]] = []
        self._signal_pipe: tuple[int, int] | None = None
        self._signal_cause = ""

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT ask for the stop. A handler runs in the main thread between two of
        its steps, perhaps while that thread holds the lock of ``stop`` inside ``stop.wait()``
        (the main loop, a backoff): setting the event from the handler would then wait for that
        lock forever, and the process would never stop. So a handler only writes a byte to a
        pipe, and a thread of its own reads it and sets the event."""
        self._signal_pipe = os.pipe()
        os.set_blocking(self._signal_pipe[1], False)  # a flood of signals never blocks a handler
        threading.Thread(target=self._relay_signals, name="signal-relay", daemon=True).start()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _relay_signals(self) -> None:
        assert self._signal_pipe is not None
        while os.read(self._signal_pipe[0], 1):
            self.request_stop(self._signal_cause)

    def request_stop_from_signal(self, cause: str) -> None:
        """``request_stop`` for a signal handler: takes no lock (see ``install_signal_handlers``)."""
        if self._signal_pipe is None:
            self.request_stop(cause)
            return
        self._signal_cause = cause
        try:
            os.write(self._signal_pipe[1], b"\0")
        except BlockingIOError:
            pass  # bytes wait in the pipe already: the stop is asked for

    def _on_signal(self, signum, frame) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second signal: exiting at once", extra={"step": "stop", "status": "forced"})
            for hook in self.on_force:
                hook()
            os._exit(1)
        self.request_stop_from_signal(signal.Signals(signum).name)

    def request_stop(self, cause: str) -> None:
        """Stop taking new work, finish what is in hand: what a first signal does. Asked again, nothing more."""
        if not self.stop.is_set():
            log.info("stopping: finishing work in hand", extra={"step": "stop", "status": "stopping", "signal": cause})
        self.stop.set()

    def start(self, name: str, target: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                target()
            except BaseException:  # noqa: BLE001 - logged, then the supervisor stops the process
                log.exception("role thread failed", extra={"step": name, "status": "crashed"})
                raise
        thread = threading.Thread(target=guarded, name=name, daemon=True)
        thread.start()
        self._threads.append((name, thread))

    def wait(self, join_timeout: float) -> int:
        """Block until stop is requested or a role dies; returns the exit status.

        Meanwhile tells systemd READY=1 once every role is connected, and
        WATCHDOG=1 at half its interval while every role's loop is beating.
        """
        status = 0
        ready_sent = False
        ping_every = watchdog_interval()
        next_ping = 0.0
        while not self.stop.is_set():
            for name, thread in self._threads:
                if not thread.is_alive():
                    log.critical("a role stopped unexpectedly; shutting down",
                                 extra={"step": name, "status": "dead"})
                    status = 1
                    self.stop.set()
                    break
            if not ready_sent and self.health.ready()[0]:
                notify("READY=1\nSTATUS=connected; working")
                ready_sent = True
                log.info("ready", extra={"step": "start", "status": "ready"})
            if ping_every and time.monotonic() >= next_ping and self.health.alive()[0]:
                notify("WATCHDOG=1")
                next_ping = time.monotonic() + ping_every
            self.stop.wait(0.5)
        notify("STOPPING=1\nSTATUS=stopping: finishing work in hand")
        deadline = time.monotonic() + join_timeout
        for name, thread in self._threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("role did not stop in time", extra={"step": name, "status": "abandoned"})
        log.info("stopped", extra={"step": "stop", "status": "stopped"})
        return status
