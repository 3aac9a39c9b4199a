"""The first hour: ingestd init, config show, validate, infer-schema, on the
real files of ../shared/data. None of these needs a server."""
import json
import os
import subprocess
import sys

import pytest

from ingestd.consumers.readers import read_records
from ingestd.consumers.validation import RecordValidator

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
    values = [v for v, _ in read_records(path, fmt, None, records_path)]
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
