"""The compose stack, for real: docker-compose.yml brought up from nothing as the README says,
with stand-ins for postgres:15 and rabbitmq:3.10-management (tests/live.py) and the project's
image built on the Python stand-in.

The compose implementation is Debian's docker-compose (1.29) against podman's Docker API
socket: it honours the ``depends_on`` conditions (service_healthy,
service_completed_successfully) that the stack's start order rests on; podman-compose 1.6 on
podman 4.3 ignores them ("podman 4.3.1 doesn't support healthy") and fails to start containers
that depend on the finished migration. Podman runs health checks from systemd timers, and these
machines have no systemd: a thread of the test runs each container's health check every two
seconds, the job Docker's engine does itself.

Steps: up from nothing; the four Fitbit files dropped into ./data_lake and counted; `exec
consumer ingestd status`; scale to 3 consumers; a consumer killed mid-load, nothing lost or
loaded twice; down and up again with the volumes kept, nothing reloaded.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psycopg2
import pytest
import yaml

from .conftest import FITBIT, FITBIT_FILES, REPO, drop_file, one_row_csv
from .live import (
    PROJECTS,
    REPORT,
    SESSION,
    build_ingestd_image,
    build_standin,
    docker_api,
    free_port,
    podman,
    require_podman,
    unique,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.live]

# The host user who owns ./data_lake, as LANDING_OWNER in .env says (README).
HOST_USER = 1000

class Stack:
    """A compose project in its own folder, as a user's clone would have it."""

    def __init__(self, folder: Path, socket: Path, image: str) -> None:
        self.folder = folder
        folder.mkdir()
        self.name = unique("stack")
        PROJECTS.append(self.name)
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("DOCKER_")}
        self.env.update(DOCKER_HOST=f"unix://{socket}", COMPOSE_PROJECT_NAME=self.name)
        for item in ("docker-compose.yml", "ingestd.example.toml", ".env.example", "schemas", "deploy"):
            source = REPO / item
            (shutil.copytree if source.is_dir() else shutil.copy)(source, folder / item)
        self.ports = {"POSTGRES_PORT": free_port(), "RABBITMQ_PORT": free_port(),
                      "RABBITMQ_MANAGEMENT_PORT": free_port(), "PROMETHEUS_PORT": free_port(),
                      "GRAFANA_PORT": free_port()}
        # The README's steps: .env from the example, the landing folder made by its owner.
        env_text = (folder / ".env.example").read_text()
        env_text += "".join(f"{key}={value}\n" for key, value in self.ports.items())
        env_text += f"LANDING_OWNER={HOST_USER}:{HOST_USER}\n"
        (folder / ".env").write_text(env_text)
        (folder / "data_lake").mkdir()
        os.chown(folder / "data_lake", HOST_USER, HOST_USER)
        self.password = next(line.split("=", 1)[1] for line in env_text.splitlines()
                             if line.startswith("POSTGRES_PASSWORD="))
        # The stand-ins in place of the official images; the compose file itself is the project's.
        standins = {"postgres": build_standin("postgres:15"), "rabbitmq": build_standin("rabbitmq:3.10-management"),
                    "prometheus": build_standin("prom/prometheus:v2.53.0")}
        standins.update({service: image for service in ("migrate", "watcher", "poller", "consumer")})
        (folder / "standins.yml").write_text(
            "services:\n" + "".join(f'  {service}: {{image: "{image}"}}\n' for service, image in standins.items()))

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["docker-compose", "-f", "docker-compose.yml", "-f", "standins.yml", *args],
                                cwd=self.folder, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def containers(self, service: str | None = None) -> list[str]:
        label = f"com.docker.compose.project={self.name}"
        args = ["ps", "--format", "{{.Names}}", "--filter", f"label={label}"]
        if service:
            args += ["--filter", f"label=com.docker.compose.service={service}"]
        return podman(*args).stdout.split()

    def db(self):
        conn = psycopg2.connect(host="127.0.0.1", port=self.ports["POSTGRES_PORT"], user="ingestd",
                                password=self.password, dbname="ingest", connect_timeout=5)
        conn.autocommit = True
        return conn

    def scalar(self, statement: str):
        conn = self.db()
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return cur.fetchone()[0]
        finally:
            conn.close()


