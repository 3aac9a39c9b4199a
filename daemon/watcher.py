"""The watcher role: files that land become events on the broker.

watchdog only gives hints (events can be lost, e.g. on inotify overflow),
so the watcher keeps its own view of pending files, confirms each one is
complete before publishing, and rescans the landing zone at start and
periodically. Handlers only enqueue; all decisions happen in ``Watcher.run``.
"""
from __future__ import annotations

import errno
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from .backoff import Backoff
from .broker import Message
from .config import Config
from .errors import TransientError
from .events import FileEvent
from .landing import NO_SOURCE, is_ignored, is_ignored_name, source_of
from .metrics import EVENTS_PUBLISHED, source_label
from .publishing import Publisher
from .settle import Pending, Readiness

log = logging.getLogger(__name__)


# The events that are hints (below). Asking inotify for these only keeps the
# consumers' reads of each file (opened, closed without writing: several per
# file) off the watcher's thread.
HINTED_EVENTS: list[type[FileSystemEvent]] = [DirCreatedEvent, DirMovedEvent, FileClosedEvent, FileMovedEvent,
                                               FileCreatedEvent, FileModifiedEvent, FileDeletedEvent]


class _Hints(FileSystemEventHandler):
    """Turns watchdog events into (kind, absolute path) hints on a queue."""

    def __init__(self, hints: queue.Queue) -> None:
        self.hints = hints

    def on_any_event(self, event) -> None:
        if isinstance(event, (DirCreatedEvent, DirMovedEvent)):
            self.hints.put(("scan", os.fsdecode(getattr(event, "dest_path", "") or event.src_path)))
        elif isinstance(event, FileClosedEvent):
            self.hints.put(("complete", os.fsdecode(event.src_path)))
        elif isinstance(event, FileMovedEvent):
            # A rename into place: the writer is done with it.
            self.hints.put(("complete", os.fsdecode(event.dest_path)))
        elif isinstance(event, (FileCreatedEvent, FileModifiedEvent)):
            self.hints.put(("changed", os.fsdecode(event.src_path)))
        elif isinstance(event, FileDeletedEvent):
            self.hints.put(("deleted", os.fsdecode(event.src_path)))


# watchdog holds an inotify IN_MOVED_FROM for 0.5 s to pair it with its
# IN_MOVED_TO, and its queue is first in, first out: every file archived out
# of a source folder (its IN_MOVED_TO lands in the unwatched _archive/) held
# the next file's events back by half a second. The kernel writes both halves
# of a rename together, so pairing needs far less: 5 ms, a few of the roles'
# 1 ms thread switches (roles.SWITCH_INTERVAL_SECONDS). A pair missed all the
# same costs time, not a file: its rename reads as a new file, published
# once it has settled.
MOVE_PAIRING_SECONDS = 0.005


def _shorten_move_pairing() -> None:
    try:
        from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper
    except ImportError:  # another watchdog: its own pairing stands
        return
    InotifyMoveEventGrouper.delay = MOVE_PAIRING_SECONDS


# Files published before their confirms are awaited together.
PUBLISH_BATCH = 256


# Seconds to wait for an observer's thread to end once told to stop (its
# emitters are joined by ``stop`` itself).
OBSERVER_JOIN_SECONDS = 10.0


def _stop(observer: BaseObserver) -> None:
    """Stop an observer and wait for its thread (if it ever started)."""
    observer.stop()
    if observer.ident is not None:
        observer.join(timeout=OBSERVER_JOIN_SECONDS)


