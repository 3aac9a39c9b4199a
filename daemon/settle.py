"""When is a dropped file complete? The watcher's readiness rules, on their own.

A file is ready to publish when its writer said so (closed after writing,
or renamed into place), or when its size and mtime have not changed for
``settle_seconds`` (by the watcher's clock, or by its mtime's age) and no
process holds it open for writing. What was published is remembered by
(size, mtime), so that a rescan does not publish the same file again, and a
file rewritten later is published anew.

``stat``, the clocks and the open-for-writing check are parameters, so the
rules are tested without a file system that changes or a broker.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Pending:
    size: int
    mtime_ns: int
    stable_since: float
    complete: bool = False  # closed after write, or renamed into place


def open_for_writing_elsewhere(path: Path) -> bool | None:
    """True if some process holds the file open for writing (Linux lease
    check), False if none does, None when the check is not permitted."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    except OSError as exc:
        return True if exc.errno in (errno.EAGAIN, errno.EBUSY) else None
    finally:
        os.close(fd)


class Readiness:
    """Pending files (by landing-relative key) and which of them are ready."""

    def __init__(self, root: Path, settle_seconds: float, *,
                 stat: Callable[[Path], os.stat_result] = os.lstat,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time,
                 open_elsewhere: Callable[[Path], bool | None] = open_for_writing_elsewhere) -> None:
        self.root = root
        self.settle_seconds = settle_seconds
        self.stat = stat
        self.clock = clock
        self.wall_clock = wall_clock
        self.open_elsewhere = open_elsewhere
        self.pending: dict[str, Pending] = {}
        # What was published, so rescans do not publish the same file again.
        self.published: dict[str, tuple[int, int]] = {}

    def note(self, key: str, complete: bool) -> bool:
        """Take a hint about the file at ``key``. True when it became pending."""
        try:
            st = self.stat(self.root / key)
        except OSError:
            self.pending.pop(key, None)
            return False
        identity = (st.st_size, st.st_mtime_ns)
        if self.published.get(key) == identity:
            return False
        entry = self.pending.get(key)
        now = self.clock()
        if entry is None:
            self.pending[key] = Pending(st.st_size, st.st_mtime_ns, now, complete)
            return True
        if (entry.size, entry.mtime_ns) != identity:
            entry.size, entry.mtime_ns, entry.stable_since = st.st_size, st.st_mtime_ns, now
            entry.complete = complete
        else:
            entry.complete = entry.complete or complete
        return False

    def ready(self) -> list[str]:
        """Pending files that are complete now (those that vanished are dropped)."""
        out = []
        now, wall, settle = self.clock(), self.wall_clock(), self.settle_seconds
        for key, entry in list(self.pending.items()):
            due = (entry.complete or now - entry.stable_since >= settle
                   or wall - entry.mtime_ns / 1e9 >= settle)
            if not due:
                continue  # nothing to decide before its settle time: no stat on every pass
            path = self.root / key
            try:
                st = self.stat(path)
            except OSError:
                del self.pending[key]
                continue
            if (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
                entry.size, entry.mtime_ns, entry.stable_since, entry.complete = st.st_size, st.st_mtime_ns, now, False
                continue
            still = now - entry.stable_since >= settle or wall - st.st_mtime_ns / 1e9 >= settle
            if entry.complete or (still and self.open_elsewhere(path) is not True):
                out.append(key)
        return out

    def published_now(self, key: str) -> Pending:
        """Move ``key`` from pending to published; returns what was pending."""
        entry = self.pending.pop(key)
        self.published[key] = (entry.size, entry.mtime_ns)
        return entry

    def forget(self, key: str) -> None:
        """The file is gone (deleted, or moved away)."""
        self.pending.pop(key, None)
        self.published.pop(key, None)

    def forget_missing(self, exists: Callable[[Path], bool] = os.path.lexists) -> None:
        """Drop published entries whose file is gone (loaded and archived)."""
        for key in [k for k in self.published if not exists(self.root / k)]:
            del self.published[key]
