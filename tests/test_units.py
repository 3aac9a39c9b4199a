"""Pure steps: config checking, landing-zone rules, validation, events, backoff."""
import json
import os
import uuid
from pathlib import PurePosixPath

import fastjsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestd.consumers.validation import RecordValidator
from ingestd.daemon.backoff import compute_backoff
from ingestd.daemon.config import build_config, load_config
from ingestd.daemon.errors import ConfigError, PermanentError
from ingestd.daemon.events import FileEvent, PayloadEvent, event_checks, parse_event
from ingestd.daemon.landing import is_ignored, resolve_in_landing
from ingestd.daemon.logs import redact_text, redact_url

from .conftest import REPO


def test_example_config_loads_with_its_schemas():
    cfg = load_config(REPO / "ingestd.example.toml", environ={})
    assert set(cfg.sources) == {"daily_activity", "sleep_day", "hourly_steps", "heart_rate"}
    assert cfg.sources["daily_activity"].schema["type"] == "object"
    assert cfg.after_load == "archive" and cfg.delivery_limit == 5


@pytest.mark.parametrize("doc,needle", [
    ({"landing": {"dirr": "x"}}, "landing: unknown key 'dirr'"),
    ({"landing": {"after_load": "shred"}}, "landing.after_load"),
    ({"broker": {"delivery_limit": 0}}, "broker.delivery_limit"),
    ({"sources": [{"name": "Bad-Name", "format": "csv"}]}, "sources[0].name"),
    ({"sources": [{"name": "a", "format": "xml"}]}, "sources[0].format"),
    ({"colour": "blue"}, "unknown key 'colour'"),
])
def test_bad_config_names_the_key(doc, needle, tmp_path):
    with pytest.raises(ConfigError) as info:
        build_config(doc, tmp_path, environ={})
    assert needle in str(info.value)


def test_env_overrides(tmp_path):
    cfg = build_config({"database": {"url": "postgresql://file/db"}}, tmp_path, environ={
        "INGESTD_DATABASE_URL": "postgresql://env/db", "INGESTD_AMQP_URL": "amqp://env",
        "INGESTD_LANDING_DIR": str(tmp_path / "lz")})
    assert cfg.database_url == "postgresql://env/db"
    assert cfg.amqp_url == "amqp://env" and cfg.landing_dir == (tmp_path / "lz").resolve()


def test_missing_schema_file_is_named(tmp_path):
    with pytest.raises(ConfigError) as info:
        build_config({"sources": [{"name": "a", "format": "csv", "schema": "nope.json"}]}, tmp_path, environ={})
    assert "sources[a].schema" in str(info.value) and "nope.json" in str(info.value)


def test_cli_exits_2_on_bad_config(tmp_path, capsys):
    from ingestd.daemon.cli import main
    bad = tmp_path / "ingestd.toml"
    bad.write_text('[landing]\nsettle = 1\n')
    assert main(["--config", str(bad), "check"]) == 2
    assert "unknown key 'settle'" in capsys.readouterr().err


@pytest.mark.parametrize("path,ignored", [
    ("src/a.csv", False), ("src/.hidden.csv", True), ("src/_x.csv", True), ("src/a.csv.part", True),
    ("src/a.crdownload", True), ("src/a.csv~", True), ("_archive/src/a.csv", True), ("src/sub/a.tmp", True),
])
def test_ignore_rules(path, ignored):
    assert is_ignored(PurePosixPath(path)) is ignored


def test_resolve_refuses_escapes_and_symlinks_out(tmp_path):
    landing = tmp_path / "lz"
    (landing / "src").mkdir(parents=True)
    outside = tmp_path / "secret.csv"
    outside.write_text("a\n1\n")
    os.symlink(outside, landing / "src" / "link.csv")
    for bad in ("../secret.csv", "/etc/passwd", "src/../../secret.csv", "src/link.csv"):
        with pytest.raises(PermanentError) as info:
            resolve_in_landing(landing, bad)
        assert info.value.reason == "path_rejected"
    assert resolve_in_landing(landing, "src/ok name 'x'.csv") == landing / "src" / "ok name 'x'.csv"


def test_validator_reports_pointer_keyword_message():
    schema = json.loads((REPO / "schemas" / "daily_activity.json").read_text())
    validator = RecordValidator(schema)
    good = {k: "1" for k in schema["properties"]} | {"Id": "1503960366", "ActivityDate": "4/12/2016"}
    assert validator.errors(good) is None
    errors = validator.errors(good | {"TotalSteps": "many"})
    assert errors == [{"pointer": "/TotalSteps", "keyword": "pattern", "message": errors[0]["message"]}]
    assert validator.errors({"Id": "1"})[0]["keyword"] in {"required", "pattern"}


