"""Backoff delays for reconnects and retries."""
from __future__ import annotations

import random


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
