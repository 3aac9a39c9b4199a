"""The ledger's runs: ``ops.pipeline_runs``, a row per run, from start to finish.

Part of the ledger: callers use ``ledger.Ledger``.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2.extras
from psycopg2.extras import Json

from .ledger_base import LedgerBase, storable, storable_text

INTERRUPTED = "interrupted: the worker stopped before finishing"
TRIGGERS = ("file", "api", "replay", "manual")
RUN_COLUMNS = ("run_id", "event_id", "source", "trigger", "status", "started_at", "finished_at", "rows_total",
               "rows_valid", "rows_invalid", "error_summary", "reason", "worker", "file_path", "quality")


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


class RunLedger(LedgerBase):
    """Runs: started, finished, failed, and what they were."""

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
