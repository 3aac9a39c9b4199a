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

from ingestd.daemon.config import build_config
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


# ------------------------------------------------------ config: format options

@pytest.mark.parametrize("delimiter", ['"', "\n", "\r", "\0"])
def test_a_delimiter_that_cannot_separate_fields_is_refused(tmp_path, delimiter):
    message = refusal(tmp_path, {"name": "s", "format": "csv", "delimiter": delimiter})
    assert "sources[0].delimiter" in message and "'s'" in message and "not valid under" not in message, message


@pytest.mark.parametrize("delimiter", [";", "\t", "|", " ", "é", "😀"])
def test_a_delimiter_of_one_other_character_is_taken_and_applied(tmp_path, delimiter):
    source = loaded(tmp_path, {"name": "s", "format": "csv", "delimiter": delimiter})
    assert source.options == {"delimiter": delimiter, "skip_lines": 0}
    path = tmp_path / "f.csv"
    path.write_text(f"a{delimiter}b\n1{delimiter}2\n", encoding="utf-8")
    assert [r for r, _ in read_records(path, "csv", None, source.options)] == [{"a": "1", "b": "2"}]


def test_a_whole_number_written_as_a_float_is_taken_as_the_number(tmp_path):
    """TOML's 2.0 is a whole number to the schema: the source reads files as with 2."""
    source = loaded(tmp_path, {"name": "s", "format": "csv", "skip_lines": 2.0})
    assert source.options["skip_lines"] == 2 and type(source.options["skip_lines"]) is int
    path = tmp_path / "f.csv"
    path.write_text("preamble\nmore\na,b\n1,2\n")
    assert [r for r, _ in read_records(path, "csv", None, source.options)] == [{"a": "1", "b": "2"}]
    fred = loaded(tmp_path, {"name": "f", "kind": "api", "provider": "fred", "series": ["A"], "lookback_days": 3.0})
    assert type(fred.options["lookback_days"]) is int


@pytest.mark.parametrize("key", ["interval", "expect_every"])
@pytest.mark.parametrize("value", ["0s", "0.5s", "0m", 0.5, float("inf"), 1e308, "99999999999999999999d"])
def test_a_duration_under_a_second_or_beyond_reach_is_refused(tmp_path, key, value):
    message = refusal(tmp_path, {"name": "s", **API, key: value})
    assert f"sources[0].{key}" in message or f"sources[s].{key}" in message, message
    assert "'s'" in message or "sources[s]" in message, message


@pytest.mark.parametrize("value, seconds", [("1s", 1.0), (1, 1.0), ("15m", 900.0), ("1.5h", 5400.0),
                                            ("3650d", 3650 * 86400.0)])
def test_a_duration_from_a_second_to_ten_years_is_taken(tmp_path, value, seconds):
    assert loaded(tmp_path, {"name": "s", **API, "interval": value}).interval_seconds == seconds
    assert loaded(tmp_path, {"name": "s", "format": "csv", "expect_every": value}).expect_every_seconds == seconds


# A [[sources]] table, drawn: a name, a kind, and keys of every kind, valid or not.
_CSV = {"delimiter": st.sampled_from([",", ";", "\t", '"', "\n", "", ";;", 1]),
        "skip_lines": st.one_of(st.integers(-2, 100002), st.sampled_from([1.0, 2.5, True]))}
_JSON = {"records_path": st.one_of(st.text(max_size=20), st.integers())}
_ANY_KEYS = {**_CSV, **_JSON, "url": st.sampled_from(["https://h/x", "ftp://h/"]), "series": st.just(["A"]),
             "interval": st.sampled_from(["1h", "0s", 5, "x"])}


@st.composite
def source_tables(draw):
    table = {"name": "s"}
    kind = draw(st.sampled_from([None, "file", "api"]))
    if kind:
        table["kind"] = kind
    if kind != "api":
        table["format"] = draw(st.sampled_from(sorted(FORMATS)))
    else:
        table["provider"] = "http_json"
    for key in draw(st.lists(st.sampled_from(sorted(_ANY_KEYS)), unique=True, max_size=4)):
        table[key] = draw(_ANY_KEYS[key])
    return table


def _expected_to_load(table: dict) -> bool:
    """Whether ``table`` is a good source, said independently of the schema."""
    if table.get("kind") == "api":
        keys = set(table) - {"name", "kind", "provider"}
        return ({"url", "records_path"} <= keys and keys <= {"url", "records_path", "interval"}
                and table["url"].startswith("https://") and isinstance(table["records_path"], str)
                and table.get("interval", "1h") in ("1h", 5))
    options = FORMATS[table["format"]].options
    for key in set(table) - {"name", "kind", "format"}:
        if key not in options:
            return False
    delimiter_ok = table.get("delimiter", ",") in (",", ";", "\t")
    skip = table.get("skip_lines", 0)
    skip_ok = type(skip) is not bool and skip == int(skip) and 0 <= skip <= 100000
    return delimiter_ok and skip_ok and isinstance(table.get("records_path", ""), str)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=source_tables())
