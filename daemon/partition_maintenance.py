"""Maintenance of bronze tables partitioned by month (daemon/partitions.py):
the coming months made ahead of time, and retention.

Every consumer process runs it hourly (``maintenance_loop``), one at a time
across processes; ``ingestd partitions maintain`` runs it once.

Retention (``retention = "24 months"``) drops the partitions whose every row
is older than that: upper bound at or before now minus the retention, "now"
being the database server's (the clock that stamps ``ingested_at``), never
the maintaining host's. They go by ``DETACH PARTITION … CONCURRENTLY`` (loads
go on) then ``DROP TABLE``. Each month made or dropped is a row of
``ops.partition_log`` and a log line. In the drop's transaction, each load
with rows in the month counts them in the manifest; a load whose rows are
then all gone is ``expired`` there, and the same bytes dropped again load
anew (``Ledger.expire_loads``).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import psycopg2.extensions
from psycopg2 import sql

from .db import lock_key
from .ledger import Ledger
from .metrics import PARTITION_MAINTENANCE, PARTITIONS_DROPPED
from .partitions import (
    AHEAD_MONTHS,
    add_months,
    bronze_table,
    create_month,
    lock_source,
    measure,
    month_start,
    partition_name,
    past_retention,
    read_layout,
    server_now,
)
from .sources import SourceConfig

log = logging.getLogger(__name__)

# How often each consumer process runs maintenance (one at a time across
# processes: the others find the lock taken and skip).
MAINTAIN_EVERY_SECONDS = 3600.0
MAINTENANCE_LOCK = lock_key("ingestd.partitions.maintain")


@dataclass
class Step:
    """One thing maintenance does (or would do, in a dry run)."""

    source: str
    partition: str
    action: str  # "create", "drop"
    lower: datetime | None
    upper: datetime | None
    rows: int | None = None
    exact: bool = True
    bytes: int | None = None
    # How it is detached: CONCURRENTLY; FINALIZE when an earlier DETACH … CONCURRENTLY did
    # not finish; "" when an earlier round detached it and did not drop it.
    detach: str = "CONCURRENTLY"
    done: bool = False
    expired: int = 0  # loads whose last rows went with it (their bytes load again)


def plan(conn: psycopg2.extensions.connection, sources: Iterable[SourceConfig]) -> list[Step]:
    """What maintenance would do now (by the server's clock): months to make
    ahead, partitions past retention."""
    steps: list[Step] = []
    with conn.cursor() as cur:
        now = server_now(cur)
        for source in sources:
            if source.partition != "month":
                continue
            layout = read_layout(cur, source.name)
            if layout is None or not layout.managed:
                if layout is not None and not layout.partitioned:
                    log.warning("source is set to partition by month but its bronze table is a plain table",
                                extra={"step": "partitions", "status": "unpartitioned", "source": source.name,
                                       "fix": f"ingestd partitions migrate --source {source.name}"})
                continue
            this_month = month_start(now)
            for ahead in range(AHEAD_MONTHS + 1):
                month = add_months(this_month, ahead)
                if not layout.covers(month):
                    steps.append(Step(source.name, partition_name(source.name, month), "create", month,
                                      add_months(month, 1)))
            if source.retention_months:
                for p in layout.partitions:
                    if past_retention(p, source, now):
                        rows, counted, size = measure(cur, p.name)
                        steps.append(Step(source.name, p.name, "drop", p.lower, p.upper, rows, counted, size,
                                          "FINALIZE" if p.detaching else "CONCURRENTLY"))
                for name, lower, upper in _left_detached(cur, source.name):
                    rows, counted, size = measure(cur, name)
                    steps.append(Step(source.name, name, "drop", lower, upper, rows, counted, size, detach=""))
    conn.rollback()
    return steps


def _left_detached(cur: psycopg2.extensions.cursor, source: str) -> list[tuple[str, datetime, datetime]]:
    """Months an earlier round detached and did not drop (its connection
    went between the two): tables no longer attached whose last entry in
    ops.partition_log is ingestd's 'detached'. A table someone detached by
    hand has no such entry and stays."""
    cur.execute(
        "SELECT c.relname, l.range_from, l.range_to FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'bronze'"
        " JOIN LATERAL (SELECT action, range_from, range_to FROM ops.partition_log"
        "               WHERE source = %s AND partition = c.relname ORDER BY id DESC LIMIT 1) l ON true"
        " WHERE c.relkind = 'r' AND NOT c.relispartition AND l.action = 'detached' ORDER BY 2",
        (source,))
    return cur.fetchall()


def maintain(conn: psycopg2.extensions.connection, sources: Iterable[SourceConfig], by: str,
             dry_run: bool = False) -> list[Step] | None:
    """Make the coming months and drop what retention lets go, by the
    server's clock; the steps (done, or planned in a dry run). None when
    another process is at it."""
    sources = list(sources)
    if dry_run:
        return plan(conn, sources)
    with conn.cursor() as cur:
        # A session lock: it outlives the transactions below.
        cur.execute("SELECT pg_try_advisory_lock(%s)", (MAINTENANCE_LOCK,))
        taken = cur.fetchone()[0]
        conn.commit()
        if not taken:
            return None
        try:
            steps = plan(conn, sources)
            for step in steps:
                if step.action == "create":
                    _create_ahead(conn, step, by)
                else:
                    _drop(conn, step, by)
            return steps
        finally:
            conn.rollback()
            cur.execute("SELECT pg_advisory_unlock(%s)", (MAINTENANCE_LOCK,))
            conn.commit()


def _create_ahead(conn: psycopg2.extensions.connection, step: Step, by: str) -> None:
    assert step.lower is not None
    with conn.cursor() as cur:
        lock_source(cur, step.source)
        layout = read_layout(cur, step.source)
        if layout is not None and layout.managed and not layout.covers(step.lower):
            create_month(cur, step.source, step.lower, by, "ahead of time")
            step.done = True
    conn.commit()


def _drop(conn: psycopg2.extensions.connection, step: Step, by: str) -> None:
    """Detach (concurrently: loads go on) and drop one partition."""
    conn.commit()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            parent, part = bronze_table(step.source), bronze_table(step.partition)
            ledger = Ledger(conn)
            if step.detach:
                cur.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {} " + step.detach).format(parent, part))
                ledger.record_partition(step.source, step.partition, "detached", step.lower, step.upper, by,
                                        step.rows, step.bytes)
            conn.autocommit = False
            step.expired = ledger.expire_loads(step.source, step.partition)
            cur.execute(sql.SQL("DROP TABLE {}").format(part))
            ledger.record_partition(step.source, step.partition, "dropped", step.lower, step.upper, by, step.rows,
                                    step.bytes)
            conn.commit()
            step.done = True
    finally:
        conn.autocommit = False
    PARTITIONS_DROPPED.labels(step.source).inc()
    log.info("partition dropped by retention", extra={
        "step": "partitions", "status": "dropped", "source": step.source, "partition": f"bronze.{step.partition}",
        "from": step.lower.isoformat() if step.lower else None, "to": step.upper.isoformat() if step.upper else None,
        "rows": step.rows, "rows_exact": step.exact, "bytes": step.bytes, "loads_expired": step.expired})


def maintenance_loop(sources: Callable[[], Iterable[SourceConfig]], database_url: str, timeout: int,
                     stop: threading.Event, by: str, every: float = MAINTAIN_EVERY_SECONDS) -> None:
    """A consumer process's maintenance: at start, then every ``every``
    seconds, until ``stop``. Never raises: a failure is logged and tried
    again at the next round."""
    from .db import OnDemand

    database = OnDemand(database_url, timeout, "ingestd-partitions")
    try:
        while not stop.is_set():
            try:
                partitioned = [s for s in sources() if s.partition == "month"]
                if partitioned:
                    steps = maintain(database.get(), partitioned, by)
                    PARTITION_MAINTENANCE.labels("skipped" if steps is None else "ok").inc()
            except Exception as exc:  # noqa: BLE001 - next round tries again; the loads go on
                PARTITION_MAINTENANCE.labels("failed").inc()
                log.warning("partition maintenance failed; trying again at the next round", extra={
                    "step": "partitions", "status": "failed", "error": str(exc).strip()[:500]})
                database.drop()
            stop.wait(every)
    finally:
        database.drop()
