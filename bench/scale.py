"""Cost as the work grows: the operator's commands over large ops tables, and
the watcher starting on a landing folder that already holds many files.

    python -m bench.scale                          # 1,000,000 runs, 100,000 dead letters, 100,000 files
    python -m bench.scale --runs 200000 --dead 20000 --files 20000

Prints figures; asserts nothing. Needs PostgreSQL and RabbitMQ
(INGESTD_TEST_DATABASE_URL / INGESTD_TEST_AMQP_URL or the local ports); its
database, queues and files are removed afterwards.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2
from psycopg2 import sql

from .__main__ import delete_broker_names, peak_rss_mb, with_db

SOURCES = ("daily_activity", "sleep_day", "heart_rate", "hourly_steps", "events_a", "events_b")


def fill_ops(conn, runs: int, dead: int) -> None:
    """``runs`` finished runs over the last 30 days, ``dead`` dead letters
    (half waiting), spread over the sources."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO ops.pipeline_runs (run_id, event_id, source, trigger, status, started_at, finished_at,"
            " rows_total, rows_valid, rows_invalid, error_summary, reason, worker, file_path, file_size)"
            " SELECT gen_random_uuid(), gen_random_uuid(), (%s::text[])[1 + i %% %s], 'file',"
            " CASE WHEN i %% 50 = 0 THEN 'failure' WHEN i %% 20 = 0 THEN 'skipped' ELSE 'success' END,"
            " now() - (i * interval '2.5 seconds'), now() - (i * interval '2.5 seconds') + interval '1 second',"
            " 100, 99, 1, NULL, CASE WHEN i %% 50 = 0 THEN 'parse_error' END, 'bench', 'src/file-' || i || '.csv',"
            " 1000 FROM generate_series(1, %s) AS i", (list(SOURCES), len(SOURCES), runs))
        cur.execute(
            "INSERT INTO ops.dead_letters (event_id, source, reason, error, detail, event, run_id, file_path,"
            " dead_lettered_at, replayed_at)"
            " SELECT gen_random_uuid(), (%s::text[])[1 + i %% %s], 'parse_error', 'bad row', '{}'::jsonb,"
            " '{}'::jsonb, NULL, '_quarantine/src/f-' || i, now() - (i * interval '10 seconds'),"
            " CASE WHEN i %% 2 = 0 THEN now() END FROM generate_series(1, %s) AS i",
            (list(SOURCES), len(SOURCES), dead))
        cur.execute("ANALYZE ops.pipeline_runs")
        cur.execute("ANALYZE ops.dead_letters")
    conn.commit()


def timed(config: Path, *command: str, repeat: int = 3) -> float:
    """Best wall time of ``ingestd COMMAND`` (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "ingestd.daemon", "--config", str(config), *command],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        if done.returncode not in (0, 1):  # 1: `status` saying that something needs attention
            raise RuntimeError(f"ingestd {' '.join(command)} failed: {done.stderr.decode()[-500:]}")
        best = min(best, time.perf_counter() - started)
    return best


def queue_depth(amqp_url: str, queue: str) -> int:
    import pika
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    except Exception:  # noqa: BLE001 - not declared yet
        return 0
    finally:
        if conn.is_open:
            conn.close()


def watcher_start(workdir: Path, config: Path, amqp_url: str, prefix: str, files: int) -> tuple[float, float]:
    """(seconds until ``files`` files already there are published, watcher peak RSS in MB)."""
    folder = workdir / "data_lake" / "daily_activity"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (folder / f"f{i:07d}.csv").write_bytes(b"Id,ActivityDate\n1,4/12/2016\n")
    old = time.time() - 3600
    for entry in os.scandir(folder):
        os.utime(entry.path, (old, old))  # settled long ago, as files waiting for a start are
    log = open(workdir / "watch.log", "wb")
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ingestd.daemon", "--config", str(config), "watch"],
                            stdout=log, stderr=subprocess.STDOUT)
    rss = 0.0
    try:
        while queue_depth(amqp_url, f"{prefix}ingest.events") < files:
            rss = max(rss, peak_rss_mb(proc.pid))
            if proc.poll() is not None or time.perf_counter() - started > 3600:
                raise RuntimeError(f"the watcher stopped or took too long; see {workdir / 'watch.log'}")
            time.sleep(0.5)
        elapsed = time.perf_counter() - started
        rss = max(rss, peak_rss_mb(proc.pid))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    return elapsed, rss


def run_scale(server: str, amqp_url: str, runs: int, dead: int, files: int) -> list[tuple[str, str, str]]:
    """Fill the ops tables, time the operator's commands, start a watcher on
    ``files`` waiting files; prints as it goes, returns summary lines."""
    dbname, prefix = f"ingestd_scale_{uuid.uuid4().hex[:6]}", f"scale{uuid.uuid4().hex[:6]}."
    workdir = Path(tempfile.mkdtemp(prefix="ingestd-bench-scale-"))
    admin = psycopg2.connect(with_db(server, "postgres"))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    config = workdir / "ingestd.toml"
    config.write_text(f'[landing]\ndir = "{workdir / "data_lake"}"\n[database]\nurl = "{with_db(server, dbname)}"\n'
                      f'[broker]\nurl = "{amqp_url}"\nprefix = "{prefix}"\n[health]\nport = 0\n'
                      + "".join(f'[[sources]]\nname = "{s}"\nformat = "csv"\n' for s in SOURCES))
    results = []
    try:
        subprocess.run([sys.executable, "-m", "ingestd.daemon", "--config", str(config), "migrate"], check=True,
                       stdout=subprocess.DEVNULL)
        conn = psycopg2.connect(with_db(server, dbname))
        started = time.perf_counter()
        fill_ops(conn, runs, dead)
        conn.close()
        print(f"ops tables: {runs:,} runs, {dead:,} dead letters (filled in "
              f"{time.perf_counter() - started:.1f} s)", flush=True)
        for command in (("runs",), ("runs", "--source", "heart_rate"), ("runs", "--status", "failure"),
                        ("status", "--json"), ("dlq", "list", "--limit", "50"),
                        ("dlq", "list", "--source", "sleep_day", "--limit", "50")):
            seconds = timed(config, *command)
            print(f"  ingestd {' '.join(command):<40} {seconds:6.2f} s (best of 3)", flush=True)
            results.append((f"ingestd {' '.join(command)}", f"{seconds:.2f} s",
                            f"{runs:,} runs, {dead:,} dead letters; best of 3, process start included"))
        if files:
            seconds, rss = watcher_start(workdir, config, amqp_url, prefix, files)
            print(f"watcher start on {files:,} waiting files: all published after {seconds:.1f} s "
                  f"({files / seconds:,.0f} files/s), watcher peak RSS {rss:.0f} MB", flush=True)
            results.append((f"watcher start on {files:,} waiting files", f"{seconds:.1f} s ({files / seconds:,.0f}"
                            " files/s)", f"watcher peak RSS {rss:.0f} MB"))
    finally:
        delete_broker_names(amqp_url, prefix)
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        admin.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1_000_000, help="rows in ops.pipeline_runs (default 1,000,000)")
    parser.add_argument("--dead", type=int, default=100_000, help="dead letters (default 100,000; half waiting)")
    parser.add_argument("--files", type=int, default=100_000, help="files waiting when the watcher starts "
                        "(default 100,000; 0: skip)")
    args = parser.parse_args()
    server = os.environ.get("INGESTD_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    amqp_url = os.environ.get("INGESTD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    run_scale(server, amqp_url, args.runs, args.dead, args.files)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
