"""Helpers of the live deployment tests: podman, the stand-in images, the ingestd image.

No image registry is reachable on the machines these tests were written on, so the images the
Dockerfile and the compose file name (python:3.11-slim-bookworm, postgres:15,
rabbitmq:3.10-management) are replaced by stand-ins built from Debian packages with mmdebstrap,
named ``localhost/ingestd-standin-<session>/...``. Their recipes are in ``tests/standins/``. Each is built
once a session, when a test first asks for it, and removed when the session ends with every
image and container the tests made.

The tests skip, with the reason, where podman or mmdebstrap is missing; with
``INGESTD_TEST_LIVE=1`` (CI sets it) they fail instead, so CI never passes without them.
``INGESTD_TEST_KEEP_STANDINS=1`` keeps the stand-ins after the session and uses them again (a
few minutes saved a run while working on these tests; remove them with ``podman rmi``).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STANDINS = Path(__file__).resolve().parent / "standins"
# Everything a session makes carries its own label value, so that its clean-up never touches
# what another session (another clone's CI, say) is running.
SESSION = uuid.uuid4().hex[:8]
LABEL = f"io.ingestd.test=live-{SESSION}"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")

# What the session built and the sizes it measured, for the terminal summary.
BUILT_IMAGES: list[str] = []
# Compose projects the session started: their containers, volumes and networks go at its end.
PROJECTS: list[str] = []
REPORT: list[str] = []
KEEP_STANDINS = os.environ.get("INGESTD_TEST_KEEP_STANDINS") == "1"


def require_podman() -> None:
    """Skip (or fail under INGESTD_TEST_LIVE=1) unless podman and mmdebstrap can run here."""
    missing = [tool for tool in ("podman", "mmdebstrap") if shutil.which(tool) is None]
    if not missing:
        return
    reason = (f"{' and '.join(missing)} not installed: the live deployment tests build and run containers "
              "(Debian: apt-get install podman runc mmdebstrap; .ci/run installs them)")
    if os.environ.get("INGESTD_TEST_LIVE") == "1":
        pytest.fail(reason + "; INGESTD_TEST_LIVE=1 asks for them")
    pytest.skip(reason)


def podman(*args: str, check: bool = True, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run podman; on failure the error names the command and what it printed."""
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def image_size_mb(name: str) -> float:
    return int(podman("image", "inspect", name, "--format", "{{.Size}}").stdout.strip()) / 1e6


