"""Throughput and memory of the file pipeline, against PostgreSQL's own COPY.

    python -m bench                       # 200,000 rows, a few tens of seconds
    python -m bench --rows 1000000        # the issue's size
    python -m bench --memory-mb 1024      # also: peak RSS loading a 1 GB CSV

Prints figures and ratios; asserts nothing. Needs PostgreSQL and RabbitMQ
(INGESTD_TEST_DATABASE_URL / INGESTD_TEST_AMQP_URL or the local ports).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2
from psycopg2 import sql

REPO = Path(__file__).resolve().parent.parent
FITBIT = Path(os.environ.get("INGESTD_SHARED_DATA", REPO.parent / "shared" / "data")) / "fitbit"


def with_db(url: str, name: str) -> str:
    dsn = psycopg2.extensions.parse_dsn(url)
    dsn["dbname"] = name
    return psycopg2.extensions.make_dsn(**dsn)


def generate_csv(path: Path, rows: int | None = None, target_bytes: int | None = None, first_id: int = 1000000000) -> int:
    """A CSV shaped like dailyActivity_merged.csv (its rows repeated, ids varied)."""
    lines = (FITBIT / "dailyActivity_merged.csv").read_bytes().split(b"\r\n")
    header, body = lines[0], [line for line in lines[1:] if line]
    written = 0
    with open(path, "wb", buffering=1 << 20) as fh:
        fh.write(header + b"\r\n")
        size = len(header) + 2
        while (rows is not None and written < rows) or (target_bytes is not None and size < target_bytes):
            line = body[written % len(body)]
            rest = line.split(b",", 1)[1]
            out = b"%d,%s\r\n" % (first_id + written // len(body), rest)
            fh.write(out)
            size += len(out)
            written += 1
    return written


def csv_to_jsonl(src: Path, dst: Path) -> None:
    import csv
    with open(src, newline="", encoding="utf-8") as fh, open(dst, "w", encoding="utf-8") as out:
        for record in csv.DictReader(fh):
            out.write(json.dumps(record, separators=(",", ":")) + "\n")


def raw_copy_rate(db_url: str, jsonl: Path, rows: int) -> float:
    conn = psycopg2.connect(db_url)
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS bench_raw_copy")
        cur.execute("CREATE TABLE bench_raw_copy (raw jsonb NOT NULL)")
        conn.commit()
        started = time.perf_counter()
        with open(jsonl, "rb") as fh:
            # CSV format with a quote character that never occurs: the JSON
            # text goes in untouched (text format would eat its backslashes).
            cur.copy_expert("COPY bench_raw_copy (raw) FROM STDIN WITH (FORMAT csv, QUOTE e'\\x01', "
                            "DELIMITER e'\\x02')", fh, size=1 << 20)
        conn.commit()
        elapsed = time.perf_counter() - started
        cur.execute("SELECT count(*) FROM bench_raw_copy")
        assert cur.fetchone()[0] == rows
        cur.execute("DROP TABLE bench_raw_copy")
    conn.commit()
    conn.close()
    return rows / elapsed


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Daemon:
    def __init__(self, workdir: Path, db_url: str, amqp_url: str, workers: int) -> None:
        self.workdir = workdir
        self.prefix = f"bench{uuid.uuid4().hex[:6]}."
        self.config = workdir / "ingestd.toml"
        self.config.write_text(
            f'[landing]\ndir = "{workdir / "data_lake"}"\n'
            f'[database]\nurl = "{db_url}"\n[broker]\nurl = "{amqp_url}"\nprefix = "{self.prefix}"\n'
            f'[consumer]\nworkers = {workers}\n[log]\nlevel = "WARNING"\n[health]\nport = 0\n'
            f'[[sources]]\nname = "daily_activity"\nformat = "csv"\n'
            f'schema = "{REPO / "schemas" / "daily_activity.json"}"\n'
        )
        self.log = open(workdir / "daemon.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "ingestd.daemon", "--config", str(self.config), "run"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.db_url = db_url
        self.amqp_url = amqp_url
        self.workers = workers

    def wait_ready(self, conn) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass('ops.pipeline_runs')")
                if cur.fetchone()[0]:
                    time.sleep(1.0)  # consumers connect right after the migration
                    return
            time.sleep(0.2)
        raise RuntimeError("daemon did not start; see " + str(self.workdir / "daemon.log"))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        import pika
        conn = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        ch = conn.channel()
        for name in ("ingest.events", "ingest.dead", "ingest.dead.audit"):
            ch.queue_delete(self.prefix + name)
        for name in ("ingest.events", "ingest.dead"):
            ch.exchange_delete(self.prefix + name)
        conn.close()


def drop_and_wait(daemon: Daemon, conn, csv_path: Path, name: str) -> float:
    landing = daemon.workdir / "data_lake" / "daily_activity"
    landing.mkdir(parents=True, exist_ok=True)
    staged = landing / f".{name}.tmp"
    shutil.copyfile(csv_path, staged)
    started = time.perf_counter()
    os.replace(staged, landing / name)
    while True:
        with conn.cursor() as cur:
            cur.execute("SELECT status, error_summary FROM ops.pipeline_runs WHERE file_path = %s"
                        " AND status <> 'running'", (f"daily_activity/{name}",))
            row = cur.fetchone()
        if row:
            if row[0] != "success":
                raise RuntimeError(f"load ended {row}")
            return time.perf_counter() - started
        time.sleep(0.05)


def latency(daemon: Daemon, conn, count: int) -> None:
    """Drop small files one at a time (rename into place); drop-to-committed per file."""
    landing = daemon.workdir / "data_lake" / "daily_activity"
    header, *body = (FITBIT / "dailyActivity_merged.csv").read_bytes().split(b"\r\n")[:6]
    seconds = []
    for n in range(count):
        name = f"small-{n}.csv"
        staged = landing / f".{name}.tmp"
        staged.write_bytes(header + b"\r\n" + b"\r\n".join(b"%d,%s" % (2 * 10**9 + n, line.split(b",", 1)[1])
                                                           for line in body))
        dropped = time.time()
        os.replace(staged, landing / name)
        while True:
            with conn.cursor() as cur:
                cur.execute("SELECT extract(epoch FROM finished_at) FROM ops.pipeline_runs"
                            " WHERE file_path = %s AND status = 'success'", (f"daily_activity/{name}",))
                row = cur.fetchone()
            if row:
                seconds.append(float(row[0]) - dropped)
                break
            time.sleep(0.005)
    seconds.sort()
    pick = lambda q: seconds[min(len(seconds) - 1, int(q * len(seconds)))]  # noqa: E731
    print(f"latency, {count} small files dropped one at a time (rename into place): "
          f"p50 {pick(0.50):.3f} s, p95 {pick(0.95):.3f} s, p99 {pick(0.99):.3f} s, max {seconds[-1]:.3f} s")


def burst(daemon: Daemon, conn, count: int) -> None:
    """Drop ``count`` small files at once; time until every one is committed."""
    landing = daemon.workdir / "data_lake" / "daily_activity"
    header, *body = (FITBIT / "dailyActivity_merged.csv").read_bytes().split(b"\r\n")[:3]
    staging = daemon.workdir / "staging"
    staging.mkdir(exist_ok=True)
    for n in range(count):
        (staging / f"burst-{n}.csv").write_bytes(header + b"\r\n" + b"%d,%s" % (3 * 10**9 + n, body[0].split(b",", 1)[1]))
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM ops.raw_ingest_manifest")
        before = cur.fetchone()[0]
    started = time.perf_counter()
    for n in range(count):
        os.replace(staging / f"burst-{n}.csv", landing / f"burst-{n}.csv")
    dropped = time.perf_counter() - started
    while True:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM ops.raw_ingest_manifest")
            done = cur.fetchone()[0] - before
        if done >= count:
            break
        time.sleep(0.1)
    elapsed = time.perf_counter() - started
    print(f"burst: {count:,} small files renamed into place in {dropped:.2f} s; all committed after "
          f"{elapsed:.1f} s: {count / elapsed:,.0f} files/s with {daemon.workers} worker(s) "
          f"(target >= 100 with 2); daemon peak RSS {peak_rss_mb(daemon.proc.pid):.0f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the throughput CSV (default 200000)")
    parser.add_argument("--workers", type=int, default=1, help="consumer workers (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of COPY vs pipeline (default 3)")
    parser.add_argument("--latency", type=int, default=50, metavar="N",
                        help="small files dropped one at a time for drop-to-committed latency (default 50, 0: off)")
    parser.add_argument("--burst", type=int, default=1000, metavar="N",
                        help="small files dropped at once, time to all committed (default 1000, 0: off)")
    parser.add_argument("--memory-mb", type=int, default=0,
                        help="also load a CSV of this many MB and report the daemon's peak RSS")
    args = parser.parse_args()

    server = os.environ.get("INGESTD_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    amqp_url = os.environ.get("INGESTD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    dbname = f"ingestd_bench_{uuid.uuid4().hex[:6]}"
    db_url = with_db(server, dbname)
    admin = psycopg2.connect(with_db(server, "postgres"))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.platform()}")
    workdir = Path(tempfile.mkdtemp(prefix="ingestd-bench-"))
    daemon = None
    try:
        from ingestd.daemon.db import migrate
        migrate(db_url)
        daemon = Daemon(workdir, db_url, amqp_url, args.workers)
        conn = psycopg2.connect(db_url)
        conn.autocommit = True
        daemon.wait_ready(conn)
        # The machine's speed drifts (other tenants, page cache): each round
        # times PostgreSQL's COPY and the pipeline back to back, on the same
        # records, and the ratio is the median of the rounds' ratios.
        ratios = []
        for round_no in range(1, args.repeat + 1):
            csv_path = workdir / f"daily-{round_no}.csv"
            rows = generate_csv(csv_path, rows=args.rows, first_id=round_no * 10**9)
            jsonl = workdir / "daily.jsonl"
            csv_to_jsonl(csv_path, jsonl)
            if round_no == 1:
                print(f"input: {rows:,} rows, {csv_path.stat().st_size / 1e6:.1f} MB CSV, "
                      f"{args.repeat} rounds")
            raw = raw_copy_rate(db_url, jsonl, rows)
            elapsed = drop_and_wait(daemon, conn, csv_path, f"throughput-{round_no}.csv")
            rate = rows / elapsed
            ratios.append(rate / raw)
            print(f"round {round_no}: PostgreSQL COPY (JSON lines into a jsonb table) {raw:,.0f} rows/s; "
                  f"ingestd drop-to-committed ({args.workers} worker(s), validation on) {elapsed:.2f} s, "
                  f"{rate:,.0f} rows/s; ratio {rate / raw:.2f}")
            csv_path.unlink()
        print(f"ratio ingestd / COPY, median of {len(ratios)}: {statistics.median(ratios):.2f}  (target >= 0.8)")
        print(f"daemon peak RSS so far: {peak_rss_mb(daemon.proc.pid):.0f} MB")
        if args.latency:
            latency(daemon, conn, args.latency)
        if args.burst:
            burst(daemon, conn, args.burst)
        if args.memory_mb:
            big = workdir / "big.csv"
            big_rows = generate_csv(big, target_bytes=args.memory_mb * 1_000_000)
            elapsed = drop_and_wait(daemon, conn, big, "memory.csv")
            print(f"memory: {big.stat().st_size / 1e6:,.0f} MB CSV, {big_rows:,} rows in {elapsed:.1f} s "
                  f"({big_rows / elapsed:,.0f} rows/s); daemon peak RSS {peak_rss_mb(daemon.proc.pid):.0f} MB "
                  f"(target < 200 MB)")
        conn.close()
    finally:
        if daemon is not None:
            daemon.stop()
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        admin.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
