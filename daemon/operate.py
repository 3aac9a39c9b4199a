"""Operator commands: ``ingestd runs``, ``ingestd status``, ``ingestd publish``
(the dead-letter commands are in dlq_commands.py).

Human output is a table that fits the terminal; ``--json`` prints JSON for
scripts. Errors go to stderr. Exit status: 0 done, 1 failed or needs
attention, 2 bad usage.
"""
from __future__ import annotations

import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from .commands import Command, print_json, progress_bar, say_error
from .errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from .logs import redact_url
from .table import cell, format_table, output_width, printable
from .timespec import parse_when


def cmd_runs(config, args) -> int:
    try:
        since = parse_when(args.since) if args.since else None
    except ValueError as exc:
        say_error(str(exc))
        return EXIT_USAGE
    run_id = None
    if args.run_id is not None:
        try:
            run_id = uuid.UUID(args.run_id)
        except ValueError:
            say_error(f"--id {printable(args.run_id)!s:.80}: not a run id (a UUID, as ingestd runs --json shows)")
            return EXIT_USAGE
    from .db import connect
    from .ledger import Ledger

    ledger = Ledger(connect(config.database_url, config.connect_timeout_seconds, "ingestd-cli"))
    try:
        rows = ledger.recent_runs(args.status, args.source, since, args.limit, run_id=run_id)
    finally:
        ledger.conn.close()
    if run_id is not None and not rows:
        say_error(f"no run {run_id} (with these filters)")
        return EXIT_FAILED
    if args.json:
        print_json({"runs": rows})
        return EXIT_OK
    if run_id is not None:
        from .reports import run_detail

        print("\n".join(run_detail(rows[0], output_width())))
        return EXIT_OK
    table = []
    for r in rows:
        duration = (r["finished_at"] - r["started_at"]).total_seconds() if r["finished_at"] else None
        counts = "-" if r["rows_total"] is None else "/".join(
            "-" if n is None else str(n) for n in (r["rows_total"], r["rows_valid"], r["rows_invalid"]))
        note = " ".join(x for x in (r["reason"], r["error_summary"]) if x) or cell(r["file_path"])
        table.append([r["started_at"], r["status"], r["source"], r["trigger"], counts,
                      "-" if duration is None else f"{duration:.2f}s", note])
    print(format_table(["STARTED", "STATUS", "SOURCE", "TRIGGER", "ROWS T/V/I", "TOOK", "REASON / ERROR / FILE"],
                       table, shrink=[2, 6], below=6))
    return EXIT_OK


def cmd_status(config, args) -> int:
    from .reports import gather_status

    status = gather_status(config)
    if args.json:
        print_json({"database": status.database, "broker": status.broker,
                    "database_url": redact_url(config.database_url),
                    "database_url_from": config.origin("database.url"),
                    "broker_url": redact_url(config.amqp_url), "broker_url_from": config.origin("broker.url"),
                    "queues": status.queues,
                    "sources": status.sources, "pollers": status.pollers,
                    "dead_letters_waiting": status.dead_letters_waiting, "quality": status.quality,
                    "problems": status.problems, "notes": status.notes,
                    "needs_attention": status.needs_attention,
                    "checked_at": datetime.now(UTC)})
    else:
        _print_status(config, status)
    return EXIT_FAILED if status.needs_attention else EXIT_OK


