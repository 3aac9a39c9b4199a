"""Deployment files: systemd units, Dockerfile, compose file, checked with the real tools."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

SYSTEMD = REPO / "deploy" / "systemd"
SERVICES = ["ingestd-watcher.service", "ingestd-poller.service", "ingestd-consumer@.service"]


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is not installed (Debian package 'systemd'); .ci/run installs it")
    return tool


@pytest.fixture
def units(tmp_path):
    """The units as shipped, with ExecStart pointing at this environment's ingestd,
    and consumer@ instantiated as consumer@1."""
    ingestd = Path(sys.executable).parent / "ingestd"
    assert ingestd.exists(), "pip install -e . first"
    for unit in SERVICES + ["ingestd.target"]:
        text = (SYSTEMD / unit).read_text().replace("/opt/ingestd/bin/ingestd", str(ingestd))
        (tmp_path / unit.replace("@.service", "@1.service")).write_text(text)
    return tmp_path


def test_units_verify(units):
    names = ["ingestd-watcher.service", "ingestd-poller.service", "ingestd-consumer@1.service", "ingestd.target"]
    result = subprocess.run([systemd_analyze(), "verify", *[str(units / n) for n in names]],
                            capture_output=True, text=True, timeout=120, cwd=units)
    ours = [line for line in (result.stdout + result.stderr).splitlines() if "ingestd" in line]
    assert result.returncode == 0 and ours == [], result.stdout + result.stderr


@pytest.mark.parametrize("unit", ["ingestd-watcher.service", "ingestd-poller.service", "ingestd-consumer@1.service"])
def test_unit_exposure_is_at_most_2_5(units, unit):
    result = subprocess.run([systemd_analyze(), "security", "--offline=true", str(units / unit)],
                            capture_output=True, text=True, timeout=120, cwd=units)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.5


def test_units_are_notify_services_with_a_watchdog_and_a_long_stop():
    for unit in SERVICES:
        text = (SYSTEMD / unit).read_text()
        for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "EnvironmentFile=/etc/ingestd/ingestd.env",
                     "User=ingestd", "ProtectSystem=strict", "ReadWritePaths=/var/lib/ingestd",
                     "NoNewPrivileges=yes", "CapabilityBoundingSet=\n", "SystemCallFilter=@system-service"):
            assert line in text, (unit, line)
        stop = int(re.search(r"TimeoutStopSec=(\d+)", text).group(1))
        assert stop >= 600  # longer than a large file's load
    assert "Wants=" in (SYSTEMD / "ingestd.target").read_text()


def test_every_path_and_user_the_units_name_is_created_by_the_readme_steps():
    readme = (SYSTEMD / "README.md").read_text()
    named = set()
    for unit in SERVICES:
        text = (SYSTEMD / unit).read_text()
        named |= set(re.findall(r"(?:EnvironmentFile|ReadWritePaths|WorkingDirectory)=(\S+)", text))
        named |= set(re.findall(r"INGESTD_CONFIG=(\S+)", text))
        named.add(re.search(r"ExecStart=(\S+)", text).group(1))
        assert re.search(r"User=ingestd", text)
    assert "useradd --system" in readme and " ingestd\n" in readme
    for path in named:
        assert path in readme or str(Path(path).parent) in readme, path
    for unit in SERVICES + ["ingestd.target"]:
        assert unit.split("@")[0] in readme
