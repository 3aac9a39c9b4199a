"""Benchmarks of the running pipeline: throughput against PostgreSQL's own
COPY (CSV, JSON Lines, Parquet; 1 and 2 consumers), latency of small files,
bursts of small files, memory on large files, and the cost as the work grows.

    python -m bench            # everything at a small size: a few minutes
    python -m bench --scale    # cost as the work grows: bronze of 0, 1 M,
                               # 10 M rows; ops tables of 1 M runs; a watcher
                               # starting on 20,000 waiting files
    python -m bench --full     # 1,000,000 rows x 3 rounds, 200 latency files,
                               # bursts of 100, 1,000 and 10,000 files, 1 GB
                               # CSV and JSON Lines, and --scale at 10 M and
                               # 50 M bronze rows and 100,000 waiting files

Writes summary.txt, figures.json and PNG plots (with matplotlib:
pip install -e ".[bench]") to --out (default ./bench-results).

Prints figures and ratios; asserts nothing. Needs PostgreSQL and RabbitMQ
(INGESTD_TEST_DATABASE_URL / INGESTD_TEST_AMQP_URL or the local ports).
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
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

from . import cpu

REPO = Path(__file__).resolve().parent.parent
# One bronze source per format, all with the Fitbit daily-activity schema.
SOURCES = {"daily_activity": "csv", "daily_jsonl": "jsonl", "daily_parquet": "parquet"}
SUFFIX = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}
# Throughput rounds number their ids from here (1,000,000,000 + n * 10,000,000).
ROUND_IDS = itertools.count(1)
# The Fitbit-shaped samples ingestd writes itself (examples/README.md).
FITBIT = REPO / "examples"


def with_db(url: str, name: str) -> str:
    dsn = psycopg2.extensions.parse_dsn(url)
    dsn["dbname"] = name
    return psycopg2.extensions.make_dsn(**dsn)


def generate_csv(path: Path, rows: int | None = None, target_bytes: int | None = None,
                 first_id: int = 1000000000) -> int:
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


def convert(csv_path: Path, fmt: str, target: Path) -> None:
    """The same records in another format (values stay text, as in the CSV)."""
    if fmt == "csv":
        shutil.copyfile(csv_path, target)
    elif fmt == "jsonl":
        csv_to_jsonl(csv_path, target)
    else:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq
        names = (FITBIT / "dailyActivity_merged.csv").read_text().split("\n")[0].strip().split(",")
        table = pacsv.read_csv(csv_path, convert_options=pacsv.ConvertOptions(
            column_types={n: "string" for n in names}))
        pq.write_table(table, target)


def split_csv(csv_path: Path, parts: int, folder: Path) -> list[Path]:
    lines = csv_path.read_bytes().split(b"\r\n")
    header, body = lines[0], [line for line in lines[1:] if line]
    size = -(-len(body) // parts)
    out = []
    for i in range(parts):
        part = folder / f"{csv_path.stem}-part{i}.csv"
        part.write_bytes(header + b"\r\n" + b"\r\n".join(body[i * size:(i + 1) * size]) + b"\r\n")
        out.append(part)
    return out


def server_urls() -> tuple[str, str]:
    """(PostgreSQL server URL, AMQP URL) the benchmarks use."""
    return (os.environ.get("INGESTD_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
            os.environ.get("INGESTD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"))


@contextlib.contextmanager
def scratch_daemon(server: str, amqp_url: str, workers: int, partition: str = "none"):
    """(daemon, autocommit connection): ``ingestd run`` ready on a migrated database and a working
    folder of the bench's own; the daemon stopped, the database and the folder removed after."""
    from ingestd.daemon.db import migrate
    admin = psycopg2.connect(with_db(server, "postgres"))
    admin.autocommit = True
    name = f"ingestd_bench_{uuid.uuid4().hex[:6]}"
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    workdir = Path(tempfile.mkdtemp(prefix="ingestd-bench-"))
    daemon = conn = None
    try:
        db_url = with_db(server, name)
        migrate(db_url)
        daemon = Daemon(workdir, db_url, amqp_url, workers, partition=partition)
        conn = psycopg2.connect(db_url)
        conn.autocommit = True
        daemon.wait_ready(conn)
        yield daemon, conn
    finally:
        if conn is not None:
            conn.close()
        if daemon is not None:
            daemon.stop()
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()
        shutil.rmtree(workdir, ignore_errors=True)


