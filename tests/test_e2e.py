"""End to end: `ingestd run` / `ingestd consume` as subprocesses, real files dropped."""
import hashlib
import os
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


def finished_runs(db):
    return query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status <> 'running'")[0][0]


def test_dropped_fitbit_files_load_once_each(procs, db, tmp_path, write_config):
    landing = tmp_path / "data_lake"
    proc = procs(write_config(), "run", "--workers", "2")
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


def test_unconfigured_folder_is_quarantined_and_daemon_stays_up(procs, db, tmp_path, write_config):
    landing = tmp_path / "data_lake"
    proc = procs(write_config(), "run")
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


def close_broker_connections(prefix: str) -> int:
    """Force-close this test's connections at the broker (what a broker restart does to them)."""
    listing = subprocess.run(["rabbitmqctl", "list_connections", "pid", "client_properties", "-q",
                              "--no-table-headers"], capture_output=True, text=True, check=True, timeout=60).stdout
    closed = 0
    for line in listing.splitlines():
        pid, _, props = line.partition("\t")
        if f'"ingestd-{prefix}' in props or f"<<\"ingestd-{prefix}" in props:
            subprocess.run(["rabbitmqctl", "close_connection", pid.strip(), "test: broker connection cut"],
                           capture_output=True, check=True, timeout=60)
            closed += 1
    return closed


@pytest.mark.slow  # an outage of the broker
def test_broker_connections_cut_during_a_load_and_between_files(procs, db, tmp_path, prefix, write_config):
    landing = tmp_path / "data_lake"
    config_path = write_config()
    (landing / "daily_activity").mkdir(parents=True)
    tmp = landing / "daily_activity" / ".big.tmp"
    big_csv(tmp, 150_000)
    proc = procs(config_path, "run")
    wait_for(lambda: query(db, "SELECT to_regclass('ops.pipeline_runs')")[0][0], timeout=60)
    time.sleep(1.0)
    os.replace(tmp, landing / "daily_activity" / "big.csv")
    wait_for(lambda: query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'running'")[0][0] >= 1,
             interval=0.05)
    assert close_broker_connections(prefix) >= 2  # watcher and consumer, mid-load
    wait_for(lambda: query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'success'")[0][0] == 1,
             timeout=120)
    time.sleep(1.0)
    close_broker_connections(prefix)
    drop_file(landing, "heart_rate/h.csv", FITBIT / "heartrate_seconds_merged_excerpt.csv")
    wait_for(lambda: query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'success'")[0][0] == 2,
             timeout=120)
    assert query(db, "SELECT count(*), count(DISTINCT record_number) FROM bronze.daily_activity") == [
        (150_000, 150_000)]
    assert query(db, "SELECT count(*) FROM bronze.heart_rate") == [(49,)]
    assert query(db, "SELECT count(*) FROM ops.dead_letters") == [(0,)]
    assert proc.poll() is None


def test_publish_enqueues_existing_files_and_reports_outsiders(db, tmp_path, write_config):
    config_path = write_config()
    landing = tmp_path / "data_lake"
    drop_file(landing, "sleep_day/old/sleep.csv", FITBIT / "sleepDay_merged.csv")
    drop_file(landing, "heart_rate/h.csv", FITBIT / "heartrate_seconds_merged_excerpt.csv")
    outsider = tmp_path / "elsewhere.csv"
    outsider.write_text("a\n1\n")
    result = subprocess.run(ingestd_cmd("--config", str(config_path), "publish", "--no-progress", str(landing),
                                        str(outsider)), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "published 2 file(s), 1 problem(s)" in result.stdout
    assert "elsewhere.csv" in result.stderr and "not inside the landing zone" in result.stderr
    consume = subprocess.Popen(ingestd_cmd("--config", str(config_path), "consume"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'success'")[0][0] == 2)
        assert sorted(query(db, "SELECT trigger, source FROM ops.pipeline_runs")) == [
            ("manual", "heart_rate"), ("manual", "sleep_day")]
    finally:
        consume.send_signal(signal.SIGTERM)
        assert consume.wait(timeout=30) == 0


def test_check_reports_what_is_wrong(tmp_path, write_config):
    config_path = write_config(sources="")
    ok = subprocess.run(ingestd_cmd("--config", str(config_path), "check"), capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0, ok.stdout
    assert [line.split()[:2] for line in ok.stdout.splitlines()] == [
        ["ok", "config"], ["ok", "database"], ["ok", "broker"], ["ok", "landing"]]
    bad = config_path.read_text().replace("127.0.0.1:5672", "127.0.0.1:1")
    config_path.write_text(bad)
    failed = subprocess.run(ingestd_cmd("--config", str(config_path), "check"), capture_output=True, text=True,
                            timeout=60)
    assert failed.returncode == 1
    assert "FAIL broker" in failed.stdout and "fix: start RabbitMQ" in failed.stdout
    assert "guest:guest" not in failed.stdout


def start_big_load(procs, db, tmp_path, config_path, rows):
    """``ingestd run`` with a file of ``rows`` rows renamed into place; returns
    once its load is running."""
    landing = tmp_path / "data_lake"
    (landing / "daily_activity").mkdir(parents=True, exist_ok=True)
    tmp = landing / "daily_activity" / ".big.tmp"
    big_csv(tmp, rows)
    proc = procs(config_path, "run")
    wait_for(lambda: query(db, "SELECT to_regclass('ops.pipeline_runs')")[0][0], timeout=60)
    os.replace(tmp, landing / "daily_activity" / "big.csv")
    wait_for(lambda: query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'running'")[0][0] >= 1,
             interval=0.05)
    return proc


def test_sigterm_mid_load_finishes_the_file_then_exits_0(procs, db, tmp_path, write_config):
    proc = start_big_load(procs, db, tmp_path, write_config(), 150_000)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert query(db, "SELECT status, rows_total FROM ops.pipeline_runs") == [("success", 150_000)]
    assert query(db, "SELECT count(*) FROM bronze.daily_activity") == [(150_000,)]


def test_second_signal_exits_at_once(procs, db, tmp_path, write_config):
    proc = start_big_load(procs, db, tmp_path, write_config(), 400_000)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 1
    # Nothing half-loaded: the transaction never committed, the file is still there.
    assert query(db, "SELECT count(*) FROM ops.raw_ingest_manifest") == [(0,)]
    assert (tmp_path / "data_lake" / "daily_activity" / "big.csv").exists()
    # The table is created in the load's own transaction: rolled back with it.
    assert query(db, "SELECT to_regclass('bronze.daily_activity')") == [(None,)]
