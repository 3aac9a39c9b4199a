"""A RabbitMQ cluster of three nodes on this machine, from the installed rabbitmq-server, beside
(never touching) the machine's own broker: node names, ports, data and log folders of its own,
started as the rabbitmq user, and removed afterwards.

The RabbitMQ docs describe several nodes on one host; on Debian the service wrapper switches
users and ignores such settings, so the nodes start from /usr/lib/rabbitmq/bin with HOME holding
a copy of the Erlang cookie (PITFALLS.md)."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from .live import free_port

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
COOKIE = Path("/var/lib/rabbitmq/.erlang.cookie")


def unavailable() -> str | None:
    """Why a cluster cannot be started here, or None."""
    if not (RABBIT_BIN / "rabbitmq-server").exists():
        return "rabbitmq-server is not installed (Debian: apt-get install rabbitmq-server)"
    if os.geteuid() != 0:
        return "starting RabbitMQ nodes as the rabbitmq user needs root"
    try:
        pwd.getpwnam("rabbitmq")
    except KeyError:
        return "there is no rabbitmq user"
    if not COOKIE.exists():
        return f"{COOKIE} is missing"
    return None


class Node:
    def __init__(self, cluster: Cluster, n: int) -> None:
        self.name = f"ingestd{cluster.tag}n{n}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.folder = cluster.folder / f"n{n}"
        self.folder.mkdir()
        (self.folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users.guest = true\n"
            "cluster_partition_handling = pause_minority\n")
        (self.folder / "enabled_plugins").write_text("[].\n")
        (self.folder / "env.conf").write_text("")
        self.cluster = cluster

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def env(self) -> dict[str, str]:
        return {**os.environ, "HOME": str(self.cluster.home), "RABBITMQ_NODENAME": self.name,
                "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"), "RABBITMQ_LOG_BASE": str(self.folder / "log"),
                "RABBITMQ_PID_FILE": str(self.folder / "pid"),
                "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
                "RABBITMQ_CONF_ENV_FILE": str(self.folder / "env.conf")}

    def run(self, tool: str, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        command = ["runuser", "-p", "-u", "rabbitmq", "--", str(RABBIT_BIN / tool), "-n", self.name, *args]
        result = subprocess.run(command, env=self.env(), capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} on {self.name}: {result.stdout}{result.stderr}")
        return result

    def start(self) -> None:
        subprocess.run(["runuser", "-p", "-u", "rabbitmq", "--", str(RABBIT_BIN / "rabbitmq-server"), "-detached"],
                       env=self.env(), check=True, capture_output=True, timeout=60)
        # `wait` follows the pid file from the VM's start to the app's (await_startup would give
        # up on a node not yet registered).
        self.run("rabbitmqctl", "wait", str(self.folder / "pid"), "--timeout", "120", timeout=150)

    def stop(self, timeout: float = 120) -> None:
        """Stop the node and wait for its VM to end (``rabbitmqctl stop`` follows the pid file)."""
        try:
            self.run("rabbitmqctl", "stop", str(self.folder / "pid"), timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """End the node's processes (its VM and helpers: all that run from its folders)."""
        found = subprocess.run(["pgrep", "-f", str(self.folder)], capture_output=True, text=True)
        for pid in found.stdout.split():
            try:
                os.kill(int(pid), 9)
            except (ValueError, ProcessLookupError):
                pass


class Cluster:
    """Three nodes clustered; ``nodes[0]`` the first."""

    def __init__(self, size: int = 3) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.folder = Path(tempfile.mkdtemp(prefix="ingestd-cluster-"))
        os.chmod(self.folder, 0o755)
        self.home = self.folder / "home"
        self.home.mkdir()
        shutil.copy(COOKIE, self.home / ".erlang.cookie")
        os.chmod(self.home / ".erlang.cookie", 0o400)
        self.nodes = [Node(self, n) for n in range(1, size + 1)]
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(self.folder)], check=True)

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def start(self) -> None:
        first, *others = self.nodes
        for node in self.nodes:
            node.start()
        for node in others:
            node.run("rabbitmqctl", "stop_app")
            node.run("rabbitmqctl", "join_cluster", first.name)
            node.run("rabbitmqctl", "start_app")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = first.run("rabbitmqctl", "cluster_status", "--formatter", "json", check=False).stdout
            if all(node.name in status for node in self.nodes) and status.count('"running_nodes"'):
                import json
                if len(json.loads(status).get("running_nodes", [])) == len(self.nodes):
                    return
            time.sleep(1)
        raise RuntimeError("the nodes did not form a cluster")

    def leader_of(self, queue: str) -> Node:
        """The node that leads quorum queue ``queue``."""
        for node in self.nodes:
            result = node.run("rabbitmqctl", "list_queues", "name", "leader", "--formatter", "json", check=False)
            if result.returncode == 0:
                import json
                for row in json.loads(result.stdout or "[]"):
                    if row.get("name") == queue:
                        return next(n for n in self.nodes if n.name == row.get("leader"))
        raise RuntimeError(f"no leader found for {queue}")

    def stop_all(self) -> None:
        """Stop every node (a node of a minority may not stop cleanly: it is killed), then remove
        their folders. Nothing of the cluster is left."""
        for node in self.nodes:
            node.stop(timeout=30)
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.folder, ignore_errors=True)
