"""End to end: `ingestd run` / `ingestd consume` as subprocesses, real files dropped."""
import hashlib
import os
import random
import signal
import subprocess
import time

import pytest

from .conftest import FITBIT, drop_file, ingestd_cmd, query

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def wait_for(predicate, timeout=60.0, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
def start(write_config, tmp_path):
    procs = []

    def start_(command="run", *extra, config_path=None):
        path = config_path or write_config()
        log = open(tmp_path / f"{command}-{len(procs)}.log", "wb")
        proc = subprocess.Popen(ingestd_cmd("--config", str(path), command, *extra), stdout=log,
                                stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    yield start_
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def finished_runs(db):
    return query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status <> 'running'")[0][0]


def test_dropped_fitbit_files_load_once_each(start, db, tmp_path):
    landing = tmp_path / "data_lake"
    proc = start("run", "--workers", "2")
    # A file already there at start is found by the initial scan.
    drop_file(landing, "heart_rate/heartrate.csv", FITBIT / "heartrate_seconds_merged_excerpt.csv")
    wait_for(lambda: finished_runs(db) >= 1)
    drop_file(landing, "daily_activity/dailyActivity_merged.csv", FITBIT / "dailyActivity_merged.csv")
    # Written in place (no rename): picked up on close-after-write.
    (landing / "sleep_day").mkdir(exist_ok=True)
    (landing / "sleep_day" / "sleep.csv").write_bytes((FITBIT / "sleepDay_merged.csv").read_bytes())
    drop_file(landing, "hourly_steps/steps.csv", FITBIT / "hourlySteps_merged.csv")
    # Ignored names stay where they are.
    drop_file(landing, "daily_activity/.hidden.csv", b"x")
    (landing / "daily_activity" / "partial.csv.part").write_bytes(b"x")
    wait_for(lambda: finished_runs(db) >= 4)
    # The same bytes again, under another name: skipped.
    drop_file(landing, "daily_activity/again.csv", FITBIT / "dailyActivity_merged.csv")
    wait_for(lambda: finished_runs(db) >= 5)
    counts = {t: query(db, f"SELECT count(*) FROM bronze.{t}")[0][0]
              for t in ("daily_activity", "sleep_day", "hourly_steps", "heart_rate")}
    assert counts == {"daily_activity": 940, "sleep_day": 413, "hourly_steps": 22099, "heart_rate": 49}
    statuses = sorted(query(db, "SELECT status FROM ops.pipeline_runs"))
    assert statuses == [("skipped",)] + [("success",)] * 4
    digest = hashlib.sha256((FITBIT / "dailyActivity_merged.csv").read_bytes()).hexdigest()
    assert query(db, "SELECT checksum FROM ops.raw_ingest_manifest WHERE source = 'daily_activity'") == [(digest,)]
    assert (landing / "daily_activity" / ".hidden.csv").exists()
    assert (landing / "daily_activity" / "partial.csv.part").exists()
    assert len(list((landing / "_archive").rglob("*.csv"))) == 5
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_unconfigured_folder_is_quarantined_and_daemon_stays_up(start, db, tmp_path):
    landing = tmp_path / "data_lake"
    proc = start("run")
    drop_file(landing, "mystery/file.csv", b"a,b\n1,2\n")
    drop_file(landing, "daily_activity/broken.csv", b'Id,ActivityDate\n1,"unterminated\n')
    wait_for(lambda: finished_runs(db) >= 2)
    assert sorted(query(db, "SELECT reason FROM ops.dead_letters")) == [("parse_error",), ("unknown_source",)]
    assert (landing / "_quarantine" / "mystery" / "file.csv").exists()
    drop_file(landing, "heart_rate/h.csv", FITBIT / "heartrate_seconds_merged_excerpt.csv")
    wait_for(lambda: query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'success'")[0][0] == 1)
    assert proc.poll() is None


def big_csv(path, rows):
    header = (FITBIT / "dailyActivity_merged.csv").read_bytes().split(b"\r\n")[0]
    body = (FITBIT / "dailyActivity_merged.csv").read_bytes().split(b"\r\n")[1:]
    with open(path, "wb") as fh:
        fh.write(header + b"\r\n")
        for i in range(rows):
            fh.write(body[i % len(body)] + b"\r\n")


def test_consumer_killed_mid_file_loads_it_exactly_once(start, db, tmp_path, write_config):
    rows = 200_000
    landing = tmp_path / "data_lake"
    config_path = write_config()
    (landing / "daily_activity").mkdir(parents=True)
    tmp = landing / "daily_activity" / ".big.tmp"
    big_csv(tmp, rows)
    os.replace(tmp, landing / "daily_activity" / "big.csv")
    watcher = start("watch", config_path=config_path)
    rng = random.Random(7)
    for _ in range(3):
        consumer = start("consume", config_path=config_path)
        wait_for(lambda: query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'running'")[0][0] >= 1,
                 timeout=60, interval=0.05)
        time.sleep(rng.uniform(0.05, 0.8))
        consumer.send_signal(signal.SIGKILL)
        consumer.wait()
        if query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'success'")[0][0]:
            break  # the load finished before the kill landed
    start("consume", config_path=config_path)
    wait_for(lambda: query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'success'")[0][0] == 1,
             timeout=180)
    assert query(db, "SELECT count(*), count(DISTINCT record_number) FROM bronze.daily_activity") == [(rows, rows)]
    assert query(db, "SELECT count(*) FROM ops.raw_ingest_manifest") == [(1,)]
    interrupted = query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE error_summary LIKE 'interrupted%%'")
    assert interrupted[0][0] >= 1
    watcher.send_signal(signal.SIGTERM)
    assert watcher.wait(timeout=30) == 0
