"""A RabbitMQ cluster of three nodes loses its nodes mid-burst (tests/cluster.py starts it on this
machine, beside the machine's own broker, and removes it).

`ingestd run --workers 2` gets every node's URL in broker.url. During a burst of 2,000 small
files and a 200,000-row file (dropped in three parts, one before each outage), the node leading
ingest.events is stopped: the quorum queues carry on on the other two, and the processes
connected to it move to another node. Then the next leader is stopped too, leaving one node of
three: the queues have lost their quorum, so work pauses without failing. When a node comes
back, the work resumes. At the end, every file is loaded once and nothing is dead-lettered.
"""
from __future__ import annotations

import json
import os
import time

import pytest

from .cluster import Cluster, unavailable
from .conftest import config_text, drop_file, one_row_csv, query
from .test_e2e import big_csv, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]

FILES = 2_000
ROWS = 200_000


@pytest.fixture(scope="module")
def cluster():
    why = unavailable()
    if why:
        pytest.skip(f"no RabbitMQ cluster on this machine: {why}")
    nodes = Cluster()
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop_all()


def manifest(db) -> int:
    return query(db, "SELECT count(*) FROM ops.raw_ingest_manifest")[0][0]


def test_a_burst_survives_the_leader_stopping_then_quorum_lost_and_regained(
        cluster, tmp_path, database_url, prefix, procs, db):
    config = tmp_path / "ingestd.toml"
    config.write_text(config_text(tmp_path / "data_lake", database_url, cluster.url, prefix))
    landing = tmp_path / "data_lake"
    (landing / "daily_activity").mkdir(parents=True)
    daemon = procs(config, "run", "--workers", "2")
    queue = f"{prefix}ingest.events"
    wait_for(lambda: _leader_or_none(cluster, queue) is not None, timeout=60)
    # Quorum queues, replicated on every node.
    listed = json.loads(cluster.nodes[0].run("rabbitmqctl", "list_queues", "name", "type", "members",
                                             "--formatter", "json").stdout)
    mine = {row["name"]: row for row in listed if row["name"].startswith(prefix)}
    assert set(mine) == {f"{prefix}ingest.events", f"{prefix}ingest.dead", f"{prefix}ingest.dead.audit"}
    for row in mine.values():
        assert row["type"] == "quorum" and sorted(row["members"]) == sorted(n.name for n in cluster.nodes), row

    def drop(numbers) -> None:
        for n in numbers:
            drop_file(landing, f"daily_activity/s-{n}.csv", one_row_csv(5_000_000_000 + n))

    # The burst comes in three parts, one before each outage, so that each outage meets work
    # however fast this machine loads.
    big_csv(landing / "daily_activity" / ".big.tmp", ROWS)
    os.replace(landing / "daily_activity" / ".big.tmp", landing / "daily_activity" / "big.csv")
    drop(range(0, 1000))

    # The leader of ingest.events stops: the other two carry on, with the files already
    # published and those published after.
    wait_for(lambda: manifest(db) >= 200, timeout=120, interval=0.05)
    first_leader = cluster.leader_of(queue)
    first_leader.stop()
    drop(range(1000, 1500))
    wait_for(lambda: manifest(db) == 1501, timeout=180)
    assert daemon.poll() is None

    # The next leader stops too: one node of three, no quorum. Work pauses; nothing fails.
    second_leader = cluster.leader_of(queue)
    second_leader.stop()
    drop(range(1500, FILES))
    time.sleep(5)
    paused_at = manifest(db)
    time.sleep(10)
    assert manifest(db) - paused_at <= 40, "loads committed without a quorum (only those in hand may finish)"
    assert manifest(db) < FILES + 1, "the last files loaded without a quorum"
    assert daemon.poll() is None, "ingestd died while the broker had no quorum"
    assert query(db, "SELECT count(*) FROM ops.dead_letters")[0][0] == 0

    # A node comes back: the quorum is restored and the rest is loaded.
    first_leader.start()
    try:
        wait_for(lambda: manifest(db) == FILES + 1, timeout=600, interval=1)
    except AssertionError:
        raise AssertionError(_where_it_stopped(cluster, db, prefix, landing, tmp_path)) from None
    assert query(db, "SELECT count(*), count(DISTINCT source_filename) FROM ops.raw_ingest_manifest")[0] == (
        FILES + 1, FILES + 1)
    assert query(db, "SELECT count(*) FROM bronze.daily_activity")[0][0] == ROWS + FILES
    assert query(db, "SELECT count(*) FROM ops.dead_letters")[0][0] == 0
    assert daemon.poll() is None
    # The runs tell the story: every one that did not succeed says why.
    unexplained = query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status <> 'success'"
                            " AND coalesce(error_summary, '') = ''")[0][0]
    assert unexplained == 0


def _leader_or_none(cluster, queue):
    try:
        return cluster.leader_of(queue)
    except RuntimeError:
        return None


def _where_it_stopped(cluster, db, prefix, landing, tmp_path) -> str:
    """What a maintainer needs when the rest is not loaded: which files, what the
    queues hold on each node, the runs that did not succeed, the daemon's warnings."""
    loaded = {row[0] for row in query(db, "SELECT source_filename FROM ops.raw_ingest_manifest")}
    files = sorted(p.name for p in (landing / "daily_activity").iterdir())
    missing = [name for name in files if not any(path.endswith(name) for path in loaded)]
    lines = [f"{len(loaded)} of {FILES + 1} files loaded; missing {len(missing)}: {missing[:10]}"]
    runs = query(db, "SELECT status, count(*) FROM ops.pipeline_runs GROUP BY status")
    lines.append(f"runs by status: {runs}")
    for node in cluster.nodes:
        result = node.run("rabbitmqctl", "list_queues", "name", "leader", "members", "messages",
                          "messages_unacknowledged", "consumers", "--formatter", "json", check=False, timeout=30)
        lines.append(f"{node.name}: rc {result.returncode} {result.stdout.strip()[:1500]}")
    for log in sorted(tmp_path.glob("*.log")):
        text = log.read_text(errors="replace").splitlines()
        notable = [line for line in text if "WARNING" in line or "ERROR" in line or "Traceback" in line]
        lines.append(f"{log.name}: {len(text)} lines; last warnings/errors:")
        lines.extend(notable[-40:])
        lines.append("last lines:")
        lines.extend(text[-15:])
    return "\n".join(lines)
