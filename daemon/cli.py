"""The ``ingestd`` command line: the parser, built from the commands that
each command module declares next to its handler (``COMMANDS`` in
roles.py, operate.py, setup_commands.py, dlq_commands.py,
partition_commands.py, and ``completion`` here), the checks every command's
options pass, and the call of the chosen command's handler."""
from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from . import __version__, dlq_commands, operate, partition_commands, roles, setup_commands
from .commands import Command
from .errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ConfigError, IngestError, StartupError

# The order of the commands in ``ingestd --help``; a command not named here comes last.
HELP_ORDER = ("migrate", "run", "watch", "consume", "poll", "publish", "check", "validate", "infer-schema",
              "completion", "init", "config", "dlq", "runs", "partitions", "status")


def _print_completion(config: None, args: argparse.Namespace) -> int:
    print(completion_script(build_parser(), args.shell))
    return EXIT_OK


def _completion_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=["bash", "zsh"], help="the shell")


COMPLETION = Command(
    "completion", help="print a shell completion script",
    description="Print a completion script for the shell. bash: "
                "eval \"$(ingestd completion bash)\" in ~/.bashrc; zsh: the same in ~/.zshrc "
                "(through bashcompinit).",
    handler=_print_completion, add_arguments=_completion_arguments, needs_config=False)


def commands() -> list[Command]:
    """Every command, groups before their actions, in the order of ``ingestd --help``."""
    declared = [*roles.COMMANDS, *operate.COMMANDS, *setup_commands.COMMANDS, COMPLETION, *dlq_commands.COMMANDS,
                *partition_commands.COMMANDS]
    place = {name: n for n, name in enumerate(HELP_ORDER)}
    return sorted(declared, key=lambda command: place.get(command.words[0], len(HELP_ORDER)))


class _Parser(argparse.ArgumentParser):
    """argparse's parser, its usage errors safe for a terminal: they repeat
    what was given (``unrecognized arguments: ...``), control characters too."""

    def error(self, message: str) -> NoReturn:
        from .table import printable

        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, printable(f"{self.prog}: error: {message}") + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ingestd",
        description="Event-driven ingestion into PostgreSQL bronze tables: files dropped in a landing "
                    "folder become RabbitMQ events that consumer workers validate and load.",
        epilog="Exit status: 0 done, 1 failed, 2 bad usage or configuration.",
    )
    parser.add_argument("--version", action="version", version=f"ingestd {__version__}")
    _add_global_options(parser, argparse.SUPPRESS)
    parser.set_defaults(config=None, log_level=None, log_format=None, verbose=0, quiet=0)
    _add_commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True), commands())
    _spread_global_options(parser)
    return parser


def _add_commands(top: argparse._SubParsersAction, declared: list[Command]) -> None:
    """A parser for each command, under its group's (``dlq replay`` under
    ``dlq``); a group's actions go to ``args.<group>_command``, required
    unless the group runs by itself."""
    parsers: dict[str, argparse.ArgumentParser] = {}
    actions: dict[str, argparse._SubParsersAction] = {"": top}
    by_name = {command.name: command for command in declared}
    for command in declared:
        group = " ".join(command.words[:-1])
        if group not in actions:
            actions[group] = parsers[group].add_subparsers(
                dest=by_name[group].actions_dest, metavar="ACTION", required=by_name[group].handler is None)
        parser = actions[group].add_parser(command.words[-1], help=command.help, description=command.description)
        command.add_arguments(parser)
        parsers[command.name] = parser


def chosen_command(args: argparse.Namespace) -> Command:
    """The command ``args`` were parsed for: the group's action when one was given."""
    by_name = {command.name: command for command in commands()}
    command = by_name[args.command]
    while getattr(args, command.actions_dest, None):
        command = by_name[f"{command.name} {getattr(args, command.actions_dest)}"]
    return command


def _add_global_options(parser: argparse.ArgumentParser, default) -> None:
    group = parser.add_argument_group("global options (before or after the command)")
    group.add_argument("-c", "--config", metavar="PATH", default=default,
                       help="TOML config file (default: $INGESTD_CONFIG, else ./ingestd.toml)")
    group.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=default,
                       help="log level (default: [log] level; one-shot commands: WARNING)")
    group.add_argument("--log-format", choices=["text", "json"], default=default,
                       help="log lines as text or JSON (default: $INGESTD_LOG_FORMAT, else text on a terminal, "
                            "JSON otherwise)")
    group.add_argument("-v", "--verbose", action="count", default=default, help="more log lines (-vv: debug)")
    group.add_argument("-q", "--quiet", action="count", default=default, help="fewer log lines (errors only)")


