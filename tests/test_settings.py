"""Settings from the environment are checked like the same keys in the file,
and what the schema lets through but the system refuses (a port in use, a
host that does not resolve) stops a role with one line. No server needed."""
import json
import os
import socket
import subprocess
import urllib.request

import pytest

from ingestd.daemon.config import ENV_OVERRIDES, build_config, config_schema
from ingestd.daemon.errors import ConfigError

from .conftest import ingestd_cmd

# Values the file's schema would refuse, as environment text; the URL ones
# carry a password that no message may repeat.
BAD = {
    "INGESTD_HEALTH_PORT": ["abc", "94710", "-1", "9470+100", "9470+0", "65535+1", "1e3", "9_464", "0x10",
                            "9470+abc", "٩٤٦٤"],
    "INGESTD_DATABASE_URL": ["mysql://u:Sekr3t-1@h/db", "u:Sekr3t-1@h"] + [
        # Well-formed for parse_dsn, refused by libpq when it connects (ports, option values).
        "postgresql://u:Sekr3t-1@h:99999/db", "postgresql://u:Sekr3t-1@h:0/db", "host=h port=abc password=Sekr3t-1",
        "postgresql://u:Sekr3t-1@h/db?sslmode=bogus", "postgresql://u:Sekr3t-1@h/db?gssencmode=zz",
        "postgresql://u:Sekr3t-1@h/db?target_session_attrs=zz", "postgresql://u:Sekr3t-1@h/db?channel_binding=zz",
        "postgresql://u:Sekr3t-1@h/db?ssl_min_protocol_version=zz", "postgresql://u:Sekr3t-1@h/db?port=1,2,3",
        "postgresql://u:Sekr3t-1@a:1,b:99999/db"],
    "INGESTD_AMQP_URL": ["http://u:Sekr3t-1@h/", "amqp://u:Sekr3t-1@h:port/", "amqp://u:Sekr3t-1@h/, nope"] + [
        # Well-formed for urlsplit, refused by pika's URLParameters.
        "amqp://u:Sekr3t-1@127.0.0.1/?heartbeat=abc", "amqp://u:Sekr3t-1@127.0.0.1/?ssl_options=zz",
        "amqp://u:Sekr3t-1@127.0.0.1/?channel_max=0x", "amqp://u:Sekr3t-1@h/?bogus=1",
        "amqp://u:Sekr3t-1@h/?connection_attempts=0", "amqps://u:Sekr3t-1@h/?ssl_options=%7B%7D",
        "amqp://u:Sekr3t-1@h/%2F,amqp://u:Sekr3t-1@h2/?frame_max=1"],
}
GOOD = {
    "INGESTD_HEALTH_PORT": [("0", 0), ("9464", 9464), (" 9465 ", 9465), ("9470+1", 9471), ("9470+99", 9569)],
    "INGESTD_HEALTH_HOST": [("::1", "::1"), ("localhost", "localhost")],
    "INGESTD_LANDING_DIR": [("/srv/lake", None)],
    "INGESTD_DATABASE_URL": [("host=db dbname=x", "host=db dbname=x"),
                             ("postgresql://u@a:5432,b:5433/x?sslmode=verify-full&target_session_attrs=read-write",
                              None), ("host=a,b port=5432 dbname=x", None)],
    "INGESTD_AMQP_URL": [("amqp://a:b@h:5673/%2F", "amqp://a:b@h:5673/%2F"),
                         ("amqp://a:b@h/%2F?heartbeat=30&channel_max=10&connection_attempts=3", None)],
}


def test_every_environment_variable_names_a_key_of_the_schema_and_is_tested():
    sections = config_schema()["properties"]
    for var, (section, key) in ENV_OVERRIDES.items():
        assert key in sections[section]["properties"], var
        assert var in GOOD, f"{var}: add its valid (and invalid, if any) values to this test"


