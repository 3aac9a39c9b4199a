"""The ``ingestd`` command line."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__
from .errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ConfigError, IngestError, StartupError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ingestd",
        description="Event-driven ingestion into PostgreSQL bronze tables: files dropped in a landing "
                    "folder become RabbitMQ events that consumer workers validate and load.",
        epilog="Exit status: 0 done, 1 failed, 2 bad usage or configuration.",
    )
    parser.add_argument("--version", action="version", version=f"ingestd {__version__}")
    _add_global_options(parser, argparse.SUPPRESS)
    parser.set_defaults(config=None, log_level=None, log_format=None, verbose=0, quiet=0)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_role_commands(sub)
    _add_setup_commands(sub)
    _add_operator_commands(sub)
    _spread_global_options(parser)
    return parser


def _add_role_commands(sub) -> None:
    sub.add_parser("migrate", help="create the database if needed and apply sql/ migrations",
                   description="Apply the numbered SQL migrations (idempotent; safe to run concurrently).")
    p = sub.add_parser("run", help="watcher and consumers in one process",
                       description="Run the watcher and N consumer workers in one process (the simple VM case). "
                                   "Applies migrations first.")
    p.add_argument("--workers", type=int, metavar="N", help="consumer workers (default: [consumer] workers)")
    sub.add_parser("watch", help="the watcher role only",
                   description="Watch the landing folder and publish an event for each complete file.")
    p = sub.add_parser("consume", help="consumer workers only",
                       description="Consume events and load them into bronze tables. Applies migrations first.")
    p.add_argument("--workers", type=int, metavar="N", help="consumer workers (default: [consumer] workers)")
    p = sub.add_parser("poll", help="the API poller role",
                       description="Poll the API sources (kind = \"api\") at their intervals and publish each "
                                   "answer as a payload event. With --once, poll now and exit: 0 when every "
                                   "poll succeeded, 1 otherwise (for cron and for testing).")
    p.add_argument("--once", action="store_true", help="poll now, once, and exit")
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="only these API sources (with --once)")
    p = sub.add_parser("publish", help="enqueue existing files by hand (backfill)",
                       description="Publish an event for each file (folders are walked) inside the landing "
                                   "zone, with trigger 'manual'. Files already loaded are recorded as skipped.")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="files or folders inside the landing zone (folders are walked)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_setup_commands(sub) -> None:
    sub.add_parser("check", help="check config, database, broker and landing folder",
                   description="Check the configuration and connectivity; say what is wrong and how to fix it.")
    p = sub.add_parser("validate", help="read and validate files without loading them: what would happen",
                       description="Read FILEs as files of source NAME (its format, schema and limits) and say what "
                                   "a load would do: rows, invalid records with pointer and keyword, and the reason "
                                   "code it would get. Nothing is loaded, moved or published; no server is needed. "
                                   "Exit 0 when every file would load, 1 otherwise.")
    p.add_argument("--source", required=True, metavar="NAME", help="a file source of the config")
    p.add_argument("files", nargs="+", metavar="FILE", help="files to read (anywhere)")
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    p = sub.add_parser("infer-schema", help="propose a JSON Schema from a sample file",
                       description="Read a sample file and print a JSON Schema (draft 2020-12) for its records: "
                                   "types, required properties, and shapes of text (integers, decimals, dates). "
                                   "Review it, save it under schemas/, and name it in the source. No config needed.")
    p.add_argument("file", metavar="FILE", help="a sample file (csv, json, jsonl, parquet; .gz too)")
    p.add_argument("--format", choices=["csv", "json", "jsonl", "parquet"],
                   help="the file's format (default: from its suffix)")
    p.add_argument("--records-path", metavar="PATH", help="JSON: the dotted path of the records array")
    p.add_argument("--delimiter", default=",", metavar="CHAR", help="CSV delimiter (default ,)")
    p.add_argument("--skip-lines", type=int, default=0, metavar="N", help="CSV: lines before the header")
    p.add_argument("--sample", type=int, default=100_000, metavar="N",
                   help="read at most N records (default 100,000)")
    p.add_argument("--title", help="the schema's title (default: the file's name)")
    p = sub.add_parser("completion", help="print a shell completion script",
                       description="Print a completion script for the shell. bash: "
                                   "eval \"$(ingestd completion bash)\" in ~/.bashrc; zsh: the same in ~/.zshrc "
                                   "(through bashcompinit).")
    p.add_argument("shell", choices=["bash", "zsh"], help="the shell")
    p = sub.add_parser("init", help="write a starting config, the example schemas and the landing folders",
                       description="Write DIR/ingestd.toml (commented), DIR/schemas/ and DIR/data_lake/<source>/ "
                                   "for each file source of the example. Nothing is overwritten without --force.")
    p.add_argument("dir", nargs="?", default=".", metavar="DIR", help="where to write (default: here)")
    p.add_argument("--force", action="store_true", help="overwrite an existing ingestd.toml and schemas")
    p = sub.add_parser("config", help="the configuration in force", description="The configuration in force.")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    p = csub.add_parser("show", help="every setting, its value and where it came from",
                        description="Every setting in force, its value (secrets redacted) and where it came from: "
                                    "the file, the environment, or the default.")
    p.add_argument("--json", action="store_true", help="JSON for scripts")


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


def _add_operator_commands(sub) -> None:
    from .operate import add_selector_arguments

    dlq = sub.add_parser("dlq", help="inspect, replay and discard dead letters",
                         description="Dead letters: what failed, why, and what to do about it.")
    dsub = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    p = dsub.add_parser("list", help="dead letters, newest last",
                        description="List dead letters from ops.dead_letters (waiting ones unless told), and "
                                    "how many messages the dead-letter queue holds.")
    add_selector_arguments(p, with_all=False)
    p.add_argument("--include-replayed", action="store_true", help="also those already replayed")
    p.add_argument("--include-discarded", action="store_true", help="also those discarded")
    p.add_argument("--limit", type=int, metavar="N", help="at most N")
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    p = dsub.add_parser("show", help="one dead letter, whole",
                        description="The whole envelope: reason, message, detail, event, file, run, replays.")
    p.add_argument("id", type=int, metavar="ID", help="the dead letter's id (first column of dlq list)")
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    p = dsub.add_parser("replay", help="publish dead-lettered events again, after a fix",
                        description="Re-publish the selected waiting dead letters (trigger 'replay'), take their "
                                    "messages off the dead-letter queue, and wait for the consumers' verdict. "
                                    "Files are loaded from quarantine. Something already loaded meanwhile is "
                                    "recorded as skipped. Exit 1 if anything was refused or failed again.")
    add_selector_arguments(p)
    p.add_argument("--dry-run", action="store_true", help="list what would be replayed")
    p.add_argument("--wait", type=float, default=60, metavar="SECONDS",
                   help="how long to wait for the outcome (default 60; 0: do not wait)")
    p.add_argument("--json", action="store_true", help="JSON summary for scripts")
    p = dsub.add_parser("discard", help="give up on dead letters, keeping the record",
                        description="Mark the selected waiting dead letters discarded (with a note), take their "
                                    "messages off the dead-letter queue; quarantined files are kept unless "
                                    "--delete-file.")
    add_selector_arguments(p)
    p.add_argument("--note", help="why (kept in ops.dead_letters.note)")
    p.add_argument("--delete-file", action="store_true", help="delete the quarantined file too")
    p.add_argument("--dry-run", action="store_true", help="list what would be discarded")
    p.add_argument("--json", action="store_true", help="JSON summary for scripts")

    p = sub.add_parser("runs", help="run history and each run's data quality",
                       description="Recent runs, newest first, with their records: total, valid, invalid. "
                                   "--id shows one run whole: its records' quality (the share missing each "
                                   "required field, the most frequent failures, fields the schema does not "
                                   "declare, declared fields no record held).")
    p.add_argument("--id", metavar="RUN_ID", dest="run_id", help="one run, in detail (its id: from runs --json, "
                   "dlq show, or a log line's run_id)")
    p.add_argument("--status", choices=["running", "success", "failure", "skipped"], help="only runs that ended so")
    p.add_argument("--source", metavar="NAME", help="only runs of this source")
    p.add_argument("--since", metavar="WHEN", help="started at or after (2h, 7d, 2026-11-23T08:00)")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="at most N (default 20)")
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    _add_partition_commands(sub)
    p = sub.add_parser("status", help="queues, sources, dead letters, health at a glance",
                       description="One screen to read first. Exit 1 when something needs attention (database "
                                   "or broker unreachable, dead letters waiting), for monitoring checks.")
    p.add_argument("--json", action="store_true", help="JSON for scripts")


def _add_partition_commands(sub) -> None:
    p = sub.add_parser("partitions", help="bronze partitions per source: rows, size, retention",
                       description="List the bronze tables of the configured sources: each month's partition "
                                   "with its rows, size and when retention drops it (a plain table as one line). "
                                   "Rows are counted up to 64 MB a partition and estimated above (~), unless "
                                   "--exact. The actions make months, apply retention and migrate a plain table.")
    p.add_argument("--source", metavar="NAME", help="only this source")
    p.add_argument("--exact", action="store_true", help="count the rows of every partition (slow on large ones)")
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    psub = p.add_subparsers(dest="partitions_command", metavar="ACTION")
    m = psub.add_parser("maintain", help="make the coming months, drop partitions past retention",
                        description="What consumers do every hour: make this month's and the next two months' "
                                    "partitions, and detach and drop those whose rows are all older than the "
                                    "source's retention. Each change is logged and recorded in "
                                    "ops.partition_log. With --dry-run, only say what would be done.")
    m.add_argument("--source", metavar="NAME", default=argparse.SUPPRESS, help="only this source")
    m.add_argument("--dry-run", action="store_true", help="say what would be made and dropped; change nothing")
    m.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON for scripts")
    g = psub.add_parser("migrate", help="make a source's plain bronze table partitioned, while loads go on",
                        description="Copy the rows of the plain bronze.SOURCE, in batches, into a table "
                                    "partitioned by month (the source's partition_by), then swap the two in one "
                                    "short transaction: loads go on, and wait a moment at the swap. The old "
                                    "table is kept as bronze.\"SOURCE-unpartitioned\" (unless --drop-old and "
                                    "the counts match). Interrupted, it resumes where it stopped. Set "
                                    "partition = \"month\" for the source first.")
    g.add_argument("--source", metavar="NAME", required=True, default=argparse.SUPPRESS, help="the source")
    g.add_argument("--batch-rows", type=int, default=50_000, metavar="N",
                   help="ids copied per transaction (default 50,000)")
    g.add_argument("--drop-old", action="store_true", help="drop the old table once the counts match")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


# The command (or "dlq <action>", "config <action>") → "module:function".
# Modules load on demand: `ingestd status` does not import pyarrow.
COMMANDS = {
    "migrate": "roles:cmd_migrate", "run": "roles:cmd_run", "watch": "roles:cmd_watch",
    "consume": "roles:cmd_consume", "poll": "roles:cmd_poll",
    "check": "setup_commands:cmd_check", "validate": "setup_commands:cmd_validate",
    "config show": "setup_commands:cmd_config_show",
    "publish": "operate:cmd_publish", "runs": "operate:cmd_runs", "status": "operate:cmd_status",
    "dlq list": "operate:cmd_dlq_list", "dlq show": "operate:cmd_dlq_show", "dlq replay": "operate:cmd_dlq_replay",
    "dlq discard": "operate:cmd_dlq_discard",
    "partitions": "partition_commands:cmd_list", "partitions maintain": "partition_commands:cmd_maintain",
    "partitions migrate": "partition_commands:cmd_migrate",
}


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
        high = _schema_maximum(dest) if high is None else high
        for value in given if isinstance(given, list) else [given]:
            if value is not None and not low <= value <= high:  # NaN too: it compares false
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
    parser = build_parser()
    args = parser.parse_args(argv)
    from .config import load_config
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
    done = _without_config(parser, args)
    if done is not None:
        return done
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"ingestd: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    long_running = args.command in ("run", "watch", "consume") or (args.command == "poll" and not args.once)
    # Roles log on stdout; one-shot commands keep stdout for their output and
    # log only warnings, to stderr.
    setup_logging(_log_level(args, config.log_level if long_running else "WARNING"),
                  None if long_running else sys.stderr, args.log_format)
    action = (getattr(args, "dlq_command", None) or getattr(args, "config_command", None)
              or getattr(args, "partitions_command", None))
    module, function = COMMANDS[f"{args.command} {action}" if action else args.command].split(":")
    handler = getattr(importlib.import_module(f"{__package__}.{module}"), function)
    return _call(handler, config, args)


def _without_config(parser: argparse.ArgumentParser, args) -> int | None:
    """Run the commands that need no config file; None for the others."""
    from .logs import setup_logging

    if args.command == "completion":
        print(completion_script(parser, args.shell))
        return EXIT_OK
    if args.command not in ("infer-schema", "init"):
        return None
    from .setup_commands import cmd_infer_schema, cmd_init

    setup_logging("WARNING", sys.stderr, args.log_format)
    if args.command == "infer-schema":
        return cmd_infer_schema(args)
    try:
        return cmd_init(args)
    except BrokenPipeError:
        return _reader_left()
    except (ConfigError, OSError) as exc:
        print(f"ingestd init: {exc}", file=sys.stderr)
        return EXIT_USAGE


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