def test_validator_does_not_fill_defaults_into_raw_records():
    validator = RecordValidator({"type": "object", "properties": {"a": {"type": "string", "default": "x"}}})
    record = {}
    assert validator.errors(record) is None and record == {}


def test_event_round_trip_and_bad_events():
    event = FileEvent(source="src", path="src/a.csv", size=3, mtime_ns=5)
    assert parse_event(event.to_json()) == event
    for body in (b"not json", b"[1]", b'{"version": 2}', json.dumps({**json.loads(event.to_json()),
                                                                     "size": -1}).encode()):
        with pytest.raises(PermanentError) as info:
            parse_event(body)
        assert info.value.reason == "bad_event"


_ODD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2, 2**70), st.floats(allow_nan=False),
                        st.text(max_size=70), st.sampled_from(["file", "payload", "replay", "0" * 64, "a" * 4097, 1.0,
                                                               str(uuid.uuid4())]),
                        st.lists(st.integers(), max_size=2),
                        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from(["file", "payload"]), changes=st.dictionaries(st.sampled_from(
    ["version", "event_id", "kind", "source", "created_at", "trigger", "replay_count", "path", "size", "mtime_ns",
     "endpoint", "status_code", "fetched_at", "body_sha256", "body_size", "body", "body_path", "context", "extra"]),
    _ODD_VALUES, max_size=4), dropped=st.sets(st.sampled_from(["version", "path", "body", "body_path", "size",
                                                                "endpoint", "kind"]), max_size=2))
def test_compiled_event_check_gives_jsonschemas_verdict(kind, changes, dropped):
    """parse_event trusts the compiled check's "valid": it must never say so
    where jsonschema would not (and refuses only what jsonschema refuses)."""
    event = FileEvent(source="src", path="src/a.csv", size=3, mtime_ns=5) if kind == "file" else PayloadEvent(
        source="api", endpoint="https://example.org/x", status_code=200, fetched_at="2026-11-26T00:00:00+00:00",
        body_sha256="0" * 64, body_size=2, body="[]")
    doc = {k: v for k, v in {**json.loads(event.to_json()), **changes}.items() if k not in dropped}
    fast, reference = event_checks()
    try:
        fast(doc)
        fast_valid = True
    except fastjsonschema.JsonSchemaValueException:
        fast_valid = False
    assert fast_valid == reference.is_valid(doc), doc


def test_backoff_grows_and_is_capped():
    assert compute_backoff(0, jitter=False) == 0.5
    assert compute_backoff(3, jitter=False) == 4.0
    assert compute_backoff(30, jitter=False) == 30.0
    assert 15.0 <= compute_backoff(30) <= 30.0


def test_secrets_are_redacted():
    assert redact_url("amqp://user:s3cret@host:5672/%2F") == "amqp://user:***@host:5672/%2F"
    assert "s3cret" not in redact_text("failed for postgresql://u:s3cret@db/x: refused")


def test_flat_fast_path_agrees_with_jsonschema_on_real_and_broken_rows():
    import jsonschema

    from ingestd.records.formats import read_records

    from .conftest import FITBIT
    schema = json.loads((REPO / "schemas" / "daily_activity.json").read_text())
    validator = RecordValidator(schema)
    assert validator._flat is not None
    reference = jsonschema.Draft7Validator(schema)
    records = [value for value, _ in read_records(FITBIT / "dailyActivity_merged.csv", "csv", None)]
    broken = [dict(records[0], TotalSteps="12a"), {k: v for k, v in records[1].items() if k != "Id"},
              dict(records[2], extra="x"), dict(records[3], Calories=5), dict(records[4], Calories=5.0),
              dict(records[5], Calories=True), [1, 2]]
    for record in records + broken + records[:50]:  # the repeat is answered from the cache
        assert (validator.errors(record) is None) == reference.is_valid(record), record