class Watcher:
    """Publishes a ``FileEvent`` for each complete file in the landing zone."""

    def __init__(self, config: Config, publisher: Publisher, stop: threading.Event,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.root = config.landing_dir
        self.publisher = publisher
        self.stop = stop
        self.clock = clock
        self.wall_clock = wall_clock
        self.hints: queue.Queue = queue.Queue()
        self.readiness = Readiness(self.root, config.settle_seconds, clock=clock, wall_clock=wall_clock)
        self._observer: BaseObserver | None = None
        # Root folders with a watch ("" is the root itself): (watch, inode).
        self._watched: dict[str, tuple[object, int]] = {}
        self._next_publish_try = 0.0
        # One backoff for the broker, whether publishing or connecting failed.
        self._broker_backoff = Backoff(cap=30)
        self.heartbeat: Callable[[], None] = lambda: None
        # Told None when the broker connection is up, else the problem.
        self.report: Callable[[str | None], None] = lambda problem: None
        self._next_connect_try = 0.0

    @property
    def pending(self) -> dict[str, Pending]:
        return self.readiness.pending

    def relative(self, path: str | Path) -> PurePosixPath | None:
        try:
            rel = PurePosixPath(Path(path).relative_to(self.root).as_posix())
        except ValueError:
            return None
        return None if not rel.parts or rel.parts == (".",) or is_ignored(rel) else rel

    def start_observer(self) -> None:
        """Watch the landing root (not recursively) and each source folder
        (recursively). The underscored folders (_archive, _quarantine,
        _payloads) are never watched: ingestd writes there itself, they grow
        a folder a day for ever (inotify watches are a bounded resource),
        and watchdog would re-register the nested folders that the archive
        creates at once (its "Callback with id ... already exists" warning)."""
        _shorten_move_pairing()
        observer_cls = PollingObserver if self.config.polling else Observer
        kwargs = {"timeout": self.config.poll_interval_seconds} if self.config.polling else {}
        observer = observer_cls(**kwargs)
        self._watched = {}
        try:
            self._schedule(observer, self.root, recursive=False)
            observer.start()
            self._watch_source_folders(observer)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            log.error(
                "inotify watch limit reached; falling back to polling. Raise it with: "
                "sysctl fs.inotify.max_user_watches=524288 (and max_user_instances)",
                extra={"step": "watch", "status": "degraded"},
            )
            _stop(observer)
            observer = PollingObserver(timeout=self.config.poll_interval_seconds)
            self._watched = {}
            self._schedule(observer, self.root, recursive=False)
            observer.start()
            self._watch_source_folders(observer)
        self._observer = observer

    def _schedule(self, observer, folder: Path, recursive: bool) -> None:
        watch = observer.schedule(_Hints(self.hints), str(folder), recursive=recursive, event_filter=HINTED_EVENTS)
        name = folder.name if folder != self.root else ""
        self._watched[name] = (watch, os.stat(folder).st_ino)

    def _watch_source_folders(self, observer=None) -> None:
        """A recursive watch for every folder of the root not yet watched
        (a new source folder appears: its watch starts, then a scan finds
        what was written before it); a folder deleted, or replaced by
        another of the same name, loses or renews its watch."""
        observer = observer or self._observer
        if observer is None:
            return
        try:
            folders = {e.name: e.inode() for e in os.scandir(self.root)
                       if not is_ignored_name(e.name) and e.is_dir(follow_symlinks=False)}
        except OSError:
            return
        for name, (watch, inode) in list(self._watched.items()):
            if name and folders.get(name) != inode:
                del self._watched[name]
                try:
                    observer.unschedule(watch)
                except (KeyError, OSError):
                    pass  # its folder is gone: so is the watch
        for name in folders:
            if name not in self._watched:
                try:
                    self._schedule(observer, self.root / name, recursive=True)
                except OSError as exc:
                    if exc.errno == errno.ENOSPC:
                        raise
                    continue  # gone meanwhile
                self.hints.put(("scan", str(self.root / name)))

    def stop_observer(self) -> None:
        if self._observer is not None:
            _stop(self._observer)
            self._observer.join(timeout=5)
            self._observer = None

    def scan(self, folder: Path | None = None) -> int:
        """Walk the zone (or one folder) and note every file not yet published."""
        found = 0
        for path in self._walk(folder or self.root):
            if self.note(path, complete=False):
                found += 1
        return found

    def _walk(self, top: Path) -> Iterator[Path]:
        stack = [top]
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if is_ignored_name(entry.name):
                            continue
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        elif entry.is_file(follow_symlinks=False) or entry.is_symlink():
                            yield Path(entry.path)
            except OSError as exc:
                log.warning("cannot scan folder", extra={"step": "scan", "status": "error",
                                                         "folder": str(folder), "error": exc.strerror})

    def note(self, path: str | Path, complete: bool) -> bool:
        """Take a hint about ``path``. Returns True when it became pending."""
        rel = self.relative(path)
        return False if rel is None else self.readiness.note(rel.as_posix(), complete)

    def publish_ready(self) -> int:
        """Publish the files that are ready, a batch at a time (their
        confirms come back together); the rest wait for the next pass."""
        if self.clock() < self._next_publish_try:
            return 0
        ready = self.readiness.ready()
        sent = 0
        for first in range(0, len(ready), PUBLISH_BATCH):
            batch = ready[first:first + PUBLISH_BATCH]
            events = [self._event_for(key) for key in batch]
            exchange = self.publisher.topology.events_exchange
            try:
                verdicts = self.publisher.publish_many([Message(exchange, e.routing_key, e.to_json(), e.event_id)
                                                        for e in events])
            except TransientError as exc:
                verdicts = [str(exc)] * len(events)
            for key, event, problem in zip(batch, events, verdicts, strict=True):
                if problem is None:
                    self._published(key, event)
                    sent += 1
            problem = next((p for p in verdicts if p is not None), None)
            if problem is not None:
                self.report(problem)
                delay = self._broker_backoff.next_delay()
                self._next_publish_try = self.clock() + delay
                log.warning("broker unavailable; files wait in the landing zone",
                            extra={"step": "publish", "status": "retry", "error": problem,
                                   "pending": len(self.pending), "retry_in_s": round(delay, 2)})
                return sent
            self._broker_backoff.reset()
            self.report(None)
        return sent

    def _event_for(self, key: str) -> FileEvent:
        entry = self.pending[key]
        return FileEvent(source=source_of(PurePosixPath(key)) or NO_SOURCE, path=key, size=entry.size,
                         mtime_ns=entry.mtime_ns)

    def _published(self, key: str, event: FileEvent) -> None:
        self.readiness.published_now(key)
        EVENTS_PUBLISHED.labels(source_label(event.source, self.config.sources), "file").inc()
        log.info("file published", extra={"event_id": event.event_id, "source": event.source, "step": "publish",
                                           "status": "published", "path": key, "size": event.size})

    def keep_connected(self) -> None:
        """Connect (again) while idle, so that readiness and a broker outage
        show before the next file needs publishing."""
        if self.publisher.connected or self.clock() < max(self._next_connect_try, self._next_publish_try):
            return
        problem = self.publisher.connect()
        self.report(problem)
        if problem:
            self._next_connect_try = self.clock() + self._broker_backoff.next_delay()

    def drain_hints(self, timeout: float) -> None:
        try:
            kind, path = self.hints.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            if kind == "scan":
                if self.relative(path) is not None:
                    if Path(path).parent == self.root:
                        self._watch_source_folders()
                    self.scan(Path(path))
            elif kind == "deleted":
                rel = self.relative(path)
                if rel is not None:
                    self.readiness.forget(rel.as_posix())
            else:
                self.note(path, complete=(kind == "complete"))
            try:
                kind, path = self.hints.get_nowait()
            except queue.Empty:
                return

    def run(self) -> None:
        """Watch until ``stop`` is set. Never dies of a broker outage."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.start_observer()
        mode = "polling" if self.config.polling else "inotify"
        log.info("watching landing zone", extra={"step": "watch", "status": "started", "mode": mode,
                                                 "landing_dir": str(self.root)})
        try:
            found = self.scan()
            log.info("initial scan", extra={"step": "scan", "status": "done", "files": found})
            next_rescan = self.clock() + self.config.rescan_seconds
            while not self.stop.is_set():
                self.heartbeat()
                self.drain_hints(timeout=0.05 if self.pending else 0.5)
                if self.clock() >= next_rescan:
                    self.readiness.forget_missing()
                    self._watch_source_folders()
                    self.scan()
                    next_rescan = self.clock() + self.config.rescan_seconds
                if self._observer is not None and not self._observer.is_alive():
                    log.error("file observer died; restarting it and rescanning",
                              extra={"step": "watch", "status": "restart"})
                    self.stop_observer()
                    self.start_observer()
                    self.scan()
                self.keep_connected()
                self.publish_ready()
                self.publisher.process_events()
        finally:
            self.stop_observer()
            self.publisher.close()
