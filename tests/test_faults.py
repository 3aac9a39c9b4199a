"""Faults: killed workers, a broker or database cut off, a stopped watcher,
racing consumers, slow writers, an unwritable archive. Each test counts the
rows afterwards: nothing lost, nothing twice."""
import os
import random
import signal
import threading
import time

import psycopg2
import pytest

from .conftest import FITBIT, drop_file, query
from .proxy import CuttableProxy
from .test_e2e import big_csv, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]


def count(db, sql, params=None):
    return query(db, sql, params)[0][0]


def small_files(landing, source, n, prefix="f"):
    """n one-row JSON Lines files with distinct bytes, renamed into place."""
    folder = landing / source
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        tmp = folder / f".{prefix}{i}.tmp"
        tmp.write_bytes(b'{"file": "%s", "n": %d}\n' % (prefix.encode(), i))
        os.replace(tmp, folder / f"{prefix}{i}.jsonl")


def test_consumer_killed_ten_times_mid_file_then_restarted(procs, db, tmp_path, write_config):
    rows = 200_000
    landing = tmp_path / "data_lake"
    # Every kill returns the message to the queue, which counts against the
    # delivery limit (5 by default: a file that keeps killing workers is
    # dead-lettered). Here the kills are the test, so the limit is raised.
    config_path = write_config()
    config_path.write_text(config_path.read_text().replace("delivery_limit = 5", "delivery_limit = 20"))
    (landing / "daily_activity").mkdir(parents=True)
    big_csv(landing / "daily_activity" / ".big.tmp", rows)
    os.replace(landing / "daily_activity" / ".big.tmp", landing / "daily_activity" / "big.csv")
    procs(config_path, "watch")
    rng = random.Random(2026)
    kills = 0
    for _ in range(10):
        runs_before = count(db, "SELECT count(*) FROM ops.pipeline_runs")
        consumer = procs(config_path, "consume")
        # A new run of this consumer has started: the kill lands in its load.
        wait_for(lambda: count(db, "SELECT count(*) FROM ops.pipeline_runs") > runs_before,
                 timeout=60, interval=0.02)
        time.sleep(rng.uniform(0.0, 1.0))
        consumer.send_signal(signal.SIGKILL)
        consumer.wait()
        kills += 1
        if count(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'success'"):
            break  # the load won the race this time; nothing left to interrupt
    procs(config_path, "consume")
    wait_for(lambda: count(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'success'") == 1,
             timeout=180)
    assert query(db, "SELECT count(*), count(DISTINCT record_number) FROM bronze.daily_activity") == [(rows, rows)]
    assert count(db, "SELECT count(*) FROM ops.raw_ingest_manifest") == 1
    assert count(db, "SELECT count(*) FROM ops.dead_letters") == 0
    interrupted = count(db, "SELECT count(*) FROM ops.pipeline_runs WHERE error_summary LIKE 'interrupted%%'")
    assert interrupted >= kills - 1 >= 1


def test_broker_cut_off_during_a_burst_of_500_files(procs, db, tmp_path, write_config):
    proxy = CuttableProxy("127.0.0.1", 5672)
    config_path = write_config()
    config_path.write_text(config_path.read_text().replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}"))
    landing = tmp_path / "data_lake"
    try:
        procs(config_path, "run", "--workers", "2")
        wait_for(lambda: count(db, "SELECT to_regclass('ops.pipeline_runs') IS NOT NULL"), timeout=60)
        time.sleep(1)
        writer = threading.Thread(target=small_files, args=(landing, "events_jsonl", 500))
        writer.start()
        wait_for(lambda: count(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'success'") >= 50,
                 timeout=120, interval=0.05)
        proxy.cut()
        time.sleep(3)
        proxy.restore()
        writer.join()
        wait_for(lambda: count(db, "SELECT count(*) FROM ops.raw_ingest_manifest") == 500, timeout=300)
        time.sleep(2)  # any duplicate event would be handled by now
    finally:
        proxy.close()
    assert query(db, "SELECT count(*), count(DISTINCT raw_data->>'n') FROM bronze.events_jsonl") == [(500, 500)]
    assert count(db, "SELECT count(*) FROM ops.dead_letters") == 0
    assert count(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'failure'"
                     " AND error_summary NOT LIKE 'interrupted%%'") == 0


def test_database_cut_off_for_30_seconds_mid_load(procs, db, tmp_path, write_config, database_url):
    dsn = psycopg2.extensions.parse_dsn(database_url)
    proxy = CuttableProxy(dsn.get("host", "127.0.0.1"), int(dsn.get("port", 5432)))
    proxied = psycopg2.extensions.make_dsn(**dict(dsn, host="127.0.0.1", port=str(proxy.port)))
    config_path = write_config()
    config_path.write_text(config_path.read_text().replace(f'url = "{database_url}"', f'url = "{proxied}"'))
    landing = tmp_path / "data_lake"
    (landing / "daily_activity").mkdir(parents=True)
    big_csv(landing / "daily_activity" / ".big.tmp", 150_000)
    try:
        procs(config_path, "run")
        wait_for(lambda: count(db, "SELECT to_regclass('ops.pipeline_runs') IS NOT NULL"), timeout=60)
        small_files(landing, "events_jsonl", 20, "before")
        os.replace(landing / "daily_activity" / ".big.tmp", landing / "daily_activity" / "big.csv")
        wait_for(lambda: count(db, "SELECT count(*) FROM ops.pipeline_runs WHERE file_path = 'daily_activity/big.csv'"
                                   " AND status = 'running'") == 1, interval=0.05)
        proxy.cut()
        small_files(landing, "events_jsonl", 20, "during")  # files keep arriving during the outage
        time.sleep(30)
        proxy.restore()
        wait_for(lambda: count(db, "SELECT count(*) FROM ops.raw_ingest_manifest") == 41, timeout=180)
    finally:
        proxy.close()
    assert count(db, "SELECT count(*) FROM bronze.daily_activity") == 150_000
    assert count(db, "SELECT count(*) FROM bronze.events_jsonl") == 40
    assert count(db, "SELECT count(*) FROM ops.dead_letters") == 0
    story = query(db, "SELECT status, count(*) FROM ops.pipeline_runs GROUP BY 1 ORDER BY 1")
    assert dict(story)["success"] == 41
    assert dict(story).get("failure", 0) >= 1  # the load cut off, closed as interrupted
    assert count(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'failure'"
                     " AND error_summary NOT LIKE 'interrupted%%'") == 0


def test_watcher_stopped_while_files_arrive_finds_them_all_when_started(procs, db, tmp_path, write_config):
    config_path = write_config()
    landing = tmp_path / "data_lake"
    procs(config_path, "consume")
    watcher = procs(config_path, "watch")
    small_files(landing, "events_jsonl", 10, "early")
    wait_for(lambda: count(db, "SELECT count(*) FROM ops.raw_ingest_manifest") == 10)
    watcher.send_signal(signal.SIGTERM)
    assert watcher.wait(timeout=30) == 0
    small_files(landing, "events_jsonl", 50, "while_stopped")
    time.sleep(1)
    assert count(db, "SELECT count(*) FROM ops.raw_ingest_manifest") == 10
    procs(config_path, "watch")
    wait_for(lambda: count(db, "SELECT count(*) FROM ops.raw_ingest_manifest") == 60, timeout=60)
    assert count(db, "SELECT count(*) FROM bronze.events_jsonl") == 60


def test_two_consumers_racing_on_the_same_bytes_dropped_twice_at_once(procs, db, tmp_path, write_config):
    config_path = write_config()
    landing = tmp_path / "data_lake"
    procs(config_path, "consume")
    procs(config_path, "consume")
    procs(config_path, "watch")
    wait_for(lambda: count(db, "SELECT to_regclass('ops.pipeline_runs') IS NOT NULL"), timeout=60)
    time.sleep(2)
    folder = landing / "hourly_steps"
    folder.mkdir(parents=True, exist_ok=True)
    data = (FITBIT / "hourlySteps_merged.csv").read_bytes()
    for name in ("a", "b"):
        (folder / f".{name}.tmp").write_bytes(data)
    os.replace(folder / ".a.tmp", folder / "a.csv")
    os.replace(folder / ".b.tmp", folder / "b.csv")
    wait_for(lambda: count(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status <> 'running'") == 2)
    assert sorted(query(db, "SELECT status FROM ops.pipeline_runs")) == [("skipped",), ("success",)]
    assert count(db, "SELECT count(*) FROM bronze.hourly_steps") == 22099
    assert len(set(query(db, "SELECT worker FROM ops.pipeline_runs"))) in (1, 2)


def test_a_file_appended_to_for_5_seconds_is_loaded_once_whole(procs, db, tmp_path, write_config):
    config_path = write_config()
    landing = tmp_path / "data_lake"
    procs(config_path, "run")
    wait_for(lambda: count(db, "SELECT to_regclass('ops.pipeline_runs') IS NOT NULL"), timeout=60)
    (landing / "events_jsonl").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    lines = 0
    with open(landing / "events_jsonl" / "slow.jsonl", "wb") as fh:
        while time.monotonic() - started < 5:
            fh.write(b'{"line": %d}\n' % lines)
            fh.flush()
            lines += 1
            time.sleep(0.7)  # longer than settle_seconds: only the open writer says "not done"
    wait_for(lambda: count(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status <> 'running'") >= 1)
    time.sleep(1.5)
    assert query(db, "SELECT status, rows_total FROM ops.pipeline_runs") == [("success", lines)]
    assert count(db, "SELECT count(*) FROM bronze.events_jsonl") == lines


def test_unwritable_archive_keeps_the_load_reports_it_and_never_reloads(procs, db, tmp_path, write_config):
    config_path = write_config()
    landing = tmp_path / "data_lake"
    landing.mkdir(parents=True, exist_ok=True)
    (landing / "_archive").write_text("not a folder: every archive move fails")  # fails even for root
    run = procs(config_path, "run")
    drop_file(landing, "heart_rate/h.csv", FITBIT / "heartrate_seconds_merged_excerpt.csv")
    # The file is archived after the load commits: the run's note on it comes a moment later.
    wait_for(lambda: count(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status <> 'running'"
                               " AND error_summary IS NOT NULL") == 1)
    status, summary = query(db, "SELECT status, error_summary FROM ops.pipeline_runs")[0]
    assert status == "success" and "could not archive" in summary
    assert (landing / "heart_rate" / "h.csv").exists()
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=30) == 0
    procs(config_path, "run")  # the restart's scan publishes the file again
    wait_for(lambda: count(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status <> 'running'") == 2)
    assert sorted(query(db, "SELECT status FROM ops.pipeline_runs")) == [("skipped",), ("success",)]
    assert count(db, "SELECT count(*) FROM bronze.heart_rate") == 49


def test_ten_thousand_files_in_one_folder(procs, db, tmp_path, write_config):
    config_path = write_config()
    landing = tmp_path / "data_lake"
    small_files(landing, "events_jsonl", 10_000, "many")  # already there: found by the start scan
    procs(config_path, "run", "--workers", "2")
    wait_for(lambda: count(db, "SELECT to_regclass('ops.raw_ingest_manifest') IS NOT NULL"), timeout=60)
    wait_for(lambda: count(db, "SELECT count(*) FROM ops.raw_ingest_manifest") == 10_000, timeout=600,
             interval=1.0)
    assert query(db, "SELECT count(*), count(DISTINCT raw_data->>'n') FROM bronze.events_jsonl") == [
        (10_000, 10_000)]
    assert count(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status <> 'success'") == 0
    assert not list((landing / "events_jsonl").glob("*.jsonl"))