def files_for_workers(csv_path: Path, fmt: str, workers: int, folder: Path) -> tuple[list[Path], list[Path]]:
    """(CSV parts, files to drop): the CSV's rows in one file a worker, in ``fmt``."""
    parts = split_csv(csv_path, workers, folder) if workers > 1 else [csv_path]
    files = []
    for part in parts:
        target = part.with_suffix(SUFFIX[fmt]) if fmt != "csv" else part
        if fmt != "csv":
            convert(part, fmt, target)
        files.append(target)
    return parts, files


def source_of(fmt: str) -> str:
    return next(name for name, f in SOURCES.items() if f == fmt)


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


def children_of(pids: list[int]) -> list[int]:
    """The processes whose parent is one of ``pids``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) in pids:
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Daemon:
    """ingestd against the bench's database and broker, in one of two shapes: ``run`` (``ingestd
    run``: the watcher, and the consumer workers as the processes it starts) or ``roles``
    (``ingestd watch`` and one ``ingestd consume`` process per worker, as the systemd units and the
    compose stack run them)."""

    def __init__(self, workdir: Path, db_url: str, amqp_url: str, workers: int, shape: str = "run",
                 partition: str = "none") -> None:
        self.workdir = workdir
        self.partition = partition
        # Names of figures measured with bronze partitioned by month carry this.
        self.suffix = ", bronze by month" if partition == "month" else ""
        self.prefix = f"bench{uuid.uuid4().hex[:6]}."
        self.config = workdir / f"ingestd-{shape}.toml"
        self.config.write_text(
            f'[landing]\ndir = "{workdir / "data_lake"}"\n'
            f'[database]\nurl = "{db_url}"\n[broker]\nurl = "{amqp_url}"\nprefix = "{self.prefix}"\n'
            f'[consumer]\nworkers = {workers if shape == "run" else 1}\n[log]\nlevel = "WARNING"\n'
            '[health]\nport = 0\n'
            + "".join(f'[[sources]]\nname = "{name}"\nformat = "{fmt}"\n'
                      f'schema = "{REPO / "schemas" / "daily_activity.json"}"\n'
                      + ('partition = "month"\n' if partition == "month" else "")
                      for name, fmt in SOURCES.items())
        )
        self.log = open(workdir / f"daemon-{shape}.log", "ab")
        commands = [["run"]] if shape == "run" else [["watch"]] + [["consume"]] * workers
        self.procs = [subprocess.Popen([sys.executable, "-m", "ingestd.daemon", "--config", str(self.config), *cmd],
                                       stdout=self.log, stderr=subprocess.STDOUT) for cmd in commands]
        self.db_url = db_url
        self.amqp_url = amqp_url
        self.workers = workers
        self.shape = shape

    @property
    def label(self) -> str:
        if self.shape == "run":
            return f"{self.workers} worker(s), `ingestd run`{self.suffix}"
        return f"{self.workers} worker(s), {self.workers + 1} processes{self.suffix}"

    def peak_rss_mb(self) -> float:
        """Peak resident memory of the daemon's processes together, the consumer processes that
        `ingestd run` starts included."""
        pids = [proc.pid for proc in self.procs]
        return sum(peak_rss_mb(pid) for pid in pids + children_of(pids))

    def reset_peak_rss(self) -> None:
        """Start the processes' peaks afresh (Linux: 5 to /proc/PID/clear_refs), so that a
        measurement is not the peak of what the daemon did before it."""
        pids = [proc.pid for proc in self.procs]
        for pid in pids + children_of(pids):
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                pass

    def wait_ready(self, conn) -> None:
        """Until the database is migrated and every consumer worker consumes."""
        import pika

        from ingestd.daemon.broker import Topology
        deadline = time.monotonic() + 60
        broker = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            while time.monotonic() < deadline:
                with conn.cursor() as cur:
                    cur.execute("SELECT to_regclass('ops.pipeline_runs')")
                    migrated = cur.fetchone()[0]
                if migrated and self._consumers(broker, Topology(self.prefix).events_queue) >= self.workers:
                    return
                if any(proc.poll() is not None for proc in self.procs):
                    break
                time.sleep(0.2)
        finally:
            broker.close()
        raise RuntimeError("daemon did not start; see " + str(self.log.name))

    @staticmethod
    def _consumers(broker, queue: str) -> int:
        import pika

        channel = broker.channel()
        try:
            return channel.queue_declare(queue, passive=True).method.consumer_count
        except pika.exceptions.ChannelClosedByBroker:
            return 0  # not declared yet
        finally:
            if channel.is_open:
                channel.close()

    def stop(self) -> None:
        if self.log.closed:
            return  # stopped already
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            proc.wait(timeout=60)
        self.log.close()
        delete_broker_names(self.amqp_url, self.prefix)


def delete_broker_names(amqp_url: str, prefix: str) -> None:
    """Delete the queues and exchanges of a bench run's prefix."""
    import pika

    from ingestd.daemon.broker import Topology
    names = Topology(prefix)
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    for queue in (names.events_queue, names.dead_queue, names.dead_audit_queue):
        ch.queue_delete(queue)
    for exchange in (names.events_exchange, names.dead_exchange):
        ch.exchange_delete(exchange)
    conn.close()


