"""Bronze tables partitioned by month, and their retention.

A source with ``partition = "month"`` gets ``bronze.<source>`` as a table
partitioned by range of ``ingested_at`` (or of ``source_timestamp``, with
``partition_by``), one partition per UTC month named ``<source>_pYYYY_MM``.
Its primary key is ``(id, <that column>)``: PostgreSQL requires the key of a
partitioned table to hold the partition column.

Months are made:

* ahead of time: this month and the next ``AHEAD_MONTHS``, when the table is
  made and at each maintenance (every consumer process, hourly);
* on demand, in the load's own transaction, when a load's month has none (a
  file whose ``source_timestamp`` is an old month, or a consumer that ran
  without maintenance). A load therefore never fails because its month is
  new. Makers of a source's months queue on a transaction-level advisory
  lock and look again once they hold it, so two workers never race.

A month is made as a table of its own, then attached: ``ATTACH PARTITION``
takes a SHARE UPDATE EXCLUSIVE lock on the parent, which other workers' COPY
(ROW EXCLUSIVE) does not wait for. ``CREATE TABLE … PARTITION OF`` would take
ACCESS EXCLUSIVE, held to the end of the load, and stall every other worker
of the source.

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

import calendar
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from .db import lock_key
from .ledger import Ledger
from .metrics import PARTITION_MAINTENANCE, PARTITIONS_DROPPED
from .sources import SourceConfig

log = logging.getLogger(__name__)

# Months made after the current one.
AHEAD_MONTHS = 2
# How often each consumer process runs maintenance (one at a time across
# processes: the others find the lock taken and skip).
MAINTAIN_EVERY_SECONDS = 3600.0
# Partitions up to this size are counted exactly by ``ingestd partitions``;
# above it the planner's estimate is shown (``--exact`` counts them all).
EXACT_COUNT_BYTES = 64 << 20
# A worker trusts its cached layout for ``ingested_at`` when the months a
# day either side of its own clock are covered; the server's clock may
# differ from the worker's, by less than that.
CLOCK_MARGIN = timedelta(days=1)
PARTITION_KEYS = ("ingested_at", "source_timestamp")
MAINTENANCE_LOCK = lock_key("ingestd.partitions.maintain")


class PartitionMissing(Exception):
    """A COPY met a row that no partition takes: the layout this worker
    cached was out of date (a partition dropped or a table migrated by
    another process). The load is tried once more with a fresh layout.
    Its message is the server's."""


class WouldWait(Exception):
    """Making a partition would wait on a lock; a group of loads never
    waits, so its member takes the single way."""


def month_start(value: datetime) -> datetime:
    """The first instant of ``value``'s UTC month."""
    value = value.astimezone(UTC)
    return datetime(value.year, value.month, 1, tzinfo=UTC)


def add_months(value: datetime, months: int) -> datetime:
    """``value`` moved by whole months, the day kept where the month has it
    (31 March minus a month is 28 or 29 February)."""
    index = value.year * 12 + value.month - 1 + months
    year, month = divmod(index, 12)
    day = min(value.day, calendar.monthrange(year, month + 1)[1])
    return value.replace(year=year, month=month + 1, day=day)


def partition_name(source: str, month: datetime) -> str:
    return f"{source}_p{month.year:04d}_{month.month:02d}"


def _table(name: str) -> sql.Composed:
    return sql.SQL("bronze.{}").format(sql.Identifier(name))


def retention_cutoff(now: datetime, months: int) -> datetime:
    """Rows before this instant are past a retention of ``months``."""
    return add_months(now.astimezone(UTC), -months)


def server_now(cur: psycopg2.extensions.cursor) -> datetime:
    """The database server's clock (its transaction's start), in UTC: the one
    that stamps ``ingested_at``. Months and retention go by it, so that a
    host whose clock is off neither drops fresh rows nor keeps old ones."""
    cur.execute("SELECT now()")
    return cur.fetchone()[0].astimezone(UTC)


@dataclass(frozen=True)
class Partition:
    name: str
    lower: datetime | None  # None: MINVALUE, or the DEFAULT partition
    upper: datetime | None  # None: MAXVALUE, or the DEFAULT partition
    default: bool = False
    detaching: bool = False  # a DETACH … CONCURRENTLY that did not finish


