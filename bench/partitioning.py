"""Loads into bronze partitioned by month against loads into a plain table,
measured in pairs so that the machine's changing speed falls on both.

    python -m bench.partitioning [--rows 100000] [--rounds 5] [--workers 2] [--burst 1000]

Two daemons (``ingestd run``) run side by side, each with its own database
and broker prefix: one whose sources are plain tables, one whose sources
have ``partition = "month"``. Each round drops the same work on one, then
on the other (which goes first alternates), and prints both rates and their
ratio; the summary is the median ratio. Prints figures, asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg2
from psycopg2 import sql

from .__main__ import SOURCES, SUFFIX, Daemon, burst, convert, drop_and_wait, generate_csv, split_csv, with_db

MODES = ("none", "month")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.partitioning", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows per file set (default 100,000)")
    parser.add_argument("--rounds", type=int, default=5, help="pairs per measure (default 5)")
    parser.add_argument("--workers", type=int, default=2, help="consumer workers of each daemon (default 2)")
    parser.add_argument("--formats", default="csv,parquet", help="formats (default csv,parquet)")
    parser.add_argument("--burst", type=int, default=1000, help="small files per burst (default 1000; 0: none)")
    args = parser.parse_args()
    server = os.environ.get("INGESTD_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    amqp_url = os.environ.get("INGESTD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    admin = psycopg2.connect(with_db(server, "postgres"))
    admin.autocommit = True
    made: list[tuple[str, Path, Daemon | None]] = []
    ratios: dict[str, list[float]] = {}
    try:
        daemons, conns = {}, {}
        for mode in MODES:
            dbname = f"ingestd_bench_{uuid.uuid4().hex[:6]}"
            with admin.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            workdir = Path(tempfile.mkdtemp(prefix=f"ingestd-bench-{mode}-"))
            made.append((dbname, workdir, None))
            from ingestd.daemon.db import migrate
            migrate(with_db(server, dbname))
            daemon = Daemon(workdir, with_db(server, dbname), amqp_url, args.workers, partition=mode)
            made[-1] = (dbname, workdir, daemon)
            conn = psycopg2.connect(with_db(server, dbname))
            conn.autocommit = True
            daemon.wait_ready(conn)
            daemons[mode], conns[mode] = daemon, conn
        print(f"{args.workers} worker(s) each; plain bronze against bronze partitioned by month", flush=True)
        staging = Path(tempfile.mkdtemp(prefix="ingestd-bench-files-"))
        made.append(("", staging, None))
        for round_no in range(args.rounds):
            order = MODES if round_no % 2 == 0 else MODES[::-1]
            for fmt in [f for f in args.formats.split(",") if f]:
                rates = {}
                for mode in order:
                    first_id = 10**9 + (round_no * 10 + MODES.index(mode) * 5 + len(fmt)) * 10**6
                    csv_path = staging / f"{fmt}-{mode}-{round_no}.csv"
                    generate_csv(csv_path, rows=args.rows, first_id=first_id)
                    parts = split_csv(csv_path, args.workers, staging) if args.workers > 1 else [csv_path]
                    files = []
                    for part in parts:
                        target = part.with_suffix(SUFFIX[fmt]) if fmt != "csv" else part
                        if fmt != "csv":
                            convert(part, fmt, target)
                        files.append(target)
                    source = next(name for name, f in SOURCES.items() if f == fmt)
                    rates[mode] = args.rows / drop_and_wait(daemons[mode], conns[mode], files, source)
                    for path in {csv_path, *parts, *files}:
                        path.unlink(missing_ok=True)
                ratio = rates["month"] / rates["none"]
                ratios.setdefault(fmt, []).append(ratio)
                print(f"  round {round_no + 1} {fmt:7}: plain {rates['none']:,.0f} rows/s, by month "
                      f"{rates['month']:,.0f} rows/s, ratio {ratio:.2f}", flush=True)
            if args.burst:
                rates = {}
                for mode in order:
                    first_id = 3 * 10**9 + (round_no * 2 + MODES.index(mode)) * 10**7
                    rates[mode] = burst(daemons[mode], conns[mode], args.burst, first_id=first_id)[0]
                ratio = rates["month"] / rates["none"]
                ratios.setdefault("burst", []).append(ratio)
                print(f"  round {round_no + 1} burst of {args.burst:,}: plain {rates['none']:,.0f} files/s, by month "
                      f"{rates['month']:,.0f} files/s, ratio {ratio:.2f}", flush=True)
        for conn in conns.values():
            conn.close()
    finally:
        for dbname, workdir, daemon in made:
            if daemon is not None:
                daemon.stop()
            if dbname:
                with admin.cursor() as cur:
                    cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
            shutil.rmtree(workdir, ignore_errors=True)
        admin.close()
    print("\nsummary: rate partitioned by month / rate plain, median of the pairs (1.00: the same)")
    for name, values in ratios.items():
        print(f"  {name:8} {statistics.median(values):.2f}  (pairs: {', '.join(f'{v:.2f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