def _print_status(config, status) -> None:
    """``ingestd status`` for a person: servers, queues, sources, quality, pollers, then what needs attention."""
    import textwrap

    from .reports import window_cell

    # Which servers, and who chose them: an INGESTD_DATABASE_URL exported for another project is
    # a surprise worth seeing.
    width = output_width()
    for label, state, url, key in (("database", status.database, config.database_url, "database.url"),
                                   ("broker", status.broker, config.amqp_url, "broker.url")):
        line = printable(f"{label:<9} {state}  {redact_url(url)}  ({config.origin(key)})")
        print(line if len(line) <= width else textwrap.fill(line, width, subsequent_indent=" " * 10,
                                                             break_on_hyphens=False))
    if status.queues:
        print()
        print(format_table(["QUEUE", "MESSAGES", "CONSUMERS"],
                           [[q["queue"], q["messages"], q["consumers"]] for q in status.queues.values()]))
    if status.sources:
        print()
        print(format_table(
            ["SOURCE", "LAST SUCCESS", "LAST FAILURE", "ROWS TODAY", "DEAD WAITING"],
            [[s["source"] + ("" if s["configured"] else " (not configured)"), s["last_success"],
              s["last_failure"], s["rows_today"], s["dead_letters_waiting"]] for s in status.sources],
            shrink=[0]))
    if any(q["last_day"]["checked"] or q["undeclared_fields"] for q in status.quality.values()):
        print()
        print(format_table(
            ["SOURCE", "VALID, LAST HOUR", "VALID, LAST DAY", "UNDECLARED FIELDS"],
            [[name, window_cell(q["last_hour"]), window_cell(q["last_day"]),
              f"{q['undeclared_fields']}" + (f" ({q['undeclared_new_today']} new today)"
                                             if q["undeclared_new_today"] else "")]
             for name, q in status.quality.items()], shrink=[0]))
    if status.pollers:
        print()
        print(format_table(["API SOURCE", "NEXT POLL", "LAST POLL", "LAST RESULT"],
                           [[p["source"], p["next_poll_at"], p["last_polled_at"], p["last_status"]]
                            for p in status.pollers]))
    print()
    for note in status.notes:
        print(f"note: {note}")
    if status.problems:
        for problem in status.problems:
            print(f"attention: {problem}")
    else:
        print("all good")


def cmd_publish(config, args) -> int:
    from pathlib import PurePosixPath

    from .broker import Publisher, Topology
    from .errors import TransientError
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
        bar = progress_bar(files, unit="file", quiet=args.no_progress or not files)
        for path in bar:
            try:
                rel = PurePosixPath(path.parent.resolve().joinpath(path.name).relative_to(root).as_posix())
            except ValueError:
                bar.write(f"ingestd publish: {path}: not inside the landing zone {root}", file=sys.stderr)
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
                bar.write(f"ingestd publish: {path}: {exc}", file=sys.stderr)
                problems += 1
                continue
            published += 1
    finally:
        publisher.close()
    print(f"published {published} file(s)" + (f", {problems} problem(s)" if problems else ""))
    return EXIT_FAILED if problems else EXIT_OK


def _publish_arguments(parser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="files or folders inside the landing zone (folders are walked)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _runs_arguments(parser) -> None:
    parser.add_argument("--id", metavar="RUN_ID", dest="run_id", help="one run, in detail (its id: from runs "
                        "--json, dlq show, or a log line's run_id)")
    parser.add_argument("--status", choices=["running", "success", "failure", "skipped"],
                        help="only runs that ended so")
    parser.add_argument("--source", metavar="NAME", help="only runs of this source")
    parser.add_argument("--since", metavar="WHEN", help="started at or after (2h, 7d, 2026-11-23T08:00)")
    parser.add_argument("--limit", type=int, default=20, metavar="N", help="at most N (default 20)")
    parser.add_argument("--json", action="store_true", help="JSON for scripts")


def _json_argument(parser) -> None:
    parser.add_argument("--json", action="store_true", help="JSON for scripts")


PUBLISH = Command(
    "publish", help="enqueue existing files by hand (backfill)",
    description="Publish an event for each file (folders are walked) inside the landing "
                "zone, with trigger 'manual'. Files already loaded are recorded as skipped.",
    handler=cmd_publish, add_arguments=_publish_arguments)
RUNS = Command(
    "runs", help="run history and each run's data quality",
    description="Recent runs, newest first, with their records: total, valid, invalid. "
                "--id shows one run whole: its records' quality (the share missing each "
                "required field, the most frequent failures, fields the schema does not "
                "declare, declared fields no record held).",
    handler=cmd_runs, add_arguments=_runs_arguments)
STATUS = Command(
    "status", help="queues, sources, dead letters, health at a glance",
    description="One screen to read first. Exit 1 when something needs attention (database "
                "or broker unreachable, dead letters waiting), for monitoring checks.",
    handler=cmd_status, add_arguments=_json_argument)
COMMANDS = [PUBLISH, RUNS, STATUS]