@dataclass
class Layout:
    """What the catalog says of ``bronze.<source>``."""

    column: str | None  # the partition key; None for a plain table
    partitions: list[Partition] = field(default_factory=list)

    @property
    def partitioned(self) -> bool:
        return self.column is not None

    @property
    def managed(self) -> bool:
        """Partitioned by one of the columns ingestd places months by."""
        return self.column in PARTITION_KEYS

    def covers(self, value: datetime) -> bool:
        for p in self.partitions:
            if p.detaching:
                continue
            if p.default or ((p.lower is None or p.lower <= value) and (p.upper is None or value < p.upper)):
                return True
        return False


def read_layout(cur: psycopg2.extensions.cursor, source: str) -> Layout | None:
    """The table's layout; None when ``bronze.<source>`` does not exist."""
    cur.execute(
        "SELECT c.oid, c.relkind::text, a.attname FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_partitioned_table pt ON pt.partrelid = c.oid AND pt.partstrat = 'r' AND pt.partnatts = 1"
        " LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = pt.partattrs[0]"
        " WHERE n.nspname = 'bronze' AND c.relname = %s", (source,))
    row = cur.fetchone()
    if row is None:
        return None
    oid, kind, column = row
    if kind != "p":
        return Layout(None)
    if column not in PARTITION_KEYS:
        return Layout(column or "?")
    # Bounds as PostgreSQL prints them (in this session's time zone), read
    # back as timestamptz by the same session.
    cur.execute(
        "SELECT ch.relname, substring(b from $$FROM \\('([^']*)'\\)$$)::timestamptz,"
        " substring(b from $$TO \\('([^']*)'\\)$$)::timestamptz, b = 'DEFAULT', i.inhdetachpending"
        " FROM pg_inherits i JOIN pg_class ch ON ch.oid = i.inhrelid,"
        " LATERAL pg_get_expr(ch.relpartbound, ch.oid) AS b"
        " WHERE i.inhparent = %s ORDER BY 2 NULLS FIRST, 1", (oid,))
    return Layout(column, [Partition(*r) for r in cur.fetchall()])


def lock_source(cur: psycopg2.extensions.cursor, source: str, wait: bool = True) -> bool:
    """The transaction-level lock under which a source's table and months
    are made (the one ``consumers.bronze.ensure_bronze_table`` takes)."""
    key = lock_key("bronze", source)
    if wait:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        return True
    cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (key,))
    return bool(cur.fetchone()[0])


def create_partitioned(cur: psycopg2.extensions.cursor, source: str, column: str, by: str,
                       like: str = "_template", table: str | None = None) -> None:
    """Make ``bronze.<source>`` partitioned by month of ``column``, with this
    month and the next ones; in the caller's transaction, under its lock.
    ``table``: another name for it (a migration's new table), its months
    still named after ``source``; ``like``: the table whose columns it takes."""
    if column not in PARTITION_KEYS:
        raise ValueError(f"partition_by must be one of {', '.join(PARTITION_KEYS)}")
    table = table or source
    cur.execute(sql.SQL(
        "CREATE TABLE {} (LIKE {} INCLUDING ALL EXCLUDING INDEXES, PRIMARY KEY (id, {}))"
        " PARTITION BY RANGE ({})").format(_table(table), _table(like), sql.Identifier(column),
                                           sql.Identifier(column)))
    cur.execute(sql.SQL("COMMENT ON TABLE {} IS %s").format(_table(table)), (_comment(column),))
    now = month_start(server_now(cur))
    for ahead in range(AHEAD_MONTHS + 1):
        create_month(cur, source, add_months(now, ahead), by, "with the table", parent=table)


def _comment(column: str) -> str:
    return f"ingestd bronze table, partitioned by month of {column} (ingestd partitions)"


def create_month(cur: psycopg2.extensions.cursor, source: str, month: datetime, by: str, why: str,
                 parent: str | None = None) -> str:
    """Make and attach ``<source>_pYYYY_MM``; the caller holds the source's lock.
    ``parent``: the partitioned table, when it is not (yet) ``bronze.<source>``."""
    name = partition_name(source, month)
    lower, upper = month, add_months(month, 1)
    parent = parent or source
    cur.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE"
                        " INCLUDING COMPRESSION)").format(_table(name), _table(parent)))
    cur.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM (%s) TO (%s)").format(
        _table(parent), _table(name)), (lower, upper))
    _record(cur, source, name, "created", lower, upper, None, None, by)
    log.info("partition created", extra={"step": "partitions", "status": "created", "source": source,
                                         "partition": f"bronze.{name}", "from": lower.isoformat(),
                                         "to": upper.isoformat(), "why": why})
    return name


