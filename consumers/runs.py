"""Rows of ``ops.pipeline_runs`` and ``ops.raw_ingest_manifest``.

Text written here may come from anywhere (file names, event bodies, error
messages quoting data): it is made storable first, so that recording a
failure cannot fail. PostgreSQL text holds no U+0000 and no lone surrogate.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg2.extensions
from psycopg2.extras import Json

from ingestd.daemon import landing


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


def start_run(conn: psycopg2.extensions.connection, run_id: uuid.UUID, event_id: str | None, source: str,
              trigger: str, worker: str, file_path: str | None, file_size: int | None) -> None:
    """Record a run as ``running`` (committed at once, so it is visible while it works).

    A run of the same event still marked ``running`` was cut off (worker killed,
    database lost): it is closed as a failure first, so history stays true.
    """
    with conn.cursor() as cur:
        if event_id is not None:
            cur.execute(
                "UPDATE ops.pipeline_runs SET status = 'failure', finished_at = now(),"
                " error_summary = 'interrupted: the worker stopped before finishing; the event was redelivered'"
                " WHERE event_id = %s AND status = 'running'",
                (event_id,),
            )
        cur.execute(
            "INSERT INTO ops.pipeline_runs (run_id, event_id, source, trigger, status, worker, file_path, file_size)"
            " VALUES (%s, %s, %s, %s, 'running', %s, %s, %s)",
            (run_id, event_id, storable_text(source), trigger, worker, storable_text(file_path), file_size),
        )
    conn.commit()


def finish_run(cur: psycopg2.extensions.cursor, run_id: uuid.UUID, status: str, *, rows_total: int | None = None,
               rows_valid: int | None = None, rows_invalid: int | None = None, error: str | None = None,
               reason: str | None = None, checksum: str | None = None) -> None:
    """Set a run's final status (inside the caller's transaction)."""
    cur.execute(
        # clock_timestamp(): now() would be the start of the load's transaction.
        "UPDATE ops.pipeline_runs SET status = %s, finished_at = clock_timestamp(), rows_total = %s, rows_valid = %s,"
        " rows_invalid = %s, error_summary = %s, reason = %s, checksum = COALESCE(%s, checksum)"
        " WHERE run_id = %s",
        (status, rows_total, rows_valid, rows_invalid, storable_text(error), reason, checksum, run_id),
    )


def append_run_error(conn: psycopg2.extensions.connection, run_id: uuid.UUID, message: str) -> None:
    """Add a note to a finished run (e.g. the file could not be archived)."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE ops.pipeline_runs SET error_summary = concat_ws('; ', error_summary, %s) WHERE run_id = %s",
            (storable_text(message), run_id),
        )
    conn.commit()


def manifest_by_checksum(cur: psycopg2.extensions.cursor, source: str, checksum: str) -> dict[str, Any] | None:
    cur.execute(
        "SELECT run_id, source_filename, ingested_at FROM ops.raw_ingest_manifest"
        " WHERE source = %s AND checksum = %s",
        (source, checksum),
    )
    row = cur.fetchone()
    return None if row is None else {"run_id": row[0], "source_filename": row[1], "ingested_at": row[2]}


def manifest_by_event(cur: psycopg2.extensions.cursor, event_id: str) -> dict[str, Any] | None:
    cur.execute("SELECT run_id, source_filename FROM ops.raw_ingest_manifest WHERE event_id = %s", (event_id,))
    row = cur.fetchone()
    return None if row is None else {"run_id": row[0], "source_filename": row[1]}


def earlier_handling(cur: psycopg2.extensions.cursor, source: str, file_path: str, file_size: int,
                     exclude: uuid.UUID) -> str | None:
    """How an earlier run dealt with the same file (path and size) and moved
    it away: loaded or skipped, then archived; or dead-lettered, then
    quarantined. None when no run did.

    Used when a file named by an event is gone: a second event for a file
    already handled (a rescan raced the first load) is not a failure.
    """
    cur.execute(
        "SELECT r.run_id, r.status, d.id, d.file_path FROM ops.pipeline_runs r"
        " LEFT JOIN ops.dead_letters d ON d.run_id = r.run_id"
        " WHERE r.source = %s AND r.file_path = %s AND r.file_size = %s AND r.run_id <> %s"
        " AND (r.status IN ('success', 'skipped') OR (r.status = 'failure' AND d.id IS NOT NULL))"
        " ORDER BY r.finished_at DESC LIMIT 1",
        (storable_text(source), storable_text(file_path), file_size, exclude),
    )
    row = cur.fetchone()
    if row is None:
        return None
    run_id, status, dead_letter_id, where = row
    if status == "failure":
        return f"dead-lettered as #{dead_letter_id} by run {run_id}" + (f", now at {where}" if where else "")
    return f"{status} by run {run_id}"


def insert_manifest(cur: psycopg2.extensions.cursor, entry: ManifestEntry) -> None:
    cur.execute(
        "INSERT INTO ops.raw_ingest_manifest (source, source_filename, checksum, size_bytes, row_count, run_id,"
        " event_id) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (entry.source, storable_text(entry.source_filename), entry.checksum, entry.size_bytes, entry.row_count,
         entry.run_id, entry.event_id),
    )


def insert_dead_letter(cur: psycopg2.extensions.cursor, *, event_id: str | None, source: str | None, reason: str,
                       error: str, detail: dict[str, Any], event: Any, run_id: uuid.UUID | None,
                       file_path: str | None, replay_count: int = 0) -> int:
    cur.execute(
        "INSERT INTO ops.dead_letters (event_id, source, reason, error, detail, event, run_id, file_path,"
        " replay_count) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (event_id, storable_text(source), reason, storable_text(error), Json(storable(detail)), Json(storable(event)),
         run_id, storable_text(file_path), replay_count),
    )
    return cur.fetchone()[0]


def open_dead_letter(cur: psycopg2.extensions.cursor, event_id: str, replay_count: int) -> dict[str, Any] | None:
    """The waiting dead letter of this delivery of an event (same replay), if
    an earlier delivery of the same message already recorded one."""
    cur.execute(
        "SELECT id, file_path FROM ops.dead_letters WHERE event_id = %s AND replay_count = %s"
        " AND replayed_at IS NULL AND discarded_at IS NULL ORDER BY id DESC LIMIT 1",
        (event_id, replay_count),
    )
    row = cur.fetchone()
    return None if row is None else {"id": row[0], "file_path": row[1]}
