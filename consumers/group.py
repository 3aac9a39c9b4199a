"""Small files together: the steps of ``ingest.py`` for several events in
one transaction.

One by one, a small file costs two commits and a dozen round trips to the
database, far more than its rows. When a worker holds several events of
small files (a burst of drops), it takes them as a group: their runs start
in one commit; one statement takes every file's dedup lock; each file is
one COPY; two statements record their manifest rows and runs; one commit
makes them all durable; then each file is archived and its message acked.

Only a plain success stays in the group. Anything else (an event loaded
before, bytes another worker is loading or has loaded, the same bytes
twice, a file that changed, a bad file) leaves it, and takes the single
way of ``ingest.ingest_event`` with its run already started: skips, dead
letters and their reasons are the ones a file alone gets. A load that
fails inside the transaction rolls it back, and the rest load again
without it. A group never waits on a lock (``Ledger.claim``), so two
workers' groups cannot deadlock.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg2

from ingestd.daemon import db, partitions
from ingestd.daemon.errors import PermanentError
from ingestd.daemon.events import Event, FileEvent, parse_event
from ingestd.daemon.ledger import Ledger, LoadRecord, RunStart

from .bronze import CopyPart, CopyStream, check_invalid_ratio
from .context import IngestContext, Outcome
from .ingest import copy_part, copy_parts, ingest_event, loaded_entry, log_started, report_run_end, run_start
from .inputs import FileInput

# At most this many events in one transaction (broker.prefetch bounds how
# many a worker holds).
MAX_EVENTS = 32
# A group whose loads keep failing gives up after this many tries; its
# events take the single way.
MAX_ATTEMPTS = 4
# A file above this size loads on its own: a group is for files whose
# commits cost more than their rows.
MAX_FILE_BYTES = 256 << 10


@dataclass
class _Member:
    index: int
    event: FileEvent
    run: RunStart
    started: float
    source_input: FileInput | None = None
    outcome: Outcome | None = None  # set once its load is committed
    # Its load, done in the transaction but not committed yet.
    recorded: LoadRecord | None = None
    pending: Outcome | None = None

    @property
    def bytes_key(self) -> tuple[str, str]:
        """(source, checksum) of its checked file: what the dedup lock is on."""
        assert self.source_input is not None
        return self.source_input.source.name, self.source_input.checksum


def groupable(ctx: IngestContext, event: Event) -> bool:
    """A first-time event of a small file, for a source whose bronze table
    this worker has seen (creating a table stays on the single way)."""
    if not isinstance(event, FileEvent) or event.trigger != "file" or event.size > MAX_FILE_BYTES:
        return False
    source = ctx.config.source(event.source)
    return source is not None and source.kind == "file" and source.name in ctx.tables


def ingest_group(ctx: IngestContext, bodies: list[bytes], done: Callable[[int, Outcome], None]) -> None:
    """Load the groupable events among ``bodies`` (message bodies, in order of
    delivery) together; ``done(index, outcome)`` as each one ends, after its
    commit. The caller handles the others one by one. Database trouble surfaces as ``psycopg2.Error`` or
    ``TransientError``, with every event not yet done left to the caller."""
    events: dict[int, FileEvent] = {}
    for index, body in enumerate(bodies):
        try:
            event = parse_event(body)
        except PermanentError:
            continue  # the single way dead-letters it
        if isinstance(event, FileEvent) and groupable(ctx, event):
            events[index] = event
    if len(events) < 2:
        return
    ledger = ctx.ledger()
    now = time.monotonic()
    members = [_Member(index, event, run_start(ctx, event), now) for index, event in events.items()]
    ledger.start_runs([m.run for m in members])
    for member in members:
        log_started(member.run)
    loaded = ledger.loaded_events([m.event.event_id for m in members])
    ready = [m for m in members if m.event.event_id not in loaded and _checked(ctx, ledger, m)]
    kept = _load_together(ctx, ledger, ready)
    for member in kept:
        assert member.source_input is not None and member.outcome is not None
        ctx.tables.add(member.source_input.source.name)
        member.source_input.dispose(ctx.config, ledger, member.run.run_id)
        report_run_end(ctx, member.run, member.outcome, time.monotonic() - member.started, member.event.created_at)
        done(member.index, member.outcome)
    for member in members:
        if member.outcome is None:
            done(member.index, ingest_event(ctx, member.event, started_run=member.run))


def _checked(ctx: IngestContext, ledger: Ledger, member: _Member) -> bool:
    """Open and check the file, outside the group's transaction (a missing
    file's lookup ends the transaction it runs in)."""
    try:
        source_input = FileInput(ctx.config, member.event)
        if source_input.check(ledger, member.run.run_id) is not None:
            return False
    except PermanentError:
        return False
    member.source_input = source_input
    return True