@pytest.fixture
def podman_socket(tmp_path):
    """podman's Docker API on a socket of this test, for docker-compose."""
    require_podman()
    if shutil.which("docker-compose") is None:
        message = "docker-compose not installed (Debian: apt-get install docker-compose; .ci/run installs it)"
        if os.environ.get("INGESTD_TEST_LIVE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    with docker_api() as socket:
        yield socket


@pytest.fixture
def health_ticker():
    """Run the health check of every running container each 2 s (systemd's job under podman)."""
    stop = threading.Event()

    def tick():
        while not stop.wait(2.0):
            names = podman("ps", "--format", "{{.Names}}", "--filter", f"name={SESSION}", check=False)
            for name in names.stdout.split():
                podman("healthcheck", "run", name, check=False, timeout=60)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=120)


def api_get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the test's own Prometheus
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    return answer["data"]


def query_value(prometheus: str, expression: str) -> float:
    """The single value of an instant query (fails on none or several)."""
    data = api_get(f"{prometheus}/query?" + urllib.parse.urlencode({"query": expression}))
    assert len(data["result"]) == 1, (expression, data)
    return float(data["result"][0]["value"][1])


def one_row_files(folder: Path, count: int, first_id: int) -> int:
    for n in range(count):
        drop_file(folder, f"daily_activity/burst-{first_id + n}.csv", one_row_csv(first_id + n))
    return count


