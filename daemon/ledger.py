"""The ledger: every statement against the ``ops`` tables, in one place.

``ops.pipeline_runs`` (one row per run), ``ops.raw_ingest_manifest`` (what
was loaded, by checksum), ``ops.dead_letters`` (what was parked, and what
became of it), ``ops.api_observations`` (what an API already told us) and
``ops.poll_state`` (each API source's cursor). The consumer, the dead-letter
recorder, the poller, the ``dlq`` commands and the reports all go through
``Ledger``; no other module writes SQL against ``ops.*`` (migrations aside).

Methods say whether they commit. Those that do not run inside the caller's
transaction (a load: COPY, manifest and run, one commit). Text written here
may come from anywhere (file names, event bodies, error messages quoting
data): it is made storable first, so that recording a failure cannot fail.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql
from psycopg2.extras import Json

from . import landing
from .db import lock_key
from .errors import REASONS

# A dead letter still waiting for an operator: neither replayed nor discarded.
WAITING = "replayed_at IS NULL AND discarded_at IS NULL"
INTERRUPTED = "interrupted: the worker stopped before finishing"
TRIGGERS = ("file", "api", "replay", "manual")

DEAD_LETTER_COLUMNS = ("id", "event_id", "source", "reason", "error", "detail", "event", "run_id", "file_path",
                       "dead_lettered_at", "replayed_at", "replay_count", "discarded_at", "note")
RUN_COLUMNS = ("run_id", "event_id", "source", "trigger", "status", "started_at", "finished_at", "rows_total",
               "rows_valid", "rows_invalid", "error_summary", "reason", "worker", "file_path", "quality")


def storable_text(value: str | None) -> str | None:
    """``value`` with U+0000 and lone surrogates shown as escapes."""
    return None if value is None else landing.storable_text(value)


def storable(value: Any) -> Any:
    """A JSON value with every string (keys too) made storable."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_text(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable(v) for v in value]
    return value


@dataclass(frozen=True)
class ManifestEntry:
    source: str
    source_filename: str
    checksum: str
    size_bytes: int
    row_count: int
    run_id: uuid.UUID
    event_id: str | None


# A load done, as recorded: its manifest row, valid and invalid record
# counts, the run's remarks, and its records' quality (consumers/quality.py).
LoadRecord = tuple[ManifestEntry, int, int, str | None, dict[str, Any] | None]


@dataclass(frozen=True)
class RunStart:
    """A run as it starts (``Ledger.start_runs``)."""

    run_id: uuid.UUID
    event_id: str | None
    source: str
    trigger: str
    worker: str
    file_path: str | None
    file_size: int | None


@dataclass(frozen=True)
class FailedRun:
    """A run that failed before it could start (a poll, a message that is
    not an event, a message the broker dead-lettered)."""

    source: str | None
    trigger: str
    error: str
    reason: str
    worker: str
    event_id: str | None = None
    file_path: str | None = None


@dataclass
class DeadLetter:
    id: int
    event_id: str | None
    source: str | None
    reason: str
    error: str
    detail: dict[str, Any]
    event: Any
    run_id: str | None
    file_path: str | None
    dead_lettered_at: datetime
    replayed_at: datetime | None
    replay_count: int
    discarded_at: datetime | None
    note: str | None

    @property
    def state(self) -> str:
        if self.discarded_at:
            return "discarded"
        return "replayed" if self.replayed_at else "waiting"

    def as_json(self) -> dict[str, Any]:
        out = {c: getattr(self, c) for c in DEAD_LETTER_COLUMNS}
        for key in ("event_id", "run_id"):
            out[key] = None if out[key] is None else str(out[key])
        for key in ("dead_lettered_at", "replayed_at", "discarded_at"):
            out[key] = out[key].isoformat() if out[key] else None
        out["state"] = self.state
        return out


@dataclass
class Selector:
    """Which dead letters an operation applies to. Values are SQL parameters."""

    ids: list[int] | None = None
    source: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    include_replayed: bool = False
    include_discarded: bool = False

    def __post_init__(self) -> None:
        if self.reason is not None and self.reason not in REASONS:
            raise ValueError(f"unknown reason {self.reason!r}; one of: {', '.join(REASONS)}")

    @property
    def is_empty(self) -> bool:
        return not (self.ids or self.source or self.reason or self.since or self.until)

    def where(self) -> tuple[str, list[Any]]:
        tests = (("id = ANY(%s)", list(self.ids) if self.ids else None), ("source = %s", self.source),
                 ("reason = %s", self.reason), ("dead_lettered_at >= %s", self.since),
                 ("dead_lettered_at < %s", self.until))
        clauses = [clause for clause, value in tests if value]
        params = [value for _, value in tests if value]
        if not self.include_replayed:
            clauses.append("replayed_at IS NULL")
        if not self.include_discarded:
            clauses.append("discarded_at IS NULL")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


