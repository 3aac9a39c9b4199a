"""Hostile input for the surfaces that the format and provider registries and
the command modules reach: the [[sources]] tables and their options, the
format registry, and the command line (exit codes, infer-schema's options,
dlq replay and discard selections). Each test names what must hold."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestd.daemon.config import build_config, load_config
from ingestd.daemon.errors import ConfigError
from ingestd.records.formats import FORMATS, Format, read_records, register, unregister

from .conftest import ingestd_cmd, query

SECRET = "hunter2hunter2"
API = {"kind": "api", "provider": "http_json", "url": "https://example.test/x", "records_path": "data"}


def refusal(tmp_path: Path, *sources: dict, **sections) -> str:
    """The message of the ConfigError a config of ``sources`` gets (the test fails if it loads)."""
    with pytest.raises(ConfigError) as info:
        build_config({"sources": list(sources), **sections}, tmp_path, environ={})
    return str(info.value)


def loaded(tmp_path: Path, source: dict):
    return build_config({"sources": [source]}, tmp_path, environ={}).sources[source["name"]]


def ingestd(*args: str, config: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    prefix = ("--config", str(config)) if config else ()
    return subprocess.run(ingestd_cmd(*prefix, *args), capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------ config: secrets

@pytest.mark.parametrize("source", [
    {**API, "url": f"ftp://user:{SECRET}@example.test/x"},
    {**API, "url": f"ftp://example.test/x?token={SECRET}"},
    {**API, "params": {"token": [SECRET]}},
    {**API, "params": {"api_key": {"value": SECRET}}},
    {**API, "headers_env": {"Authorization": f"Bearer {SECRET}"}},
    {"name": "f", "kind": "api", "provider": "fred", "series": ["A"], "base_url": f"ftp://u:{SECRET}@h"},
], ids=["url-password", "url-token", "params-list", "params-table", "headers-env-value", "base-url"])
def test_a_refused_source_value_that_may_hold_a_secret_is_not_repeated(tmp_path, source):
    message = refusal(tmp_path, {"name": "s", **source} if "name" not in source else source)
    assert SECRET not in message
    key = next(k for k in ("params", "headers_env", "base_url", "url") if k in message)
    assert key in message, message


def test_a_refused_pattern_says_what_is_expected_not_the_regular_expression(tmp_path):
    message = refusal(tmp_path, {"name": "s", **API, "url": "ftp://example.test/"})
    assert "http:// or https://" in message and "^https?" not in message, message
    message = refusal(tmp_path, {"name": "s", **API, "interval": "5 minutes"})
    assert "'5 minutes'" in message and "(s|m|h|d)" not in message and "1h" in message, message


def test_a_refused_key_names_its_source(tmp_path):
    message = refusal(tmp_path, {"name": "ok", "format": "csv"}, {"name": "orders", "format": "csv",
                                                                  "skip_lines": 100001})
    assert "sources[1].skip_lines" in message and "'orders'" in message, message


def test_a_source_that_is_no_table_is_said_once(tmp_path):
    with pytest.raises(ConfigError) as info:
        build_config({"sources": [1]}, tmp_path, environ={})
    assert str(info.value) == "sources[0]: 1 is not of type 'object'"


# ------------------------------------------------ config: kinds and their keys

@pytest.mark.parametrize("key, value", [
    ("url", "https://example.test/"), ("api_key_env", "KEY"), ("series", ["A"]), ("group", "g"),
    ("params", {"a": 1}), ("headers_env", {"X": "Y"}), ("record_key", ["id"]), ("base_url", "https://h/"),
    ("lookback_days", 3), ("start_date", "2020-01-01"), ("interval", "1h"),
])
@pytest.mark.parametrize("kind", [{}, {"kind": "file"}], ids=["kind-unset", "kind-file"])
def test_a_key_of_api_sources_is_refused_on_a_file_source(tmp_path, key, value, kind):
    message = refusal(tmp_path, {"name": "s", "format": "csv", **kind, key: value})
    assert f"'{key}'" in message and "'s'" in message and "api" in message, message


def test_a_provider_on_a_file_source_is_refused_as_such(tmp_path):
    message = refusal(tmp_path, {"name": "s", "format": "jsonl", "provider": "http_json"})
    assert "'provider'" in message and "kind = \"api\"" in message, message


# --------------------------------------------------- dlq replay and discard


@pytest.mark.integration
@pytest.mark.parametrize("action", ["replay", "discard"])
def test_a_selection_of_ids_that_do_not_exist_touches_nothing(setup, db, action):
    path, config, ctx = setup
    from .test_dlq import dead_letter_file
    dead_letter_file(ctx, config, "daily_activity/a.csv", b"Id,ActivityDate\n1\n")
    quarantined = config.landing_dir / "_quarantine" / "daily_activity" / "a.csv"
    assert quarantined.exists()
    before = query(db, "SELECT id, replay_count, replayed_at, discarded_at FROM ops.dead_letters")
    extra = ["--delete-file"] if action == "discard" else ["--wait", "0"]
    for selection in (["--id", "999999"], ["--source", "no_such_source"], ["--reason", "parse_error", "--dry-run"],
                      ["--all", "--dry-run"]):
        result = ingestd("dlq", action, *selection, *extra, "--json", config=path)
        assert result.returncode == 0, (selection, result)
        assert query(db, "SELECT id, replay_count, replayed_at, discarded_at FROM ops.dead_letters") == before
        assert quarantined.exists()
    result = ingestd("dlq", action, *extra, config=path)
    assert result.returncode == 2 and "--all" in result.stderr
    for bad in (["--id", "0"], ["--id", "x"], ["--since", "yesterday-ish"], ["--reason", "no_reason"]):
        result = ingestd("dlq", action, *bad, *extra, config=path)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (bad, result)
    assert query(db, "SELECT id, replay_count, replayed_at, discarded_at FROM ops.dead_letters") == before