def drop_and_wait(daemon: Daemon, conn, files: list[Path], source: str = "daily_activity") -> float:
    """Rename ``files`` into the source's folder at once; seconds until all are committed."""
    landing = daemon.workdir / "data_lake" / source
    landing.mkdir(parents=True, exist_ok=True)
    staged = []
    for path in files:
        tmp = landing / f".{path.name}.tmp"
        shutil.copyfile(path, tmp)
        staged.append(tmp)
    started = time.perf_counter()
    for tmp in staged:
        os.replace(tmp, landing / tmp.name[1:-4])
    names = [f"{source}/{tmp.name[1:-4]}" for tmp in staged]
    while True:
        with conn.cursor() as cur:
            cur.execute("SELECT status, error_summary FROM ops.pipeline_runs WHERE file_path = ANY(%s)"
                        " AND status <> 'running'", (names,))
            rows = cur.fetchall()
        failed = [r for r in rows if r[0] != "success"]
        if failed:
            raise RuntimeError(f"load ended {failed[0]}")
        if len(rows) == len(names):
            return time.perf_counter() - started
        time.sleep(0.05)


def latency(daemon: Daemon, conn, count: int) -> tuple[float, float, float]:
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
    print(f"  latency, {count} small files dropped one at a time (rename into place): "
          f"p50 {pick(0.50):.3f} s, p95 {pick(0.95):.3f} s, p99 {pick(0.99):.3f} s, max {seconds[-1]:.3f} s",
          flush=True)
    return seconds


def burst(daemon: Daemon, conn, count: int, first_id: int = 3 * 10**9) -> tuple[float, float, float]:
    """Drop ``count`` small files at once; time until every one is committed."""
    landing = daemon.workdir / "data_lake" / "daily_activity"
    header, *body = (FITBIT / "dailyActivity_merged.csv").read_bytes().split(b"\r\n")[:3]
    staging = daemon.workdir / "staging"
    staging.mkdir(exist_ok=True)
    row = body[0].split(b",", 1)[1]
    for n in range(count):
        (staging / f"burst-{n}.csv").write_bytes(header + b"\r\n" + b"%d,%s" % (first_id + n, row))
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM ops.raw_ingest_manifest")
        before = cur.fetchone()[0]
    daemon.reset_peak_rss()
    started = time.perf_counter()
    for n in range(count):
        os.replace(staging / f"burst-{n}.csv", landing / f"burst-{first_id + n}.csv")
    dropped = time.perf_counter() - started
    while True:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM ops.raw_ingest_manifest")
            done = cur.fetchone()[0] - before
        if done >= count:
            break
        time.sleep(0.1)
    elapsed = time.perf_counter() - started
    rss = daemon.peak_rss_mb()
    print(f"  burst: {count:,} small files renamed into place in {dropped:.2f} s; all committed after "
          f"{elapsed:.1f} s: {count / elapsed:,.0f} files/s with {daemon.label}; "
          f"daemon peak RSS {rss:.0f} MB", flush=True)
    return count / elapsed, elapsed, rss


