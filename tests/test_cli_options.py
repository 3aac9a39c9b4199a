"""Every option's value is checked before a command acts: a time too far
back, a number out of its range, is exit 2 with one line naming the option,
never a traceback, a database error, or a daemon that starts 100,000
workers."""
import argparse
import os
import subprocess
from datetime import UTC, datetime

import pytest

from ingestd.daemon.cli import OPTION_RANGES, build_parser
from ingestd.daemon.timespec import parse_when

from .conftest import ingestd_cmd

pytestmark = pytest.mark.integration

BAD = [
    ("dlq list --since 999999999d", "--since"), ("runs --since 10000000000h", "--since"),
    ("dlq list --until 99999999999999999999w", "--until"), ("runs --since 0001-01-01T00:00+14:00", "--since"),
    ("dlq replay --all --dry-run --since 999999999d", "--since"),
    ("dlq discard --all --dry-run --until 9999999999999d", "--until"),
    ("dlq list --limit -1", "--limit"), ("runs --limit -5", "--limit"),
    ("runs --limit 99999999999999999999", "--limit"),
    ("dlq show 99999999999999999999", "ID"), ("dlq show 0", "ID"),
    ("dlq replay --id 99999999999999999999 --dry-run", "--id"), ("dlq discard --id 5 --id -3 --dry-run", "--id"),
    ("dlq replay --all --wait nan", "--wait"), ("dlq replay --all --wait -1", "--wait"),
    ("dlq replay --all --wait inf", "--wait"),
    ("partitions migrate --source daily_activity --batch-rows 0", "--batch-rows"),
    ("partitions migrate --source daily_activity --batch-rows 99999999999999999999", "--batch-rows"),
    ("consume --workers 65", "--workers"), ("run --workers 0", "--workers"),
    ("infer-schema {sample} --skip-lines -1", "--skip-lines"), ("infer-schema {sample} --sample 0", "--sample"),
    ("infer-schema {sample} --delimiter ab", "--delimiter"),
]


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "sample.csv"
    path.write_text("Id,Steps\n1,2\n")
    return path


def run(config_path, command: str, sample) -> subprocess.CompletedProcess:
    args = command.format(sample=sample).split()
    return subprocess.run(ingestd_cmd("--config", str(config_path), *args), capture_output=True, text=True,
                          timeout=60, env=dict(os.environ))


@pytest.mark.parametrize("command,option", BAD)
def test_a_bad_option_value_is_one_line_naming_the_option(write_config, sample, command, option):
    result = run(write_config(), command, sample)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"ingestd: {option} "), lines[0]


@pytest.mark.parametrize("command", ["runs --since 7d --limit 0", "dlq list --since 2h --until 1h --limit 1",
                                     "dlq replay --all --wait 0 --dry-run", "infer-schema {sample} --sample 1"])
def test_values_at_the_bounds_are_taken(write_config, sample, command):
    result = run(write_config(), command, sample)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_numeric_option_of_every_command_has_its_range():
    """An option added later with a number (or a time) is checked too."""
    unchecked = []

    def visit(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    visit(sub, path + [name])
            elif action.type in (int, float) and action.dest not in OPTION_RANGES:
                unchecked.append(" ".join(path + [action.dest]))
    visit(build_parser(), ["ingestd"])
    assert unchecked == []


@pytest.mark.parametrize("text", ["999999999d", "10000000000h", "99999999999999999999w", "1" + "0" * 400 + "s",
                                  "0001-01-01T00:00+14:00"])
def test_a_time_too_far_back_is_a_value_error_saying_so(text):
    with pytest.raises(ValueError, match="too far|out of range"):
        parse_when(text, now=datetime(2026, 1, 1, tzinfo=UTC))
