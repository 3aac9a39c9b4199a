"""The server's share alone: what PostgreSQL spends a row, without ingestd.

The bench's records (Fitbit-shaped, 15 text values) COPYed by the server
alone, as the throughput baseline does (JSON text into a one-column jsonb
table) and as bronze rows (ingestd's own binary COPY stream of the same
records, validated, with a loaded file's lineage, into a ``bronze.<source>``
table made from the migrated template), the
halves one COPY after the other and two COPYs at once (as two workers load
two files). Prints rows/s and the CPU PostgreSQL spent a row (its
processes' time from /proc, as ``python -m bench`` reports it), so that the
pipeline's figures can be read against the server's own floor:

    python -m bench.server                  # 1,000,000 rows, 2 rounds
    python -m bench.server --rows 200000 --repeat 1

Asserts nothing. Needs PostgreSQL (INGESTD_TEST_DATABASE_URL or the local
port); works in a database of its own, dropped afterwards.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg2
from psycopg2 import sql

from . import cpu
from .__main__ import csv_to_jsonl, generate_csv, server_urls, with_db

REPO = Path(__file__).resolve().parent.parent


def write_inputs(jsonl: Path, folder: Path) -> dict[str, Path]:
    """Per table shape, what one half of a measurement COPYs: the JSON lines
    as the baseline COPYs them, and the binary COPY stream ingestd's worker
    sends for the same records (validated against the bench's schema, with a
    loaded file's lineage)."""
    from ingestd.consumers.bronze import CHUNK_BYTES, CopyStream, LoadStats
    from ingestd.consumers.validation import RecordValidator
    from ingestd.records.formats import read_records
    raw, bronze = folder / "raw.txt", folder / "bronze.bin"
    with open(jsonl, encoding="utf-8") as lines, open(raw, "w", encoding="utf-8") as out:
        for line in lines:
            out.write(line.replace("\\", "\\\\"))  # COPY's text format: only backslashes need it
    schema = json.loads((REPO / "schemas" / "daily_activity.json").read_text(encoding="utf-8"))
    validator = RecordValidator(schema)
    records = read_records(jsonl, "jsonl", None)
    lineage = {"pipeline_run_id": uuid.uuid4(), "event_id": uuid.uuid4(), "file_path": "daily_activity/part.jsonl",
               "file_hash": "ab" * 32, "file_size": jsonl.stat().st_size}
    stream = CopyStream(((n, value, text) for n, (value, text) in enumerate(records, 1)), validator,
                        "daily_activity", lineage, LoadStats())
    with open(bronze, "wb") as out:
        while piece := stream.read(CHUNK_BYTES):
            out.write(piece)
    return {"jsonb": raw, "bronze": bronze}


def _copy(db_url: str, statement: str, path: Path) -> None:
    conn = psycopg2.connect(db_url)
    try:
        with conn.cursor() as cur, open(path, "rb") as fh:
            cur.copy_expert(statement, fh, size=1 << 20)
        conn.commit()
    finally:
        conn.close()


def measure(db_url: str, table: str, statement: str, source: Path, rows: int, together: bool) -> tuple[float, float]:
    """(rows/s, PostgreSQL CPU microseconds a row) of both halves into ``table``."""
    conn = psycopg2.connect(db_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"TRUNCATE {table}")
        cur.execute("CHECKPOINT")
    conn.close()
    before = cpu.snapshot([os.getpid()])
    started = time.perf_counter()
    if together:
        threads = [threading.Thread(target=_copy, args=(db_url, statement, source)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        _copy(db_url, statement, source)
        _copy(db_url, statement, source)
    elapsed = time.perf_counter() - started
    time.sleep(0.2)  # the backends exit: their CPU shows in the postmaster's once reaped
    spent = cpu.per_row(before, cpu.snapshot([os.getpid()]), rows)
    return rows / elapsed, spent["PostgreSQL"]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows a measurement (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds, each shape and way once (default 2)")
    args = parser.parse_args()
    from ingestd.consumers.bronze import COPY_COLUMNS
    from ingestd.daemon.db import migrate
    server, _ = server_urls()
    admin = psycopg2.connect(with_db(server, "postgres"))
    admin.autocommit = True
    name = f"ingestd_bench_server_{uuid.uuid4().hex[:6]}"
    folder = Path(tempfile.mkdtemp(prefix="ingestd-bench-server-"))
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        db_url = with_db(server, name)
        migrate(db_url)
        with psycopg2.connect(db_url) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE bench_raw (raw jsonb NOT NULL)")
            cur.execute("CREATE TABLE bronze.daily_activity (LIKE bronze._template INCLUDING ALL)")
        conn.close()
        rows = args.rows - args.rows % 2
        csv_path, jsonl = folder / "rows.csv", folder / "rows.jsonl"
        generate_csv(csv_path, rows=rows // 2)
        csv_to_jsonl(csv_path, jsonl)
        # Each half is these records: a measurement loads them twice, ``rows`` rows.
        inputs = write_inputs(jsonl, folder)
        shapes = {"jsonb": ("bench_raw", "COPY bench_raw (raw) FROM STDIN"),
                  "bronze": ("bronze.daily_activity",
                             f"COPY bronze.daily_activity ({', '.join(COPY_COLUMNS)}) FROM STDIN WITH (FORMAT binary)")}
        figures: dict[str, list[tuple[float, float]]] = {}
        print(f"{rows:,} rows a measurement, in two halves", flush=True)
        for round_no in range(1, args.repeat + 1):
            for shape, (table, statement) in shapes.items():
                for together in (False, True):
                    way = "two at once" if together else "one after the other"
                    rate, cost = measure(db_url, table, statement, inputs[shape], rows, together)
                    figures.setdefault(f"{shape}, {way}", []).append((rate, cost))
                    print(f"  round {round_no}: {shape:6s} {way:19s} {rate:9,.0f} rows/s, "
                          f"PostgreSQL CPU {cost:.1f} us a row", flush=True)
        print("best of rounds (rows/s) and least CPU a row:")
        for label, values in figures.items():
            print(f"  {label:30s} {max(r for r, _ in values):9,.0f} rows/s  {min(c for _, c in values):.1f} us a row")
        print(json.dumps({label: [{"rows_per_s": r, "postgresql_us_per_row": c} for r, c in values]
                          for label, values in figures.items()}))
    finally:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
