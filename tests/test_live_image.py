"""The image, for real: the Dockerfile built (on a stand-in of python:3.11-slim-bookworm) and run
as its non-root user against the suite's PostgreSQL and RabbitMQ: check, migrate, run, a Fitbit
file dropped and loaded, the HEALTHCHECK healthy, SIGTERM ending it with status 0.

Needs podman and mmdebstrap (tests/live.py: skipped with the reason where they are missing,
failed under INGESTD_TEST_LIVE=1)."""
from __future__ import annotations

import time

import pytest

from .conftest import FITBIT, SOURCES_TOML, config_text, drop_file, query
from .live import LABEL, REPORT, build_ingestd_image, free_port, podman, require_podman, unique, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.live]


@pytest.fixture(scope="module")
def ingestd_image():
    require_podman()
    return build_ingestd_image(f"localhost/{unique('image')}:test")


def test_image_runs_as_its_user_loads_a_file_reports_healthy_and_stops_on_sigterm(
        ingestd_image, tmp_path, database_url, amqp_url, prefix, db):
    landing = tmp_path / "data_lake"
    landing.mkdir()
    # The container runs as uid 10001: the landing folder must be its to archive into.
    import os
    os.chown(landing, 10001, 10001)
    config = tmp_path / "ingestd.toml"
    config.write_text(config_text("/data_lake", database_url, amqp_url, prefix, health_port=free_port(),
                                  sources=SOURCES_TOML.format(schemas="/etc/ingestd/schemas")))
    config.chmod(0o644)
    port = int(next(line.split("=")[1] for line in config.read_text().splitlines() if line.startswith("port")))
    mounts = ["-v", f"{landing}:/data_lake", "-v", f"{config}:/etc/ingestd/ingestd.toml:ro"]
    common = ["--network", "host", "--label", LABEL, "-e", f"INGESTD_HEALTH_PORT={port}"]

    user = podman("run", "--rm", *common, "--entrypoint", "id", ingestd_image).stdout
    assert "uid=10001(ingestd)" in user and "gid=10001(ingestd)" in user
    healthcheck = podman("image", "inspect", ingestd_image, "--format", "{{json .Config.Healthcheck}}").stdout
    assert "/healthz" in healthcheck

    # The test's database is migrated already (a clone of the template): check is all ok.
    checked = podman("run", "--rm", *common, *mounts, ingestd_image, "check", check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ok   landing   /data_lake writable" in checked.stdout
    migrated = podman("run", "--rm", *common, *mounts, ingestd_image, "migrate")
    assert "up to date" in migrated.stdout + migrated.stderr or "applied" in migrated.stdout + migrated.stderr

    name = unique("run")
    podman("run", "-d", "--name", name, *common, *mounts, ingestd_image, "run")
    try:
        wait_for(lambda: '"ready"' in podman("logs", name).stdout + podman("logs", name).stderr, timeout=60,
                 what="ingestd run in the container to report ready")
        drop_file(landing, "daily_activity/dailyActivity_merged.csv", FITBIT / "dailyActivity_merged.csv")
        wait_for(lambda: query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'success'")[0][0] == 1,
                 timeout=60, what="the dropped file's run")
        assert query(db, "SELECT count(*) FROM bronze.daily_activity")[0][0] == 940
        archived = list((landing / "_archive" / "daily_activity").rglob("dailyActivity_merged.csv"))
        assert len(archived) == 1, "the container's user archives the loaded file"

        health = podman("healthcheck", "run", name, check=False)
        assert health.returncode == 0, health.stdout + health.stderr
        assert podman("inspect", name, "--format", "{{.State.Health.Status}}").stdout.strip() == "healthy"

        started = time.monotonic()
        podman("stop", "--time", "60", name)
        stopped_in = time.monotonic() - started
        assert podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip() == "0"
        logs = podman("logs", name)
        assert '"stopped"' in logs.stdout + logs.stderr
        assert stopped_in < 60, "SIGTERM ends the process within the grace period, not the kill after it"
        REPORT.append(f"ingestd image: SIGTERM to exit 0 in {stopped_in:.1f} s")
    finally:
        podman("rm", "--force", name, check=False)
