"""`ingestd run` with its consumer workers as child processes (daemon/children.py): a burst
loads exactly once, a killed child is restarted and loses nothing, the parent's stop (or death)
takes its children with it, a child that cannot start is restarted with a backoff and keeps the
daemon not ready, and the parent's /metrics and /readyz speak for its children."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .conftest import drop_file, ingestd_cmd, one_row_csv, query
from .test_e2e import wait_for
from .test_health import free_port, get, metric

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def children_of(pid: int) -> list[int]:
    """The pids of the running processes whose parent is ``pid`` (zombies left out)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.append(int(entry.name))
    return sorted(found)


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def log_events(path: Path, message: str) -> list[dict]:
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("message") == message:
            events.append(event)
    return events


def drop_burst(landing: Path, count: int, first_id: int) -> list[str]:
    for n in range(count):
        drop_file(landing, f"daily_activity/burst-{first_id + n}.csv", one_row_csv(first_id + n))
    return [f"daily_activity/burst-{first_id + n}.csv" for n in range(count)]


def successes(db) -> int:
    return query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'success'")[0][0]


def assert_loaded_once(db, files: list[str]) -> None:
    """Each file: one successful run, one manifest entry, its one row in bronze."""
    per_file = dict(query(db, "SELECT file_path, count(*) FROM ops.pipeline_runs WHERE status = 'success'"
                              " GROUP BY file_path"))
    assert per_file == {name: 1 for name in files}
    assert query(db, "SELECT count(*), count(DISTINCT checksum) FROM ops.raw_ingest_manifest")[0] == (
        len(files), len(files))
    assert query(db, "SELECT count(*) FROM bronze.daily_activity")[0][0] == len(files)


def start_run(config_path: Path, tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(ingestd_cmd("--config", str(config_path), "run", *args),
                            stdout=open(tmp_path / "run.log", "ab"), stderr=subprocess.STDOUT)


def stop_run(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def test_a_burst_loads_exactly_once_through_two_consumer_processes(write_config, db, tmp_path, database_url):
    port = free_port()
    proc = start_run(write_config(health_port=port), tmp_path, "--workers", "2")
    try:
        wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=60)
        children = children_of(proc.pid)
        assert len(children) == 2
        for child in children:  # the config's file and the environment, never a URL on a command line
            assert "consume" in cmdline(child) and database_url not in cmdline(child)
        files = drop_burst(tmp_path / "data_lake", 300, 10**9)
        wait_for(lambda: successes(db) == 300, timeout=120)
        assert_loaded_once(db, files)
        # The children's counters reach the parent's /metrics, added up.
        wait_for(lambda: metric(get(port, "/metrics")[1], "ingestd_runs_total", source="daily_activity",
                                status="success") == 300, timeout=10)
        text = get(port, "/metrics")[1]
        assert metric(text, "ingestd_rows_loaded_total", source="daily_activity", validation_status="valid") == 300
        assert metric(text, "ingestd_events_published_total", source="daily_activity", kind="file") == 300
        assert metric(text, "ingestd_run_duration_seconds_count", source="daily_activity") == 300
        assert metric(text, "ingestd_last_success_timestamp_seconds", source="daily_activity") > time.time() - 120
        assert 'pid="' not in text  # every gauge combines its processes' values
    finally:
        assert stop_run(proc) == 0
    assert not any(running(child) for child in children)


def test_a_consumer_process_killed_mid_burst_is_restarted_and_nothing_is_lost(write_config, db, tmp_path):
    port = free_port()
    proc = start_run(write_config(health_port=port), tmp_path, "--workers", "2")
    try:
        wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=60)
        first = children_of(proc.pid)
        files = drop_burst(tmp_path / "data_lake", 400, 2 * 10**9)
        wait_for(lambda: successes(db) >= 20, timeout=60, interval=0.02)
        os.kill(first[0], signal.SIGKILL)
        wait_for(lambda: successes(db) == 400, timeout=180)
        assert_loaded_once(db, files)
        # Restarted: two children again, one of them new, and ready.
        wait_for(lambda: len(children_of(proc.pid)) == 2 and first[0] not in children_of(proc.pid), timeout=60)
        wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=60)
        exited = log_events(tmp_path / "run.log", "consumer process exited; restarting it")
        assert [event["exit_status"] for event in exited] == ["SIGKILL"]
    finally:
        assert stop_run(proc) == 0


