"""Hostile signals against real ``ingestd`` processes (daemon/runner.py, daemon/children.py,
daemon/roles.py): floods, signals during start-up and during a load, SIGUSR1 by hand, the parent
killed at awkward moments. Each daemon runs with TMPDIR in the test's own folder, so that a
metrics folder left behind is seen."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import drop_file, ingestd_cmd, one_row_csv, query
from .test_e2e import wait_for
from .test_health import free_port
from .test_run_processes import children_of, log_events, running

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def start(config_path: Path, tmp_path: Path, *args: str, prelude: str | None = None) -> subprocess.Popen:
    """``ingestd <args>``; with ``prelude``, Python code run in the daemon's process first."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    command = ingestd_cmd("--config", str(config_path), *args)
    if prelude is not None:
        command = [sys.executable, "-c", prelude + "\nimport runpy, sys\nsys.argv = ['ingestd'] + sys.argv[1:]\n"
                   "runpy.run_module('ingestd.daemon', run_name='__main__', alter_sys=True)", *command[3:]]
    return subprocess.Popen(command,
                            env=dict(os.environ, TMPDIR=str(tmp)),
                            stdout=open(tmp_path / "run.log", "ab"), stderr=subprocess.STDOUT)


def metrics_folders(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "tmp").glob("ingestd-metrics-*"))