# Stand-ins: Debian packages, hooks run in the new root (mmdebstrap --customize-hook), and the
# image settings the official image has (podman import --change).
STANDIN_RECIPES: dict[str, dict] = {
    "python:3.11-slim-bookworm": {
        "packages": ["python3", "python3-venv", "ca-certificates"],
        # The official image has python, pip and setuptools in /usr/local/bin, outside Debian's
        # externally managed Python: a venv in /usr/local gives the same.
        "hooks": ['chroot "$1" python3 -m venv /usr/local'],
        "changes": ["ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin", 'CMD ["python3"]'],
    },
    "postgres:15": {
        "packages": ["postgresql-15"],
        "uploads": {"postgres-entrypoint.sh": "/usr/local/bin/docker-entrypoint.sh"},
        "hooks": ['chmod 755 "$1"/usr/local/bin/docker-entrypoint.sh'],
        "changes": ["ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "ENV PGDATA=/var/lib/postgresql/data", "EXPOSE 5432", "STOPSIGNAL SIGINT",
                    'ENTRYPOINT ["docker-entrypoint.sh"]', 'CMD ["postgres"]'],
    },
    "rabbitmq:3.10-management": {
        "packages": ["rabbitmq-server"],
        "uploads": {"rabbitmq-entrypoint.sh": "/usr/local/bin/docker-entrypoint.sh"},
        "hooks": ['chmod 755 "$1"/usr/local/bin/docker-entrypoint.sh'],
        "changes": ["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "EXPOSE 5672", "EXPOSE 15672", 'ENTRYPOINT ["docker-entrypoint.sh"]', 'CMD ["rabbitmq-server"]'],
    },
    "prom/prometheus:v2.53.0": {
        # Debian's Prometheus is 2.42: the rules and the configuration use nothing newer.
        "packages": ["prometheus"],
        "hooks": ['install -d -m 777 "$1"/prometheus'],
        "changes": ["EXPOSE 9090", 'ENTRYPOINT ["/usr/bin/prometheus"]',
                    'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'],
    },
    "systemd:bookworm": {
        # A Debian 12 host as deploy/systemd/README.md expects one, but for PostgreSQL and RabbitMQ
        # (the suite's servers, through the host network).
        "packages": ["systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "ca-certificates", "procps",
                     "git"],
        "hooks": [],
        "changes": ['CMD ["/sbin/init"]', "STOPSIGNAL SIGRTMIN+3"],
    },
}


def standin_name(official: str) -> str:
    """The session's own name for a stand-in (``localhost/ingestd-standin-<session>/...``), so that
    two suites on one machine never remove each other's images; the kept ones
    (``INGESTD_TEST_KEEP_STANDINS``) have one name for every session, to be used again."""
    folder = "ingestd-standin" if KEEP_STANDINS else f"ingestd-standin-{SESSION}"
    return f"localhost/{folder}/{official}"


def build_standin(official: str) -> str:
    """The stand-in for ``official``, built unless this session built it already."""
    name = standin_name(official)
    if (name in BUILT_IMAGES or KEEP_STANDINS) and image_exists(name):
        return name
    recipe = STANDIN_RECIPES[official]
    with tempfile.TemporaryDirectory(prefix="ingestd-standin-") as folder:
        tar = Path(folder) / "rootfs.tar"
        command = ["mmdebstrap", "--variant=minbase", "--include=" + ",".join(recipe["packages"]),
                   "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
                   "--dpkgopt=path-exclude=/usr/share/locale/*"]
        for source, target in recipe.get("uploads", {}).items():
            command.append(f"--customize-hook=upload {STANDINS / source} {target}")
        for hook in recipe["hooks"]:
            command.append(f"--customize-hook={hook}")
        command += ['--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*', "bookworm", str(tar)]
        started = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise AssertionError(f"mmdebstrap of the {official} stand-in failed:\n{result.stderr[-4000:]}")
        changes = [arg for change in recipe["changes"] for arg in ("--change", change)]
        podman("import", *changes, "--change", f"LABEL {LABEL}", str(tar), name)
    BUILT_IMAGES.append(name)
    REPORT.append(f"stand-in {name}: {image_size_mb(name):.0f} MB, built in {time.monotonic() - started:.0f} s")
    return name


def build_ingestd_image(tag: str) -> str:
    """The project's Dockerfile built on the Python stand-in, as ``tag``.

    pip inside the build reaches the package index through this machine's CA bundle, given to
    the build as a read-only mount and a pip.conf naming it: nothing of it is in the image."""
    base = build_standin("python:3.11-slim-bookworm")
    args = ["build", "--format", "docker", "--network", "host", "--no-cache", "--layers=false", "--label", LABEL,
            "--build-arg", f"BASE={base}", "-t", tag]
    with tempfile.TemporaryDirectory(prefix="ingestd-build-") as folder:
        if HOST_CA.exists():
            conf = Path(folder) / "pip.conf"
            conf.write_text("[global]\ncert = /run/ingestd-build/ca.crt\ndisable-pip-version-check = true\n")
            args += ["-v", f"{conf}:/etc/pip.conf:ro", "-v", f"{HOST_CA}:/run/ingestd-build/ca.crt:ro"]
        started = time.monotonic()
        podman(*args, str(REPO), timeout=1200)
    BUILT_IMAGES.append(tag)
    REPORT.append(f"ingestd image {tag}: {image_size_mb(tag):.0f} MB on the {base} stand-in "
                  f"({image_size_mb(base):.0f} MB of it), built in {time.monotonic() - started:.0f} s")
    return tag


def remove_everything() -> None:
    """The containers, compose projects and images this session made."""
    if shutil.which("podman") is None:
        return
    podman("rm", "--force", "--filter", f"label={LABEL}", check=False)
    for project in PROJECTS:
        label = f"label=com.docker.compose.project={project}"
        podman("rm", "--force", "--filter", label, check=False)
        for kind in ("volume", "network"):
            listed = podman(kind, "ls", "--format", "json", check=False)
            try:
                entries = json.loads(listed.stdout or "[]")
            except json.JSONDecodeError:
                entries = []
            for entry in entries:
                name = entry.get("Name") or entry.get("name") or ""
                if name.startswith(f"{project}_"):
                    podman(kind, "rm", "--force", name, check=False)
    PROJECTS.clear()
    for image in reversed(BUILT_IMAGES):
        if not (KEEP_STANDINS and image.startswith(standin_name(""))):
            podman("rmi", "--force", image, check=False)
    BUILT_IMAGES.clear()
    podman("image", "prune", "--force", "--filter", f"label={LABEL}", check=False)


def unique(kind: str) -> str:
    return f"ingestd-live-{kind}-{SESSION}-{uuid.uuid4().hex[:6]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def docker_api():
    """podman's Docker API on a socket of its own, for the Docker clients (docker-compose,
    testcontainers); yields the socket's path."""
    socket = Path("/run") / f"{unique('api')}.sock"
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{socket}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(socket.exists, timeout=30, interval=0.1, what="podman's API socket")
        yield socket
    finally:
        service.terminate()
        service.wait(timeout=30)
        socket.unlink(missing_ok=True)