def _record(cur: psycopg2.extensions.cursor, source: str, name: str, action: str, lower: datetime | None,
            upper: datetime | None, rows: int | None, size: int | None, by: str) -> None:
    cur.execute("INSERT INTO ops.partition_log (source, partition, action, range_from, range_to, rows, bytes,"
                " by_whom) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", (source, name, action, lower, upper, rows,
                                                                        size, by))


def prepare_load(cur: psycopg2.extensions.cursor, layouts: dict[str, Layout], source: str,
                 source_timestamp: datetime | None, by: str, may_wait: bool = True) -> None:
    """Before a load's COPY (in its transaction): make sure the month its
    rows go to has a partition. ``layouts``: the worker's cache; a look at
    the catalog only when the cache does not cover the month.

    Raises ``WouldWait`` when ``may_wait`` is false and a partition must be
    made."""
    layout = layouts.get(source)
    if layout is None:
        layout = read_layout(cur, source)
        if layout is None:
            return  # no table: the COPY says so
        layouts[source] = layout
    if not layout.managed:
        return
    if layout.column == "source_timestamp":
        if source_timestamp is None or layout.covers(source_timestamp):
            return  # None: the NOT NULL of the key refuses the rows, with its message
        value = source_timestamp
    else:
        clock = datetime.now(UTC)
        if layout.covers(clock - CLOCK_MARGIN) and layout.covers(clock + CLOCK_MARGIN):
            return
        cur.execute("SELECT now()")  # ingested_at's default: the transaction's start
        value = cur.fetchone()[0]
        if layout.covers(value):
            return
    if not lock_source(cur, source, wait=may_wait):
        raise WouldWait(source)
    fresh = read_layout(cur, source)  # another worker may have made it meanwhile
    if fresh is not None and fresh.managed and not fresh.covers(value):
        create_month(cur, source, month_start(value), by, "on demand, for a load")
        fresh = read_layout(cur, source)
    if fresh is not None:
        layouts[source] = fresh


# -- measuring and listing ---------------------------------------------------

@dataclass
class PartitionInfo:
    source: str
    name: str
    lower: datetime | None
    upper: datetime | None
    rows: int | None
    exact: bool
    bytes: int
    goes_after: datetime | None = None  # when retention drops it
    note: str = ""


def measure(cur: psycopg2.extensions.cursor, name: str, exact: bool = False) -> tuple[int | None, bool, int]:
    """(rows, counted exactly, bytes with indexes and TOAST) of ``bronze.<name>``."""
    cur.execute("SELECT pg_total_relation_size(c.oid), c.reltuples::bigint FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'bronze' AND c.relname = %s",
                (name,))
    size, estimate = cur.fetchone()
    if exact or size <= EXACT_COUNT_BYTES or estimate < 0:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(_table(name)))
        return cur.fetchone()[0], True, size
    return estimate, False, size


def describe(conn: psycopg2.extensions.connection, sources: Iterable[SourceConfig],
             exact: bool = False) -> list[PartitionInfo]:
    """Each configured source's partitions (or its plain table), oldest first."""
    out: list[PartitionInfo] = []
    with conn.cursor() as cur:
        now = server_now(cur)
        for source in sources:
            layout = read_layout(cur, source.name)
            if layout is None:
                continue
            if not layout.partitioned:
                rows, counted, size = measure(cur, source.name, exact)
                note = "plain table"
                if source.partition:
                    note += f": ingestd partitions migrate --source {source.name}"
                out.append(PartitionInfo(source.name, source.name, None, None, rows, counted, size, note=note))
                continue
            for p in layout.partitions:
                rows, counted, size = measure(cur, p.name, exact)
                goes = None
                if source.retention_months and p.upper is not None and not p.default:
                    goes = add_months(p.upper, source.retention_months)
                note = "default" if p.default else "detaching" if p.detaching else ""
                if not note and _past_retention(p, source, now):
                    note = "past retention: the next maintenance drops it"
                out.append(PartitionInfo(source.name, p.name, p.lower, p.upper, rows, counted, size, goes, note))
    conn.rollback()
    return out


