"""What happens to one event: a straight line.

parse the message → start the run → open the input (file or payload) →
check its bytes → take the dedup lock → COPY its records → record the
success → commit → dispose of the input. Data at fault anywhere on the way
dead-letters the event with its reason (``dead_letter.py``).

``ingest_message`` is called by a consumer worker for each message. It
returns normally when the message can be acked (loaded, skipped or
dead-lettered) and raises ``TransientError`` when it must be retried later.
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import psycopg2
import psycopg2.errors

from ingestd.daemon import db, partitions
from ingestd.daemon.errors import PermanentError, TransientError
from ingestd.daemon.events import Event, FileEvent, parse_event
from ingestd.daemon.landing import display_path
from ingestd.daemon.ledger import Ledger, LoadRecord, ManifestEntry, RunStart
from ingestd.daemon.metrics import (
    BYTES_READ,
    DEAD_LETTERS,
    LAST_SUCCESS,
    LATENCY,
    RECORDS_CHECKED,
    ROWS,
    RUN_SECONDS,
    RUNS,
    UNDECLARED_NEW,
    seconds_since,
    source_label,
)

from . import bronze
from .context import IngestContext, Outcome
from .dead_letter import dead_letter_bad_event, dead_letter_event
from .inputs import Input, open_input

__all__ = ["IngestContext", "Outcome", "ingest_event", "ingest_message"]

log = logging.getLogger(__name__)
CHANGED_WHILE_LOADING = "the file changed while it was being loaded; a newer event follows"


def ingest_message(ctx: IngestContext, body: bytes, redelivered: bool = False,
                   message_id: str | None = None) -> Outcome:
    """Handle one message body (``message_id``: its AMQP message id, which
    parks a body that is no event). Database trouble surfaces as
    ``TransientError``."""
    try:
        event = parse_event(body)
    except PermanentError as exc:
        return dead_letter_bad_event(ctx, body, exc, message_id)
    try:
        return ingest_event(ctx, event)
    except psycopg2.Error as exc:
        ctx.drop_connection()
        if db.is_connection_error(exc):
            raise TransientError(f"database unavailable: {str(exc).strip()[:300]}") from None
        raise


def run_start(ctx: IngestContext, event: Event) -> RunStart:
    """The run an event starts: its row in ops.pipeline_runs."""
    shown = display_path(event.path) if isinstance(event, FileEvent) else (event.body_path or event.endpoint)
    size = event.size if isinstance(event, FileEvent) else event.body_size
    return RunStart(uuid.uuid4(), event.event_id, display_path(event.source), event.trigger, ctx.worker, shown, size)


def log_started(run: RunStart) -> None:
    log.info("run started", extra={"run_id": str(run.run_id), "event_id": run.event_id, "source": run.source,
                                   "step": "start", "status": "running", "path": run.file_path})


def ingest_event(ctx: IngestContext, event: Event, started_run: RunStart | None = None) -> Outcome:
    """Load one event. ``started_run``: its run, already recorded as running
    (a small file a group handed back); else the run starts here."""
    started = time.monotonic()
    ledger = ctx.ledger()
    run = started_run
    if run is None:
        run = run_start(ctx, event)
        ledger.start_runs([run])
        log_started(run)
    run_id = run.run_id
    try:
        try:
            outcome = _load_event(ctx, ledger, event, run_id)
        except partitions.PartitionMissing:
            # Another process changed the table's partitions: once more, with a fresh look
            ledger.conn.rollback()
            try:
                outcome = _load_event(ctx, ledger, event, run_id)
            except partitions.PartitionMissing as exc:
                raise PermanentError("load_error", f"{exc} (after a fresh look at the table's partitions)",
                                     pgcode="23514") from None
    except PermanentError as exc:
        ledger.conn.rollback()
        outcome = dead_letter_event(ctx, ledger, event, run_id, exc)
    except psycopg2.Error as exc:
        if db.classify_error(exc) != "data":
            raise  # transient: retried by the worker; a bug: left for redelivery
        ledger.conn.rollback()
        # The database refused the data (e.g. a value jsonb rejects): the
        # data's fault, so dead-letter it rather than loop.
        failure = PermanentError("load_error", (exc.pgerror or str(exc)).strip()[:1000], pgcode=exc.pgcode)
        outcome = dead_letter_event(ctx, ledger, event, run_id, failure)
    report_run_end(ctx, run, outcome, time.monotonic() - started,
                   None if event.trigger == "replay" else event.created_at)
    return outcome


def report_run_end(ctx: IngestContext, run: RunStart, outcome: Outcome, elapsed: float,
             created_at: str | None = None) -> None:
    """Count and log how a run ended. ``created_at``: when its event was made
    (the file settled, the API answered), for the end-to-end latency."""
    _count(ctx, run.source, outcome, elapsed, created_at)
    level = logging.WARNING if outcome.status == "failure" else logging.INFO
    log.log(level, f"run {outcome.status}", extra={
        "run_id": str(run.run_id), "event_id": run.event_id, "source": run.source, "step": "finish",
        "status": outcome.status, "duration_ms": round(elapsed * 1000, 1), "rows": outcome.rows,
        "reason": outcome.reason, "detail": outcome.message or None,
    })
    if outcome.new_fields:
        log.warning("fields the schema does not declare, new to this source", extra={
            "run_id": str(run.run_id), "source": run.source, "step": "quality", "status": "drift",
            "fields": outcome.new_fields[:20], "count": len(outcome.new_fields)})


def _load_event(ctx: IngestContext, ledger: Ledger, event: Event, run_id: uuid.UUID) -> Outcome:
    done = ledger.loaded_event(event.event_id)
    if done is not None:
        outcome = _skip(ledger, run_id, f"event already loaded by run {done['run_id']}")
        _dispose_left_behind(ctx, ledger, event, done["checksum"], run_id)
        return outcome
    source_input = open_input(ctx.config, event)
    why = source_input.check(ledger, run_id)
    if why is not None:
        return _skip(ledger, run_id, why)
    # Two workers on the same bytes: the second waits here, then finds the
    # manifest row of the first and skips, without loading anything twice.
    ledger.lock(source_input.source.name, source_input.checksum)
    earlier = ledger.loaded_bytes(source_input.source.name, source_input.checksum)
    if earlier is not None and earlier["status"] == "loaded":
        ledger.conn.rollback()
        outcome = _skip(ledger, run_id, _already_loaded(earlier), source_input.checksum)
        source_input.dispose(ctx.config, ledger, run_id)
        return outcome
    # Never loaded, or loaded and every row of it dropped by retention since: it loads (again, saying so).
    stats = copy_input(ctx, ledger, source_input, run_id)
    if stats is None or not source_input.unchanged():
        ledger.conn.rollback()
        return _skip(ledger, run_id, CHANGED_WHILE_LOADING)
    recorded, outcome = loaded_entry(source_input, event, run_id, stats, _loaded_again(earlier))
    outcome.new_fields = ledger.record_loads([recorded]).get(run_id, [])
    if ctx.before_commit is not None:
        ctx.before_commit()
    ledger.conn.commit()
    ctx.tables.add(source_input.source.name)
    source_input.dispose(ctx.config, ledger, run_id)
    return outcome


def copy_input(ctx: IngestContext, ledger: Ledger, source_input: Input, run_id: uuid.UUID,
               may_wait: bool = True) -> bronze.LoadStats | None:
    """COPY the input's records into bronze (in the open transaction); None
    when reading failed on an input that changed meanwhile (a file cut or
    rewritten while it loads): the newer event that follows decides.

    Raises ``partitions.PartitionMissing`` when no partition took the rows
    (this worker's picture of the table was out of date; it is forgotten),
    and ``partitions.WouldWait`` when ``may_wait`` is false and a month's
    partition must be made."""
    source = source_input.source
    with ledger.conn.cursor() as cur:
        part = copy_part(ctx, ledger, cur, source_input, run_id, may_wait)
        try:
            copy_parts(ctx, cur, source.name, bronze.CopyStream.of_parts([part]))
        except PermanentError:
            if source_input.unchanged():
                raise
            return None
    stats = part[4]
    source_input.after_copy(ledger, run_id)
    bronze.check_invalid_ratio(stats, source.max_invalid_ratio)
    return stats


def copy_part(ctx: IngestContext, ledger: Ledger, cur: Any, source_input: Input, run_id: uuid.UUID,
              may_wait: bool) -> bronze.CopyPart:
    """Ready an input to COPY (its table made, its month's partition there,
    the records it reads, its lineage): its part of a COPY stream."""
    source = source_input.source
    if source.name not in ctx.tables:
        # Cached only after the commit: a rolled-back transaction takes the
        # CREATE TABLE with it.
        bronze.ensure_bronze_table(cur, source, ctx.worker)
    source_input.before_copy(ledger)
    lineage = {**source_input.lineage, "pipeline_run_id": run_id}
    partitions.prepare_load(cur, ctx.layouts, source.name, lineage.get("source_timestamp"), ctx.worker, may_wait)
    validator = ctx.validator(source)
    return source_input.records(validator.valid_rows), validator, source.name, lineage, bronze.LoadStats()


def copy_parts(ctx: IngestContext, cur: Any, source: str, stream: bronze.CopyStream) -> None:
    """One COPY statement of ``stream`` into ``bronze.<source>``;
    ``partitions.PartitionMissing`` when no partition took a row."""
    try:
        bronze.copy_records(cur, source, stream)
    except psycopg2.errors.CheckViolation as exc:
        # "no partition of relation … found for row": the only CHECK a
        # row written by ingestd can fail
        ctx.layouts.pop(source, None)
        raise partitions.PartitionMissing((exc.pgerror or str(exc)).strip()[:1000]) from None


def loaded_entry(source_input: Input, event: Event, run_id: uuid.UUID, stats: bronze.LoadStats,
            again: str | None = None) -> tuple[LoadRecord, Outcome]:
    """A load done: what the ledger records of it, and how its event ended.
    ``again``: why bytes loaded before load again (the run's first remark, and the log's)."""
    remarks = ([again] if again else []) + source_input.notes()
    if stats.rows_invalid:
        remarks.append(f"{stats.rows_invalid} invalid records kept with validation_status = 'invalid'")
    quality = stats.quality.summary(stats.rows_total) if stats.quality is not None else None
    recorded = (ManifestEntry(source_input.source.name, source_input.label, source_input.checksum, source_input.size,
                              stats.rows_total, run_id, event.event_id),
                stats.rows_valid, stats.rows_invalid, "; ".join(remarks) or None, quality)
    return recorded, Outcome("success", run_id, rows=stats.rows_total, rows_valid=stats.rows_valid,
                             rows_invalid=stats.rows_invalid, bytes_read=source_input.size,
                             message="; ".join(remarks) if again else "")


def _already_loaded(earlier: dict) -> str:
    why = f"same bytes already loaded from {earlier['source_filename']!r} by run {earlier['run_id']}"
    if earlier["rows_expired"]:
        why += (f" ({earlier['rows_expired']} of its {earlier['row_count']} rows since dropped by retention; "
                "the bytes load again once all are)")
    return why


def _loaded_again(expired: dict | None) -> str | None:
    if expired is None:
        return None  # a first load
    return (f"loaded again: the same bytes, loaded from {expired['source_filename']!r} by run {expired['run_id']}, "
            f"were dropped by retention with bronze.{expired['expired_partition']} on "
            f"{expired['expired_at'].isoformat(timespec='seconds')}")


def _dispose_left_behind(ctx: IngestContext, ledger: Ledger, event: Event, checksum: str,
                         run_id: uuid.UUID) -> None:
    """Archive (or delete) a loaded file still where the event found it: its worker died between
    the commit and the move, and the broker handed the event to another. Only the very bytes
    the event loaded go: a file since replaced under the same name is left to its own event."""
    if not isinstance(event, FileEvent):
        return
    try:
        source_input = open_input(ctx.config, event)
        if source_input.check(ledger, run_id) is None and source_input.checksum == checksum:
            source_input.dispose(ctx.config, ledger, run_id)
    except PermanentError:
        pass  # gone (archived by the first worker) or unreadable: nothing of this load is left


def _skip(ledger: Ledger, run_id: uuid.UUID, why: str, checksum: str | None = None) -> Outcome:
    ledger.skip_run(run_id, why, checksum)
    return Outcome("skipped", run_id, message=why)


def _count(ctx: IngestContext, source: str, outcome: Outcome, seconds: float, created_at: str | None) -> None:
    label = source_label(source, ctx.config.sources)
    RUNS.labels(label, outcome.status).inc()
    RUN_SECONDS.labels(label).observe(seconds)
    # Records checked: of loads, and of files refused for too many invalid ones.
    RECORDS_CHECKED.labels(label, "valid").inc(outcome.rows_valid)
    RECORDS_CHECKED.labels(label, "invalid").inc(outcome.rows_invalid)
    if outcome.status == "success":
        ROWS.labels(label, "valid").inc(outcome.rows_valid)
        ROWS.labels(label, "invalid").inc(outcome.rows_invalid)
        BYTES_READ.labels(label).inc(outcome.bytes_read)
        LAST_SUCCESS.labels(label).set_to_current_time()
        UNDECLARED_NEW.labels(label).inc(len(outcome.new_fields))
        latency = seconds_since(created_at)
        if latency is not None:
            LATENCY.labels(label).observe(latency)
    elif outcome.status == "failure" and outcome.reason:
        DEAD_LETTERS.labels(label, outcome.reason).inc()