class Ledger:
    """The ``ops`` tables, through one connection."""

    def __init__(self, conn: psycopg2.extensions.connection) -> None:
        self.conn = conn

    def _one(self, statement: str, params: Iterable[Any] = ()) -> tuple | None:
        with self.conn.cursor() as cur:
            cur.execute(statement, tuple(params))
            return cur.fetchone() if cur.description else None

    def _all(self, statement: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(statement, tuple(params))
            return cur.fetchall()

    def _run(self, statement: str, params: Iterable[Any] = ()) -> None:
        with self.conn.cursor() as cur:
            cur.execute(statement, tuple(params))

    def lock(self, *name: str) -> None:
        """Hold a lock named ``name`` until the transaction ends."""
        self._run("SELECT pg_advisory_xact_lock(%s)", (lock_key(*name),))

    # -- runs ----------------------------------------------------------------
    def start_run(self, run_id: uuid.UUID, event_id: str | None, source: str, trigger: str, worker: str,
                  file_path: str | None, file_size: int | None) -> None:
        """Record a run as ``running``; commits at once, so it shows while it works.

        A run of the same event still marked ``running`` was cut off (worker
        killed, database lost): it is closed as interrupted first, so that
        history stays true."""
        self.start_runs([RunStart(run_id, event_id, source, trigger, worker, file_path, file_size)])

    def start_runs(self, runs: list[RunStart]) -> None:
        """``start_run`` for several runs, in one commit."""
        event_ids = [run.event_id for run in runs if run.event_id is not None]
        if event_ids:
            self.close_interrupted(event_ids, "the event was redelivered")
        with self.conn.cursor() as cur:
            psycopg2.extras.execute_values(
                cur, "INSERT INTO ops.pipeline_runs (run_id, event_id, source, trigger, status, worker,"
                     " file_path, file_size) VALUES %s",
                [(run.run_id, run.event_id, storable_text(run.source), run.trigger, run.worker,
                  storable_text(run.file_path), run.file_size) for run in runs],
                template="(%s, %s, %s, %s, 'running', %s, %s, %s)")
        self.conn.commit()

    def close_interrupted(self, event_ids: list[str], what_followed: str) -> None:
        """Close the runs of these events still marked running (no commit)."""
        self._run("UPDATE ops.pipeline_runs SET status = 'failure', finished_at = now(), error_summary = %s"
                  " WHERE event_id = ANY(%s::uuid[]) AND status = 'running'", (f"{INTERRUPTED}; {what_followed}",
                                                                              event_ids))

    def finish_run(self, run_id: uuid.UUID, status: str, *, rows_total: int | None = None,
                   rows_valid: int | None = None, rows_invalid: int | None = None, error: str | None = None,
                   reason: str | None = None, checksum: str | None = None,
                   quality: dict[str, Any] | None = None) -> None:
        """Set a run's final status (no commit)."""
        # clock_timestamp(): now() would be the start of the load's transaction.
        self._run("UPDATE ops.pipeline_runs SET status = %s, finished_at = clock_timestamp(), rows_total = %s,"
                  " rows_valid = %s, rows_invalid = %s, error_summary = %s, reason = %s,"
                  " checksum = COALESCE(%s, checksum), quality = %s WHERE run_id = %s",
                  (status, rows_total, rows_valid, rows_invalid, storable_text(error), reason, checksum,
                   None if quality is None else Json(storable(quality)), run_id))

    def record_loads(self, loads: list[LoadRecord]) -> dict[uuid.UUID, list[str]]:
        """Loads done: their manifest rows, their runs a success, and the
        fields their schemas do not declare. No commit; one round trip
        however many (the values quoted by psycopg2, as parameters). Returns,
        per run, the undeclared fields its source had never held before."""
        with self.conn.cursor() as cur:
            manifest = b", ".join(cur.mogrify(
                "(%s, %s, %s, %s, %s, %s, %s)",
                (e.source, storable_text(e.source_filename), e.checksum, e.size_bytes, e.row_count, e.run_id,
                 e.event_id)) for e, _, _, _, _ in loads)
            runs = b", ".join(cur.mogrify(
                "(%s::uuid, %s::bigint, %s::bigint, %s::bigint, %s::text, %s::text, %s::jsonb)",
                (e.run_id, e.row_count, valid, invalid, storable_text(remarks), e.checksum,
                 None if quality is None else Json(storable(quality))))
                for e, valid, invalid, remarks, quality in loads)
            # In one order, so that two loads adding the same fields cannot deadlock; a field that
            # several of these loads hold is first seen in the first of them (rows after it conflict).
            fields = [cur.mogrify("(%s, %s, %s::uuid)", (source, name, run_id)) for source, name, _, run_id in sorted(
                {(e.source, storable_text(name), n, e.run_id) for n, (e, _, _, _, quality) in enumerate(loads)
                 for name in (quality or {}).get("undeclared_fields", ())}, key=lambda item: item[:3])]
            # Last, so that its rows are what the cursor holds.
            new_fields = (b"; INSERT INTO ops.undeclared_fields (source, field, first_run) VALUES "
                          + b", ".join(fields) + b" ON CONFLICT DO NOTHING RETURNING first_run, field"
                          if fields else b"")
            cur.execute(b"INSERT INTO ops.raw_ingest_manifest (source, source_filename, checksum, size_bytes,"
                        b" row_count, run_id, event_id) VALUES " + manifest + b";"
                        b" UPDATE ops.pipeline_runs r SET status = 'success', finished_at = clock_timestamp(),"
                        b" rows_total = v.total, rows_valid = v.valid, rows_invalid = v.invalid,"
                        b" error_summary = v.remarks, checksum = v.checksum, quality = v.quality"
                        b" FROM (VALUES " + runs + b") AS v(run_id, total, valid, invalid, remarks, checksum,"
                        b" quality) WHERE r.run_id = v.run_id" + new_fields)
            found: dict[uuid.UUID, list[str]] = {}
            for run_id, name in (cur.fetchall() if fields else ()):
                found.setdefault(uuid.UUID(str(run_id)), []).append(name)
            return found

    def skip_run(self, run_id: uuid.UUID, why: str, checksum: str | None = None) -> None:
        """Finish a run as ``skipped``, saying why; commits."""
        self.finish_run(run_id, "skipped", rows_total=0, rows_valid=0, rows_invalid=0, error=why, checksum=checksum)
        self.conn.commit()

    def record_failed_run(self, run: FailedRun) -> uuid.UUID:
        """Insert a run that is over as it starts: a failure (no commit)."""
        run_id = uuid.uuid4()
        trigger = run.trigger if run.trigger in TRIGGERS else "file"
        self._run("INSERT INTO ops.pipeline_runs (run_id, event_id, source, trigger, status, finished_at,"
                  " error_summary, reason, worker, file_path)"
                  " VALUES (%s, %s, %s, %s, 'failure', now(), %s, %s, %s, %s)",
                  (run_id, run.event_id, storable_text((run.source or "(unknown)")[:255]), trigger,
                   storable_text(run.error[:2000]), run.reason, run.worker, storable_text(run.file_path)))
        return run_id

    def append_run_error(self, run_id: uuid.UUID, message: str) -> None:
        """Add a note to a finished run (the file could not be archived); commits."""
        self._run("UPDATE ops.pipeline_runs SET error_summary = concat_ws('; ', error_summary, %s) WHERE run_id = %s",
                  (storable_text(message), run_id))
        self.conn.commit()

    def earlier_handling(self, source: str, file_path: str, file_size: int, exclude: uuid.UUID) -> str | None:
        """How an earlier run dealt with the same file (path and size) and
        moved it away: loaded or skipped, then archived; or dead-lettered,
        then quarantined. None when no run did.

        Used when a file named by an event is gone: a second event for a file
        already handled (a rescan raced the first load) is not a failure."""
        row = self._one(
            "SELECT r.run_id, r.status, d.id, d.file_path FROM ops.pipeline_runs r"
            " LEFT JOIN ops.dead_letters d ON d.run_id = r.run_id"
            " WHERE r.source = %s AND r.file_path = %s AND r.file_size = %s AND r.run_id <> %s"
            " AND (r.status IN ('success', 'skipped') OR (r.status = 'failure' AND d.id IS NOT NULL))"
            " ORDER BY r.finished_at DESC LIMIT 1",
            (storable_text(source), storable_text(file_path), file_size, exclude))
        if row is None:
            return None
        run_id, status, dead_letter_id, where = row
        if status == "failure":
            return f"dead-lettered as #{dead_letter_id} by run {run_id}" + (f", now at {where}" if where else "")
        return f"{status} by run {run_id}"

    def recent_runs(self, status: str | None = None, source: str | None = None, since: datetime | None = None,
                    limit: int = 20, run_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
        tests = (("status = %s", status), ("source = %s", source), ("started_at >= %s", since),
                 ("run_id = %s", run_id))
        clauses = [clause for clause, value in tests if value]
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._all(f"SELECT {', '.join(RUN_COLUMNS)} FROM ops.pipeline_runs{where}"
                         " ORDER BY started_at DESC LIMIT %s", [v for _, v in tests if v] + [limit])
        return [dict(zip(RUN_COLUMNS, row, strict=True)) for row in rows]

    def run(self, run_id: str) -> dict[str, Any] | None:
        keys = ("status", "started_at", "finished_at", "worker", "error_summary")
        row = self._one(f"SELECT {', '.join(keys)} FROM ops.pipeline_runs WHERE run_id = %s", (run_id,))
        return dict(zip(keys, row, strict=True)) if row else None

    def replay_run(self, event_id: str, since: datetime) -> dict[str, Any] | None:
        """The first run of a replay of ``event_id`` started after ``since``."""
        keys = ("run_id", "status", "finished_at", "error_summary")
        row = self._one(f"SELECT {', '.join(keys)} FROM ops.pipeline_runs WHERE event_id = %s AND trigger = 'replay'"
                        " AND started_at >= %s ORDER BY started_at LIMIT 1", (event_id, since))
        return dict(zip(keys, row, strict=True)) if row else None

    def run_outcomes(self, event_ids: list[str], since: datetime) -> dict[str, int]:
        """How many of these events' latest runs since ``since`` ended in each status."""
        if not event_ids:
            return {}
        rows = self._all("SELECT DISTINCT ON (event_id) event_id, status FROM ops.pipeline_runs"
                         " WHERE event_id = ANY(%s::uuid[]) AND started_at >= %s AND status <> 'running'"
                         " ORDER BY event_id, started_at DESC", (event_ids, since))
        self.conn.commit()
        counts: dict[str, int] = {}
        for _, status in rows:
            counts[status] = counts.get(status, 0) + 1
        return counts

    # -- manifest ------------------------------------------------------------
    def loaded_event(self, event_id: str) -> dict[str, Any] | None:
        """The manifest row of an event already loaded; ends the transaction,
        so that none stays open while the input is read."""
        row = self._one("SELECT run_id, source_filename, checksum FROM ops.raw_ingest_manifest WHERE event_id = %s",
                        (event_id,))
        self.conn.rollback()
        return None if row is None else {"run_id": row[0], "source_filename": row[1], "checksum": row[2]}

    def loaded_events(self, event_ids: list[str]) -> set[str]:
        """Which of these events are loaded already; ends the transaction."""
        rows = self._all("SELECT event_id::text FROM ops.raw_ingest_manifest WHERE event_id = ANY(%s::uuid[])",
                         (event_ids,))
        self.conn.rollback()
        return {row[0] for row in rows}

    def claim(self, loads: list[tuple[str, str]]) -> list[bool]:
        """For a group's loads, as ``(source, checksum)``: take each one's
        dedup lock without waiting, in one statement. True where the lock
        was free and the bytes are not in the manifest (neither loaded nor
        expired: a load again after retention takes the single way, which
        says so); the locks are held until the transaction ends. A group
        never waits on another worker, so two groups cannot deadlock."""
        if not loads:
            return []
        rows = self._all(
            "SELECT pg_try_advisory_xact_lock(t.k) AND NOT EXISTS (SELECT 1 FROM ops.raw_ingest_manifest m"
            " WHERE m.source = t.s AND m.checksum = t.c AND m.status = 'loaded') AND NOT EXISTS (SELECT 1"
            " FROM ops.raw_ingest_manifest m WHERE m.source = t.s AND m.checksum = t.c AND m.status = 'expired')"
            " FROM unnest(%s::bigint[], %s::text[], %s::text[]) WITH ORDINALITY AS t(k, s, c, n) ORDER BY t.n",
            ([lock_key(source, checksum) for source, checksum in loads], [source for source, _ in loads],
             [checksum for _, checksum in loads]))
        return [bool(row[0]) for row in rows]

    def loaded_bytes(self, source: str, checksum: str) -> dict[str, Any] | None:
        """The manifest row of the same bytes loaded into ``source``: the one
        whose rows bronze holds, all or some (``status`` 'loaded'), else the
        latest whose rows retention dropped ('expired'); None when never
        loaded (no commit)."""
        keys = ("status", "run_id", "source_filename", "ingested_at", "row_count", "rows_expired", "expired_at",
                "expired_partition")
        columns = ", ".join(keys)
        row = self._one(f"(SELECT {columns} FROM ops.raw_ingest_manifest WHERE source = %s AND checksum = %s"
                        " AND status = 'loaded') UNION ALL"
                        f" (SELECT {columns} FROM ops.raw_ingest_manifest WHERE source = %s AND checksum = %s"
                        " AND status = 'expired' ORDER BY expired_at DESC LIMIT 1) LIMIT 1",
                        (source, checksum, source, checksum))
        return None if row is None else dict(zip(keys, row, strict=True))

    # -- dead letters --------------------------------------------------------
    def add_dead_letter(self, *, event_id: str | None, source: str | None, reason: str, error: str,
                        detail: dict[str, Any], event: Any, run_id: uuid.UUID | None, file_path: str | None,
                        replay_count: int = 0) -> int:
        """Insert a dead letter (no commit); returns its id."""
        row = self._one(
            "INSERT INTO ops.dead_letters (event_id, source, reason, error, detail, event, run_id, file_path,"
            " replay_count) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (event_id, storable_text(source), reason, storable_text(error), Json(storable(detail)),
             Json(storable(event)), run_id, storable_text(file_path), replay_count))
        assert row is not None
        return row[0]

    def waiting_dead_letter(self, event_id: str, replay_count: int) -> dict[str, Any] | None:
        """The waiting dead letter of this delivery of an event (same replay),
        if an earlier delivery of the same message already recorded one."""
        row = self._one(f"SELECT id, file_path FROM ops.dead_letters WHERE event_id = %s AND replay_count = %s"
                        f" AND {WAITING} ORDER BY id DESC LIMIT 1", (event_id, replay_count))
        return None if row is None else {"id": row[0], "file_path": row[1]}

    def next_replay_count(self, event_id: str) -> int:
        """The replay count of a new failure of ``event_id``: one more than
        its last replayed dead letter, 0 when none was replayed (no commit)."""
        row = self._one("SELECT max(replay_count) + 1 FROM ops.dead_letters WHERE event_id = %s"
                        " AND replayed_at IS NOT NULL", (event_id,))
        return row[0] if row and row[0] is not None else 0

    def replayed_from_quarantine(self, event_id: str, file_path: str, replay_count: int) -> bool:
        """True when an earlier dead letter of this event holds ``file_path``
        in quarantine and was replayed, the replay before ``replay_count``:
        the file that a failed replay carries on (no commit)."""
        row = self._one("SELECT 1 FROM ops.dead_letters WHERE event_id = %s AND file_path = %s"
                        " AND replay_count = %s AND replayed_at IS NOT NULL LIMIT 1",
                        (event_id, storable_text(file_path), replay_count - 1))
        return row is not None

    def unfinished_run(self, event_id: str, source: str, file_path: str, file_size: Any) -> uuid.UUID | None:
        """The run a consumer started for this event and never finished
        (still ``running``: the trace a delivery cut off leaves), when it is
        the event's latest run and took the same source, file path and size.
        None otherwise: no consumer is known to have taken this event on that
        file, whatever a message says (no commit)."""
        row = self._one("SELECT run_id, status, source, file_path, file_size FROM ops.pipeline_runs"
                        " WHERE event_id = %s ORDER BY started_at DESC LIMIT 1", (event_id,))
        if row is None:
            return None
        run_id, status, taken_source, taken_path, taken_size = row
        size_matches = type(file_size) is int and taken_size == file_size
        if status != "running" or not size_matches or taken_source != storable_text(source) \
                or taken_path != storable_text(file_path):
            return None
        return run_id

    def consumer_took(self, event_id: str, source: str, file_paths: list[str], exclude: uuid.UUID | str | None) -> bool:
        """True when a run other than ``exclude`` (a dead letter's own
        record) took this event on one of ``file_paths`` of ``source``: a
        consumer handled it, not just a message naming it (no commit)."""
        row = self._one("SELECT 1 FROM ops.pipeline_runs WHERE event_id = %s AND source = %s"
                        " AND file_path = ANY(%s) AND run_id IS DISTINCT FROM %s LIMIT 1",
                        (event_id, storable_text(source), [storable_text(p) for p in file_paths], exclude))
        return row is not None

    def note_file_moved(self, dead_letter_id: int, relative: str | None, error: str | None) -> None:
        """Where a dead letter's file went (quarantine), or why it stayed; commits."""
        self._run("UPDATE ops.dead_letters SET file_path = COALESCE(%s, file_path), detail = detail || %s::jsonb"
                  " WHERE id = %s", (storable_text(relative),
                                     json.dumps({"quarantine_error": storable_text(error)} if error else {}),
                                     dead_letter_id))
        self.conn.commit()

    def dead_letters(self, selector: Selector, limit: int | None = None) -> list[DeadLetter]:
        where, params = selector.where()
        rows = self._all(f"SELECT {', '.join(DEAD_LETTER_COLUMNS)} FROM ops.dead_letters{where} ORDER BY id"
                         + (" LIMIT %s" if limit else ""), params + ([limit] if limit else []))
        return [DeadLetter(*row) for row in rows]

    def dead_letter_history(self, event_id: str) -> list[DeadLetter]:
        """Every dead letter of one event: the first failure and each failed replay."""
        rows = self._all(f"SELECT {', '.join(DEAD_LETTER_COLUMNS)} FROM ops.dead_letters WHERE event_id = %s"
                         " ORDER BY id", (event_id,))
        return [DeadLetter(*row) for row in rows]

    def waiting_by_source_reason(self) -> dict[tuple[str | None, str], int]:
        """Dead letters waiting, counted per (source, reason)."""
        return {(source, reason): count for source, reason, count in self._all(
            f"SELECT source, reason, count(*) FROM ops.dead_letters WHERE {WAITING} GROUP BY source, reason")}

    def waiting_count(self) -> int:
        row = self._one(f"SELECT count(*) FROM ops.dead_letters WHERE {WAITING}")
        return row[0] if row else 0

    def mark_replayed(self, dead_letter_id: int) -> bool:
        """Stamp a waiting dead letter replayed; False when it no longer waits. Commits."""
        row = self._one(f"UPDATE ops.dead_letters SET replayed_at = now() WHERE id = %s AND {WAITING} RETURNING id",
                        (dead_letter_id,))
        self.conn.commit()
        return row is not None

    def unmark_replayed(self, dead_letter_id: int) -> None:
        """Take a replay stamp back (its publish failed); commits."""
        self._run("UPDATE ops.dead_letters SET replayed_at = NULL WHERE id = %s", (dead_letter_id,))
        self.conn.commit()

    def mark_discarded(self, dead_letter_id: int, note: str | None) -> bool:
        """Stamp a waiting dead letter discarded; False when it no longer waits. Commits."""
        row = self._one(f"UPDATE ops.dead_letters SET discarded_at = now(), note = %s WHERE id = %s AND {WAITING}"
                        " RETURNING id", (storable_text(note), dead_letter_id))
        self.conn.commit()
        return row is not None

    def settled_messages(self, event_ids: list[str]) -> set[tuple[str, int]]:
        """(event id, replay count) of dead messages no dead letter waits for."""
        rows = self._all(f"SELECT event_id::text, replay_count, bool_or({WAITING}) FROM ops.dead_letters"
                         " WHERE event_id = ANY(%s::uuid[]) GROUP BY 1, 2", (event_ids,))
        self.conn.commit()
        return {(event_id, count) for event_id, count, waiting in rows if not waiting}

    # -- API sources ---------------------------------------------------------
    def seen_observations(self, source: str, keys: list[str]) -> set[tuple[str, str]]:
        """(record key, fingerprint) of the observations of ``source`` already
        loaded, among ``keys``; holds the source's observation lock until the
        transaction ends, so two loads of one source do not both take one."""
        self.lock("observations", source)
        rows = self._all("SELECT record_key, fingerprint FROM ops.api_observations WHERE source = %s"
                         " AND record_key = ANY(%s)", (source, keys))
        return {(key, fingerprint) for key, fingerprint in rows}

    def add_observations(self, source: str, run_id: uuid.UUID, observations: list[tuple[str, str]]) -> None:
        if not observations:
            return
        with self.conn.cursor() as cur:
            psycopg2.extras.execute_values(
                cur, "INSERT INTO ops.api_observations (source, record_key, fingerprint, run_id) VALUES %s"
                " ON CONFLICT DO NOTHING", [(source, key, fingerprint, run_id) for key, fingerprint in observations])

    def poll_state(self, source: str) -> tuple[dict[str, Any], datetime | None, str | None]:
        """(cursor, next poll, last status) of an API source."""
        row = self._one("SELECT cursor, next_poll_at, last_status FROM ops.poll_state WHERE source = %s", (source,))
        return (row[0], row[1], row[2]) if row else ({}, None, None)

    def save_poll_state(self, source: str, cursor: dict[str, Any], status: str, next_poll: datetime) -> None:
        self._run("INSERT INTO ops.poll_state (source, cursor, last_polled_at, last_status, next_poll_at, updated_at)"
                  " VALUES (%s, %s, now(), %s, %s, now()) ON CONFLICT (source) DO UPDATE SET cursor = EXCLUDED.cursor,"
                  " last_polled_at = now(), last_status = EXCLUDED.last_status,"
                  " next_poll_at = EXCLUDED.next_poll_at, updated_at = now()",
                  (source, Json(cursor), storable_text(status[:500]), next_poll))

    def poll_states(self) -> list[dict[str, Any]]:
        rows = self._all("SELECT source, next_poll_at, last_polled_at, last_status FROM ops.poll_state ORDER BY 1")
        return [{"source": s, "next_poll_at": n, "last_polled_at": p, "last_status": st} for s, n, p, st in rows]

    # -- reports -------------------------------------------------------------
    def is_migrated(self) -> bool:
        row = self._one("SELECT to_regclass('ops.pipeline_runs') IS NOT NULL")
        return bool(row and row[0])

    def last_successes(self, configured: list[str]) -> dict[str, float]:
        """Unix time of each configured source's last successful run, where it has one."""
        rows = self._all("SELECT n.source, extract(epoch FROM (SELECT max(finished_at) FROM ops.pipeline_runs r"
                         " WHERE r.source = n.source AND status = 'success'))::float8"
                         " FROM unnest(%s::text[]) AS n(source)", (configured,))
        return {source: when for source, when in rows if when is not None}

    def source_summaries(self, configured: list[str]) -> list[dict[str, Any]]:
        """Per source (configured, run in the last week, or with waiting dead
        letters): last success and failure, rows today, dead letters waiting."""
        # The sources that ran are found by skipping through the (source, …)
        # index, one probe a source, rather than by reading a week of runs.
        rows = self._all(f"""
            WITH RECURSIVE ran(source) AS (
                (SELECT source FROM ops.pipeline_runs ORDER BY source LIMIT 1)
                UNION ALL
                SELECT (SELECT r.source FROM ops.pipeline_runs r WHERE r.source > ran.source ORDER BY r.source
                        LIMIT 1)
                FROM ran WHERE ran.source IS NOT NULL),
            names AS (
                SELECT unnest(%s::text[]) AS source
                UNION SELECT ran.source FROM ran WHERE ran.source IS NOT NULL AND EXISTS (
                    SELECT 1 FROM ops.pipeline_runs r WHERE r.source = ran.source
                    AND r.started_at > now() - interval '7 days')
                UNION SELECT DISTINCT source FROM ops.dead_letters WHERE source IS NOT NULL AND {WAITING})
            SELECT n.source,
                (SELECT max(finished_at) FROM ops.pipeline_runs r WHERE r.source = n.source AND status = 'success'),
                (SELECT max(finished_at) FROM ops.pipeline_runs r WHERE r.source = n.source AND status = 'failure'),
                (SELECT coalesce(sum(rows_total), 0) FROM ops.pipeline_runs r WHERE r.source = n.source
                    AND status = 'success' AND finished_at >= date_trunc('day', now())),
                (SELECT count(*) FROM ops.dead_letters d WHERE d.source = n.source AND {WAITING})
            FROM names n ORDER BY n.source""", (configured,))
        return [{"source": name, "configured": name in configured, "last_success": ok, "last_failure": fail,
                 "rows_today": int(rows_today), "dead_letters_waiting": waiting}
                for name, ok, fail, rows_today, waiting in rows]

    def source_quality(self, names: list[str], fields_shown: int = 5) -> dict[str, dict[str, Any]]:
        """Per source: records checked and invalid in runs started in the
        last hour and the last day (loads, and files refused as
        ``schema_rejected``), and the fields its records held that its schema
        does not declare: how many in all, and the first ``fields_shown`` of
        those first seen in the last day."""
        rows = self._all("""
            SELECT n.source, h.checked, h.invalid, d.checked, d.invalid,
                (SELECT count(*) FROM ops.undeclared_fields u WHERE u.source = n.source),
                (SELECT count(*) FROM ops.undeclared_fields u WHERE u.source = n.source
                    AND u.first_seen_at > now() - interval '1 day'),
                ARRAY(SELECT u.field FROM ops.undeclared_fields u WHERE u.source = n.source
                    AND u.first_seen_at > now() - interval '1 day' ORDER BY u.first_seen_at DESC, u.field
                    LIMIT %s)
            FROM unnest(%s::text[]) AS n(source)
            CROSS JOIN LATERAL (
                SELECT coalesce(sum(coalesce(r.rows_valid, 0) + coalesce(r.rows_invalid, 0)), 0),
                       coalesce(sum(r.rows_invalid), 0)
                FROM ops.pipeline_runs r WHERE r.source = n.source AND r.started_at > now() - interval '1 hour'
                AND r.status IN ('success', 'failure')) AS h(checked, invalid)
            CROSS JOIN LATERAL (
                SELECT coalesce(sum(coalesce(r.rows_valid, 0) + coalesce(r.rows_invalid, 0)), 0),
                       coalesce(sum(r.rows_invalid), 0)
                FROM ops.pipeline_runs r WHERE r.source = n.source AND r.started_at > now() - interval '1 day'
                AND r.status IN ('success', 'failure')) AS d(checked, invalid)""", (fields_shown, names))
        return {name: {"last_hour": {"checked": int(hc), "invalid": int(hi)},
                       "last_day": {"checked": int(dc), "invalid": int(di)},
                       "undeclared_fields": int(total), "undeclared_new_today": int(new),
                       "undeclared_new_today_names": list(shown)}
                for name, hc, hi, dc, di, total, new, shown in rows}

    # -- retention -----------------------------------------------------------
    def expire_loads(self, source: str, partition: str) -> int:
        """Before retention drops ``bronze.<partition>`` (detached, in the
        drop's transaction): count its rows against the loads they came
        from; a load whose rows are then all gone becomes ``expired``, with
        when and this partition. How many did (no commit)."""
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL(
                "WITH gone AS (SELECT pipeline_run_id AS run_id, file_hash AS checksum, count(*) AS n FROM {}"
                " GROUP BY 1, 2), done AS (UPDATE ops.raw_ingest_manifest m"
                " SET rows_expired = least(m.row_count, m.rows_expired + g.n),"
                " status = CASE WHEN m.rows_expired + g.n >= m.row_count THEN 'expired' ELSE 'loaded' END,"
                " expired_at = CASE WHEN m.rows_expired + g.n >= m.row_count THEN now() END,"
                " expired_partition = CASE WHEN m.rows_expired + g.n >= m.row_count THEN %s END"
                " FROM gone g WHERE m.source = %s AND m.checksum = g.checksum AND m.run_id = g.run_id"
                " AND m.status = 'loaded' RETURNING m.status)"
                " SELECT count(*) FROM done WHERE status = 'expired'").format(
                    sql.Identifier("bronze", partition)), (partition, source))
            return int(cur.fetchone()[0])

    # -- partitions ----------------------------------------------------------
    def record_partition(self, source: str, partition: str, action: str, lower: datetime | None,
                         upper: datetime | None, by: str, rows: int | None = None, size: int | None = None) -> None:
        """A month made, detached or dropped, or a table migrated
        (``action``), as a row of ``ops.partition_log`` (no commit)."""
        self._run("INSERT INTO ops.partition_log (source, partition, action, range_from, range_to, rows, bytes,"
                  " by_whom) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                  (source, partition, action, lower, upper, rows, size, by))
