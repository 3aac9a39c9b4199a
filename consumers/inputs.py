"""Inputs: what an event names, made ready to load.

A ``FileInput`` is a file dropped in the landing zone; a ``PayloadInput`` is
an API answer, inline in its event or stored under ``_payloads/``. Both
offer the same steps to ``ingest.ingest_event``:

- ``check(ledger, run_id)``: look at the bytes (size limits, checksum);
  a reason to skip, ``None`` to go on, or ``PermanentError``;
- ``before_copy(ledger)``: lookups in the load's transaction, before COPY;
- ``records()``: ``(position, value, text)`` of each record, streamed
  (while COPY runs: no statement may use the connection);
- ``unchanged()``: the bytes are still those checked;
- ``after_copy(ledger, run_id)``: bookkeeping in the load's transaction;
- ``dispose(config, ledger, run_id)``: archive, delete or keep, after commit.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import IO, Any, Protocol, cast

import orjson

from ingestd.daemon.config import ApiSource, Config, FileSource, SourceConfig
from ingestd.daemon.errors import PermanentError
from ingestd.daemon.events import Event, FileEvent, PayloadEvent
from ingestd.daemon.landing import (
    Location,
    archive_path,
    check_event_path,
    check_payload_path,
    display_path,
    move_file,
    resolve_in_landing,
)
from ingestd.daemon.ledger import Ledger
from ingestd.daemon.providers import provider_for
from ingestd.records.format_json import read_json
from ingestd.records.formats import read_records
from ingestd.records.jsonrecord import with_context
from ingestd.records.reading import check_file_size, open_content

from .checksum import sha256_file

log = logging.getLogger(__name__)

Numbered = tuple[int, Any, bytes | None]
# Records of a payload looked up in ops.api_observations at a time.
OBSERVATION_BATCH = 1000


class Input(Protocol):
    source: SourceConfig
    label: str  # the path or endpoint shown in runs and the manifest
    checksum: str
    size: int
    lineage: dict[str, Any]

    def check(self, ledger: Ledger, run_id: uuid.UUID) -> str | None: ...

    def before_copy(self, ledger: Ledger) -> None: ...

    def records(self, valid_rows: Callable[[Any], Any] | None = None) -> Iterator[Numbered]: ...

    def unchanged(self) -> bool: ...

    def after_copy(self, ledger: Ledger, run_id: uuid.UUID) -> None: ...

    def notes(self) -> list[str]: ...

    def dispose(self, config: Config, ledger: Ledger, run_id: uuid.UUID) -> None: ...


def open_input(config: Config, event: Event) -> Input:
    """The input an event names; ``PermanentError`` when the event may not
    name it (bad_event, path_rejected) or its source is not configured."""
    if isinstance(event, FileEvent):
        return FileInput(config, event)
    return PayloadInput(config, event)


def _source(config: Config, name: str, kind: str, shown: str | None) -> SourceConfig:
    source = config.source(name)
    where = {"path": shown} if shown else {}
    if source is None:
        what = "folder" if kind == "file" else "API source"
        raise PermanentError("unknown_source", f"{what} {display_path(name)!r} is not a configured source", **where)
    if source.kind != kind:
        why = "is an API source; it takes no files" if kind == "file" else "is not an API source"
        raise PermanentError("unknown_source", f"{name!r} {why}", **where)
    return source


def _same_content(path: Path, before: os.stat_result) -> bool:
    try:
        after = os.stat(path)
    except OSError:
        return False
    return (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def dispose_file(config: Config, ledger: Ledger, run_id: uuid.UUID, path: Path, location: Location) -> None:
    """Archive, delete or keep a handled file. A failure here is reported on
    the run and in the log; the load stands and is never repeated."""
    if config.after_load == "keep":
        return
    problem = None
    if config.after_load == "delete":
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            problem = f"could not delete the file: {exc.strerror}"
    else:
        moved = move_file(config.landing_dir, path, archive_path(config.landing_dir, location), str(run_id)[:8])
        if moved.error:
            problem = f"could not archive the file: {moved.error}"
    if problem:
        log.error(problem, extra={"run_id": str(run_id), "source": location.source, "step": "dispose",
                                  "status": "error"})
        ledger.append_run_error(run_id, problem)


class FileInput:
    """A file of a source's folder, read where it lies."""

    def __init__(self, config: Config, event: FileEvent) -> None:
        # Before anything is opened or moved: the event may only name a file of
        # its own source's folder (the folder decides where rows go).
        self.location = check_event_path(event.source, event.path, event.trigger)
        self.label = display_path(event.path)
        self.source = cast(FileSource, _source(config, event.source, "file", self.label))
        self.config = config
        self.event = event
        self.path = resolve_in_landing(config.landing_dir, event.path)
        self.checksum = ""
        self.size = 0
        self.lineage: dict[str, Any] = {}
        self._stat: os.stat_result | None = None

    def check(self, ledger: Ledger, run_id: uuid.UUID) -> str | None:
        event, shown = self.event, self.label
        try:
            # Identity as the watcher saw it (lstat: a symlink's own size and
            # mtime), then the content's own stat (the link resolved in the zone).
            identity = os.lstat(self.path)
            st = os.stat(self.path)
        except FileNotFoundError:
            earlier = ledger.earlier_handling(event.source, shown, event.size, run_id)
            ledger.conn.rollback()
            if earlier is not None:
                return f"file already handled and moved away: {earlier}"
            raise PermanentError("unreadable_file", "the file no longer exists", path=shown) from None
        except OSError as exc:
            raise PermanentError("unreadable_file", f"cannot stat the file: {exc.strerror}", path=shown) from None
        if stat.S_ISDIR(identity.st_mode):
            # The watcher publishes files only: an event naming a folder was made by hand.
            raise PermanentError("bad_event", "the event names a folder, not a file", path=shown)
        if not stat.S_ISREG(st.st_mode):
            raise PermanentError("unreadable_file", "not a regular file", path=shown)
        if identity.st_size != event.size or identity.st_mtime_ns != event.mtime_ns:
            # Still being written, or replaced: the watcher publishes a new event
            # once the file is complete again, so this one has nothing to do.
            return "the file changed after the event was published; a newer event follows"
        check_file_size(self.path, st.st_size, self.config.max_file_bytes, shown)
        try:
            self.checksum, _ = sha256_file(self.path)
        except OSError as exc:
            raise PermanentError("unreadable_file", f"cannot read the file: {exc.strerror or exc}",
                                 path=shown) from None
        self._stat, self.size = st, st.st_size
        self.lineage = {
            "source_timestamp": datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=UTC), "event_id": event.event_id,
            "file_path": shown, "file_hash": self.checksum, "file_size": st.st_size,
        }
        return None

    def before_copy(self, ledger: Ledger) -> None:
        pass

    def records(self, valid_rows: Callable[[Any], Any] | None = None) -> Iterator[Numbered]:
        """The file's records; ``valid_rows`` (the source validator's) lets a
        format that judges rows column by column yield ``KNOWN_VALID`` values."""
        source, cfg = self.source, self.config
        records = read_records(self.path, source.format, cfg.max_file_bytes, source.options,
                               max_record_bytes=cfg.max_record_bytes, exact_numbers=source.schema is not None,
                               valid_rows=valid_rows)
        return ((n, value, text) for n, (value, text) in enumerate(records, 1))

    def unchanged(self) -> bool:
        return self._stat is not None and _same_content(self.path, self._stat)

    def after_copy(self, ledger: Ledger, run_id: uuid.UUID) -> None:
        pass

    def notes(self) -> list[str]:
        return []

    def dispose(self, config: Config, ledger: Ledger, run_id: uuid.UUID) -> None:
        dispose_file(config, ledger, run_id, self.path, self.location)


