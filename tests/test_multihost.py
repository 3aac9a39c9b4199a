"""Consumers on several hosts, in the shape docs/scaling.md describes, on one machine: a watcher
that polls (as on a network file system), and consumers in processes of their own, each with its
own config, health port and mount of the landing folder (a bind mount at another path stands for
another host's NFS mount). They are started and killed independently while a burst loads; every
file is loaded once, none is dead-lettered."""
from __future__ import annotations

import signal
import subprocess
import time
import urllib.request

import pytest

from .conftest import FITBIT, config_text, drop_file, one_row_csv, query
from .live import free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def other_mount(tmp_path):
    """The landing folder as another host would mount it: the same files at another path."""
    landing = tmp_path / "data_lake"
    landing.mkdir()
    mount = tmp_path / "host-b" / "mnt" / "landing"
    mount.mkdir(parents=True)
    done = subprocess.run(["mount", "--bind", str(landing), str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here (needs root): {done.stderr.decode().strip()}")
    yield landing, mount
    subprocess.run(["umount", str(mount)], check=True)


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def one_row_files(landing, count: int, first_id: int) -> None:
    for n in range(count):
        drop_file(landing, f"daily_activity/b-{first_id + n}.csv", one_row_csv(first_id + n))


def test_consumers_in_their_own_processes_and_mounts_started_and_killed_during_a_burst(
        other_mount, tmp_path, database_url, amqp_url, prefix, procs, db):
    landing, mount = other_mount
    ports = {name: free_port() for name in ("watcher", "c1", "c2", "c3")}

    def config(name: str, folder, extra: str = ""):
        path = tmp_path / f"{name}.toml"
        path.write_text(config_text(folder, database_url, amqp_url, prefix, health_port=ports[name],
                                    landing_extra=extra))
        return path

    watcher = config("watcher", landing, "polling = true\npoll_interval_seconds = 0.5")
    consumers = {name: config(name, mount) for name in ("c1", "c2", "c3")}
    procs(watcher, "watch")
    started = {name: procs(consumers[name], "consume") for name in ("c1", "c2")}
    wait_for(lambda: all(healthy(ports[name]) for name in ("watcher", "c1", "c2")), timeout=60,
             what="the watcher and two consumers to serve /healthz on their own ports")

    drop_file(landing, "daily_activity/daily.csv", FITBIT / "dailyActivity_merged.csv")
    one_row_files(landing, 400, first_id=6_000_000_000)
    wait_for(lambda: query(db, "SELECT count(*) FROM ops.raw_ingest_manifest")[0][0] >= 60, timeout=120,
             interval=0.05, what="the burst to be under way")
    started["c1"].send_signal(signal.SIGKILL)  # one host lost mid-burst
    started["c1"].wait()
    assert query(db, "SELECT count(*) FROM ops.raw_ingest_manifest")[0][0] < 401, "the kill came after the burst"
    started["c3"] = procs(consumers["c3"], "consume")  # another joins
    wait_for(lambda: healthy(ports["c3"]), timeout=60, what="the third consumer")

    wait_for(lambda: query(db, "SELECT count(*) FROM ops.raw_ingest_manifest")[0][0] == 401, timeout=300,
             what="every file loaded")
    time.sleep(2)  # anything loaded twice or dead-lettered late would show by now
    assert query(db, "SELECT count(*), count(DISTINCT source_filename) FROM ops.raw_ingest_manifest")[0] == (401, 401)
    assert query(db, "SELECT count(*) FROM bronze.daily_activity")[0][0] == 940 + 400
    assert query(db, "SELECT count(*) FROM ops.dead_letters")[0][0] == 0
    # Several processes loaded, and what they archived through their own mount is in the folder.
    workers = {row[0].rsplit("-c", 1)[0] for row in query(
        db, "SELECT DISTINCT worker FROM ops.pipeline_runs WHERE status = 'success'")}
    assert len(workers) >= 2, workers
    assert len(list((landing / "_archive" / "daily_activity").rglob("*.csv"))) == 401
    assert not list((landing / "daily_activity").glob("*.csv"))
