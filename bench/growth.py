"""Throughput as a bronze table grows: the same load into a table that
already holds 0, 10 M, 50 M rows (``python -m bench --scale``).

The rows already there are written by the server itself (INSERT ... SELECT,
Fitbit-shaped records with their lineage), then vacuumed and checkpointed,
so that the load measured after them pays neither for their writing nor
for a checkpoint they caused.
"""
from __future__ import annotations

import time
import uuid

from psycopg2 import sql

FILL_CHUNK = 1_000_000

# One Fitbit daily-activity record as the CSV reader gives it (text values),
# its id and steps varied by row.
_RECORD = ("jsonb_build_object('Id', (8000000000 + i)::text, 'ActivityDate', '4/12/2016', 'TotalSteps', "
           "(i %% 20000)::text, 'TotalDistance', '8.5', 'TrackerDistance', '8.5', 'LoggedActivitiesDistance', '0', "
           "'VeryActiveDistance', '1.88', 'ModeratelyActiveDistance', '0.55', 'LightActiveDistance', '6.06', "
           "'SedentaryActiveDistance', '0', 'VeryActiveMinutes', '25', 'FairlyActiveMinutes', '13', "
           "'LightlyActiveMinutes', '328', 'SedentaryMinutes', '728', 'Calories', '1985')")


def bronze_rows(conn, source: str) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (f"bronze.{source}",))
        if cur.fetchone()[0] is None:
            return 0
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("bronze", source)))
        return cur.fetchone()[0]


def fill_bronze(conn, source: str, target: int) -> float:
    """Add rows to ``bronze.<source>`` until it holds ``target``; seconds taken."""
    from ingestd.consumers.bronze import ensure_bronze_table
    from ingestd.daemon.sources import SourceConfig
    started = time.perf_counter()
    with conn.cursor() as cur:
        ensure_bronze_table(cur, SourceConfig(source))
    conn.commit()
    have = bronze_rows(conn, source)
    run_id = str(uuid.uuid4())
    table = sql.Identifier("bronze", source)
    while have < target:
        count = min(FILL_CHUNK, target - have)
        with conn.cursor() as cur:
            cur.execute(sql.SQL(
                "INSERT INTO {} (source, raw_data, record_number, validation_status, source_timestamp,"
                " pipeline_run_id, event_id, file_path, file_hash, file_size)"
                f" SELECT %s, {_RECORD}, i %% 1000 + 1, 'valid', now(), %s, %s,"
                " 'daily_activity/prefill-' || (i / 1000) || '.csv', repeat('0', 64), 100000"
                " FROM generate_series(%s, %s) AS i").format(table),
                (source, run_id, run_id, have + 1, have + count))
        conn.commit()
        have += count
        print(f"    bronze.{source}: {have:,} of {target:,} rows ({time.perf_counter() - started:.0f} s)",
              flush=True)
    autocommit, conn.autocommit = conn.autocommit, True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("VACUUM (ANALYZE) {}").format(table))
        cur.execute("CHECKPOINT")
    conn.autocommit = autocommit
    return time.perf_counter() - started