# -- maintenance -------------------------------------------------------------

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
                    if _past_retention(p, source, now):
                        rows, counted, size = measure(cur, p.name)
                        steps.append(Step(source.name, p.name, "drop", p.lower, p.upper, rows, counted, size,
                                          "FINALIZE" if p.detaching else "CONCURRENTLY"))
                for name, lower, upper in _left_detached(cur, source.name):
                    rows, counted, size = measure(cur, name)
                    steps.append(Step(source.name, name, "drop", lower, upper, rows, counted, size, detach=""))
    conn.rollback()
    return steps


def _past_retention(p: Partition, source: SourceConfig, now: datetime) -> bool:
    """Every row of ``p`` is older than the source's retention at ``now``."""
    return (source.retention_months is not None and not p.default and p.upper is not None
            and p.upper <= retention_cutoff(now, source.retention_months))


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
            parent, part = _table(step.source), _table(step.partition)
            if step.detach:
                cur.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {} " + step.detach).format(parent, part))
                _record(cur, step.source, step.partition, "detached", step.lower, step.upper, step.rows, step.bytes,
                        by)
            conn.autocommit = False
            step.expired = Ledger(conn).expire_loads(step.source, step.partition)
            cur.execute(sql.SQL("DROP TABLE {}").format(part))
            _record(cur, step.source, step.partition, "dropped", step.lower, step.upper, step.rows, step.bytes, by)
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


# -- migrating a plain table --------------------------------------------------

MIGRATING_SUFFIX = "-partitioned"  # the new table while rows are copied
OLD_SUFFIX = "-unpartitioned"  # the old table, kept after the swap
SWAP_LOCK_TIMEOUT = "3s"
SWAP_ATTEMPTS = 40
MISSING_BATCH = 50_000  # ids a statement copies by set difference


@dataclass
class MigrationReport:
    source: str
    rows_old: int = 0
    rows_new: int = 0
    kept_as: str | None = None
    swap_waits: int = 0
    seconds: float = 0.0


def migrate_table(conn: psycopg2.extensions.connection, source: SourceConfig, by: str, batch_rows: int = 50_000,
                  drop_old: bool = False, progress: Callable[[int, int], None] | None = None,
                  say: Callable[[str], None] = lambda _: None) -> MigrationReport:
    """Turn the plain ``bronze.<source>`` into a table partitioned by month,
    while loads go on into it.

    Rows are copied in batches of ids into a new partitioned table (each
    batch its own transaction, so an interrupted migration resumes where
    it stopped); loads keep writing to the old table meanwhile. Then, in one
    short transaction under an ACCESS EXCLUSIVE lock on the old table (loads
    wait a moment, at most ``SWAP_LOCK_TIMEOUT`` per attempt), the rows the
    new table lacks are copied, the copy is proved whole (the same rows on
    both sides) and the tables swap names; waiting loads then write into the
    partitioned one. Without that proof nothing swaps (``MigrationError``):
    loads go on into the old table. The old table is kept as
    ``bronze."<source>-unpartitioned"`` unless ``drop_old``."""
    started = time.monotonic()
    name = source.name
    column = source.partition_by
    report = MigrationReport(name)
    new = name + MIGRATING_SUFFIX
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (lock_key("bronze.migrate", name),))
        if not cur.fetchone()[0]:
            raise MigrationError(f"another ingestd partitions migrate of {name} is running")
        try:
            layout = read_layout(cur, name)
            if layout is None:
                raise MigrationError(f"bronze.{name} does not exist: nothing to migrate (a new table is made "
                                     "partitioned at its first load)")
            if layout.partitioned:
                raise MigrationError(f"bronze.{name} is already partitioned (by {layout.column})")
            columns = _columns(cur, name)
            if column not in columns:
                raise MigrationError(f"bronze.{name} has no column {column}")
            _warn_dependents(cur, name, say)
            if read_layout(cur, new) is None:
                lock_source(cur, name)
                create_partitioned(cur, name, column, by, like=name, table=new)
                conn.commit()
                say(f"made bronze.\"{new}\", partitioned by month of {column}")
            else:
                say(f"resuming: bronze.\"{new}\" holds the rows copied so far")
            _copy_batches(conn, name, new, column, columns, batch_rows, progress)
            _vacuum(conn, new)
            _copy_missing(cur, name, new, column, columns)  # loads go on: most of what the batches missed
            conn.commit()
            _swap(conn, name, new, column, columns, by, report)
            old = name + OLD_SUFFIX
            if drop_old:
                cur.execute(sql.SQL("DROP TABLE {}").format(_table(old)))
                conn.commit()
            else:
                report.kept_as = old
        finally:
            conn.rollback()
            cur.execute("SELECT pg_advisory_unlock(%s)", (lock_key("bronze.migrate", name),))
            conn.commit()
    report.seconds = time.monotonic() - started
    return report