def test_compose_stack_up_load_scale_kill_a_consumer_down_and_up(tmp_path, podman_socket, health_ticker):
    image = build_ingestd_image(f"localhost/{unique('stack-image')}:test")
    stack = Stack(tmp_path / "project", podman_socket, image)
    landing = stack.folder / "data_lake"
    try:
        started = time.monotonic()
        stack.compose("up", "-d", timeout=600)
        REPORT.append(f"compose stack: up from nothing in {time.monotonic() - started:.0f} s")
        assert "Exit 0" in stack.compose("ps", "migrate").stdout

        # The four Fitbit files, copied in the way docs/operations.md shows, once the containers
        # have made the sources' folders (`up -d` returns as they start).
        wait_for(lambda: all((landing / source).is_dir() for source in FITBIT_FILES), timeout=60,
                 what="the watcher to make the sources' folders")
        for source, (name, _) in FITBIT_FILES.items():
            shutil.copy(FITBIT / name, landing / source / name)
        expected = {source: rows for source, (_, rows) in FITBIT_FILES.items()}
        wait_for(lambda: stack.scalar("SELECT count(*) FROM ops.pipeline_runs WHERE status = 'success'") == 4,
                 timeout=120, what="the four Fitbit files")
        for source, rows in expected.items():
            assert stack.scalar(f"SELECT count(*) FROM bronze.{source}") == rows
        # Archived by the containers' user, the owner of the bind-mounted folder on the host: the
        # folders they made are the host user's.
        archived = sorted(path.name for path in (landing / "_archive").rglob("*.csv"))
        assert archived == sorted(name for name, _ in FITBIT_FILES.values())
        assert all(path.stat().st_uid == HOST_USER for path in (landing / "_archive").rglob("*") if path.is_dir())

        status = stack.compose("exec", "-T", "consumer", "ingestd", "status")
        assert "all good" in status.stdout, status.stdout + status.stderr

        # Three consumers of two workers each.
        stack.compose("up", "-d", "--scale", "consumer=3", timeout=600)
        assert len(stack.containers("consumer")) == 3

        def consumers_on_events() -> int:
            out = stack.compose("exec", "-T", "consumer", "ingestd", "status", check=False).stdout
            line = next((line for line in out.splitlines() if line.startswith("ingest.events")), "")
            return int(line.split()[2]) if line else 0

        wait_for(lambda: consumers_on_events() == 6, timeout=120, what="6 workers on ingest.events")

        # A consumer killed mid-load: the broker hands its messages to the others, podman
        # restarts it, and every file is loaded once.
        files = one_row_files(landing, 600, first_id=9_000_000_000)
        wait_for(lambda: stack.scalar("SELECT count(*) FROM ops.pipeline_runs WHERE status = 'success'") >= 100,
                 timeout=120, interval=0.05, what="the burst to be under way")
        # Killed from outside, as the kernel's OOM killer would (`podman kill` counts as a stop by
        # hand, which restart policies leave alone, in Docker as in podman).
        victim = stack.containers("consumer")[1]
        os.kill(int(podman("inspect", victim, "--format", "{{.State.Pid}}").stdout), signal.SIGKILL)
        total = 4 + files
        wait_for(lambda: stack.scalar("SELECT count(*) FROM ops.raw_ingest_manifest") == total, timeout=300,
                 what=f"{total} files in the manifest")
        assert stack.scalar("SELECT count(DISTINCT source_filename) FROM ops.raw_ingest_manifest") == total
        assert stack.scalar("SELECT count(*) FROM ops.dead_letters") == 0
        assert stack.scalar("SELECT count(*) FROM bronze.daily_activity") == expected["daily_activity"] + files
        wait_for(lambda: podman("inspect", victim, "--format", "{{.RestartCount}} {{.State.Running}}").stdout.split()
                 == ["1", "true"], timeout=60, what="podman to restart the consumer")
        status = stack.compose("exec", "-T", "consumer", "ingestd", "status").stdout
        assert "ingest.dead    0" in status, status

        # Monitoring: Prometheus (a stand-in of the pinned image) with the shipped configuration
        # finds every role through the compose network's DNS, loads the alert rules, and the
        # rules' selectors find the daemon's series.
        stack.compose("--profile", "monitoring", "up", "-d", "--no-deps", "prometheus", timeout=600)
        prometheus = f"http://127.0.0.1:{stack.ports['PROMETHEUS_PORT']}/api/v1"

        def targets_up() -> list[str]:
            try:
                answer = api_get(f"{prometheus}/targets")
            except OSError:  # still starting
                return []
            return [t["labels"]["role"] for t in answer["activeTargets"] if t["health"] == "up"]

        wait_for(lambda: sorted(targets_up()) == ["consumer"] * 3 + ["poller", "watcher"], timeout=180,
                 interval=2, what="Prometheus to scrape watcher, poller and the 3 consumers")
        rules = api_get(f"{prometheus}/rules")["groups"]
        shipped = yaml.safe_load((REPO / "deploy" / "monitoring" / "alerts.yml").read_text())["groups"][0]["rules"]
        assert [group["name"] for group in rules] == ["ingestd"] and len(rules[0]["rules"]) == len(shipped) > 0
        # Evaluated against the real series (every evaluation_interval) without an error.
        wait_for(lambda: all(rule["health"] == "ok" for rule in api_get(f"{prometheus}/rules")["groups"][0]["rules"]),
                 timeout=150, interval=5, what="every alert rule evaluated without error")
        assert query_value(prometheus, 'max(ingestd_queue_consumers{queue="events"})') == 6
        assert query_value(prometheus, 'max(ingestd_queue_messages{queue="dead"})') == 0
        free = query_value(prometheus, "min by (folder) (ingestd_landing_free_bytes / ingestd_landing_size_bytes)")
        assert 0 < free < 1
        assert query_value(prometheus, 'max(ingestd_last_success_timestamp_seconds{source="daily_activity"})') > 0
        REPORT.append("compose stack: Prometheus scraped 5 ingestd processes with the shipped configuration")

        # Down and up again: the volumes keep the database and the queues; nothing is reloaded.
        runs = stack.scalar("SELECT count(*) FROM ops.pipeline_runs")
        stack.compose("down", timeout=600)
        assert stack.containers() == []
        stack.compose("up", "-d", timeout=600)
        wait_for(lambda: "all good" in stack.compose("exec", "-T", "consumer", "ingestd", "status", check=False).stdout,
                 timeout=120, what="the stack to be back")
        time.sleep(5)  # a watcher that rescanned the landing folder would publish by now
        assert stack.scalar("SELECT count(*) FROM ops.pipeline_runs") == runs
        assert stack.scalar("SELECT count(*) FROM bronze.daily_activity") == expected["daily_activity"] + files
        # One node name across both containers: the volume's queues were those used again.
        rabbitmq = stack.containers("rabbitmq")[0]
        nodes = {entry.split("-")[0].removesuffix(".pid")
                 for entry in podman("exec", rabbitmq, "ls", "/var/lib/rabbitmq/mnesia").stdout.split()}
        assert nodes == {"rabbit@rabbitmq"}
    finally:
        logs = stack.compose("logs", "--no-color", check=False, timeout=120)
        (tmp_path / "compose.log").write_text(logs.stdout + logs.stderr)
        stack.compose("down", "--volumes", "--remove-orphans", check=False, timeout=600)
