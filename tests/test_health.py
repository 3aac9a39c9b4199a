"""Health, readiness, metrics and systemd notifications of a running daemon."""
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from .conftest import FITBIT, drop_file, ingestd_cmd, query
from .proxy import CuttableProxy
from .test_e2e import big_csv, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def metric(text: str, name: str, **labels) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric_name, _, label_text = series.partition("{")
        got = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if metric_name == name and got == want:
            return float(value)
    return None


class NotifySocket:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.path = str(path)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except (TimeoutError, BlockingIOError):
                return self.messages


def test_metrics_health_and_systemd_notifications_of_a_running_daemon(write_config, db, tmp_path):
    port = free_port()
    config_path = write_config(health_port=port)
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": ""}
    proc = subprocess.Popen(ingestd_cmd("--config", str(config_path), "run"), env=env,
                            stdout=open(tmp_path / "run.log", "wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=60)
        wait_for(lambda: any(m.startswith("READY=1") for m in notify.drain()), timeout=10)
        assert get(port, "/healthz")[0] == 200
        drop_file(tmp_path / "data_lake", "daily_activity/daily.csv", FITBIT / "dailyActivity_merged.csv")
        drop_file(tmp_path / "data_lake", "mystery/x.csv", b"a\n1\n")
        wait_for(lambda: query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status <> 'running'")[0][0] == 2)
        # A run's metrics are counted just after its commit: give them that moment.
        wait_for(lambda: metric(get(port, "/metrics")[1], "ingestd_dead_letters_total", source="_unknown",
                                reason="unknown_source") == 1, timeout=10)
        status, text = get(port, "/metrics")
        assert status == 200
        assert metric(text, "ingestd_rows_loaded_total", source="daily_activity", validation_status="valid") == 940
        assert metric(text, "ingestd_runs_total", source="daily_activity", status="success") == 1
        assert metric(text, "ingestd_events_published_total", source="daily_activity", kind="file") == 1
        assert metric(text, "ingestd_dead_letters_total", source="_unknown", reason="unknown_source") == 1
        assert metric(text, "ingestd_bytes_read_total", source="daily_activity") == (
            FITBIT / "dailyActivity_merged.csv").stat().st_size
        assert metric(text, "ingestd_last_success_timestamp_seconds", source="daily_activity") > time.time() - 60
        assert metric(text, "ingestd_run_duration_seconds_count", source="daily_activity") == 1
        assert "mystery" not in text and "daily.csv" not in text  # labels are sources and reasons only
        wait_for(lambda: sum(m == "WATCHDOG=1" for m in notify.drain()) >= 2, timeout=10)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert any(m.startswith("STOPPING=1") for m in notify.drain())


def test_readyz_follows_the_broker(write_config, db, tmp_path, amqp_url):
    port = free_port()
    proxy = CuttableProxy("127.0.0.1", 5672)
    config_path = write_config(health_port=port)
    config_path.write_text(config_path.read_text().replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}"))
    proc = subprocess.Popen(ingestd_cmd("--config", str(config_path), "run"),
                            stdout=open(tmp_path / "run.log", "wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=60)
        proxy.cut()
        wait_for(lambda: get(port, "/readyz")[0] == 503, timeout=30)
        body = json.loads(get(port, "/readyz")[1])
        assert any("broker" in p for p in body["problems"])
        assert get(port, "/healthz")[0] == 200  # alive, just not ready
        proxy.restore()
        wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=60)
        drop_file(tmp_path / "data_lake", "heart_rate/h.csv", FITBIT / "heartrate_seconds_merged_excerpt.csv")
        wait_for(lambda: query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'success'")[0][0] == 1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        proxy.close()


def test_sigterm_during_a_large_file_with_health_on_loses_nothing(write_config, db, tmp_path):
    port = free_port()
    config_path = write_config(health_port=port)
    landing = tmp_path / "data_lake"
    (landing / "daily_activity").mkdir(parents=True)
    big_csv(landing / "daily_activity" / ".big.tmp", 150_000)
    proc = subprocess.Popen(ingestd_cmd("--config", str(config_path), "run"),
                            stdout=open(tmp_path / "run.log", "wb"), stderr=subprocess.STDOUT)
    wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=60)
    os.replace(landing / "daily_activity" / ".big.tmp", landing / "daily_activity" / "big.csv")
    wait_for(lambda: query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'running'")[0][0] == 1,
             interval=0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    restarted = subprocess.Popen(ingestd_cmd("--config", str(config_path), "run"),
                                 stdout=open(tmp_path / "run2.log", "wb"), stderr=subprocess.STDOUT)
    try:
        time.sleep(2)
        assert query(db, "SELECT count(*), count(DISTINCT record_number) FROM bronze.daily_activity") == [
            (150_000, 150_000)]
        assert query(db, "SELECT status FROM ops.pipeline_runs") == [("success",)]
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(timeout=30) == 0


def test_a_restarted_daemon_reports_the_last_success_expected_intervals_and_the_landing_disk(
        write_config, db, tmp_path):
    """What the alert rules read (deploy/monitoring/alerts.yml) is there from the start: the last
    success as the database has it (not only once this process loads), each source's expected
    interval, and the landing folder's free and total bytes."""
    from .conftest import REPO, SOURCES_TOML
    sources = SOURCES_TOML.format(schemas=REPO / "schemas").replace(
        'name = "daily_activity"\n', 'name = "daily_activity"\nexpect_every = "1d"\n', 1)
    port = free_port()
    config_path = write_config(health_port=port, sources=sources)
    landing = tmp_path / "data_lake"

    def start():
        proc = subprocess.Popen(ingestd_cmd("--config", str(config_path), "run"),
                                stdout=open(tmp_path / "run.log", "ab"), stderr=subprocess.STDOUT)
        wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=60)
        return proc

    proc = start()
    try:
        drop_file(landing, "daily_activity/daily.csv", FITBIT / "dailyActivity_merged.csv")
        wait_for(lambda: query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'success'")[0][0] == 1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finished = query(db, "SELECT extract(epoch FROM finished_at)::float8 FROM ops.pipeline_runs")[0][0]

    proc = start()
    try:
        text = get(port, "/metrics")[1]
        assert metric(text, "ingestd_last_success_timestamp_seconds", source="daily_activity") == pytest.approx(
            finished, abs=0.001)
        assert metric(text, "ingestd_last_success_timestamp_seconds", source="sleep_day") is None  # never loaded
        assert metric(text, "ingestd_source_expected_interval_seconds", source="daily_activity") == 86400
        assert metric(text, "ingestd_source_expected_interval_seconds", source="sleep_day") is None
        stats = os.statvfs(landing)
        free = metric(text, "ingestd_landing_free_bytes", folder=str(landing))
        size = metric(text, "ingestd_landing_size_bytes", folder=str(landing))
        assert size == stats.f_blocks * stats.f_frsize
        assert 0 < free <= size
        assert abs(free - stats.f_bavail * stats.f_frsize) < 64 * 2**20  # read at the scrape, moments apart
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