class MigrationError(Exception):
    """A migration that cannot start or finish; its message says why."""


def _columns(cur: psycopg2.extensions.cursor, name: str) -> list[str]:
    cur.execute("SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'bronze' AND c.relname = %s"
                " AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", (name,))
    return [r[0] for r in cur.fetchall()]


def _warn_dependents(cur: psycopg2.extensions.cursor, name: str, say: Callable[[str], None]) -> None:
    """Views follow a table through a rename, grants stay with it: say so."""
    cur.execute("SELECT DISTINCT v.oid::regclass::text FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid"
                " JOIN pg_class v ON v.oid = r.ev_class WHERE d.refobjid = to_regclass(%s) AND v.oid <> d.refobjid",
                (f'bronze."{name}"',))
    views = [r[0] for r in cur.fetchall()]
    if views:
        say(f"views on bronze.{name} will follow the old table: re-create them afterwards: {', '.join(views)}")
    cur.execute("SELECT relacl IS NOT NULL FROM pg_class WHERE oid = to_regclass(%s)", (f'bronze."{name}"',))
    if cur.fetchone()[0]:
        say(f"bronze.{name} has grants of its own: GRANT them again on the new table afterwards (\\dp shows them)")


def _copy_batches(conn: psycopg2.extensions.connection, old: str, new: str, column: str, columns: list[str],
                  batch_rows: int, progress: Callable[[int, int], None] | None) -> None:
    """Copy rows by ranges of ids until what is left is less than a batch."""
    with conn.cursor() as cur:
        while True:
            cur.execute(sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(_table(new)))
            done_to = cur.fetchone()[0]
            cur.execute(sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(_table(old)))
            top = cur.fetchone()[0]
            conn.commit()
            if progress is not None:
                progress(done_to, top)
            if top - done_to < batch_rows:
                return
            while done_to < top:
                _copy_range(cur, old, new, column, columns, done_to, done_to + batch_rows)
                conn.commit()
                done_to += batch_rows
                if progress is not None:
                    progress(min(done_to, top), top)


def _copy_range(cur: psycopg2.extensions.cursor, old: str, new: str, column: str, columns: list[str],
                after: int, upto: int) -> None:
    """Copy the rows with ``after < id <= upto``."""
    _copy_rows(cur, old, new, column, columns, sql.SQL("id > %s AND id <= %s"), (after, upto))


def _vacuum(conn: psycopg2.extensions.connection, table: str) -> None:
    """VACUUM (ANALYZE) the new table before the swap: its set difference
    and counts, under the lock, then read the indexes alone (a fifth of the
    time for 200,000 rows)."""
    conn.commit()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("VACUUM (ANALYZE) {}").format(_table(table)))
    finally:
        conn.autocommit = False


def _copy_missing(cur: psycopg2.extensions.cursor, old: str, new: str, column: str, columns: list[str]) -> int:
    """Copy the rows of ``old`` whose id ``new`` lacks; how many. A set
    difference, not "the ids above the highest copied": each session takes
    ids from the identity in a block of its own, so ids do not follow
    commit order, and a row committed during the copy may have an id below
    the highest copied."""
    cur.execute(sql.SQL("SELECT o.id FROM {} o WHERE NOT EXISTS (SELECT FROM {} n WHERE n.id = o.id)").format(
        _table(old), _table(new)))
    ids = [r[0] for r in cur.fetchall()]
    for start in range(0, len(ids), MISSING_BATCH):
        _copy_rows(cur, old, new, column, columns, sql.SQL("id = ANY(%s)"), (ids[start:start + MISSING_BATCH],))
    return len(ids)