def test_a_source_table_loads_exactly_when_it_is_good_and_its_options_are_applied(tmp_path, table):
    try:
        source = build_config({"sources": [table]}, tmp_path, environ={}).sources["s"]
    except ConfigError as exc:
        message = str(exc)
        assert not _expected_to_load(table), message
        assert message.startswith("sources") and "Traceback" not in message and "{'" not in message, message
        assert "'s'" in message or "sources[s]" in message, message
        return
    assert _expected_to_load(table), table
    if source.kind == "file":
        fmt = FORMATS[table["format"]]
        assert set(source.options) == set(fmt.options)
        for key in fmt.options:
            assert source.options[key] == table.get(key, fmt.options[key].get("default"))


# --------------------------------------------------------- the format registry

def _pairs(content, options, max_record_bytes, exact_numbers):
    for line in content.read().decode().splitlines():
        yield dict([line.split(options["separator"], 1)]), None


@pytest.mark.parametrize("option", ["name", "schema", "kind", "format", "interval", "url", "max_invalid_ratio"])
def test_a_format_whose_option_is_a_key_of_every_source_or_of_a_provider_is_a_clear_error(tmp_path, option):
    fmt = Format("clash", (".clash",), _pairs, {option: {"type": "string"}})
    register(fmt)
    try:
        message = refusal(tmp_path, {"name": "s", "format": "csv"})
    finally:
        unregister("clash")
    assert "'clash'" in message and f"'{option}'" in message, message
    assert build_config({"sources": [{"name": "s", "format": "csv"}]}, tmp_path, environ={}).sources["s"]


@pytest.mark.parametrize("options", [
    {"separator": {"type": "strin"}},
    {"separator": {"type": "string", "maxLength": 1, "default": "ab"}},
    {"separator": {"type": "integer", "default": "x"}},
    {"Bad Key": {"type": "string"}},
], ids=["bad-schema", "default-too-long", "default-of-other-type", "key-no-toml-name"])
def test_register_refuses_options_that_no_config_could_use(options):
    with pytest.raises(ValueError):
        register(Format("bad", (".bad",), _pairs, options))
    assert "bad" not in FORMATS