def test_sigterm_stops_every_child_and_sigkill_of_the_parent_leaves_none(write_config, tmp_path):
    config_path = write_config()
    proc = start_run(config_path, tmp_path, "--workers", "2")
    try:
        wait_for(lambda: len(log_events(tmp_path / "run.log", "consuming")) == 2, timeout=60)
        children = children_of(proc.pid)
        assert len(children) == 2
        folder = metrics_folder(children[0])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not any(running(child) for child in children)
        assert not folder.exists()  # the metrics folder goes with the daemon
    finally:
        stop_run(proc)
    (tmp_path / "run.log").unlink()
    proc = start_run(config_path, tmp_path, "--workers", "2")
    try:
        wait_for(lambda: len(log_events(tmp_path / "run.log", "consuming")) == 2, timeout=60)
        children = children_of(proc.pid)
        folder = metrics_folder(children[0])
        proc.kill()
        proc.wait()
        # The children notice (PR_SET_PDEATHSIG, and their link's end), stop gracefully, and remove
        # the metrics folder their parent could not.
        wait_for(lambda: not any(running(child) for child in children), timeout=60)
        assert not folder.exists()
    finally:
        for child in children_of(proc.pid) + [c for c in children if running(c)]:
            os.kill(child, signal.SIGKILL)


def metrics_folder(pid: int) -> Path:
    """The folder a consumer process writes its metrics to (its environment says)."""
    for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if entry.startswith(b"PROMETHEUS_MULTIPROC_DIR="):
            return Path(entry.split(b"=", 1)[1].decode())
    raise AssertionError(f"process {pid} has no metrics folder")


def test_a_second_signal_kills_the_children_and_exits_at_once(write_config, tmp_path):
    proc = start_run(write_config(), tmp_path, "--workers", "2")
    try:
        wait_for(lambda: len(log_events(tmp_path / "run.log", "consuming")) == 2, timeout=60)
        children = children_of(proc.pid)
        folder = metrics_folder(children[0])
        assert folder.is_dir()
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: log_events(tmp_path / "run.log", "stopping: finishing work in hand"), timeout=10,
                 interval=0.02)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 1
        wait_for(lambda: not any(running(child) for child in children), timeout=30)
        assert not folder.exists()
    finally:
        stop_run(proc)


def test_a_child_that_cannot_start_is_restarted_with_a_backoff_and_keeps_the_daemon_not_ready(
        write_config, db, tmp_path):
    port = free_port()
    config_path = write_config(health_port=port)
    good = config_path.read_text()
    proc = start_run(config_path, tmp_path, "--workers", "1")
    try:
        wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=60)
        [child] = children_of(proc.pid)
        config_path.write_text(good + "\n[broken\n")  # what a bad edit leaves
        os.kill(child, signal.SIGKILL)
        wait_for(lambda: len(log_events(tmp_path / "run.log", "consumer process exited; restarting it")) >= 3,
                 timeout=60)
        exited = log_events(tmp_path / "run.log", "consumer process exited; restarting it")
        assert [event["exit_status"] for event in exited[:3]] == ["SIGKILL", "2", "2"]
        assert [event["failures"] for event in exited[:3]] == [1, 2, 3]  # the backoff grows with each
        status, body = get(port, "/readyz")
        assert status == 503 and any("consumer-1" in p and "exited with status" in p
                                     for p in json.loads(body)["problems"])
        assert get(port, "/healthz")[0] == 200 and proc.poll() is None
        config_path.write_text(good)
        wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=120)
        drop_burst(tmp_path / "data_lake", 1, 3 * 10**9)
        wait_for(lambda: successes(db) == 1, timeout=60)
    finally:
        assert stop_run(proc) == 0


def test_a_child_that_never_starts_stops_the_supervisor(config, tmp_path):
    """The first process of a slot that exits before it speaks (a config it refuses, a broken
    installation): the daemon stops, saying so, rather than restarting it forever."""
    from ingestd.daemon.children import ConsumerProcesses
    from ingestd.daemon.health import Health

    class Refused(ConsumerProcesses):
        def command(self) -> list[str]:
            return [sys.executable, "-c", "import sys; sys.exit(2)"]

    health = Health()
    stop = threading.Event()
    children = Refused(config, 2, health, stop, tmp_path, [])
    thread = threading.Thread(target=children.run)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert children.failed and "exited with status 2 before it started" in children.failed
    assert not health.ready()[0]
    assert children.pids() == []