def _copy_rows(cur: psycopg2.extensions.cursor, old: str, new: str, column: str, columns: list[str],
               where: sql.Composable, params: tuple) -> None:
    """Copy the rows ``where`` says, making their months first."""
    cur.execute(sql.SQL("SELECT DISTINCT date_trunc('month', {}, 'UTC') FROM {} WHERE {}").format(
        sql.Identifier(column), _table(old), where), params)
    months = sorted(r[0] for r in cur.fetchall() if r[0] is not None)
    if months:
        layout = read_layout(cur, new)
        assert layout is not None
        for month in months:
            if not layout.covers(month):
                create_month(cur, old, month, "ingestd partitions migrate", "migrating the table", parent=new)
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    cur.execute(sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} WHERE {}")
                .format(_table(new), names, names, _table(old), where), params)


def _swap(conn: psycopg2.extensions.connection, name: str, new: str, column: str, columns: list[str],
          by: str, report: MigrationReport) -> None:
    """The short transaction that copies the last rows, proves the copy
    whole and swaps the names; ``report`` gets the attempts that found loads
    in the way and the rows on each side."""
    old = name + OLD_SUFFIX
    with conn.cursor() as cur:
        for attempt in range(SWAP_ATTEMPTS):
            cur.execute("SET LOCAL lock_timeout = %s", (SWAP_LOCK_TIMEOUT,))
            try:
                cur.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(_table(name)))
            except psycopg2.errors.LockNotAvailable:
                conn.rollback()
                time.sleep(0.5)
                continue
            cur.execute("SET LOCAL lock_timeout = 0")
            _copy_missing(cur, name, new, column, columns)
            report.swap_waits = attempt
            report.rows_old, report.rows_new = _prove_copied(conn, name, new)
            cur.execute(sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(_table(name)))
            top = cur.fetchone()[0]
            old_seq, new_seq = _sequence(cur, name), _sequence(cur, new)
            if old_seq and new_seq:
                # ids go on from the old table's sequence: none is handed out twice
                cur.execute("SELECT setval(%s, greatest(coalesce(pg_sequence_last_value(%s::regclass), 1), %s))",
                            (new_seq, old_seq, top))
            cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(_table(name), sql.Identifier(old)))
            cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(_table(new), sql.Identifier(name)))
            cur.execute(sql.SQL("COMMENT ON TABLE {} IS %s").format(_table(name)), (_comment(column),))
            _record(cur, name, name, "migrated", None, None, None, None, by)
            conn.commit()
            return
    raise MigrationError(f"loads held bronze.{name} for {SWAP_ATTEMPTS} attempts of {SWAP_LOCK_TIMEOUT}: "
                         "the rows are copied; run the command again at a quieter time to finish")


def _prove_copied(conn: psycopg2.extensions.connection, name: str, new: str) -> tuple[int, int]:
    """Under the swap's lock (nothing writes to either table), once every id
    of the old table is in the new one (just copied by set difference): equal
    counts prove the new table holds those rows, each once, and nothing else.
    Rolls back and raises ``MigrationError`` otherwise. (rows old, rows new)."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT (SELECT count(*) FROM {}), (SELECT count(*) FROM {})").format(
            _table(name), _table(new)))
        rows_old, rows_new = cur.fetchone()
    if rows_old != rows_new:
        conn.rollback()
        raise MigrationError(
            f"did not swap: bronze.{name} holds {rows_old:,} rows, its copy bronze.\"{new}\" {rows_new:,}, so the "
            f"copy cannot be proved whole (were rows deleted from bronze.{name} meanwhile?). Nothing changed: loads "
            f"go on into bronze.{name}. DROP TABLE bronze.\"{new}\"; then run the command again to copy afresh")
    return rows_old, rows_new


def _sequence(cur: psycopg2.extensions.cursor, name: str) -> str | None:
    cur.execute("SELECT pg_get_serial_sequence(%s, 'id')", (f'bronze."{name}"',))
    return cur.fetchone()[0]


def as_row(info: PartitionInfo) -> dict[str, Any]:
    return {"source": info.source, "partition": info.name, "from": info.lower, "to": info.upper,
            "rows": info.rows, "rows_exact": info.exact, "bytes": info.bytes, "dropped_after": info.goes_after,
            "note": info.note or None}
