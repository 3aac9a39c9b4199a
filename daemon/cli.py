"""The ``ingestd`` command line."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from pathlib import Path

from . import __version__
from .errors import ConfigError, IngestError, NotPermittedError, PermanentError, StartupError, TransientError

log = logging.getLogger("ingestd")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


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
    _add_operator_commands(sub)
    _spread_global_options(parser)
    return parser


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

    p = sub.add_parser("runs", help="run history", description="Recent runs, newest first.")
    p.add_argument("--status", choices=["running", "success", "failure", "skipped"], help="only runs that ended so")
    p.add_argument("--source", metavar="NAME", help="only runs of this source")
    p.add_argument("--since", metavar="WHEN", help="started at or after (2h, 7d, 2026-11-23T08:00)")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="at most N (default 20)")
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    p = sub.add_parser("status", help="queues, sources, dead letters, health at a glance",
                       description="One screen to read first. Exit 1 when something needs attention (database "
                                   "or broker unreachable, dead letters waiting), for monitoring checks.")
    p.add_argument("--json", action="store_true", help="JSON for scripts")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .config import load_config
    from .logs import setup_logging

    if args.command == "completion":
        print(completion_script(parser, args.shell))
        return EXIT_OK
    if args.command == "infer-schema":
        setup_logging("WARNING", sys.stderr, args.log_format)
        return cmd_infer_schema(args)
    if args.command == "init":
        from .setup_commands import cmd_init
        setup_logging("WARNING", sys.stderr, args.log_format)
        try:
            return cmd_init(args)
        except (ConfigError, OSError) as exc:
            print(f"ingestd init: {exc}", file=sys.stderr)
            return EXIT_USAGE

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
    if getattr(args, "workers", None) is not None and args.workers < 1:
        print("ingestd: --workers must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    from . import operate
    handlers = {"validate": cmd_validate, "migrate": cmd_migrate, "run": cmd_run, "watch": cmd_watch,
                "consume": cmd_consume, "poll": cmd_poll, "publish": cmd_publish, "check": cmd_check,
                "runs": operate.cmd_runs, "status": operate.cmd_status}
    if args.command == "config":
        from .setup_commands import cmd_config_show
        handler = cmd_config_show
    elif args.command == "dlq":
        handler = {"list": operate.cmd_dlq_list, "show": operate.cmd_dlq_show, "replay": operate.cmd_dlq_replay,
                   "discard": operate.cmd_dlq_discard}[args.dlq_command]
    else:
        handler = handlers[args.command]
    try:
        return handler(config, args)
    except BrokenPipeError:
        # `ingestd status | head`: the reader left; nothing more to say. Later
        # writes (at exit) go nowhere instead of raising again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except StartupError as exc:
        print(f"ingestd: cannot start: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"ingestd: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except IngestError as exc:
        print(f"ingestd: {exc}", file=sys.stderr)
        return EXIT_FAILED


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


def cmd_validate(config, args) -> int:
    import json

    from ingestd.consumers.dry_run import judge_file
    from ingestd.consumers.validation import RecordValidator, plan_for

    from .table import printable
    source = config.source(args.source)
    if source is None or source.kind != "file":
        known = ", ".join(sorted(s.name for s in config.sources.values() if s.kind == "file")) or "none"
        print(f"ingestd validate: {args.source!r} is not a file source of {config.path} (file sources: {known})",
              file=sys.stderr)
        return EXIT_USAGE
    validator = RecordValidator(source.schema, source.name, source.format_keyword)
    verdicts = [judge_file(config, source, Path(f), validator) for f in args.files]
    if args.json:
        print(json.dumps({"source": source.name, "files": [v.as_json() for v in verdicts]}, indent=2))
    else:
        plan = plan_for(source.schema, source.format_keyword).describe() if source.schema else "no schema"
        print(f"source {source.name}: {source.format}, {plan}")
        for v in verdicts:
            print(printable(f"{v.path}: {v.outcome}; {v.rows} record(s), {v.rows_valid} valid, "
                            f"{v.rows_invalid} invalid" + (f"; {v.message}" if v.message else "")))
            for example in v.invalid_examples:
                for error in example["errors"]:
                    print(printable(f"  record {example['record']}: {error['pointer']} ({error['keyword']}): "
                                    f"{error['message']}"))
    return EXIT_OK if all(v.reason is None for v in verdicts) else EXIT_FAILED


def cmd_infer_schema(args) -> int:
    import itertools
    import json

    from ingestd.consumers.infer import infer_schema
    from ingestd.consumers.readers import read_records

    path = Path(args.file)
    fmt = args.format or _format_of(path.name)
    if fmt is None:
        print(f"ingestd infer-schema: cannot tell the format of {path.name}; pass --format", file=sys.stderr)
        return EXIT_USAGE
    try:
        records = read_records(path, fmt, None, args.records_path, args.delimiter, args.skip_lines)
        values = [value for value, _ in itertools.islice(records, max(1, args.sample))]
    except PermanentError as exc:
        print(f"ingestd infer-schema: {path}: {exc.reason}: {exc.failure.message}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"ingestd infer-schema: {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(infer_schema(values, args.title or path.name), indent=2, ensure_ascii=False))
    return EXIT_OK


def _format_of(name: str) -> str | None:
    base = name[:-3] if name.endswith(".gz") else name
    for suffix, fmt in ((".csv", "csv"), (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"),
                        (".parquet", "parquet")):
        if base.endswith(suffix):
            return fmt
    return None


def cmd_migrate(config, args) -> int:
    from .db import migrate
    applied = migrate(config.database_url, config.connect_timeout_seconds)
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else "; up to date"))
    return EXIT_OK


def _migrate_with_retry(config, stop: threading.Event) -> None:
    """Migrate, waiting out an unreachable database; a refusal (login, role,
    permission) stops the start with its fix."""
    from .backoff import keep_trying, log_retry
    from .db import migrate

    def attempt() -> None:
        try:
            migrate(config.database_url, config.connect_timeout_seconds)
        except NotPermittedError as exc:
            raise StartupError(f"{exc}; fix: {exc.fix}") from None
    keep_trying(attempt, stop=stop, errors=(TransientError,),
                on_retry=log_retry(logging.getLogger(__name__), "migrate failed, retrying", step="migrate"))


def _check_broker_access(config) -> None:
    """One connection at start: a refusal (login, virtual host) stops the
    start with its fix; an unreachable broker is left to the roles, which
    retry (files wait in the landing zone meanwhile)."""
    from .broker import open_connection
    try:
        open_connection(config.amqp_url, config.heartbeat_seconds, "ingestd-start").close()
    except NotPermittedError as exc:
        raise StartupError(f"{exc}; fix: {exc.fix}") from None
    except TransientError as exc:
        log.warning("broker not reachable yet; the roles keep trying",
                    extra={"step": "start", "status": "retry", "error": str(exc)})


def _prepare_landing(config) -> None:
    try:
        config.landing_dir.mkdir(parents=True, exist_ok=True)
        for name in config.sources:
            (config.landing_dir / name).mkdir(exist_ok=True)
    except OSError as exc:
        raise StartupError(f"landing folder {config.landing_dir}: {exc.strerror} ({exc.filename}); fix: create it "
                           f"and give this user ({_user()}) write access, e.g. chown -R {_user()} "
                           f"{config.landing_dir}") from None
    if not os.access(config.landing_dir, os.W_OK | os.X_OK):
        raise StartupError(f"landing folder {config.landing_dir} is not writable by this user ({_user()}): loaded "
                           f"files move to _archive/ and failed ones to _quarantine/ there; fix: chown -R {_user()} "
                           f"{config.landing_dir} (or chmod u+w)")


def _user() -> str:
    import pwd
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _run_roles(config, watch: bool, consumers: int, poll: bool = False) -> int:
    from .broker import Publisher, Topology
    from .config import LiveConfig
    from .errors import Shutdown
    from .health import Health, HealthServer, database_checker
    from .logs import redact_url
    from .runner import Supervisor
    from .watcher import Watcher

    needs_database = bool(consumers or poll)
    health = Health(database_check=database_checker(config.database_url) if needs_database else None)
    server = None
    if config.health_port:
        try:
            server = HealthServer(health, config.health_host, config.health_port)
        except OSError as exc:
            print(f"ingestd: cannot serve health and metrics on {config.health_host}:{config.health_port}: "
                  f"{exc.strerror}; set [health] port (or INGESTD_HEALTH_PORT; 0 turns it off)", file=sys.stderr)
            return EXIT_USAGE
    supervisor = Supervisor(health)
    supervisor.install_signal_handlers()
    log.info("ingestd starting", extra={
        "step": "start", "status": "starting", "version": __version__, "watcher": watch, "consumers": consumers,
        "poller": poll, "config": str(config.path), "landing_dir": str(config.landing_dir),
        "sources": sorted(config.sources), "database": redact_url(config.database_url),
        "broker": redact_url(config.amqp_url), "prefix": config.prefix,
        "health": f"{config.health_host}:{config.health_port}" if server else "off"})
    if consumers:
        from ingestd.consumers.validation import log_validation_plans
        log_validation_plans(config.sources.values())
    if server is not None:
        server.start()
    try:
        _prepare_landing(config)
        if needs_database:
            _migrate_with_retry(config, supervisor.stop)
        _check_broker_access(config)
    except Shutdown:
        return EXIT_OK
    topology = Topology.for_config(config)
    live = LiveConfig(config)

    def reporter(component: str):
        health.set_ready(component, "connecting")
        return lambda problem: health.set_ready(component, problem)

    if poll:
        from .poller import Poller
        poll_report = reporter("broker (poller)")

        def poll_role() -> None:
            poller = Poller(live, Publisher(config.amqp_url, topology, config.heartbeat_seconds, "poller"),
                            supervisor.stop)
            poller.heartbeat = lambda: health.beat("poller")
            poller.report = poll_report
            poller.run()
        supervisor.start("poller", poll_role)
    if watch:
        watch_report = reporter("broker (watcher)")

        def watch_role() -> None:
            publisher = Publisher(config.amqp_url, topology, config.heartbeat_seconds, "watcher")
            watcher = Watcher(config, publisher, supervisor.stop)
            watcher.heartbeat = lambda: health.beat("watcher")
            watcher.report = watch_report
            watcher.run()
        supervisor.start("watcher", watch_role)
    if consumers:
        from ingestd.consumers.recorder import DeadLetterRecorder
        from ingestd.consumers.worker import ConsumerWorker

        from .health import sample_queues
        supervisor.start("recorder", DeadLetterRecorder(config, supervisor.stop).run)
        supervisor.start("queue-sampler", lambda: sample_queues(config, supervisor.stop))
        for n in range(1, consumers + 1):
            name = f"{os.uname().nodename}-{os.getpid()}-c{n}"
            worker = ConsumerWorker(config, name, supervisor.stop, live=live)
            worker.heartbeat = (lambda role: lambda: health.beat(role))(f"consumer-{n}")
            worker.report = reporter(f"broker (consumer-{n})")
            supervisor.start(f"consumer-{n}", worker.run)
    try:
        return supervisor.wait(join_timeout=config.stop_timeout_seconds + 5)
    finally:
        if server is not None:
            server.stop()


def cmd_run(config, args) -> int:
    return _run_roles(config, watch=True, consumers=args.workers or config.workers, poll=bool(config.api_sources))


def cmd_poll(config, args) -> int:
    if not config.api_sources and args.once:
        print("ingestd poll: no API sources (kind = \"api\") in the config", file=sys.stderr)
        return EXIT_USAGE
    if not config.api_sources:
        # As a service the poller idles until API sources appear in the
        # (re-read) config, rather than failing and being restarted in a loop.
        log.warning("no API sources configured yet; the poller waits for the config to gain some",
                    extra={"step": "poll", "status": "idle"})
    unknown = sorted(set(args.sources) - {s.name for s in config.api_sources})
    if unknown:
        print(f"ingestd poll: not API sources of this config: {', '.join(unknown)}", file=sys.stderr)
        return EXIT_USAGE
    if not args.once:
        if args.sources:
            print("ingestd poll: naming sources needs --once", file=sys.stderr)
            return EXIT_USAGE
        return _run_roles(config, watch=False, consumers=0, poll=True)
    import threading

    from .broker import Publisher, Topology
    from .db import migrate
    from .poller import Poller
    migrate(config.database_url, config.connect_timeout_seconds)
    poller = Poller(config, Publisher(config.amqp_url, Topology.for_config(config),
                                      config.heartbeat_seconds, "poller"), threading.Event())
    try:
        ok = poller.poll_once(args.sources or None)
    finally:
        poller.close()
    for source in [s for s in config.api_sources if not args.sources or s.name in args.sources]:
        print(f"{source.name}: {_last_status(config, source.name)}")
    return EXIT_OK if ok else EXIT_FAILED


def _last_status(config, source: str) -> str:
    from .db import connect
    from .ledger import Ledger
    conn = connect(config.database_url, config.connect_timeout_seconds, "ingestd-poll")
    try:
        _, next_poll, last_status = Ledger(conn).poll_state(source)
    finally:
        conn.close()
    return "never polled" if next_poll is None else f"{last_status} (next poll {next_poll:%Y-%m-%d %H:%M:%S %Z})"


def cmd_watch(config, args) -> int:
    return _run_roles(config, watch=True, consumers=0)


def cmd_consume(config, args) -> int:
    return _run_roles(config, watch=False, consumers=args.workers or config.workers)


def cmd_publish(config, args) -> int:
    from pathlib import PurePosixPath

    from tqdm import tqdm

    from .broker import Publisher, Topology
    from .events import FileEvent
    from .landing import NO_SOURCE, is_ignored, source_of

    root = config.landing_dir.resolve()
    files: list[Path] = []
    problems = 0
    for raw in args.paths:
        path = Path(raw).absolute()
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() or p.is_symlink()))
        elif path.exists() or path.is_symlink():
            files.append(path)
        else:
            print(f"ingestd publish: {raw}: no such file", file=sys.stderr)
            problems += 1
    publisher = Publisher(config.amqp_url, Topology.for_config(config),
                          config.heartbeat_seconds, "publish")
    published = 0
    try:
        # disable=None: tqdm draws only on a terminal.
        bar = tqdm(files, unit="file", disable=True if args.no_progress or not files else None, file=sys.stderr)
        for path in bar:
            try:
                rel = PurePosixPath(path.parent.resolve().joinpath(path.name).relative_to(root).as_posix())
            except ValueError:
                tqdm.write(f"ingestd publish: {path}: not inside the landing zone {root}", file=sys.stderr)
                problems += 1
                continue
            if is_ignored(rel):
                continue
            st = os.lstat(path)
            event = FileEvent(source=source_of(rel) or NO_SOURCE, path=rel.as_posix(), size=st.st_size,
                              mtime_ns=st.st_mtime_ns, trigger="manual")
            try:
                publisher.publish(publisher.topology.events_exchange, event.routing_key, event.to_json(),
                                  event.event_id)
            except TransientError as exc:
                tqdm.write(f"ingestd publish: {path}: {exc}", file=sys.stderr)
                problems += 1
                continue
            published += 1
    finally:
        publisher.close()
    print(f"published {published} file(s)" + (f", {problems} problem(s)" if problems else ""))
    return EXIT_FAILED if problems else EXIT_OK


def cmd_check(config, args) -> int:
    from .broker import Topology, TopologyMismatch, open_connection
    from .db import connect, pending_migrations
    from .logs import redact_url

    results: list[tuple[bool, str, str]] = []
    results.append((True, "config", f"{config.path} ({len(config.sources)} source(s))"))
    try:
        conn = connect(config.database_url, config.connect_timeout_seconds, "ingestd-check")
        try:
            missing = pending_migrations(conn)
        finally:
            conn.close()
        if missing:
            results.append((False, "database", f"{redact_url(config.database_url)} reachable, but "
                            f"{len(missing)} migration(s) not applied; fix: ingestd migrate"))
        else:
            results.append((True, "database", f"{redact_url(config.database_url)} reachable, schema up to date"))
    except NotPermittedError as exc:
        results.append((False, "database", f"{exc}; fix: {exc.fix}"))
    except TransientError as exc:
        if "does not exist" in str(exc):
            results.append(_missing_database(config))
        else:
            results.append((False, "database", f"{exc}; fix: start PostgreSQL or set [database] url / "
                            "INGESTD_DATABASE_URL"))
    try:
        connection = open_connection(config.amqp_url, config.heartbeat_seconds, "ingestd-check")
        try:
            Topology.for_config(config).declare(connection.channel())
            results.append((True, "broker", f"{redact_url(config.amqp_url)} reachable, topology declared"))
        except TopologyMismatch as exc:
            results.append((False, "broker", str(exc)))
        finally:
            if connection.is_open:
                connection.close()
    except NotPermittedError as exc:
        results.append((False, "broker", f"{exc}; fix: {exc.fix}"))
    except TransientError as exc:
        results.append((False, "broker", f"{exc}; fix: start RabbitMQ or set [broker] url / INGESTD_AMQP_URL"))
    landing = config.landing_dir
    if not landing.is_dir():
        results.append((False, "landing", f"{landing} does not exist; fix: mkdir -p {landing}"))
    elif not os.access(landing, os.W_OK | os.X_OK):
        results.append((False, "landing", f"{landing} is not writable by this user (archive and quarantine "
                        "moves need it); fix: chown or chmod the folder"))
    else:
        results.append((True, "landing", f"{landing} writable"))
    results += _validation_results(config)
    for ok, what, message in results:
        print(f"{'ok  ' if ok else 'FAIL'} {what:<9} {message}")
    return EXIT_OK if all(ok for ok, _, _ in results) else EXIT_FAILED


def _missing_database(config) -> tuple[bool, str, str]:
    """The server answers but the database is not there yet: fine if this
    user may create it (ingestd run and migrate do), else the fix."""
    import psycopg2
    import psycopg2.extensions

    from .logs import redact_url
    dsn = psycopg2.extensions.parse_dsn(config.database_url)
    name = dsn.get("dbname", "?")
    try:
        conn = psycopg2.connect(connect_timeout=config.connect_timeout_seconds, **dict(dsn, dbname="postgres"))
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user")
                row = cur.fetchone()
        finally:
            conn.close()
    except psycopg2.Error:
        row = None
    if row and row[0]:
        return (True, "database", f"{redact_url(config.database_url)}: the server answers; database {name!r} does "
                "not exist yet: ingestd run (or ingestd migrate) creates it with its tables")
    return (False, "database", f"{redact_url(config.database_url)}: database {name!r} does not exist and this user "
            f"may not create it; fix: createdb -O {dsn.get('user', '<user>')} {name} (as a superuser), or "
            "give the user CREATEDB")


def _validation_results(config) -> list[tuple[bool, str, str]]:
    """Per source with a schema: its draft, the format mode, and which path
    validates it (the compiled one, or jsonschema and why)."""
    from ingestd.consumers.validation import plan_for

    results = []
    for source in config.sources.values():
        if source.schema is not None:
            plan = plan_for(source.schema, source.format_keyword)
            results.append((True, "schema", f"{source.name}: {plan.describe()}"))
    return results
