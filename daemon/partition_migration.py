"""``ingestd partitions migrate``: a plain ``bronze.<source>`` made
partitioned by month (daemon/partitions.py) while loads go on into it.

Rows are copied in batches of ids into a new partitioned table, then one
short transaction copies the last rows, proves the copy whole and swaps the
names (``migrate_table``)."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from .db import lock_key
from .ledger import Ledger
from .partitions import (
    MigrationError,
    bronze_table,
    create_month,
    create_partitioned,
    lock_source,
    read_layout,
    table_comment,
)
from .sources import SourceConfig

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
    name, column = source.name, source.partition_by
    report = MigrationReport(name)
    new = name + MIGRATING_SUFFIX
    with conn.cursor() as cur, _migration_lock(conn, cur, name):
        columns = _check_migratable(cur, name, column)
        _warn_dependents(cur, name, say)
        _start_new_table(conn, cur, name, new, column, by, say)
        _copy_batches(conn, name, new, column, columns, batch_rows, progress)
        _vacuum(conn, new)
        _copy_missing(cur, name, new, column, columns)  # loads go on: most of what the batches missed
        conn.commit()
        _swap(conn, name, new, column, columns, by, report)
        _drop_or_keep_old(conn, cur, name, drop_old, report)
    report.seconds = time.monotonic() - started
    return report


@contextmanager
def _migration_lock(conn: psycopg2.extensions.connection, cur: psycopg2.extensions.cursor,
                    name: str) -> Iterator[None]:
    """One migration of a source at a time: a session lock, released (after
    a rollback of whatever the migration left open) however it ends."""
    cur.execute("SELECT pg_try_advisory_lock(%s)", (lock_key("bronze.migrate", name),))
    if not cur.fetchone()[0]:
        raise MigrationError(f"another ingestd partitions migrate of {name} is running")
    try:
        yield
    finally:
        conn.rollback()
        cur.execute("SELECT pg_advisory_unlock(%s)", (lock_key("bronze.migrate", name),))
        conn.commit()


def _check_migratable(cur: psycopg2.extensions.cursor, name: str, column: str) -> list[str]:
    """The columns of the plain ``bronze.<name>``; ``MigrationError`` when
    there is no such plain table or it lacks ``column``."""
    layout = read_layout(cur, name)
    if layout is None:
        raise MigrationError(f"bronze.{name} does not exist: nothing to migrate (a new table is made "
                             "partitioned at its first load)")
    if layout.partitioned:
        raise MigrationError(f"bronze.{name} is already partitioned (by {layout.column})")
    columns = _columns(cur, name)
    if column not in columns:
        raise MigrationError(f"bronze.{name} has no column {column}")
    return columns


def _start_new_table(conn: psycopg2.extensions.connection, cur: psycopg2.extensions.cursor, name: str, new: str,
                     column: str, by: str, say: Callable[[str], None]) -> None:
    """Make the new partitioned table, or resume with the one an earlier run made."""
    if read_layout(cur, new) is None:
        lock_source(cur, name)
        create_partitioned(cur, name, column, by, like=name, table=new)
        conn.commit()
        say(f"made bronze.\"{new}\", partitioned by month of {column}")
    else:
        say(f"resuming: bronze.\"{new}\" holds the rows copied so far")


def _drop_or_keep_old(conn: psycopg2.extensions.connection, cur: psycopg2.extensions.cursor, name: str,
                      drop_old: bool, report: MigrationReport) -> None:
    """After the swap: drop the old table, or keep it (``report.kept_as``)."""
    old = name + OLD_SUFFIX
    if drop_old:
        cur.execute(sql.SQL("DROP TABLE {}").format(bronze_table(old)))
        conn.commit()
    else:
        report.kept_as = old


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
            cur.execute(sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(bronze_table(new)))
            done_to = cur.fetchone()[0]
            cur.execute(sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(bronze_table(old)))
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
            cur.execute(sql.SQL("VACUUM (ANALYZE) {}").format(bronze_table(table)))
    finally:
        conn.autocommit = False


def _copy_missing(cur: psycopg2.extensions.cursor, old: str, new: str, column: str, columns: list[str]) -> int:
    """Copy the rows of ``old`` whose id ``new`` lacks; how many. A set
    difference, not "the ids above the highest copied": each session takes
    ids from the identity in a block of its own, so ids do not follow
    commit order, and a row committed during the copy may have an id below
    the highest copied."""
    cur.execute(sql.SQL("SELECT o.id FROM {} o WHERE NOT EXISTS (SELECT FROM {} n WHERE n.id = o.id)").format(
        bronze_table(old), bronze_table(new)))
    ids = [r[0] for r in cur.fetchall()]
    for start in range(0, len(ids), MISSING_BATCH):
        _copy_rows(cur, old, new, column, columns, sql.SQL("id = ANY(%s)"), (ids[start:start + MISSING_BATCH],))
    return len(ids)


def _copy_rows(cur: psycopg2.extensions.cursor, old: str, new: str, column: str, columns: list[str],
               where: sql.Composable, params: tuple) -> None:
    """Copy the rows ``where`` says, making their months first."""
    cur.execute(sql.SQL("SELECT DISTINCT date_trunc('month', {}, 'UTC') FROM {} WHERE {}").format(
        sql.Identifier(column), bronze_table(old), where), params)
    months = sorted(r[0] for r in cur.fetchall() if r[0] is not None)
    if months:
        layout = read_layout(cur, new)
        assert layout is not None
        for month in months:
            if not layout.covers(month):
                create_month(cur, old, month, "ingestd partitions migrate", "migrating the table", parent=new)
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    cur.execute(sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} WHERE {}")
                .format(bronze_table(new), names, names, bronze_table(old), where), params)


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
                cur.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(bronze_table(name)))
            except psycopg2.errors.LockNotAvailable:
                conn.rollback()
                time.sleep(0.5)
                continue
            cur.execute("SET LOCAL lock_timeout = 0")
            _copy_missing(cur, name, new, column, columns)
            report.swap_waits = attempt
            report.rows_old, report.rows_new = _prove_copied(conn, name, new)
            cur.execute(sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(bronze_table(name)))
            top = cur.fetchone()[0]
            old_seq, new_seq = _sequence(cur, name), _sequence(cur, new)
            if old_seq and new_seq:
                # ids go on from the old table's sequence: none is handed out twice
                cur.execute("SELECT setval(%s, greatest(coalesce(pg_sequence_last_value(%s::regclass), 1), %s))",
                            (new_seq, old_seq, top))
            cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(bronze_table(name), sql.Identifier(old)))
            cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(bronze_table(new), sql.Identifier(name)))
            cur.execute(sql.SQL("COMMENT ON TABLE {} IS %s").format(bronze_table(name)), (table_comment(column),))
            Ledger(conn).record_partition(name, name, "migrated", None, None, by)
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
            bronze_table(name), bronze_table(new)))
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