def test_an_unknown_format_is_refused_naming_those_there_are(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("a\n1\n")
    for name in ("CSV", "xml", ""):
        with pytest.raises(ValueError) as info:
            list(read_records(path, name, None))
        assert repr(name) in str(info.value) and "csv, json, jsonl, parquet" in str(info.value)


# -------------------------------------------------------------- infer-schema

@pytest.mark.parametrize("file_name, body, options", [
    ("f.csv", "a,b\n1,2\n", ["--records-path", "data"]),
    ("f.json", '[{"a": 1}]', ["--delimiter", ";"]),
    ("f.json", '[{"a": 1}]', ["--skip-lines", "2"]),
    ("f.jsonl", '{"a": 1}\n', ["--records-path", "data"]),
    ("f.csv", "a,b\n1,2\n", ["--format", "jsonl", "--delimiter", ";"]),
])
def test_infer_schema_refuses_an_option_its_format_does_not_take(tmp_path, file_name, body, options):
    path = tmp_path / file_name
    path.write_text(body)
    result = ingestd("infer-schema", str(path), *options)
    assert result.returncode == 2 and result.stdout == "", result
    assert options[-2] in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("delimiter", ['"', "\n", "\r"])
def test_infer_schema_refuses_a_delimiter_the_config_refuses(tmp_path, delimiter):
    path = tmp_path / "f.csv"
    path.write_text("a,b\n1,2\n")
    result = ingestd("infer-schema", str(path), "--delimiter", delimiter)
    assert result.returncode == 2 and "--delimiter" in result.stderr, result


def test_infer_schema_applies_the_options_it_takes(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("preamble\na;b\n1;2\n")
    result = ingestd("infer-schema", str(path), "--delimiter", ";", "--skip-lines", "1")
    assert result.returncode == 0, result.stderr
    assert sorted(json.loads(result.stdout)["properties"]) == ["a", "b"]
    doc = tmp_path / "f.json"
    doc.write_text('{"data": {"rows": [{"x": 1}]}}')
    result = ingestd("infer-schema", str(doc), "--records-path", "data.rows")
    assert result.returncode == 0 and list(json.loads(result.stdout)["properties"]) == ["x"], result


# ------------------------------------------------- config at start: exit codes

def test_a_bad_source_option_stops_every_command_with_exit_2_naming_source_and_key(tmp_path):
    config = tmp_path / "ingestd.toml"
    config.write_text('[[sources]]\nname = "orders"\nformat = "csv"\ndelimiter = "\\""\n')
    for command in (["check"], ["config", "show"], ["validate", "--source", "orders", str(config)]):
        result = ingestd(*command, config=config)
        assert result.returncode == 2, (command, result)
        assert "delimiter" in result.stderr and "orders" in result.stderr and "Traceback" not in result.stderr


def test_validate_reads_with_the_options_of_its_source(tmp_path):
    config = tmp_path / "ingestd.toml"
    config.write_text('[[sources]]\nname = "orders"\nformat = "csv"\ndelimiter = ";"\nskip_lines = 1.0\n')
    data = tmp_path / "orders.csv"
    data.write_text("exported today\nid;amount\n1;2\n3;4\n")
    result = ingestd("validate", "--source", "orders", str(data), "--json", config=config)
    assert result.returncode == 0, result
    assert json.loads(result.stdout)["files"][0]["rows"] == 2
    shown = json.loads(ingestd("config", "show", "--json", config=config).stdout)["settings"]
    values = {s["key"]: s["value"] for s in shown}
    assert (values["sources.orders.delimiter"], values["sources.orders.skip_lines"]) == (";", 1)


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


# ------------------------------------------------------------ the command line

@pytest.mark.parametrize("argv", [["status", "--source", "x\x1b[31m"], ["dlq", "list", "--limit", "\x1b]0;x\x07"],
                                  ["infer-schema", "f.csv", "--format", "\x1b[2J"], ["\x1b[31m"]])
def test_a_usage_error_prints_what_was_given_safe_for_a_terminal(tmp_path, argv):
    result = ingestd(*argv, config=tmp_path / "none.toml")
    assert result.returncode == 2 and "\x1b" not in result.stderr and "\\x1b" in result.stderr, result


def test_config_show_lists_the_keys_each_source_may_set_and_no_secret(tmp_path):
    config = tmp_path / "ingestd.toml"
    config.write_text(f"""
[database]
url = "postgresql://u:{SECRET}@127.0.0.1/x"
[[sources]]
name = "a"
kind = "api"
provider = "http_json"
url = "https://{SECRET}@h/x?api_key={SECRET}&x=1"
records_path = "data"
params = {{token = "{SECRET}", page = 1}}
[[sources]]
name = "j"
format = "json"
records_path = "a.b"
[[sources]]
name = "p"
format = "parquet"
[[sources]]
name = "c"
format = "csv"
delimiter = ";"
""")
    result = ingestd("config", "show", "--json", config=config)
    assert result.returncode == 0 and SECRET not in result.stdout + result.stderr, result
    keys = {s["key"]: s["value"] for s in json.loads(result.stdout)["settings"]}
    of = {name: {k.split(".", 2)[2] for k in keys if k.startswith(f"sources.{name}.")} for name in "ajpc"}
    assert of["j"] & {"records_path", "delimiter", "skip_lines"} == {"records_path"}
    assert of["c"] & {"records_path", "delimiter", "skip_lines"} == {"delimiter", "skip_lines"}
    assert of["p"] & {"records_path", "delimiter", "skip_lines"} == set()
    assert "records_path" in of["a"] and "format" not in of["a"]
    assert (keys["sources.j.records_path"], keys["sources.c.delimiter"], keys["sources.c.skip_lines"]) == (
        "a.b", ";", 0)


def _events_waiting(config) -> int:
    import pika

    from ingestd.daemon.broker import Topology
    connection = pika.BlockingConnection(pika.URLParameters(config.amqp_url))
    try:
        queue = Topology(config.prefix, config.delivery_limit).events_queue
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


@pytest.mark.integration
def test_a_dead_letter_selected_twice_or_replayed_twice_is_published_once(setup, db):
    path, config, ctx = setup
    from .test_dlq import dead_letter_file
    dead_letter_file(ctx, config, "daily_activity/a.csv", b"Id,ActivityDate\n1\n")
    dead_id = query(db, "SELECT id FROM ops.dead_letters")[0][0]
    waiting = _events_waiting(config)
    result = ingestd("dlq", "replay", "--id", str(dead_id), "--id", str(dead_id), "--source", "daily_activity",
                     "--wait", "0", "--json", config=path)
    assert result.returncode == 0, result
    assert (json.loads(result.stdout)["selected"], json.loads(result.stdout)["replayed"]) == (1, 1)
    assert _events_waiting(config) == waiting + 1
    again = ingestd("dlq", "replay", "--id", str(dead_id), "--wait", "0", "--json", config=path)
    assert again.returncode == 0 and json.loads(again.stdout) == {"dead_letters": []}, again
    discard = ingestd("dlq", "discard", "--id", str(dead_id), "--delete-file", "--json", config=path)
    assert discard.returncode == 0 and json.loads(discard.stdout) == {"dead_letters": []}, discard
    assert _events_waiting(config) == waiting + 1
    assert (config.landing_dir / "_quarantine" / "daily_activity" / "a.csv").exists()
    assert query(db, "SELECT replay_count, discarded_at FROM ops.dead_letters WHERE id = %s", (dead_id,)) == [
        (0, None)]
