"""The check every test passes through (conftest.no_thread_left_running):
a thread a test leaves running is found and named; one that ends is not."""
from __future__ import annotations

import threading

from .conftest import threads_left_running


def test_a_thread_left_running_is_found_by_name_and_one_that_ends_is_not():
    release = threading.Event()
    before = set(threading.enumerate())
    waiting = threading.Thread(target=release.wait, name="left-behind", daemon=True)
    ending = threading.Thread(target=lambda: None, name="ends-at-once")
    waiting.start()
    ending.start()
    try:
        assert [t.name for t in threads_left_running(before, grace=0.2)] == ["left-behind"]
    finally:
        release.set()
        waiting.join()
    assert threads_left_running(before, grace=0.2) == []