def bursts_of(daemon: Daemon, conn, sizes: list[int], figures: dict, results: list, first_id: int) -> None:
    """One burst per size; figures and summary lines named by the daemon's shape."""
    for n, count in enumerate(sizes):
        rate, elapsed, rss = burst(daemon, conn, count, first_id=first_id + n * 10**8)
        figures["burst"].append({"files": count, "workers": daemon.workers, "shape": daemon.shape,
                                 "partition": daemon.partition,
                                 "files_per_s": rate, "seconds": elapsed, "rss_mb": rss})
        results.append((f"burst, {count:,} small files at once, {daemon.label}",
                        f"{rate:,.0f} files/s ({elapsed:.1f} s)",
                        f"peak RSS {rss:.0f} MB (goal >= 1,000 files/s)"))


def settle(conn) -> None:
    """Leave the server nothing owed for earlier work: vacuum and analyze the database's tables and
    write a checkpoint, untimed. Otherwise the autovacuum of the rows the last round loaded, and
    the checkpoint their WAL calls for, run during the next COPY or load and are charged to it."""
    with conn.cursor() as cur:
        cur.execute("VACUUM (ANALYZE)")
        cur.execute("CHECKPOINT")


def throughput(daemon: Daemon, conn, db_url: str, workdir: Path, fmt: str, rows: int, rounds: int,
               results: list, label: str = "") -> dict:
    """Rounds of PostgreSQL's COPY against the pipeline on the same records;
    with N workers the rows are split into N files dropped at once."""
    ratios, rates, copies, costs = [], [], [], []
    for round_no in range(1, rounds + 1):
        # A name and ids of this round's own (ids of 10 digits, as the schema
        # wants): the same bytes twice would be skipped as already loaded.
        tag = next(ROUND_IDS)
        csv_path = workdir / f"{fmt}-{daemon.workers}w-{tag}.csv"
        generate_csv(csv_path, rows=rows, first_id=10**9 + tag * 10**7)
        jsonl = workdir / "raw.jsonl"
        csv_to_jsonl(csv_path, jsonl)
        pids = [proc.pid for proc in daemon.procs]
        settle(conn)
        before = cpu.snapshot([os.getpid()])
        raw = raw_copy_rate(db_url, jsonl, rows)
        time.sleep(0.2)  # the COPY's backend exits: its CPU shows in the postmaster's once reaped
        copy_cpu = cpu.per_row(before, cpu.snapshot([os.getpid()]), rows)
        copies.append(raw)
        parts, files = files_for_workers(csv_path, fmt, daemon.workers, workdir)
        settle(conn)
        before = cpu.snapshot(pids)
        elapsed = drop_and_wait(daemon, conn, files, source_of(fmt))
        spent = cpu.per_row(before, cpu.snapshot(pids), rows)
        costs.append((spent["ingestd"], spent["PostgreSQL"], spent["RabbitMQ"], copy_cpu["PostgreSQL"]))
        ratios.append(rows / elapsed / raw)
        rates.append(rows / elapsed)
        label = label or daemon.suffix
        print(f"  {fmt:7} {daemon.workers} worker(s){label} round {round_no}: COPY {raw:,.0f} rows/s, ingestd "
              f"{rows / elapsed:,.0f} rows/s, ratio {rows / elapsed / raw:.2f}; CPU a row: ingestd "
              f"{spent['ingestd']:.1f} us, PostgreSQL {spent['PostgreSQL']:.1f} us (COPY alone "
              f"{copy_cpu['PostgreSQL']:.1f} us)", flush=True)
        for path in {csv_path, *parts, *files}:
            path.unlink(missing_ok=True)
    ours, server, broker, alone = (statistics.median(column) for column in zip(*costs, strict=True))
    results.append((f"throughput {fmt}, {daemon.workers} worker(s){label}", f"{statistics.median(rates):,.0f} rows/s",
                    f"ratio {statistics.median(ratios):.2f} (median of {rounds}); CPU a row: ingestd {ours:.1f} us, "
                    f"PostgreSQL {server:.1f} us (COPY alone {alone:.1f} us)"))
    return {"format": fmt, "workers": daemon.workers, "partition": daemon.partition,
            "rows_per_s": statistics.median(rates),
            "ratio": statistics.median(ratios), "copy_rows_per_s": statistics.median(copies), "rounds": ratios,
            "cpu_us_per_row": {"ingestd": ours, "postgresql": server, "rabbitmq": broker, "copy_postgresql": alone}}