def cleanup(proc: subprocess.Popen, pids: list[int]) -> None:
    for pid in [proc.pid, *pids]:
        if running(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    proc.wait()


def wait_children(proc: subprocess.Popen, count: int, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = children_of(proc.pid)
        if len(kids) >= count:
            return kids
        time.sleep(0.002)
    raise AssertionError(f"no {count} children in {timeout} s")


def test_parent_killed_as_soon_as_its_children_exist_leaves_no_child_and_no_metrics_folder(write_config, tmp_path):
    proc = start(write_config(), tmp_path, "run", "--workers", "2")
    kids: list[int] = []
    try:
        kids = wait_children(proc, 2)
        proc.kill()
        proc.wait()
        wait_for(lambda: not any(running(k) for k in kids), timeout=40)
        wait_for(lambda: metrics_folders(tmp_path) == [], timeout=5)
    finally:
        cleanup(proc, kids)


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> list[str]:
    return sorted((Path(f"/proc/{pid}/task") / t / "comm").read_text().strip() for t in os.listdir(f"/proc/{pid}/task"))


def consuming(tmp_path: Path, count: int) -> bool:
    return len(log_events(tmp_path / "run.log", "consuming")) >= count


# What a SIGINT met while psycopg2 imports ssl turns into: psycopg2's C module imports ssl and, on
# failure, calls PyErr_Clear() (it takes a failure for "no OpenSSL"). Before install_signal_handlers
# SIGINT's handler is Python's default one, which raises KeyboardInterrupt: that exception is cleared
# and the signal lost. The prelude delivers the signal at that moment, every time (a real SIGINT,
# sent to the process itself when the import of ssl begins); without it the window is ~0.2 s after
# the start (seen: SIGINT at 0.235 s, the daemon ran on, ready, until killed).
SIGINT_DURING_SSL_IMPORT = """
import os, signal, sys
class Finder:
    def find_spec(self, name, path=None, target=None):
        if name == "ssl":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Finder())
"""


@pytest.mark.xfail(strict=True, reason="a SIGINT that arrives while psycopg2 imports ssl (config loading, before "
                   "install_signal_handlers) becomes a KeyboardInterrupt that psycopg2's C code clears: the signal is "
                   "lost and the daemon runs on as if never asked to stop")
def test_sigint_during_start_up_imports_is_never_lost(write_config, tmp_path):
    proc = start(write_config(), tmp_path, "run", "--workers", "1", prelude=SIGINT_DURING_SSL_IMPORT)
    kids: list[int] = []
    try:
        try:
            status = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            kids = children_of(proc.pid)
            status = None
        assert status is not None, "SIGINT ignored: still running 20 s later (" + \
            ", ".join(e["message"] for e in log_events(tmp_path / "run.log", "ready")) + ")"
        assert status in (0, -signal.SIGINT)
    finally:
        cleanup(proc, kids)
    assert metrics_folders(tmp_path) == []


def test_a_flood_of_sigterm_ends_at_once_and_takes_the_children(write_config, tmp_path):
    proc = start(write_config(), tmp_path, "run", "--workers", "2")
    kids: list[int] = []
    try:
        wait_for(lambda: consuming(tmp_path, 2), timeout=60)
        kids = children_of(proc.pid)
        started = time.monotonic()
        for _ in range(500):
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                break
        # Standard signals do not queue, and CPython calls a Python handler once for all the deliveries
        # it finds tripped: a flood that lands before the main thread runs counts as ONE signal (graceful
        # stop, 0; seen 1 run in 4), else as two or more (forced, 1). Either way, at once.
        assert proc.wait(timeout=10) in (0, 1)
        assert time.monotonic() - started < 5
        wait_for(lambda: not any(running(k) for k in kids), timeout=10)
        assert metrics_folders(tmp_path) == []
        assert "Traceback" not in (tmp_path / "run.log").read_text(errors="replace")
    finally:
        cleanup(proc, kids)


def test_a_flood_of_sigusr1_stops_a_child_gracefully_and_the_parent_restarts_it(write_config, tmp_path):
    proc = start(write_config(), tmp_path, "run", "--workers", "1")
    kids: list[int] = []
    try:
        wait_for(lambda: consuming(tmp_path, 1), timeout=60)
        baseline_fds, baseline_threads = None, None
        for round_ in range(3):
            wait_for(lambda: len(children_of(proc.pid)) == 1, timeout=30)
            child = children_of(proc.pid)[0]
            kids.append(child)
            wait_for(lambda n=round_ + 1: consuming(tmp_path, n), timeout=60)
            if baseline_fds is None:
                baseline_fds, baseline_threads = fds(proc.pid), threads(proc.pid)
            for _ in range(300):
                try:
                    os.kill(child, signal.SIGUSR1)
                except ProcessLookupError:
                    break
            wait_for(lambda pid=child: not running(pid), timeout=30)
        exited = wait_for(lambda: len(log_events(tmp_path / "run.log", "consumer process exited; restarting it")) >= 3
                          and log_events(tmp_path / "run.log", "consumer process exited; restarting it"), timeout=10)
        assert [e["exit_status"] for e in exited] == ["0", "0", "0"]  # graceful each time, never killed
        wait_for(lambda: len(children_of(proc.pid)) == 1, timeout=30)
        assert fds(proc.pid) <= baseline_fds + 1
        assert threads(proc.pid) == baseline_threads
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 20
        assert "Traceback" not in (tmp_path / "run.log").read_text(errors="replace")
    finally:
        cleanup(proc, kids + children_of(proc.pid))
    assert metrics_folders(tmp_path) == []


def test_sigusr1_by_hand_to_the_parent_is_ignored(write_config, tmp_path):
    """The parent ignores the signal its children take for its death: one sent to it by hand
    ends nothing, and a SIGTERM then stops everything gracefully."""
    proc = start(write_config(), tmp_path, "run", "--workers", "1")
    kids: list[int] = []
    try:
        wait_for(lambda: consuming(tmp_path, 1), timeout=60)
        kids = children_of(proc.pid)
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        assert proc.poll() is None
        assert all(running(k) for k in kids)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        wait_for(lambda: not any(running(k) for k in kids), timeout=30)
        assert "Traceback" not in (tmp_path / "run.log").read_text(errors="replace")
        wait_for(lambda: metrics_folders(tmp_path) == [], timeout=10)
    finally:
        cleanup(proc, kids)


@pytest.mark.parametrize("delay", [0.0, 0.5, 2.0])
def test_sigterm_while_the_database_is_unreachable_stops_at_once(write_config, tmp_path, delay):
    closed = free_port()
    config = write_config()
    text = config.read_text()
    config.write_text(text.replace(text.split('url = "', 1)[1].split('"', 1)[0],
                                   f"postgresql://postgres@127.0.0.1:{closed}/nothing?connect_timeout=2"))
    proc = start(config, tmp_path, "run", "--workers", "1")
    try:
        wait_for(lambda: (tmp_path / "run.log").exists() and "ingestd starting" in
                 (tmp_path / "run.log").read_text(errors="replace"), timeout=30, interval=0.01)
        time.sleep(delay)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - started < 5
        assert children_of(proc.pid) == []
        assert "Traceback" not in (tmp_path / "run.log").read_text(errors="replace")
    finally:
        cleanup(proc, [])
    assert metrics_folders(tmp_path) == []


@pytest.mark.parametrize("after", ["armed", 1.0, 3.0])
def test_parent_killed_while_children_start_or_run_leaves_nothing(write_config, tmp_path, after):
    """``armed``: as soon as both children have their parent-death signal (they log "consumer process
    starting" just after), before they consume. Earlier is the xfail case above."""
    proc = start(write_config(), tmp_path, "run", "--workers", "2")
    kids: list[int] = []
    try:
        kids = wait_children(proc, 2)
        if after == "armed":
            wait_for(lambda: len(log_events(tmp_path / "run.log", "consumer process starting")) == 2, timeout=30,
                     interval=0.005)
        else:
            wait_for(lambda: consuming(tmp_path, 2), timeout=30)
            time.sleep(after)
        proc.kill()
        proc.wait()
        started = time.monotonic()
        wait_for(lambda: not any(running(k) for k in kids), timeout=40)
        assert time.monotonic() - started < 30
        wait_for(lambda: metrics_folders(tmp_path) == [], timeout=5)
    finally:
        cleanup(proc, kids)


def test_sigusr1_by_hand_to_a_child_that_is_still_starting_does_not_stop_the_daemon(write_config, tmp_path):
    proc = start(write_config(), tmp_path, "run", "--workers", "1")
    kids: list[int] = []
    try:
        kids = wait_children(proc, 1)
        time.sleep(0.05)  # the child is importing: no handler of SIGUSR1 yet
        os.kill(kids[0], signal.SIGUSR1)
        try:
            status = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            status = None
        why = [e.get("error") for e in log_events(tmp_path / "run.log", "a consumer process could not start; stopping")]
        assert status is None, f"the daemon stopped, status {status}: {why}"
        wait_for(lambda: consuming(tmp_path, 1), timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        cleanup(proc, kids + children_of(proc.pid))


def test_sigterm_to_parent_and_starting_child_at_once_exits_0(write_config, tmp_path):
    """systemd's KillMode=control-group: every process of the unit gets SIGTERM, here while the child starts."""
    proc = start(write_config(), tmp_path, "run", "--workers", "2")
    kids: list[int] = []
    try:
        kids = wait_children(proc, 2)
        time.sleep(0.05)
        for pid in [proc.pid, *kids]:
            os.kill(pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        wait_for(lambda: not any(running(k) for k in kids), timeout=10)
    finally:
        cleanup(proc, kids)
    assert metrics_folders(tmp_path) == []


def bronze_rows(db) -> int:
    if query(db, "SELECT to_regclass('bronze.daily_activity')")[0][0] is None:
        return 0
    return query(db, "SELECT count(*) FROM bronze.daily_activity")[0][0]


def big_csv(rows: int, first_id: int) -> bytes:
    header, row = one_row_csv(0).split(b"\r\n")
    rest = row.split(b",", 1)[1]
    return header + b"\r\n" + b"\r\n".join(b"%d,%s" % (first_id + n, rest) for n in range(rows)) + b"\r\n"


@pytest.mark.parametrize(("how", "rows", "stop_timeout"), [
    (signal.SIGTERM, 40_000, 20),  # the load ends within the stop timeout: committed, acked
    (signal.SIGINT, 40_000, 20),
    (signal.SIGTERM, 150_000, 2),  # it does not: the child is killed, the broker redelivers
])
def test_a_signal_during_a_load_stops_gracefully_and_the_file_loads_exactly_once(write_config, db, tmp_path, how,
                                                                                   rows, stop_timeout):
    config = write_config()
    config.write_text(config.read_text().replace("stop_timeout_seconds = 20",
                                                 f"stop_timeout_seconds = {stop_timeout}"))
    proc = start(config, tmp_path, "run", "--workers", "1")
    kids: list[int] = []
    try:
        wait_for(lambda: consuming(tmp_path, 1), timeout=60)
        kids = children_of(proc.pid)
        drop_file(tmp_path / "data_lake", "daily_activity/big.csv", big_csv(rows, 3 * 10**9))
        wait_for(lambda: log_events(tmp_path / "run.log", "run started"), timeout=60, interval=0.02)
        time.sleep(0.3)
        in_hand = query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'running'")[0][0]
        began = time.monotonic()
        proc.send_signal(how)
        status = proc.wait(timeout=40)
        took = time.monotonic() - began
        assert status == 0
        assert took < stop_timeout + 5
        wait_for(lambda: not any(running(k) for k in kids), timeout=10)
        loaded = bronze_rows(db)
        assert loaded in (0, rows)  # never half a file
        print(how.name, "running at the signal:", in_hand, "stop took", round(took, 2), "s; rows now", loaded)
    finally:
        cleanup(proc, kids)
    # Started again, the daemon loads what the stop left (or nothing): the file once, in full.
    proc = start(config, tmp_path, "run", "--workers", "1")
    kids = []
    try:
        wait_for(lambda: consuming(tmp_path, 2), timeout=60)  # its handlers are in place
        wait_for(lambda: query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'success'")[0][0] == 1,
                 timeout=90)
        kids = children_of(proc.pid)
        assert bronze_rows(db) == rows
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        cleanup(proc, kids)
    assert metrics_folders(tmp_path) == []


@pytest.mark.parametrize("command", [["watch"], ["run", "--workers", "1"]])
def test_sigterm_while_the_broker_accepts_but_never_answers(write_config, tmp_path, command):
    """A port that completes TCP handshakes and says nothing (a hung broker, a wrong service)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        port = silent.getsockname()[1]
        config = write_config()
        text = config.read_text()
        config.write_text(text.replace(text.split('[broker]\n', 1)[1].split('url = "', 1)[1].split('"', 1)[0],
                                       f"amqp://guest:guest@127.0.0.1:{port}/%2F"))
        proc = start(config, tmp_path, *command)
        kids: list[int] = []
        try:
            wait_for(lambda: (tmp_path / "run.log").exists() and "ingestd starting" in
                     (tmp_path / "run.log").read_text(errors="replace"), timeout=30, interval=0.01)
            time.sleep(1)
            kids = children_of(proc.pid)
            began = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                status = proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                status = None
            took = time.monotonic() - began
            print(command[0], "status", status, "stop took", round(took, 1), "s")
            assert status == 0
            # The stop timeout (20 s), and a handshake in progress, which pika gives up after 15 s.
            assert took < 20 + 15 + 5
        finally:
            cleanup(proc, kids + children_of(proc.pid))
    assert metrics_folders(tmp_path) == []


# A SIGTERM in the moment between the metrics folder's mkdtemp() and install_signal_handlers() (a few
# steps; longer with a health port: the server is made in between): SIGTERM's default action ends the
# process there, and the folder stays. The prelude sends it at that moment, every time.
SIGTERM_AFTER_MKDTEMP = """
import os, signal, tempfile
_mkdtemp = tempfile.mkdtemp
def mkdtemp(*args, **kwargs):
    made = _mkdtemp(*args, **kwargs)
    if kwargs.get("prefix") == "ingestd-metrics-":
        os.kill(os.getpid(), signal.SIGTERM)
    return made
tempfile.mkdtemp = mkdtemp
"""


def test_sigterm_just_after_the_metrics_folder_is_made_leaves_no_folder(write_config, tmp_path):
    proc = start(write_config(), tmp_path, "run", "--workers", "1", prelude=SIGTERM_AFTER_MKDTEMP)
    try:
        status = proc.wait(timeout=30)
        assert status in (0, -signal.SIGTERM)
        assert metrics_folders(tmp_path) == []
    finally:
        cleanup(proc, [])