def _spread_global_options(parser: argparse.ArgumentParser) -> None:
    """Every command accepts the global options after its name too; there
    they default to nothing, so a value given before the command stands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _add_global_options(sub, argparse.SUPPRESS)
                _spread_global_options(sub)


# The numbers options take, by the option's dest: (name shown, lowest,
# highest). None as highest: the bound of the same key in the config schema.
BIGINT = 2**63 - 1
OPTION_RANGES: dict[str, tuple[str, float, float | None]] = {
    "limit": ("--limit", 0, BIGINT), "ids": ("--id", 1, BIGINT), "id": ("ID", 1, BIGINT),
    "wait": ("--wait", 0, 86_400), "batch_rows": ("--batch-rows", 1, 100_000_000),
    "workers": ("--workers", 1, None), "skip_lines": ("--skip-lines", 0, None), "sample": ("--sample", 1, BIGINT),
}
_SCHEMA_KEYS = {"workers": ("consumer", "workers"), "skip_lines": ("sources", "skip_lines")}


def option_problem(args) -> str | None:
    """Why an option's value cannot be used, in one line naming the option
    (a time that is none or too far back, a number out of its range, a
    delimiter of more than one character); None when all can."""
    from .timespec import parse_when

    for dest in ("since", "until"):
        if getattr(args, dest, None):
            try:
                parse_when(getattr(args, dest))
            except ValueError as exc:
                return f"--{dest} {exc}"
    for dest, (name, low, high) in OPTION_RANGES.items():
        given = getattr(args, dest, None)
        values = [value for value in (given if isinstance(given, list) else [given]) if value is not None]
        high = _schema_maximum(dest) if high is None and values else high  # the config schema: only when needed
        for value in values:
            if not low <= value <= high:  # NaN too: it compares false
                kind = "a number of seconds" if isinstance(value, float) else "a whole number"
                return f"{name} {str(value)[:24]}: give {kind} from {low:,} to {high:,}"
    delimiter = getattr(args, "delimiter", None)
    if delimiter is not None and len(delimiter) != 1:
        return f"--delimiter {delimiter[:10]!r}: give one character (a tab: $'\\t')"
    return None


def _schema_maximum(dest: str) -> int:
    from .config import config_schema

    section, key = _SCHEMA_KEYS[dest]
    spec = config_schema()["properties"][section]
    return (spec["items"] if section == "sources" else spec)["properties"][key]["maximum"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .logs import ENV_LOG_FORMAT, setup_logging
    from .table import printable

    problem = option_problem(args)
    if problem:
        print(printable(f"ingestd: {problem}"), file=sys.stderr)
        return EXIT_USAGE
    chosen = os.environ.get(ENV_LOG_FORMAT)
    if chosen and chosen not in ("text", "json"):  # checked for every command, with a config or without
        print(printable(f"ingestd: config error: {ENV_LOG_FORMAT}: {chosen[:40]!r} is neither text nor json"),
              file=sys.stderr)
        return EXIT_USAGE
    command = chosen_command(args)
    assert command.handler is not None, command.name  # a group without a handler requires its action
    if not command.needs_config:
        setup_logging("WARNING", sys.stderr, args.log_format)
        return _call(command.handler, None, args)
    from .config import load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"ingestd: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    long_running = command.long_running(args)
    # Roles log on stdout; one-shot commands keep stdout for their output and
    # log only warnings, to stderr.
    setup_logging(_log_level(args, config.log_level if long_running else "WARNING"),
                  None if long_running else sys.stderr, args.log_format)
    return _call(command.handler, config, args)


def _call(handler, config, args) -> int:
    """A command's exit status; the errors every command may meet, said in one line."""
    try:
        return handler(config, args)
    except BrokenPipeError:
        return _reader_left()
    except StartupError as exc:
        print(f"ingestd: cannot start: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"ingestd: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except IngestError as exc:
        print(f"ingestd: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _reader_left() -> int:
    """`ingestd status | head`: the reader left; nothing more to say. Later
    writes (at exit) go nowhere instead of raising again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_OK


_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


def _log_level(args, default: str) -> str:
    """--log-level, else the default moved by -v (down) and -q (up)."""
    if args.log_level:
        return args.log_level
    index = _LEVELS.index(default if default in _LEVELS else "INFO") - (args.verbose or 0) + (args.quiet or 0)
    return _LEVELS[max(0, min(index, len(_LEVELS) - 1))]


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """A completion script from the parser itself: commands, their actions
    and options; file names elsewhere."""
    words: dict[str, list[str]] = {}

    def visit(p: argparse.ArgumentParser, path: str) -> None:
        options, subcommands = [], []
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    subcommands.append(name)
                    visit(sub, f"{path} {name}".strip())
            else:
                options += [o for o in action.option_strings if o.startswith("--")]
        words[path] = sorted(set(subcommands)) + sorted(set(options))
    visit(parser, "")
    cases = "\n".join(f'        "{path}") opts="{" ".join(w)}" ;;' for path, w in sorted(words.items()) if path)
    script = f"""# ingestd completion ({shell}); generated by: ingestd completion {shell}
_ingestd() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" path="" word i
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        [[ "$word" == -* ]] && continue
        case " $_ingestd_commands " in *" ${{path:+$path }}$word "*) path="${{path:+$path }}$word" ;; esac
    done
    local opts
    case "$path" in
{cases}
        *) opts="{" ".join(words[""])}" ;;
    esac
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    [[ ${{#COMPREPLY[@]}} -eq 0 ]] && COMPREPLY=($(compgen -f -- "$cur"))
}}
_ingestd_commands="{" ".join(sorted(p for p in words if p))}"
complete -F _ingestd ingestd"""
    if shell == "zsh":
        script = "autoload -U +X bashcompinit && bashcompinit\n" + script
    return script


