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
is older than that, by the database server's clock. The months made ahead
and retention are daemon/partition_maintenance.py; a plain table made
partitioned while loads go on (``ingestd partitions migrate``),
daemon/partition_migration.py.
"""
from __future__ import annotations

import calendar
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from .db import lock_key
from .ledger import Ledger
from .sources import SourceConfig

log = logging.getLogger(__name__)

# Months made after the current one.
AHEAD_MONTHS = 2
# Partitions up to this size are counted exactly by ``ingestd partitions``;
# above it the planner's estimate is shown (``--exact`` counts them all).
EXACT_COUNT_BYTES = 64 << 20
# A worker trusts its cached layout for ``ingested_at`` when the months a
# day either side of its own clock are covered; the server's clock may
# differ from the worker's, by less than that.
CLOCK_MARGIN = timedelta(days=1)
PARTITION_KEYS = ("ingested_at", "source_timestamp")


class PartitionMissing(Exception):
    """A COPY met a row that no partition takes: the layout this worker
    cached was out of date (a partition dropped or a table migrated by
    another process). The load is tried once more with a fresh layout.
    Its message is the server's."""


class WouldWait(Exception):
    """Making a partition would wait on a lock; a group of loads never
    waits, so its member takes the single way."""



class MigrationError(Exception):
    """A migration that cannot start or finish; its message says why."""


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


def bronze_table(name: str) -> sql.Composed:
    return sql.SQL("bronze.{}").format(sql.Identifier(name))


def retention_cutoff(now: datetime, months: int) -> datetime:
    """Rows before this instant are past a retention of ``months``."""
    return add_months(now.astimezone(UTC), -months)


def past_retention(p: Partition, source: SourceConfig, now: datetime) -> bool:
    """Every row of ``p`` is older than the source's retention at ``now``."""
    return (source.retention_months is not None and not p.default and p.upper is not None
            and p.upper <= retention_cutoff(now, source.retention_months))


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
        " PARTITION BY RANGE ({})").format(bronze_table(table), bronze_table(like), sql.Identifier(column),
                                           sql.Identifier(column)))
    cur.execute(sql.SQL("COMMENT ON TABLE {} IS %s").format(bronze_table(table)), (table_comment(column),))
    now = month_start(server_now(cur))
    for ahead in range(AHEAD_MONTHS + 1):
        create_month(cur, source, add_months(now, ahead), by, "with the table", parent=table)


def table_comment(column: str) -> str:
    return f"ingestd bronze table, partitioned by month of {column} (ingestd partitions)"


def create_month(cur: psycopg2.extensions.cursor, source: str, month: datetime, by: str, why: str,
                 parent: str | None = None) -> str:
    """Make and attach ``<source>_pYYYY_MM``; the caller holds the source's lock.
    ``parent``: the partitioned table, when it is not (yet) ``bronze.<source>``."""
    name = partition_name(source, month)
    lower, upper = month, add_months(month, 1)
    parent = parent or source
    cur.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE"
                        " INCLUDING COMPRESSION)").format(bronze_table(name), bronze_table(parent)))
    cur.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM (%s) TO (%s)").format(
        bronze_table(parent), bronze_table(name)), (lower, upper))
    Ledger(cur.connection).record_partition(source, name, "created", lower, upper, by)
    log.info("partition created", extra={"step": "partitions", "status": "created", "source": source,
                                         "partition": f"bronze.{name}", "from": lower.isoformat(),
                                         "to": upper.isoformat(), "why": why})
    return name


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
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(bronze_table(name)))
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
                if not note and past_retention(p, source, now):
                    note = "past retention: the next maintenance drops it"
                out.append(PartitionInfo(source.name, p.name, p.lower, p.upper, rows, counted, size, goes, note))
    conn.rollback()
    return out


def as_row(info: PartitionInfo) -> dict[str, Any]:
    return {"source": info.source, "partition": info.name, "from": info.lower, "to": info.upper,
            "rows": info.rows, "rows_exact": info.exact, "bytes": info.bytes, "dropped_after": info.goes_after,
            "note": info.note or None}

