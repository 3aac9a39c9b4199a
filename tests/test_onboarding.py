"""The first hour: ingestd init, config show, validate, infer-schema, on the
sample files (tests/data/README.md). None of these needs a server."""
import json
import os
import subprocess
import sys

import pytest

from ingestd.consumers.validation import RecordValidator
from ingestd.records.formats import read_records

from .conftest import FITBIT, REPO, SHARED_DATA, ingestd_cmd

FILES = [
    (FITBIT / "dailyActivity_merged.csv", None, 940),
    (FITBIT / "sleepDay_merged.csv", None, 413),
    (FITBIT / "hourlySteps_merged.csv", None, 22099),
    (FITBIT / "heartrate_seconds_merged_excerpt.csv", None, 49),
    (SHARED_DATA / "fred" / "pyfredapi_series_observations_GDP.json", "observations", 315),
    (SHARED_DATA / "boc" / "valet_observations_26FX_2024.raw.json", "observations", None),
    (SHARED_DATA / "parquet" / "alltypes_plain.parquet", None, 8),
]


def run(*args, cwd=None, env=None):
    return subprocess.run(ingestd_cmd(*args), capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


@pytest.mark.parametrize("path,records_path,count", FILES, ids=[f[0].name for f in FILES])
def test_an_inferred_schema_accepts_its_sample_on_the_fast_path(path, records_path, count):
    args = ["infer-schema", str(path)] + (["--records-path", records_path] if records_path else [])
    result = run(*args)
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    fmt = "csv" if path.suffix == ".csv" else "parquet" if path.suffix == ".parquet" else "json"
    values = [v for v, _ in read_records(path, fmt, None, {"records_path": records_path} if records_path else None)]
    assert count is None or len(values) == count
    validator = RecordValidator(schema, "inferred")
    assert validator.plan.fast, validator.plan
    assert [i for i, v in enumerate(values, 1) if validator.errors(v) is not None] == []
    assert set(schema["required"]) <= set(schema["properties"])


def test_inferred_shapes_of_text_are_checked():
    result = run("infer-schema", str(FITBIT / "dailyActivity_merged.csv"))
    schema = json.loads(result.stdout)
    assert schema["properties"]["Id"]["pattern"] == "^-?[0-9]+$"
    assert schema["properties"]["ActivityDate"]["pattern"] == "^[0-9]{1,2}/[0-9]{1,2}/[0-9]{4}$"
    assert "[0-9]+(\\.[0-9]+)?" in schema["properties"]["TotalDistance"]["pattern"]
    validator = RecordValidator(schema)
    assert validator.errors({**{k: "1" for k in schema["required"]}, "ActivityDate": "4/12/2016",
                             "TotalDistance": "x"}) is not None


def test_init_then_check_config_then_validate_a_real_file(tmp_path):
    init = run("init", str(tmp_path / "start"))
    assert init.returncode == 0, init.stderr
    config = tmp_path / "start" / "ingestd.toml"
    assert config.exists() and (tmp_path / "start" / "schemas" / "daily_activity.json").exists()
    assert (tmp_path / "start" / "data_lake" / "daily_activity").is_dir()
    from ingestd.daemon import samples
    for name, make in samples.FITBIT.items():  # the Quick start's first file, made by ingestd
        assert (tmp_path / "start" / "examples" / name).read_bytes() == make(), name
    assert "cp " in init.stdout and "examples/dailyActivity_merged.csv" in init.stdout
    again = run("init", str(tmp_path / "start"))
    assert again.returncode == 2 and "--force" in again.stderr
    ok = run("validate", "-c", str(config), "--source", "daily_activity", str(FITBIT / "dailyActivity_merged.csv"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "would load; 940 record(s), 940 valid, 0 invalid" in ok.stdout
    wrong = run("validate", "--source", "daily_activity", "--json", str(FITBIT / "sleepDay_merged.csv"),
                "-c", str(config))
    assert wrong.returncode == 1
    verdict = json.loads(wrong.stdout)["files"][0]
    assert (verdict["reason"], verdict["rows"], verdict["rows_invalid"]) == ("schema_rejected", 413, 413)
    assert verdict["invalid_examples"][0]["errors"][0]["keyword"] == "required"
    broken = tmp_path / "broken.csv"
    broken.write_bytes((FITBIT / "dailyActivity_merged.csv").read_bytes()[:5000] + b',"unterminated\r\n')
    bad = run("validate", "-c", str(config), "--source", "daily_activity", str(broken))
    assert bad.returncode == 1 and "would be dead-lettered: parse_error" in bad.stdout
    unknown = run("validate", "-c", str(config), "--source", "nope", str(broken))
    assert unknown.returncode == 2 and "file sources: daily_activity" in unknown.stderr


def test_config_show_says_where_each_value_came_from_without_secrets(tmp_path):
    run("init", str(tmp_path))
    env = dict(os.environ, INGESTD_AMQP_URL="amqp://guest:Sekr3t@127.0.0.1:5672/%2F")
    shown = run("config", "show", "--json", "-c", str(tmp_path / "ingestd.toml"), env=env)
    assert shown.returncode == 0, shown.stderr
    settings = {s["key"]: (s["value"], s["origin"]) for s in json.loads(shown.stdout)["settings"]}
    assert settings["broker.url"] == ("amqp://guest:***@127.0.0.1:5672/%2F", "environment (INGESTD_AMQP_URL)")
    assert settings["landing.settle_seconds"][1] == "file"
    assert settings["landing.max_record_bytes"] == (16 * 1024 * 1024, "default")
    assert settings["sources.daily_activity.format"] == ("csv", "file")
    assert "Sekr3t" not in shown.stdout


def test_python_m_ingestd_and_options_after_the_command(tmp_path):
    version = subprocess.run([sys.executable, "-m", "ingestd", "--version"], capture_output=True, text=True,
                             timeout=60)
    assert version.stdout.startswith("ingestd ")
    run("init", str(tmp_path))
    after = run("config", "show", "--config", str(tmp_path / "ingestd.toml"), "-q")
    assert after.returncode == 0 and "landing.dir" in after.stdout


def test_every_option_of_every_command_has_help():
    import argparse

    from ingestd.daemon.cli import build_parser

    missing = []

    def visit(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    visit(sub, path + [name])
            elif not action.help and not isinstance(action, argparse._HelpAction):
                missing.append(" ".join(path + [action.dest]))
    visit(build_parser(), ["ingestd"])
    assert missing == []


def test_an_unknown_config_key_gets_a_did_you_mean(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text('[landing]\nsettle_second = 1\n[[sources]]\nname = "a"\nformat = "csv"\nmax_invalid_ration = 0\n')
    result = run("check", "-c", str(path))
    assert result.returncode == 2
    assert "'settle_second' (did you mean 'settle_seconds'?)" in result.stderr
    assert "'max_invalid_ration' (did you mean 'max_invalid_ratio'?)" in result.stderr


def test_the_configuration_doc_names_every_key_of_the_config_schema():
    from ingestd.daemon.config import config_schema
    schema = config_schema()
    readme = (REPO / "docs" / "configuration.md").read_text()
    missing = []
    for section, spec in schema["properties"].items():
        if section == "sources":
            keys = spec["items"]["properties"]
            missing += [f"sources.{k}" for k in keys if f"`{k}`" not in readme and f" {k}`" not in readme]
        else:
            missing += [f"{section}.{k}" for k in spec.get("properties", {}) if f"`{section}.{k}`" not in readme
                        and f"{k}`" not in readme]
    assert missing == []


@pytest.mark.skipif(not os.path.exists("/bin/bash"), reason="needs bash")
def test_bash_completion_completes_commands_actions_and_options(tmp_path):
    script = run("completion", "bash").stdout
    (tmp_path / "c.sh").write_text(script)
    probe = ('source c.sh; complete() { COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); _ingestd; '
             'echo "${COMPREPLY[*]}"; }; complete ingestd dl; complete ingestd dlq re; '
             'complete ingestd dlq replay --dr; complete ingestd -c x.toml infer')
    out = subprocess.run(["bash", "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert out.stdout.splitlines() == ["dlq", "replay", "--dry-run", "infer-schema"]


# Secrets an API source may hold in its keys: none may reach `config show`.
SECRET_SOURCES = """
[database]
url = "postgresql://ingest:DbSekr3t-1@localhost/ingest"
[broker]
url = ["amqp://u:MqSekr3t-2@a:5672/%2F", "amqp://u:MqSekr3t-3@b:5672/%2F"]
[[sources]]
name = "files"
format = "csv"
delimiter = ";"
skip_lines = 1
schema = "s.json"
max_invalid_ratio = 0.5
format_keyword = "annotate"
partition = "month"
partition_by = "source_timestamp"
retention = "2 years"
expect_every = "1d"
[[sources]]
name = "web"
kind = "api"
provider = "http_json"
url = "https://tok:UrlSekr3t-4@api.example.org/v1/x?api_key=Sekr3t-5&token=Sekr3t-6&key=Sekr3t-7&q=kept-1"
records_path = "data"
params = {token = "Sekr3t-8", key = "Sekr3t-9", access_token = "Sekr3t-10", Password = "Sekr3t-11", q = "kept-2"}
headers_env = {Authorization = "WEB_AUTH"}
api_key_env = "WEB_KEY"
record_key = ["id"]
interval = "15m"
[[sources]]
name = "gdp"
kind = "api"
provider = "fred"
series = ["GDP"]
base_url = "https://TokenOnlySekr3t-12@fred.example.org/?apikey=Sekr3t-13&KEY=Sekr3t-14"
api_key_env = "FRED_API_KEY"
lookback_days = 30
start_date = "2020-01-01"
[[sources]]
name = "fx"
kind = "api"
provider = "valet"
group = "FX_RATES_DAILY"
base_url = "https://www.bankofcanada.ca/?secret=Sekr3t-15"
"""


def test_config_show_lists_every_source_key_of_the_schema_without_secrets(tmp_path):
    from ingestd.daemon.config import config_schema
    from ingestd.daemon.providers import PROVIDERS

    (tmp_path / "s.json").write_text('{"type": "object"}')
    (tmp_path / "ingestd.toml").write_text(SECRET_SOURCES)
    env = dict(os.environ, INGESTD_AMQP_URL="amqp://guest:EnvSekr3t-16@127.0.0.1:5672/%2F")
    shown = run("config", "show", "--json", "-c", str(tmp_path / "ingestd.toml"), env=env)
    table = run("config", "show", "-c", str(tmp_path / "ingestd.toml"), env=env)
    assert shown.returncode == 0 == table.returncode, shown.stderr + table.stderr
    assert "Sekr3t" not in shown.stdout + table.stdout
    assert "kept-1" in table.stdout and "kept-2" in table.stdout
    settings = {s["key"]: (s["value"], s["origin"]) for s in json.loads(shown.stdout)["settings"]}
    keys = {key.split(".", 2)[2] for key in settings if key.startswith("sources.")}
    assert keys >= set(config_schema()["properties"]["sources"]["items"]["properties"]) - {"name"}
    for name, provider in {"web": "http_json", "gdp": "fred", "fx": "valet"}.items():
        assert {f"sources.{name}.{k}" for k in PROVIDERS[provider].options} <= set(settings)
    assert settings["sources.files.partition"] == ("month", "file")
    assert settings["sources.files.partition_by"] == ("source_timestamp", "file")
    assert settings["sources.files.retention"] == ("24 months", "file")
    assert settings["sources.files.expect_every"] == (86400.0, "file")
    assert settings["sources.web.params"][0]["q"] == "kept-2"
    assert settings["sources.web.url"][0] == "https://***@api.example.org/v1/x?api_key=***&token=***&key=***&q=kept-1"
    assert settings["sources.gdp.partition"] == ("none", "default")
    assert settings["sources.gdp.retention"] == (None, "default")
    assert settings["broker.url"] == ("amqp://guest:***@127.0.0.1:5672/%2F", "environment (INGESTD_AMQP_URL)")


def test_config_show_lists_every_setting_of_the_schema(tmp_path):
    from ingestd.daemon.config import config_schema
    run("init", str(tmp_path))
    shown = run("config", "show", "--json", "-c", str(tmp_path / "ingestd.toml"))
    keys = {s["key"] for s in json.loads(shown.stdout)["settings"]}
    expected = {f"{section}.{key}" for section, spec in config_schema()["properties"].items() if section != "sources"
                for key in spec["properties"]}
    assert expected <= keys, expected - keys


@pytest.mark.parametrize("link", ["ingestd.toml", "schemas", "schemas/daily_activity.json", "data_lake",
                                  "data_lake/sleep_day", "examples", "examples/sleepDay_merged.csv"])
@pytest.mark.parametrize("force", [False, True])
def test_init_never_writes_through_a_symbolic_link(tmp_path, link, force):
    target, outside = tmp_path / "start", tmp_path / "outside"
    outside.mkdir()
    (target / link).parent.mkdir(parents=True, exist_ok=True)
    (target / link).symlink_to(outside / "dangling")  # pointing outside, and to nothing yet
    before = sorted((target).rglob("*"))
    result = run("init", str(target), *(["--force"] if force else []))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{target / link} is a symbolic link" in result.stderr and "Traceback" not in result.stderr
    assert list(outside.iterdir()) == [] and sorted(target.rglob("*")) == before
    (outside / "dangling").mkdir()  # now a folder: no more written through it
    assert run("init", str(target), "--force").returncode == 2 and list((outside / "dangling").iterdir()) == []


PRECIOUS = '{"title": "precious, outside"}\n'


@pytest.mark.parametrize("name", ["ingestd.toml", "schemas/daily_activity.json", "examples/sleepDay_merged.csv"])
def test_init_force_replaces_a_hard_link_and_leaves_its_other_name_alone(tmp_path, name):
    """A file of DIR hard-linked to one outside: --force writes a new file in
    its place; the outside name keeps its bytes (and its inode its content)."""
    target, victim = tmp_path / "start", tmp_path / "victim.txt"  # a JSON document: a schema init may keep
    victim.write_text(PRECIOUS)
    (target / name).parent.mkdir(parents=True)
    os.link(victim, target / name)
    kept = run("init", str(target))
    assert kept.returncode == (2 if name == "ingestd.toml" else 0), kept.stdout + kept.stderr
    assert victim.read_text() == PRECIOUS
    forced = run("init", str(target), "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert victim.read_text() == PRECIOUS and victim.stat().st_nlink == 1
    assert (target / name).read_text() != PRECIOUS and (target / name).stat().st_nlink == 1
    assert [p.name for p in target.rglob("*.tmp")] == []


@pytest.mark.parametrize("blocker", ["schemas", "examples", "data_lake", "data_lake/sleep_day", "ingestd.toml",
                                     "schemas/daily_activity.json"])
@pytest.mark.parametrize("force", [False, True])
def test_init_checks_every_place_before_it_writes_anything(tmp_path, blocker, force):
    """A regular file where init needs a folder (or a folder where it writes
    a file): exit 2 naming it, and nothing written, not even ingestd.toml."""
    target = tmp_path / "start"
    (target / blocker).parent.mkdir(parents=True, exist_ok=True)
    if blocker.endswith((".toml", ".json")):
        (target / blocker).mkdir()
    else:
        (target / blocker).write_text("a file of the user's\n")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    result = run("init", str(target), *(["--force"] if force else []))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(target / blocker) in lines[0] and "Traceback" not in result.stderr, lines
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_init_into_a_reader_that_leaves_early_is_no_error(tmp_path):
    """`ingestd init DIR | head -1`: the files are written; the reader's
    leaving is not an init error (exit 2, 'Broken pipe')."""
    command = " ".join(ingestd_cmd("init", str(tmp_path / "start"))) + " | head -c 0; exit ${PIPESTATUS[0]}"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert (tmp_path / "start" / "ingestd.toml").exists()
