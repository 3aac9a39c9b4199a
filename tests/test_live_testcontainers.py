"""The suite's testcontainers path, once for real: where a Docker engine answers and no
INGESTD_TEST_DATABASE_URL / INGESTD_TEST_AMQP_URL is set, tests/conftest.py starts its own
PostgreSQL and RabbitMQ. Here the engine is podman's Docker API and the images are the
stand-ins (tests/live.py), named through INGESTD_TEST_POSTGRES_IMAGE / _RABBITMQ_IMAGE.

The subset run that way is tests/test_ingest.py and tests/test_dlq.py: every format loaded,
manifest and runs, dead letters through the broker, replay and discard. (tests/test_e2e.py
closes connections with this machine's rabbitmqctl, which cannot reach a container's broker.)

What a machine with Docker needs and podman 4.3 does not give (settings of this test only):
TESTCONTAINERS_RYUK_DISABLED (the reaper's image comes from a registry),
TESTCONTAINERS_CONNECTION_MODE=docker_host (testcontainers, seeing itself in a container, asks
the container list for a HostConfig that podman's compat API leaves out).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import REPO
from .live import REPORT, build_standin, docker_api, podman, require_podman

pytestmark = pytest.mark.live

SUBSET = ["tests/test_ingest.py", "tests/test_dlq.py"]


def test_the_suite_runs_on_servers_testcontainers_starts():
    require_podman()
    images = {"INGESTD_TEST_POSTGRES_IMAGE": build_standin("postgres:15"),
              "INGESTD_TEST_RABBITMQ_IMAGE": build_standin("rabbitmq:3.10-management")}
    with docker_api() as socket:
        env = {key: value for key, value in os.environ.items()
               if key not in ("INGESTD_TEST_DATABASE_URL", "INGESTD_TEST_AMQP_URL") and not key.startswith("DOCKER_")}
        env.update(images, DOCKER_HOST=f"unix://{socket}", TESTCONTAINERS_RYUK_DISABLED="true",
                   TESTCONTAINERS_CONNECTION_MODE="docker_host")
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                 "-W", "ignore::DeprecationWarning", *SUBSET],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-6000:]
        assert f"PostgreSQL: testcontainers, {images['INGESTD_TEST_POSTGRES_IMAGE']}" in output
        assert f"RabbitMQ: testcontainers, {images['INGESTD_TEST_RABBITMQ_IMAGE']}" in output
        summary = output.strip().splitlines()[-1]
        assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
        REPORT.append(f"testcontainers through podman's Docker API: {summary}")
        # The session stopped what it started.
        for image in images.values():
            assert podman("ps", "--all", "--quiet", "--filter", f"ancestor={image}").stdout.strip() == ""
