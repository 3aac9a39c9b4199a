"""What happens to one file event: checksum, dedup, read, validate, load,
record the run, dispose of the file, or dead-letter it.

``ingest_event`` is called by a consumer worker for each message. It returns
normally when the message can be acked (loaded, skipped or dead-lettered) and
raises ``TransientError`` when it must be retried later.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from ingestd.daemon import db
from ingestd.daemon.broker import Publisher, Topology
from ingestd.daemon.config import Config, LiveConfig, SourceConfig
from ingestd.daemon.errors import PermanentError, TransientError
from ingestd.daemon.events import Event, FileEvent, PayloadEvent, parse_event
from ingestd.daemon.landing import (
    Location,
    archive_path,
    check_event_path,
    check_payload_path,
    display_path,
    move_file,
    resolve_in_landing,
)
from ingestd.daemon.metrics import BYTES_READ, DEAD_LETTERS, LAST_SUCCESS, ROWS, RUN_SECONDS, RUNS, source_label
from ingestd.daemon.providers import record_identity

from . import bronze, runs
from .checksum import sha256_file
from .dead_letter import Outcome, dead_letter_bad_event, dead_letter_event
from .jsontext import with_context
from .readers import check_file_size, read_json, read_records
from .validation import RecordValidator

log = logging.getLogger(__name__)


@dataclass
class IngestContext:
    """What a worker needs to handle events; one per worker thread."""

    settings: Config | LiveConfig
    publisher: Publisher
    worker: str
    _validators: dict[str, tuple[SourceConfig, RecordValidator]] = field(default_factory=dict)
    _conn: psycopg2.extensions.connection | None = None
    _tables: set[str] = field(default_factory=set)
    # Seam for fault tests: called between COPY and COMMIT.
    before_commit: Callable[[], None] | None = None

    @property
    def config(self) -> Config:
        """The configuration now (a live one follows edits of the file)."""
        return self.settings.get() if isinstance(self.settings, LiveConfig) else self.settings

    @property
    def topology(self) -> Topology:
        return self.publisher.topology

    def conn(self) -> psycopg2.extensions.connection:
        if self._conn is None or self._conn.closed:
            self._conn = db.connect(self.config.database_url, self.config.connect_timeout_seconds,
                                    f"ingestd-{self.worker}")
        return self._conn

    def drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg2.Error:
                pass

    def validator(self, source: SourceConfig) -> RecordValidator:
        cached = self._validators.get(source.name)
        if cached is None or cached[0] is not source:  # new, or the config was reloaded
            cached = (source, RecordValidator(source.schema, source.name, source.format_keyword))
            self._validators[source.name] = cached
        return cached[1]

    def close(self) -> None:
        self.drop_connection()
        self.publisher.close()


def ingest_message(ctx: IngestContext, body: bytes, redelivered: bool = False) -> Outcome:
    """Handle one message body. Database trouble surfaces as ``TransientError``."""
    try:
        event = parse_event(body)
    except PermanentError as exc:
        return dead_letter_bad_event(ctx, body, exc)
    try:
        return ingest_event(ctx, event)
    except psycopg2.Error as exc:
        ctx.drop_connection()
        if db.is_connection_error(exc):
            raise TransientError(f"database unavailable: {str(exc).strip()[:300]}") from None
        raise


def ingest_event(ctx: IngestContext, event: Event) -> Outcome:
    started = time.monotonic()
    conn = ctx.conn()
    run_id = uuid.uuid4()
    is_file = isinstance(event, FileEvent)
    shown_path = display_path(event.path) if is_file else (event.body_path or event.endpoint)
    shown_source = display_path(event.source)
    size = event.size if is_file else event.body_size
    runs.start_run(conn, run_id, event.event_id, shown_source, event.trigger, ctx.worker, shown_path, size)
    extra = {"run_id": str(run_id), "event_id": event.event_id, "source": shown_source}
    log.info("run started", extra={**extra, "step": "start", "status": "running", "path": shown_path})
    try:
        if is_file:
            outcome = _load_file_event(ctx, conn, event, run_id)
        else:
            outcome = _load_payload_event(ctx, conn, event, run_id)
    except PermanentError as exc:
        conn.rollback()
        outcome = dead_letter_event(ctx, conn, event, run_id, exc)
    except psycopg2.Error as exc:
        if db.classify_error(exc) != "data":
            raise  # transient: retried by the worker; a bug: left for redelivery
        conn.rollback()
        # The database refused the data (e.g. a value jsonb rejects): the
        # data's fault, so dead-letter it rather than loop.
        failure = PermanentError("load_error", (exc.pgerror or str(exc)).strip()[:1000],
                                 pgcode=exc.pgcode)
        outcome = dead_letter_event(ctx, conn, event, run_id, failure)
    elapsed = time.monotonic() - started
    _count(ctx, event.source, outcome, elapsed)
    duration_ms = round(elapsed * 1000, 1)
    level = logging.WARNING if outcome.status == "failure" else logging.INFO
    log.log(level, f"run {outcome.status}", extra={
        **extra, "step": "finish", "status": outcome.status, "duration_ms": duration_ms,
        "rows": outcome.rows, "reason": outcome.reason, "detail": outcome.message or None,
    })
    return outcome


def _count(ctx: IngestContext, source: str, outcome: Outcome, seconds: float) -> None:
    label = source_label(source, ctx.config.sources)
    RUNS.labels(label, outcome.status).inc()
    RUN_SECONDS.labels(label).observe(seconds)
    if outcome.status == "success":
        ROWS.labels(label, "valid").inc(outcome.rows_valid)
        ROWS.labels(label, "invalid").inc(outcome.rows_invalid)
        BYTES_READ.labels(label).inc(outcome.bytes_read)
        LAST_SUCCESS.labels(label).set_to_current_time()
    elif outcome.status == "failure" and outcome.reason:
        DEAD_LETTERS.labels(label, outcome.reason).inc()


def _load_file_event(ctx: IngestContext, conn, event: FileEvent, run_id: uuid.UUID) -> Outcome:
    cfg = ctx.config
    # Before anything is opened or moved: the event may only name a file of
    # its own source's folder (the folder decides where rows go).
    location = check_event_path(event.source, event.path, event.trigger)
    shown = display_path(event.path)
    with conn.cursor() as cur:
        done = runs.manifest_by_event(cur, event.event_id)
    conn.rollback()  # no transaction stays open while the file is hashed
    if done is not None:
        return _skip(conn, run_id, f"event already loaded by run {done['run_id']}")
    path = resolve_in_landing(cfg.landing_dir, event.path)
    source = cfg.source(event.source)
    if source is None:
        raise PermanentError("unknown_source", f"folder {display_path(event.source)!r} is not a configured source",
                             path=shown)
    if source.kind != "file":
        raise PermanentError("unknown_source", f"{event.source!r} is an API source; it takes no files", path=shown)
    try:
        # Identity as the watcher saw it (lstat: a symlink's own size and
        # mtime), then the content's own stat (the link resolved in the zone).
        identity = os.lstat(path)
        st = os.stat(path)
    except FileNotFoundError:
        with conn.cursor() as cur:
            earlier = runs.earlier_handling(cur, event.source, shown, event.size, run_id)
        conn.rollback()
        if earlier is not None:
            return _skip(conn, run_id, f"file already handled and moved away: {earlier}")
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
        return _skip(conn, run_id, "the file changed after the event was published; a newer event follows")
    check_file_size(path, st.st_size, cfg.max_file_bytes, shown)
    try:
        checksum, _ = sha256_file(path)
    except OSError as exc:
        raise PermanentError("unreadable_file", f"cannot read the file: {exc.strerror or exc}",
                             path=shown) from None

    lineage = {
        "source_timestamp": datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=UTC),
        "pipeline_run_id": run_id, "event_id": event.event_id, "file_path": shown,
        "file_hash": checksum, "file_size": st.st_size,
    }

    def still_same() -> bool:
        try:
            after = os.stat(path)
        except OSError:
            return False
        return after.st_size == st.st_size and after.st_mtime_ns == st.st_mtime_ns

    def numbered_records(cur):
        records = read_records(path, source.format, cfg.max_file_bytes, source.records_path, source.delimiter,
                               source.skip_lines, cfg.max_record_bytes, exact_numbers=source.schema is not None)
        return ((n, value, text) for n, (value, text) in enumerate(records, 1))

    return _load_records(
        ctx, conn, run_id, event, source, checksum, st.st_size, shown, numbered_records,
        lineage, still_same, lambda: _dispose(ctx, conn, run_id, path, location))


def _load_payload_event(ctx: IngestContext, conn, event: PayloadEvent, run_id: uuid.UUID) -> Outcome:
    """An API response: the body inline or under _payloads/, records at the
    source's records_path, each with the poller's context (FRED's series id)."""
    cfg = ctx.config
    source = cfg.source(event.source)
    if source is None or source.kind != "api":
        raise PermanentError("unknown_source", f"{event.source!r} is not a configured API source")
    with conn.cursor() as cur:
        done = runs.manifest_by_event(cur, event.event_id)
    conn.rollback()
    if done is not None:
        return _skip(conn, run_id, f"event already loaded by run {done['run_id']}")
    path = None
    if event.body is not None:
        try:
            body = event.body.encode("utf-8")
        except UnicodeEncodeError:
            raise PermanentError("bad_event", "the payload body holds a lone surrogate; it is not text") from None
    else:
        check_payload_path(source.name, event.body_path)
        path = resolve_in_landing(cfg.landing_dir, event.body_path)
        try:
            body = path.read_bytes()
        except OSError as exc:
            raise PermanentError("unreadable_file", f"stored payload unreadable: {exc.strerror or exc}",
                                 path=event.body_path) from None
    checksum = hashlib.sha256(body).hexdigest()
    if checksum != event.body_sha256:
        raise PermanentError("unreadable_file", "the payload's bytes do not match the checksum in its event",
                             path=event.body_path)
    context = dict(event.context)
    identity = record_identity(source)
    notes: list[str] = []
    fresh_observations: list[tuple[str, str]] = []

    def numbered_records(cur):
        """(position in the payload, record), less the observations bronze
        already holds with the same values (look-back windows repeat them)."""
        stream = read_json(io.BufferedReader(io.BytesIO(body)), source.records_path, cfg.max_record_bytes)
        records = [(n, *with_context(context, r, text)) for n, (r, text) in enumerate(stream, 1)]
        if identity is None:
            return records
        keyed = [(n, r, t, identity(r)) for n, r, t in records]
        key_list = sorted({k[0] for _, _, _, k in keyed if k is not None})
        lock = int.from_bytes(hashlib.sha256(f"observations:{source.name}".encode()).digest()[:8], "big",
                              signed=True)
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
        cur.execute("SELECT record_key, fingerprint FROM ops.api_observations WHERE source = %s"
                    " AND record_key = ANY(%s)", (source.name, key_list))
        seen = set(cur.fetchall())
        fresh = []
        for n, r, t, k in keyed:
            if k is not None and k in seen:
                continue
            if k is not None:
                seen.add(k)
                fresh_observations.append(k)
            fresh.append((n, r, t))
        if len(fresh) < len(records):
            notes.append(f"{len(records) - len(fresh)} of {len(records)} observations unchanged since an earlier "
                         "poll, not loaded again")
        return fresh

    def record_observations(cur) -> None:
        if fresh_observations:
            psycopg2.extras.execute_values(
                cur, "INSERT INTO ops.api_observations (source, record_key, fingerprint, run_id) VALUES %s"
                " ON CONFLICT DO NOTHING", [(source.name, k, f, run_id) for k, f in fresh_observations])

    lineage = {
        "source_timestamp": datetime.fromisoformat(event.fetched_at), "pipeline_run_id": run_id,
        "event_id": event.event_id, "file_path": event.body_path, "file_hash": checksum,
        "file_size": len(body), "api_endpoint": event.endpoint, "api_response_code": event.status_code,
    }

    def dispose() -> None:
        if path is not None:
            _dispose(ctx, conn, run_id, path, Location(source.name, (), False))

    return _load_records(ctx, conn, run_id, event, source, checksum, len(body),
                         event.body_path or event.endpoint, numbered_records, lineage, lambda: True, dispose,
                         after_copy=record_observations, notes=notes)


def _load_records(ctx: IngestContext, conn, run_id: uuid.UUID, event: Event, source: SourceConfig, checksum: str,
                  size: int, source_filename: str, make_records, lineage: dict, still_same, dispose,
                  after_copy=None, notes: list[str] | None = None) -> Outcome:
    """The load shared by files and payloads: dedup, COPY, ratio check,
    manifest and run, one transaction; then dispose of the input.

    ``make_records(cursor)`` gives the records as ``(position, value,
    text)``; ``after_copy(cursor)`` runs in the same transaction. A reading
    error on an input that changed meanwhile (a file cut or rewritten while
    it loads) skips it: the newer event that follows decides."""
    stats = bronze.LoadStats()
    with conn.cursor() as cur:
        # Two workers on the same bytes: the second waits here, then finds the
        # manifest row of the first and skips, without loading anything twice.
        lock_key = int.from_bytes(hashlib.sha256(f"{source.name}:{checksum}".encode()).digest()[:8], "big",
                                  signed=True)
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
        earlier = runs.manifest_by_checksum(cur, source.name, checksum)
        if earlier is not None:
            conn.rollback()
            note = (f"same bytes already loaded from {earlier['source_filename']!r} by run {earlier['run_id']}")
            outcome = _skip(conn, run_id, note, checksum)
            dispose()
            return outcome
        if source.name not in ctx._tables:
            # Cached only after the commit below: a rolled-back transaction
            # takes the CREATE TABLE with it.
            bronze.ensure_bronze_table(cur, source.name)
        stream = bronze.CopyStream(make_records(cur), ctx.validator(source), source.name, lineage, stats)
        try:
            bronze.copy_records(cur, source.name, stream)
        except PermanentError:
            if still_same():
                raise
            conn.rollback()
            return _skip(conn, run_id, "the file changed while it was being loaded; a newer event follows")
        if after_copy is not None:
            after_copy(cur)
        bronze.check_invalid_ratio(stats, source.max_invalid_ratio)
        if not still_same():
            conn.rollback()
            return _skip(conn, run_id, "the file changed while it was being loaded; a newer event follows")
        runs.insert_manifest(cur, runs.ManifestEntry(source.name, source_filename, checksum, size,
                                                     stats.rows_total, run_id, event.event_id))
        remarks = list(notes or [])
        if stats.rows_invalid:
            remarks.append(f"{stats.rows_invalid} invalid records kept with validation_status = 'invalid'")
        error = "; ".join(remarks) or None
        runs.finish_run(cur, run_id, "success", rows_total=stats.rows_total, rows_valid=stats.rows_valid,
                        rows_invalid=stats.rows_invalid, error=error, checksum=checksum)
        if ctx.before_commit is not None:
            ctx.before_commit()
    conn.commit()
    ctx._tables.add(source.name)
    dispose()
    return Outcome("success", run_id, rows=stats.rows_total, rows_valid=stats.rows_valid,
                   rows_invalid=stats.rows_invalid, bytes_read=size)


def _skip(conn, run_id: uuid.UUID, why: str, checksum: str | None = None) -> Outcome:
    with conn.cursor() as cur:
        runs.finish_run(cur, run_id, "skipped", rows_total=0, rows_valid=0, rows_invalid=0, error=why,
                        checksum=checksum)
    conn.commit()
    return Outcome("skipped", run_id, message=why)


def _dispose(ctx: IngestContext, conn, run_id: uuid.UUID, path: Path, location: Location) -> None:
    """Archive, delete or keep a handled file. A failure here is reported on
    the run and in the log; the load stands and is never repeated."""
    mode = ctx.config.after_load
    if mode == "keep":
        return
    problem = None
    if mode == "delete":
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            problem = f"could not delete the file: {exc.strerror}"
    else:
        moved = move_file(ctx.config.landing_dir, path, archive_path(ctx.config.landing_dir, location),
                          str(run_id)[:8])
        if moved.error:
            problem = f"could not archive the file: {moved.error}"
    if problem:
        log.error(problem, extra={"run_id": str(run_id), "source": location.source, "step": "dispose",
                                  "status": "error"})
        runs.append_run_error(conn, run_id, problem)
