"""Loads into bronze partitioned by month against loads into a plain table,
measured in pairs so that the machine's changing speed falls on both.

    python -m bench.partitioning [--rows 100000] [--rounds 5] [--workers 2] [--burst 1000]
    python -m bench.partitioning --migrate 1000000   # ingestd partitions migrate of a
                                                     # plain table that size, loads going on

Two daemons (``ingestd run``) run side by side, each with its own database
and broker prefix: one whose sources are plain tables, one whose sources
have ``partition = "month"``. Each round drops the same work on one, then
on the other (which goes first alternates), and prints both rates and their
ratio; the summary is the median ratio. Prints figures, asserts nothing.

``--migrate N`` measures instead ``ingestd partitions migrate`` of a plain
bronze table of N rows (spread over 12 months of ``ingested_at``) while
small files keep arriving one at a time: the migration's rate, and each
file's drop-to-commit time meanwhile (the swap's pause shows in the largest).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .__main__ import burst, drop_and_wait, files_for_workers, generate_csv, scratch_daemon, server_urls, source_of

MODES = ("none", "month")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.partitioning", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows per file set (default 100,000)")
    parser.add_argument("--rounds", type=int, default=5, help="pairs per measure (default 5)")
    parser.add_argument("--workers", type=int, default=2, help="consumer workers of each daemon (default 2)")
    parser.add_argument("--formats", default="csv,parquet", help="formats (default csv,parquet)")
    parser.add_argument("--burst", type=int, default=1000, help="small files per burst (default 1000; 0: none)")
    parser.add_argument("--migrate", type=int, metavar="N", help="measure the migration of a plain table of N rows")
    args = parser.parse_args()
    if args.migrate:
        return measure_migration(args.migrate, args.workers)
    server, amqp_url = server_urls()
    ratios: dict[str, list[float]] = {}
    with contextlib.ExitStack() as stack:
        daemons, conns = {}, {}
        for mode in MODES:
            daemons[mode], conns[mode] = stack.enter_context(scratch_daemon(server, amqp_url, args.workers, mode))
        print(f"{args.workers} worker(s) each; plain bronze against bronze partitioned by month", flush=True)
        staging = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ingestd-bench-files-")))
        for round_no in range(args.rounds):
            order = MODES if round_no % 2 == 0 else MODES[::-1]
            for fmt in [f for f in args.formats.split(",") if f]:
                rates = {}
                for mode in order:
                    first_id = 10**9 + (round_no * 10 + MODES.index(mode) * 5 + len(fmt)) * 10**6
                    csv_path = staging / f"{fmt}-{mode}-{round_no}.csv"
                    generate_csv(csv_path, rows=args.rows, first_id=first_id)
                    parts, files = files_for_workers(csv_path, fmt, args.workers, staging)
                    rates[mode] = args.rows / drop_and_wait(daemons[mode], conns[mode], files, source_of(fmt))
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
    print("\nsummary: rate partitioned by month / rate plain, median of the pairs (1.00: the same)")
    for name, values in ratios.items():
        print(f"  {name:8} {statistics.median(values):.2f}  (pairs: {', '.join(f'{v:.2f}' for v in values)})")
    return 0


def measure_migration(rows: int, workers: int) -> int:
    from .__main__ import FITBIT
    from .growth import fill_bronze
    server, amqp_url = server_urls()
    with scratch_daemon(server, amqp_url, workers) as (daemon, conn):
        print(f"filling a plain bronze.daily_activity with {rows:,} rows", flush=True)
        fill_bronze(conn, "daily_activity", rows)
        with conn.cursor() as cur:
            cur.execute("UPDATE bronze.daily_activity SET ingested_at = ingested_at - (id % 12) * interval '1 month'")
            cur.execute("VACUUM (ANALYZE) bronze.daily_activity")
            cur.execute("SELECT pg_size_pretty(pg_total_relation_size('bronze.daily_activity'))")
            size = cur.fetchone()[0]
        workdir = daemon.workdir
        config = workdir / "ingestd-migrate.toml"
        config.write_text(daemon.config.read_text().replace('format = "csv"\n',
                                                            'format = "csv"\npartition = "month"\n'))
        landing = workdir / "data_lake" / "daily_activity"
        header, line = (FITBIT / "dailyActivity_merged.csv").read_bytes().split(b"\r\n")[:2]
        stop, seconds, failed = threading.Event(), [], []

        def trickle() -> None:
            n = 0
            while not stop.is_set():
                name = f"during-{n}.csv"
                (landing / f".{name}.tmp").write_bytes(header + b"\r\n" + b"%d,%s" % (6 * 10**9 + n,
                                                                                     line.split(b",", 1)[1]))
                dropped = time.perf_counter()
                os.replace(landing / f".{name}.tmp", landing / name)
                while True:
                    with conn.cursor() as cur:
                        cur.execute("SELECT status FROM ops.pipeline_runs WHERE file_path = %s AND status <> 'running'",
                                    (f"daily_activity/{name}",))
                        row = cur.fetchone()
                    if row:
                        (seconds if row[0] == "success" else failed).append(time.perf_counter() - dropped)
                        break
                    time.sleep(0.005)
                n += 1
                time.sleep(0.05)

        thread = threading.Thread(target=trickle)
        thread.start()
        time.sleep(2)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "ingestd.daemon", "-c", str(config), "partitions", "migrate",
                               "--source", "daily_activity", "--no-progress", "--drop-old"],
                              capture_output=True, text=True)
        took = time.perf_counter() - started
        time.sleep(2)
        stop.set()
        thread.join()
        print(done.stdout.strip() or done.stderr.strip(), flush=True)
        seconds.sort()
        print(f"\nsummary: migrate of {rows:,} rows ({size}) in {took:.1f} s, {rows / took:,.0f} rows/s, "
              f"exit {done.returncode}; {len(seconds)} files loaded meanwhile, {len(failed)} not; "
              f"drop-to-commit p50 {seconds[len(seconds) // 2]:.3f} s, max {seconds[-1]:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