@pytest.mark.parametrize("var,text", [(v, t) for v, texts in BAD.items() for t in texts])
def test_a_bad_environment_value_is_a_config_error_naming_the_variable_and_the_key(tmp_path, var, text):
    section, key = ENV_OVERRIDES[var]
    with pytest.raises(ConfigError) as info:
        build_config({}, tmp_path, environ={var: text})
    message = str(info.value)
    assert var in message and f"{section}.{key}" in message, message
    assert "Sekr3t" not in message


@pytest.mark.parametrize("var,text,value", [(v, t, x) for v, pairs in GOOD.items() for t, x in pairs])
def test_a_good_environment_value_is_used_and_its_origin_said(tmp_path, var, text, value):
    section, key = ENV_OVERRIDES[var]
    config = build_config({}, tmp_path, environ={var: text})
    assert config.origins[f"{section}.{key}"] == f"environment ({var})"
    if value is not None:
        field = {"health.port": "health_port", "health.host": "health_host", "database.url": "database_url",
                 "broker.url": "amqp_url"}[f"{section}.{key}"]
        assert getattr(config, field) == value


def test_an_empty_variable_counts_as_unset(tmp_path):
    config = build_config({"health": {"port": 9999}}, tmp_path, environ={"INGESTD_HEALTH_PORT": ""})
    assert config.health_port == 9999 and config.origins["health.port"] == "file"


def test_a_bad_log_format_variable_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="INGESTD_LOG_FORMAT: 'xml' is neither text nor json"):
        build_config({}, tmp_path, environ={"INGESTD_LOG_FORMAT": "xml"})