def _load_together(ctx: IngestContext, ledger: Ledger, ready: list[_Member]) -> list[_Member]:
    """COPY the ready members in one transaction and commit it; the members
    it kept. A member whose load fails (its data, a file that changed) rolls
    the transaction back and leaves the group; the others load again
    without it (files of a group are small, failures rare). A failure the
    database finds in a COPY of several files names none of them: the
    attempts after it take a COPY a file."""
    candidates = list(ready)
    together = True
    for _ in range(MAX_ATTEMPTS):
        claims = ledger.claim([m.bytes_key for m in candidates])
        seen: set[tuple[str, str]] = set()
        loading = []
        for member, free in zip(candidates, claims, strict=True):
            if free and member.bytes_key not in seen:  # the same bytes twice: the second takes the single way
                seen.add(member.bytes_key)
                loading.append(member)
        failed = _copy_together(ctx, ledger, loading, together)
        if failed is _UNKNOWN:
            ledger.conn.rollback()
            together = False
            continue
        if failed is None:
            if loading:
                new_fields = ledger.record_loads([m.recorded for m in loading])
                if ctx.before_commit is not None:
                    ctx.before_commit()
                ledger.conn.commit()
                for member in loading:
                    member.outcome = member.pending
                    if member.outcome is not None:
                        member.outcome.new_fields = new_fields.get(member.run.run_id, [])
            else:
                ledger.conn.rollback()
            return loading
        ledger.conn.rollback()
        candidates = [m for m in candidates if m is not failed]
    ledger.conn.rollback()
    return []


# A COPY of several files failed in the database: which file's row is not known.
_UNKNOWN = object()


def _copy_together(ctx: IngestContext, ledger: Ledger, loading: list[_Member], together: bool) -> Any:
    """COPY the members' files in the group's transaction: one statement a
    source (``together``) or a file. The member that failed (the
    transaction is then unusable), ``_UNKNOWN`` when the database refused a
    row of a COPY of several, or None when every one loaded."""
    batches: dict[str, list[_Member]] = {}
    for member in loading:
        assert member.source_input is not None
        batches.setdefault(member.source_input.source.name if together else str(member.index), []).append(member)
    for members in batches.values():
        failed = _copy_batch(ctx, ledger, members)
        if failed is not None:
            return failed
    return None


def _copy_batch(ctx: IngestContext, ledger: Ledger, members: list[_Member]) -> Any:
    """One COPY of ``members`` (files of one source); as ``_copy_together``."""
    parts: list[CopyPart] = []
    stream: CopyStream | None = None
    current = members[0]
    try:
        with ledger.conn.cursor() as cur:
            for current in members:
                assert current.source_input is not None
                parts.append(copy_part(ctx, ledger, cur, current.source_input, current.run.run_id, may_wait=False))
            stream = CopyStream.of_parts(parts)
            copy_parts(ctx, cur, parts[0][2], stream)
            stream = None  # copied: a failure from here on is the current member's
        for current, part in zip(members, parts, strict=True):
            source_input = current.source_input
            assert source_input is not None
            source_input.after_copy(ledger, current.run.run_id)
            if not source_input.unchanged():
                return current
            check_invalid_ratio(part[4], source_input.source.max_invalid_ratio)
            current.recorded, current.pending = loaded_entry(source_input, current.event, current.run.run_id,
                                                             part[4])
    except (PermanentError, partitions.PartitionMissing, partitions.WouldWait, psycopg2.Error) as exc:
        if isinstance(exc, psycopg2.Error) and db.classify_error(exc) != "data":
            raise
        if stream is None:
            return current
        # The COPY failed: reading a file (the part being read), or a row
        # the database refused (known only when the COPY was of one file).
        return members[stream.part] if stream.failure is not None or len(members) == 1 else _UNKNOWN
    return None