class PayloadInput:
    """An API answer: the body inline in the event or stored under
    ``_payloads/``, records at the source's ``records_path``, each with the
    poller's context (FRED's series id), less the observations bronze already
    holds with the same values (look-back windows repeat them)."""

    def __init__(self, config: Config, event: PayloadEvent) -> None:
        self.source = _source(config, event.source, "api", event.body_path)
        self.config = config
        self.event = event
        self.label = event.body_path or event.endpoint
        self.path: Path | None = None
        if event.body_path is not None:
            check_payload_path(self.source.name, event.body_path)
            self.path = resolve_in_landing(config.landing_dir, event.body_path)
        self.body = b""
        self.checksum = ""
        self.size = 0
        self.lineage: dict[str, Any] = {}
        self._stat: os.stat_result | None = None
        provider = provider_for(cast(ApiSource, self.source))
        self._identity = provider.identity if provider.has_identity else None
        self._seen: set[tuple[str, str]] = set()
        self._fresh: list[tuple[str, str]] = []
        self._repeated = 0
        self._count = 0

    def check(self, ledger: Ledger, run_id: uuid.UUID) -> str | None:
        event = self.event
        if self.path is None:
            try:
                self.body = (event.body or "").encode("utf-8")
            except UnicodeEncodeError:
                raise PermanentError("bad_event", "the payload body holds a lone surrogate; it is not text") from None
            self.size = len(self.body)
        else:
            try:
                self._stat = os.stat(self.path)
            except OSError as exc:
                raise PermanentError("unreadable_file", f"stored payload unreadable: {exc.strerror or exc}",
                                     path=event.body_path) from None
            self.size = self._stat.st_size
        limit = self.config.max_file_bytes
        if limit is not None and self.size > limit:
            raise PermanentError("too_large", f"payload of {self.size} bytes exceeds landing.max_file_bytes ({limit})",
                                 size=self.size, limit=limit)
        try:
            self.checksum = hashlib.sha256(self.body).hexdigest() if self.path is None else sha256_file(self.path)[0]
        except OSError as exc:
            raise PermanentError("unreadable_file", f"stored payload unreadable: {exc.strerror or exc}",
                                 path=event.body_path) from None
        if self.checksum != event.body_sha256:
            raise PermanentError("unreadable_file", "the payload's bytes do not match the checksum in its event",
                                 path=event.body_path)
        self.lineage = {
            "source_timestamp": datetime.fromisoformat(event.fetched_at), "event_id": event.event_id,
            "file_path": event.body_path, "file_hash": self.checksum, "file_size": self.size,
            "api_endpoint": event.endpoint, "api_response_code": event.status_code,
        }
        return None

    def _stream(self) -> Iterator[Numbered]:
        cfg, context = self.config, dict(self.event.context)
        stream: IO[bytes]
        if self.path is None:
            stream = cast(IO[bytes], io.BufferedReader(io.BytesIO(self.body)))  # BufferedReader: it can peek
        else:
            stream = open_content(self.path, cfg.max_file_bytes)
        # The context is repeated in every record: what it adds is bounded by the payload's own size
        # (at least 1 MiB), so that a small payload of many tiny records cannot multiply into bronze.
        each = len(orjson.dumps(context)) if context else 0
        allowed = max(self.size, 1 << 20)
        with stream:
            for n, (value, text) in enumerate(read_json(stream, self.source.records_path, cfg.max_record_bytes), 1):
                if n * each > allowed:
                    raise PermanentError("too_large", f"record {n}: the payload's context ({each} bytes, added to "
                                         f"each record) would add more than {allowed} bytes", record=n)
                self._count = n
                yield (n, *with_context(context, value, text))

    def before_copy(self, ledger: Ledger) -> None:
        """Look up, in the load's transaction and under the source's
        observation lock, which records bronze already holds. A first pass
        over the payload, keeping keys only: nothing else may use the
        connection once COPY reads the records."""
        if self._identity is None:
            return
        identity = self._identity
        stream = self._stream()
        while batch := list(islice(stream, OBSERVATION_BATCH)):
            keys = sorted({key[0] for key in (identity(value) for _, value, _ in batch) if key is not None})
            self._seen |= ledger.seen_observations(self.source.name, keys)

    def records(self, valid_rows: Callable[[Any], Any] | None = None) -> Iterator[Numbered]:
        identity = self._identity
        for record in self._stream():
            key = identity(record[1]) if identity is not None else None
            if key is not None:
                if key in self._seen:
                    self._repeated += 1
                    continue
                self._seen.add(key)
                self._fresh.append(key)
            yield record

    def unchanged(self) -> bool:
        return self._stat is None or _same_content(self.path, self._stat)  # type: ignore[arg-type]

    def after_copy(self, ledger: Ledger, run_id: uuid.UUID) -> None:
        ledger.add_observations(self.source.name, run_id, self._fresh)

    def notes(self) -> list[str]:
        if not self._repeated:
            return []
        return [f"{self._repeated} of {self._count} observations unchanged since an earlier poll, not loaded again"]

    def dispose(self, config: Config, ledger: Ledger, run_id: uuid.UUID) -> None:
        if self.path is not None:
            dispose_file(config, ledger, run_id, self.path, Location(self.source.name, (), False))