def run(*args, env_extra=None, timeout=60):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(ingestd_cmd(*args), capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def config_path(tmp_path):
    """A config whose servers are never reached: the tests stop before."""
    path = tmp_path / "ingestd.toml"
    path.write_text(f'[landing]\ndir = "{tmp_path / "lake"}"\n[database]\nurl = "postgresql://127.0.0.1:1/x"\n'
                    '[broker]\nurl = "amqp://guest:guest@127.0.0.1:1/%2F"\n')
    return path


@pytest.mark.parametrize("command", [["config", "show"], ["watch"], ["consume"], ["status"]])
@pytest.mark.parametrize("port", ["abc", "94710"])
def test_a_bad_port_variable_stops_every_command_with_one_line(config_path, command, port):
    result = run("--config", str(config_path), *command, env_extra={"INGESTD_HEALTH_PORT": port})
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "INGESTD_HEALTH_PORT" in lines[0] and "health.port" in lines[0]


MALFORMED = [("INGESTD_AMQP_URL", "amqp://guest:Sekr3t-1@127.0.0.1/?heartbeat=abc"),
             ("INGESTD_AMQP_URL", "amqp://guest:Sekr3t-1@127.0.0.1/?ssl_options=zz"),
             ("INGESTD_AMQP_URL", "amqp://guest:Sekr3t-1@127.0.0.1/?channel_max=0x"),
             ("INGESTD_DATABASE_URL", "postgresql://u:Sekr3t-1@h:99999/db"),
             ("INGESTD_DATABASE_URL", "postgresql://postgres:Sekr3t-1@127.0.0.1/x?sslmode=bogus")]


@pytest.mark.parametrize("command", [["consume"], ["check"], ["status"]])
@pytest.mark.parametrize("var,url", MALFORMED)
def test_a_malformed_url_stops_every_command_with_one_line(config_path, command, var, url):
    """Exit 2 (systemd does not restart it), not 1 with a traceback, nor
    retried for ever as unreachable."""
    result = run("--config", str(config_path), *command, env_extra={var: url}, timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    key = "database.url" if var == "INGESTD_DATABASE_URL" else "broker.url"
    assert var in lines[0] and key in lines[0] and "Sekr3t" not in result.stdout + result.stderr, lines[0]


@pytest.mark.parametrize("option", ["require_auth=zz", "tcp_user_timeout=abc",
                                    "hostaddr=not-an-address"])
def test_what_only_libpq_refuses_when_it_connects_is_a_config_error_not_an_outage(option):
    """Options ingestd does not check itself: libpq's refusal of them is
    told apart from a server that does not answer."""
    from ingestd.daemon.db import connect
    from ingestd.daemon.errors import TransientError
    url = f"postgresql://u:Sekr3t-1@127.0.0.1:1/x?{option}"
    with pytest.raises(ConfigError) as info:
        connect(url, 3)
    assert "database.url" in str(info.value) and "INGESTD_DATABASE_URL" in str(info.value)
    assert "Sekr3t" not in str(info.value) and not isinstance(info.value, TransientError)
    with pytest.raises(TransientError):  # the same URL without the option: nothing listens on port 1
        connect("postgresql://u:Sekr3t-1@127.0.0.1:1/x", 3)


def test_a_malformed_option_at_connect_stops_consume_with_one_line(config_path):
    result = run("--config", str(config_path), "consume", timeout=60,
                 env_extra={"INGESTD_DATABASE_URL": "postgresql://postgres:Sekr3t-1@127.0.0.1/x?require_auth=zz"})
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "database.url" in lines[0] and "require_auth" in lines[0], result.stderr
    assert "Sekr3t" not in result.stdout + result.stderr


def with_health(path, host, port):
    path.write_text(path.read_text() + f'[health]\nhost = "{host}"\nport = {port}\n')
    return path


@pytest.mark.parametrize("host", ["no-such-host.invalid", "é" * 70, "192.0.2.1"])
def test_a_health_host_that_cannot_be_served_stops_the_role_with_one_line(config_path, host):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # any port but 0 (0 turns the server off)
    result = run("--config", str(with_health(config_path, host, port)), "watch", timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot serve health and metrics" in lines[0], result.stderr


def test_a_health_port_in_use_stops_the_role_with_one_line(config_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run("--config", str(with_health(config_path, "127.0.0.1", busy.getsockname()[1])), "consume",
                     timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "the port is in use" in lines[0], result.stderr


def test_the_health_server_serves_on_an_ipv6_address():
    from ingestd.daemon.health import Health, HealthServer
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    health = Health()
    health.beat("test")
    server = HealthServer(health, "::1", 0)
    server.start()
    try:
        with urllib.request.urlopen(f"http://[::1]:{server.port}/healthz", timeout=5) as answer:
            assert json.loads(answer.read())["status"] == "ok"
    finally:
        server.stop()


@pytest.mark.parametrize("command", [["init", "{tmp}"], ["infer-schema", "{tmp}/s.csv"], ["completion", "bash"]])
def test_a_bad_log_format_is_refused_by_commands_without_a_config_too(tmp_path, command):
    (tmp_path / "s.csv").write_text("a,b\n1,2\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTD_")} | {"INGESTD_LOG_FORMAT": "bogus"}
    result = subprocess.run(ingestd_cmd(*[part.format(tmp=tmp_path) for part in command]), env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "INGESTD_LOG_FORMAT: 'bogus' is neither text nor json" in result.stderr
    assert not (tmp_path / "ingestd.toml").exists()


@pytest.mark.parametrize("doc, named", [
    ({"sources": [{"name": "s", "format": "csv", "max_invalid_ratio": float("nan")}]}, "sources[0].max_invalid_ratio"),
    ({"landing": {"settle_seconds": float("nan")}}, "landing.settle_seconds"),
    ({"consumer": {"stop_timeout_seconds": float("nan")}}, "consumer.stop_timeout_seconds"),
])
def test_nan_is_refused_for_every_setting(tmp_path, doc, named):
    """TOML's nan passes every minimum and maximum (it compares false with everything): a
    max_invalid_ratio of nan would never refuse a file, a wait of nan never end."""
    with pytest.raises(ConfigError) as refused:
        build_config(doc, tmp_path, environ={})
    assert f"{named}: nan is not a number" in str(refused.value)
