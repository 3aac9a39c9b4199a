"""The commands as declared (daemon/commands.py ``Command``, in each command
module's ``COMMANDS``) and the parser cli.py builds from them: every command
there with a handler, every help page, nothing heavy imported to print them,
and ``infer-schema --format`` following the format registry. In-process and
without servers: quick."""
import argparse
import subprocess
import sys

import pytest

from ingestd.daemon import cli
from ingestd.daemon.cli import build_parser, commands, main

# The commands docs/design.md and the guides name (and every one cli.py had
# when the commands moved next to their handlers); more may come.
NAMED = {
    "migrate", "run", "watch", "consume", "poll", "publish", "check", "validate", "infer-schema", "completion",
    "init", "config", "config show", "runs", "status", "dlq", "dlq list", "dlq show", "dlq replay",
    "dlq discard", "partitions", "partitions maintain", "partitions migrate",
}
NAMES = [command.name for command in commands()]


def test_every_named_command_is_declared_once():
    assert NAMED <= set(NAMES), sorted(NAMED - set(NAMES))
    assert len(NAMES) == len(set(NAMES))


def test_every_command_has_a_callable_handler_or_is_a_group_with_actions():
    for command in commands():
        actions = [c for c in commands() if c.words[:-1] == command.words]
        if command.handler is None:
            assert actions, f"{command.name}: neither a handler nor actions"
        else:
            assert callable(command.handler), command.name
        assert command.help and command.description, command.name


def test_a_group_is_declared_before_its_actions():
    seen: set[str] = set()
    for command in commands():
        group = " ".join(command.words[:-1])
        assert not group or group in seen, f"{command.name} comes before {group}"
        seen.add(command.name)


def test_the_parser_has_exactly_the_declared_commands():
    found = []

    def visit(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found.append(" ".join([*path, name]))
                    visit(sub, [*path, name])
    visit(build_parser(), [])
    assert found == NAMES


@pytest.mark.parametrize("name", ["", *NAMES])
def test_every_help_page_exits_0(name, capsys):
    with pytest.raises(SystemExit) as done:
        main([*name.split(), "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: ingestd {name}".rstrip())
    assert "--log-format" in out  # the global options, after the command too


@pytest.mark.parametrize("argv, command", [
    (["run"], "run"), (["dlq", "replay", "--all"], "dlq replay"), (["config", "show"], "config show"),
    (["partitions"], "partitions"), (["partitions", "--source", "a", "maintain"], "partitions maintain"),
    (["-v", "poll", "--once"], "poll"), (["completion", "zsh"], "completion"),
])
def test_the_chosen_command_is_the_deepest_given(argv, command):
    assert cli.chosen_command(build_parser().parse_args(argv)).name == command


@pytest.mark.parametrize("argv, long_running", [
    (["run"], True), (["watch"], True), (["consume"], True), (["poll"], True), (["poll", "--once"], False),
    (["status"], False), (["migrate"], False), (["partitions", "maintain"], False),
])
def test_only_the_roles_run_long(argv, long_running):
    args = build_parser().parse_args(argv)
    assert cli.chosen_command(args).long_running(args) is long_running


def test_a_group_without_its_action_is_bad_usage(capsys):
    for group in ("dlq", "config"):
        with pytest.raises(SystemExit) as done:
            main([group])
        assert done.value.code == 2
        assert "the following arguments are required: ACTION" in capsys.readouterr().err


HEAVY = ("pika", "psycopg2", "jsonschema", "pyarrow", "prometheus_client", "ingestd.consumers", "ingestd.records")


def test_help_and_completion_import_nothing_heavy():
    """Every command module is imported to build the parser: their heavy
    imports wait in the handlers, or `ingestd --help` and the completion
    script a shell loads at each start would pay for them."""
    probe = ("import sys\n"
             "from ingestd.daemon.cli import build_parser, completion_script\n"
             "completion_script(build_parser(), 'bash')\n"
             f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or m.startswith({HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_infer_schema_formats_are_the_registered_ones(capsys):
    from ingestd.records.formats import FORMATS, Format, register, unregister

    def read(content, options, max_record_bytes, exact_numbers):
        return iter(())

    parser = build_parser()
    assert parser.parse_args(["infer-schema", "s", "--format", "parquet"]).format == "parquet"
    register(Format("cli_probe", (".cliprobe",), read))
    try:
        assert parser.parse_args(["infer-schema", "s", "--format", "cli_probe"]).format == "cli_probe"
        with pytest.raises(SystemExit):
            main(["infer-schema", "--help"])
        assert "{" + ",".join(FORMATS) + "}" in capsys.readouterr().out
    finally:
        unregister("cli_probe")
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["infer-schema", "s", "--format", "cli_probe"])
    assert done.value.code == 2
    assert "invalid choice: 'cli_probe'" in capsys.readouterr().err