def test_live_config_applies_source_edits_and_keeps_the_rest(tmp_path):
    import time as _time

    from ingestd.daemon.config import LiveConfig
    path = tmp_path / "ingestd.toml"
    path.write_text('[broker]\nurl = "amqp://a"\n[[sources]]\nname = "one"\nformat = "csv"\n')
    live = LiveConfig(load_config(path, environ={}), environ={})
    assert set(live.get().sources) == {"one"}
    _time.sleep(0.01)
    path.write_text('[broker]\nurl = "amqp://b"\n[[sources]]\nname = "one"\nformat = "csv"\n'
                    '[[sources]]\nname = "two"\nformat = "jsonl"\n')
    assert set(live.get().sources) == {"one", "two"}
    assert live.get().amqp_url == "amqp://a"  # connections change only with a restart
    _time.sleep(0.01)
    path.write_text('[[sources]]\nname = "Broken!"\n')
    assert set(live.get().sources) == {"one", "two"}  # a bad edit keeps the last good config


def test_adding_a_source_to_a_running_daemon_warns_of_nothing(tmp_path, caplog):
    """Only settings that need a restart are named in the warning; where
    each setting came from is bookkeeping, not a setting."""
    import logging
    import time as _time

    from ingestd.daemon.config import LiveConfig
    path = tmp_path / "ingestd.toml"
    path.write_text('[[sources]]\nname = "one"\nformat = "csv"\n')
    live = LiveConfig(load_config(path, environ={}), environ={})
    _time.sleep(0.01)
    path.write_text('[[sources]]\nname = "one"\nformat = "csv"\n[[sources]]\nname = "two"\nformat = "csv"\n'
                    'expect_every = "1h"\n')
    with caplog.at_level(logging.INFO, logger="ingestd"):
        assert set(live.get().sources) == {"one", "two"}
    assert "configuration reloaded" in caplog.text
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    _time.sleep(0.01)
    path.write_text('[consumer]\nworkers = 3\n[[sources]]\nname = "one"\nformat = "csv"\n')
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ingestd"):
        live.get()
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and warned[0].settings == ["workers"]


def test_archive_names_never_overwrite_and_stay_within_255_bytes(tmp_path):
    from ingestd.daemon.landing import move_file
    landing = tmp_path / "lz"
    name = ("ü" * 125) + "x.csv"
    folder = landing / "_archive"
    for n in range(3):
        src = landing / "src" / name
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(f"copy {n}")
        moved = move_file(landing, src, folder, "abcd1234")
        assert moved.error is None, moved.error
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 3 and all(len(n.encode()) <= 255 for n in names)
    assert sorted(p.read_text() for p in folder.iterdir()) == ["copy 0", "copy 1", "copy 2"]


def test_http_429_answers_are_counted_for_the_rate_limit_alert():
    """ingestd_poll_rate_limited_total counts the 429 answers the poller retries, not other
    failures (deploy/monitoring/alerts.yml: IngestdApiRateLimited)."""
    from ingestd.daemon.metrics import REGISTRY
    from ingestd.daemon.poller import Poller

    def count() -> float:
        return REGISTRY.get_sample_value("ingestd_poll_rate_limited_total", {"source": "units_429"}) or 0.0

    on_retry = Poller._retry_logger("units_429", "series/observations", ())
    before = count()
    on_retry(1, "HTTP 429", 2.0)
    on_retry(2, "HTTP 503", 2.0)
    on_retry(3, "URLError: timed out", 2.0)
    on_retry(4, "HTTP 429", 4.0)
    assert count() - before == 2


def test_broker_url_takes_the_nodes_of_a_cluster(tmp_path):
    """broker.url: one URL, a TOML list, or (INGESTD_AMQP_URL) a comma-separated string; each node is
    checked, and shown without its password, the hosts kept."""
    from ingestd.daemon.config import ConfigError, load_config
    from ingestd.daemon.logs import redact

    path = tmp_path / "ingestd.toml"
    path.write_text('[broker]\nurl = ["amqp://u:s1@n1:5672/%2F", "amqp://u:s2@n2:5673/%2F"]\n')
    config = load_config(path, environ={})
    assert config.amqp_url == "amqp://u:s1@n1:5672/%2F,amqp://u:s2@n2:5673/%2F"
    assert redact(config.amqp_url) == "amqp://u:***@n1:5672/%2F,amqp://u:***@n2:5673/%2F"
    from_env = load_config(path, environ={"INGESTD_AMQP_URL": "amqp://a:b@x/%2F, amqp://a:b@y/%2F"})
    assert from_env.amqp_url == "amqp://a:b@x/%2F, amqp://a:b@y/%2F"
    path.write_text('[broker]\nurl = ["amqp://u:s1@n1:5672/%2F", "http://n2"]\n')
    with pytest.raises(ConfigError) as refused:
        load_config(path, environ={})
    assert "node 2 of 2" in str(refused.value) and "s1" not in str(refused.value)