def memory(daemon: Daemon, conn, workdir: Path, megabytes: int, results: list) -> None:
    # A JSON Lines record of these rows is about 4.4 times its CSV line.
    for fmt in ("csv", "jsonl"):
        big = workdir / f"big{SUFFIX[fmt]}"
        csv_path = workdir / "big-source.csv"
        generate_csv(csv_path, target_bytes=megabytes * 1_000_000 if fmt == "csv" else megabytes * 230_000,
                     first_id=5 * 10**9 + len(fmt) * 10**8)
        convert(csv_path, fmt, big)
        csv_path.unlink()
        daemon.reset_peak_rss()
        elapsed = drop_and_wait(daemon, conn, [big], source_of(fmt))
        size = big.stat().st_size / 1e6
        big.unlink()
        rss = daemon.peak_rss_mb()
        print(f"  memory: {size:,.0f} MB {fmt} in {elapsed:.1f} s; daemon peak RSS {rss:.0f} MB", flush=True)
        results.append((f"memory, {size:,.0f} MB {fmt}", f"peak RSS {rss:.0f} MB",
                        f"{elapsed:.0f} s (target < 200 MB)"))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true",
                        help="the reference sizes, --scale included (15 minutes on a quiet 2-core machine; "
                             "35 GB of disk for the 50 M bronze rows, 0.7 GB a million, dropped afterwards)")
    parser.add_argument("--rows", type=int, help="rows per throughput round (default 100,000; full 1,000,000)")
    parser.add_argument("--repeat", type=int, help="throughput rounds (default 1; full 3)")
    parser.add_argument("--formats", default="csv,jsonl,parquet", help="throughput formats (default all)")
    parser.add_argument("--workers", default="1,2", help="consumer counts to measure (default 1,2)")
    parser.add_argument("--latency", type=int, metavar="N",
                        help="small files dropped one at a time (default 50; full 200)")
    parser.add_argument("--burst", metavar="N[,N...]",
                        help="small files dropped at once, one burst per size (default 1000; full 100,1000,10000)")
    parser.add_argument("--no-processes", dest="processes", action="store_false",
                        help="measure bursts only with `ingestd run`, not also with the watcher and each "
                             "consumer in its own process (the systemd and compose shape)")
    parser.add_argument("--memory-mb", type=int,
                        help="size of the large CSV / JSON Lines files (default 0: off; full 1024)")
    parser.add_argument("--scale", action="store_true",
                        help="only the cost as the work grows: throughput with rows already in bronze, then "
                             "python -m bench.scale (ops tables, a watcher starting on many files)")
    parser.add_argument("--bronze-rows", metavar="N[,N...]",
                        help="bronze sizes for --scale (default 0,1000000,10000000; full 0,10000000,50000000)")
    parser.add_argument("--partition", default="none", metavar="MODE[,MODE]",
                        help="bronze tables plain (none) or partitioned by month (month); none,month measures "
                             "both, one after the other, each in a database of its own (default none)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"),
                        help="folder for summary.txt, figures.json and the PNG plots (default ./bench-results)")
    args = parser.parse_args()
    full = args.full
    rows = args.rows or (1_000_000 if full else 100_000)
    rounds = args.repeat or (3 if full else 1)
    latency_files = args.latency if args.latency is not None else (200 if full else 50)
    bursts = [int(n) for n in (args.burst or ("100,1000,10000" if full else "1000")).split(",") if int(n)]
    memory_mb = args.memory_mb if args.memory_mb is not None else (1024 if full else 0)
    formats = [f for f in args.formats.split(",") if f]
    worker_counts = [int(w) for w in args.workers.split(",") if w]
    bronze_sizes = [int(n) for n in (args.bronze_rows or ("0,10000000,50000000" if full else "0,1000000,10000000"))
                    .split(",")]
    if args.scale:
        formats, worker_counts, latency_files, bursts, memory_mb = [], [1], 0, [], 0
    scale = args.scale or full

    server, amqp_url = server_urls()
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
               f"{platform.platform()}")
    print(f"machine: {machine}", flush=True)
    results: list[tuple[str, str, str]] = []
    figures: dict = {"machine": machine, "rows_per_round": rows, "throughput": [], "burst": [], "growth": []}
    modes = [m for m in args.partition.split(",") if m]
    if any(m not in ("none", "month") for m in modes):
        parser.error("--partition takes none, month or none,month")
    for workers, mode in itertools.product(worker_counts, modes):
        with scratch_daemon(server, amqp_url, workers, partition=mode) as (daemon, conn):
            workdir, db_url = daemon.workdir, daemon.db_url
            print(f"ingestd run with {workers} consumer worker(s){daemon.suffix}:", flush=True)
            for fmt in formats:
                figures["throughput"].append(throughput(daemon, conn, db_url, workdir, fmt, rows, rounds, results))
            if workers == worker_counts[0] and latency_files:
                seconds = latency(daemon, conn, latency_files)
                if mode == modes[0]:
                    figures["latency"] = {"seconds": seconds}
                p50, p95, p99 = (seconds[min(len(seconds) - 1, int(q * len(seconds)))] for q in (0.5, 0.95, 0.99))
                results.append((f"latency, {latency_files} small files one at a time{daemon.suffix}",
                                f"p50 {p50:.3f} s, p95 {p95:.3f} s, p99 {p99:.3f} s",
                                "goal p50 <= 0.05 s, p99 <= 0.5 s"))
            if workers == max(worker_counts):
                bursts_of(daemon, conn, bursts, figures, results, first_id=3 * 10**9)
            if workers == worker_counts[0] and memory_mb and mode == modes[0]:
                memory(daemon, conn, workdir, memory_mb, results)
            if workers == worker_counts[0] and scale and mode == modes[0]:
                from .growth import fill_bronze
                print("throughput as the bronze table grows (CSV, 1 round each):", flush=True)
                for size in bronze_sizes:
                    fill = fill_bronze(conn, "daily_activity", size) if size else 0.0
                    label = f" after {size:,} rows"
                    measured = throughput(daemon, conn, db_url, workdir, "csv", rows, 1, results, label)
                    figures["growth"].append({"bronze_rows": size, "fill_seconds": fill, **measured})
            if workers == max(worker_counts) and bursts and args.processes:
                daemon.stop()
                roles = Daemon(workdir, db_url, amqp_url, workers, shape="roles", partition=mode)
                try:
                    roles.wait_ready(conn)
                    print(f"ingestd watch and {workers} ingestd consume, each its own process{roles.suffix}:",
                          flush=True)
                    bursts_of(roles, conn, bursts, figures, results, first_id=7 * 10**9)
                finally:
                    roles.stop()
    if scale:
        from .scale import run_scale
        results.extend(run_scale(server, amqp_url, runs=1_000_000, dead=100_000, files=100_000 if full else 20_000))
    lines = [f"machine: {machine}",
             f"summary ({rows:,} rows per throughput round; COPY = PostgreSQL's COPY of the same records as "
             "JSON lines into a jsonb table; ingestd = drop-to-committed through `ingestd run`, validation on)"]
    width = max((len(r[0]) for r in results), default=0)
    lines += [f"  {name:<{width}}  {figure:<34}  {note}" for name, figure, note in results]
    print("\n" + "\n".join(lines[1:]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.txt").write_text("\n".join(lines) + "\n")
    (args.out / "figures.json").write_text(json.dumps(figures, indent=1) + "\n")
    from .plots import write_plots
    written = write_plots(figures, args.out)
    print(f"\nwritten: {args.out / 'summary.txt'}, {args.out / 'figures.json'}"
          + "".join(f", {path}" for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
