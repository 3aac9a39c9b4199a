"""``ingestd dlq list``, ``dlq show``, ``dlq replay`` and ``dlq discard``:
the operator's side of the dead letters (daemon/dlq.py does the work).

Human output is a table that fits the terminal; ``--json`` prints JSON for
scripts. Errors go to stderr. Exit status: 0 done, 1 failed or needs
attention, 2 bad usage.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .commands import Command, print_json, progress_bar, say_error
from .errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from .table import cell, format_table, output_width, printable
from .timespec import parse_when

if TYPE_CHECKING:
    from .dlq import ReplayReport
    from .ledger import DeadLetter, Ledger, Selector


def add_selector_arguments(parser, with_ids: bool = True, with_all: bool = True) -> None:
    if with_ids:
        parser.add_argument("--id", dest="ids", type=int, action="append", metavar="ID",
                            help="a dead letter's id (repeat for several)")
    parser.add_argument("--source", help="only this source")
    parser.add_argument("--reason", help="only this reason code (e.g. unknown_source, parse_error)")
    parser.add_argument("--since", metavar="WHEN", help="dead-lettered at or after (2h, 7d, 2026-11-23T08:00)")
    parser.add_argument("--until", metavar="WHEN", help="dead-lettered before")
    if with_all:
        parser.add_argument("--all", action="store_true", help="every waiting dead letter")


def build_selector(args, waiting_only: bool) -> Selector:
    """Raises ValueError (bad usage) with the message to show."""
    from .ledger import Selector

    since = parse_when(args.since) if getattr(args, "since", None) else None
    until = parse_when(args.until) if getattr(args, "until", None) else None
    return Selector(
        ids=getattr(args, "ids", None), source=args.source, reason=args.reason, since=since, until=until,
        include_replayed=not waiting_only and getattr(args, "include_replayed", False),
        include_discarded=not waiting_only and getattr(args, "include_discarded", False),
    )


@contextmanager
def _ledger(config) -> Iterator[Ledger]:
    """The ledger on a connection of its own, closed when done."""
    from .db import connect
    from .ledger import Ledger

    ledger = Ledger(connect(config.database_url, config.connect_timeout_seconds, "ingestd-cli"))
    try:
        yield ledger
    finally:
        ledger.conn.close()



def _list_arguments(parser) -> None:
    add_selector_arguments(parser, with_all=False)
    parser.add_argument("--include-replayed", action="store_true", help="also those already replayed")
    parser.add_argument("--include-discarded", action="store_true", help="also those discarded")
    parser.add_argument("--limit", type=int, metavar="N", help="at most N")
    parser.add_argument("--json", action="store_true", help="JSON for scripts")


def cmd_dlq_list(config, args) -> int:
    from .broker import Topology

    try:
        selector = build_selector(args, waiting_only=False)
    except ValueError as exc:
        say_error(str(exc))
        return EXIT_USAGE
    with _ledger(config) as ledger:
        rows = ledger.dead_letters(selector, limit=args.limit)
        waiting = ledger.waiting_count()
    topology = Topology.for_config(config)
    depth = _queue_depth(config, topology)
    if args.json:
        print_json({"dead_letters": [r.as_json() for r in rows], "waiting": waiting, "queue_messages": depth})
    else:
        print(format_table(
            ["ID", "DEAD-LETTERED", "SOURCE", "REASON", "REPLAYS", "STATE", "FILE", "ERROR"],
            [[r.id, r.dead_lettered_at, r.source, r.reason, r.replay_count, r.state,
              r.file_path or _endpoint(r), r.error] for r in rows], shrink=[2, 6, 7], below=7))
        print(f"\n{len(rows)} shown; {waiting} waiting in ops.dead_letters; "
              f"{'?' if depth is None else depth} message(s) in {topology.dead_queue}")
    if depth is not None and depth != waiting:
        say_error(f"warning: {topology.dead_queue} holds {depth} message(s) but {waiting} dead letter(s) are "
                  "waiting; a replay or discard removes settled messages, and the recorder (in `ingestd "
                  "consume`/`run`) records messages the broker dead-lettered itself")
    return EXIT_OK


def _queue_depth(config, topology) -> int | None:
    """Messages in the dead-letter queue; None (said) when it cannot be read."""
    from . import dlq
    from .broker import open_connection

    try:
        connection = open_connection(config.amqp_url, config.heartbeat_seconds, topology.connection_name("dlq"))
        try:
            return dlq.queue_depth(connection.channel(), topology.dead_queue)[0]
        finally:
            if connection.is_open:
                connection.close()
    except Exception as exc:  # noqa: BLE001 - the table is still worth showing
        say_error(f"cannot read the dead-letter queue: {exc}")
        return None


def _endpoint(dead: DeadLetter) -> str | None:
    event = dead.event if isinstance(dead.event, dict) else {}
    return event.get("endpoint") or event.get("path")



def _show_arguments(parser) -> None:
    parser.add_argument("id", type=int, metavar="ID", help="the dead letter's id (first column of dlq list)")
    parser.add_argument("--json", action="store_true", help="JSON for scripts")


def cmd_dlq_show(config, args) -> int:
    from .ledger import Selector

    with _ledger(config) as ledger:
        found = ledger.dead_letters(Selector(ids=[args.id], include_replayed=True, include_discarded=True))
        dead = found[0] if found else None
        if dead is None:
            say_error(f"no dead letter with id {args.id}")
            return EXIT_FAILED
        chain = ledger.dead_letter_history(dead.event_id) if dead.event_id else []
        run = ledger.run(dead.run_id) if dead.run_id else None
        replay_run = ledger.replay_run(dead.event_id, dead.replayed_at) if dead.replayed_at and dead.event_id \
            else None
    location = _file_state(config, dead.file_path)
    if args.json:
        print_json({**dead.as_json(), "file_exists": location, "run": run,
                    "replay_run": replay_run,
                    "history": [d.as_json() for d in chain]})
        return EXIT_OK
    print(printable("\n".join(_show_lines(dead, location, run, replay_run, chain))))
    return EXIT_OK


def _show_lines(dead: DeadLetter, location: bool | None, run, replay_run, chain: list[DeadLetter]) -> list[str]:
    lines = [
        f"dead letter #{dead.id}  ({dead.state})",
        f"  reason        {dead.reason}",
        f"  message       {cell(dead.error)}",
        f"  source        {cell(dead.source)}",
        f"  event id      {cell(dead.event_id)}",
        f"  dead-lettered {cell(dead.dead_lettered_at)}",
        f"  replay count  {dead.replay_count}" + (f"   replayed {cell(dead.replayed_at)}" if dead.replayed_at else ""),
    ]
    if dead.discarded_at:
        lines.append(f"  discarded     {cell(dead.discarded_at)}  note: {cell(dead.note)}")
    lines.append(f"  file          {cell(dead.file_path)}"
                 + ("" if dead.file_path is None else ("  (present)" if location else "  (missing)")))
    if run:
        lines.append(f"  failed run    {dead.run_id}  {run['status']} at {cell(run['finished_at'])}"
                     f" on {cell(run['worker'])}")
    if replay_run:
        outcome = replay_run
        lines.append(f"  replay run    {outcome['run_id']}  {outcome['status']} at {cell(outcome['finished_at'])}"
                     + (f"  ({outcome['error_summary']})" if outcome["error_summary"] else ""))
    lines.append("  detail")
    lines += ["    " + line for line in json.dumps(dead.detail, indent=2, default=str).splitlines()]
    lines.append("  event")
    lines += ["    " + line for line in json.dumps(dead.event, indent=2, default=str).splitlines()]
    if len(chain) > 1:
        lines.append("  history of this event")
        lines += ["    " + line for line in format_table(
            ["ID", "DEAD-LETTERED", "REPLAYS", "STATE", "REASON", "ERROR"],
            [[d.id, d.dead_lettered_at, d.replay_count, d.state, d.reason, d.error] for d in chain],
            width=output_width() - 4).splitlines()]
    return lines


def _file_state(config, file_path: str | None) -> bool | None:
    if not file_path:
        return None
    from .landing import resolve_in_landing
    try:
        path = resolve_in_landing(config.landing_dir, file_path)
    except Exception:  # noqa: BLE001
        return False
    return path.exists() or path.is_symlink()



def _on_selection(config, args, action: str, act: Callable[[Ledger, list[DeadLetter]], int]) -> int:
    """What replay and discard share: the waiting dead letters selected
    (``--id``, filters or ``--all``), listed instead of acted on with
    ``--dry-run`` or when there are none; else ``act(ledger, rows)``, the
    exit status."""
    with _ledger(config) as ledger:
        try:
            selector = build_selector(args, waiting_only=True)
        except ValueError as exc:
            say_error(str(exc))
            return EXIT_USAGE
        if selector.is_empty and not args.all:
            say_error("say which dead letters: --id ID, a filter (--source, --reason, --since, --until), or --all")
            return EXIT_USAGE
        rows = ledger.dead_letters(selector)
        if args.dry_run or not rows:
            done = {"replay": "replayed", "discard": "discarded"}[action]
            _print_selection(rows, f"would be {done}" if args.dry_run else f"to {action}", args.json)
            return EXIT_OK
        return act(ledger, rows)


def _print_selection(rows: list[DeadLetter], verb: str, as_json: bool) -> None:
    if as_json:
        print_json({"dead_letters": [r.as_json() for r in rows]})
        return
    if rows:
        print(format_table(["ID", "SOURCE", "REASON", "REPLAYS", "FILE", "ERROR"],
                           [[r.id, r.source, r.reason, r.replay_count, r.file_path, r.error] for r in rows],
                           shrink=[1, 4, 5]))
    print(f"{len(rows)} dead letter(s) {verb}")


def _replay_arguments(parser) -> None:
    add_selector_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="list what would be replayed")
    parser.add_argument("--wait", type=float, default=60, metavar="SECONDS",
                        help="how long to wait for the outcome (default 60; 0: do not wait)")
    parser.add_argument("--json", action="store_true", help="JSON summary for scripts")


def cmd_dlq_replay(config, args) -> int:
    return _on_selection(config, args, "replay", lambda ledger, rows: _replay(config, args, ledger, rows))


def _replay(config, args, ledger: Ledger, rows: list[DeadLetter]) -> int:
    from . import dlq
    from .broker import Publisher, Topology

    topology = Topology.for_config(config)
    publisher = Publisher(config.amqp_url, topology, config.heartbeat_seconds, "dlq-replay")
    bar = progress_bar(total=len(rows), unit="dead letter", desc="replaying", quiet=args.json or len(rows) < 2)
    try:
        report = dlq.replay(ledger, publisher, config.landing_dir, rows, config.replay_limit,
                            progress=lambda d: bar.update(1))
    finally:
        bar.close()
        publisher.close()
    counts: dict[str, int] = {}
    if report.published and args.wait > 0:
        ids = [str(d.event_id) for d in report.published]
        wait_bar = progress_bar(total=len(ids), unit="event", desc="waiting for consumers",
                                quiet=args.json or len(ids) < 2)
        counts = dlq.wait_for_outcomes(ledger, ids, report.started_at, args.wait,
                                       tick=lambda n: wait_bar.update(n - wait_bar.n))
        wait_bar.close()
    return _say_replayed(args, rows, report, counts)


def _say_replayed(args, rows: list[DeadLetter], report: ReplayReport, counts: dict[str, int]) -> int:
    summary = {
        "selected": len(rows), "replayed": len(report.published), "refused": len(report.refused),
        "loaded": counts.get("success", 0), "skipped": counts.get("skipped", 0),
        "failed_again": counts.get("failure", 0),
        "pending": len(report.published) - sum(counts.values()) if args.wait > 0 else None,
        "removed_from_queue": report.removed_from_queue,
        "refusals": [{"id": d.id, "why": why} for d, why in report.refused],
    }
    if args.json:
        print_json(summary)
    else:
        for dead, why in report.refused:
            say_error(f"dead letter #{dead.id} not replayed: {why}")
        line = f"replayed {summary['replayed']} of {summary['selected']}"
        if args.wait > 0:
            line += (f": {summary['loaded']} loaded, {summary['skipped']} skipped (already loaded), "
                     f"{summary['failed_again']} failed again")
            if summary["pending"]:
                line += f", {summary['pending']} still queued after {args.wait:g} s (is a consumer running?)"
        if summary["refused"]:
            line += f"; {summary['refused']} refused"
        print(line)
    failed = summary["refused"] or summary["failed_again"] or summary["pending"]
    return EXIT_FAILED if failed else EXIT_OK


def _discard_arguments(parser) -> None:
    add_selector_arguments(parser)
    parser.add_argument("--note", help="why (kept in ops.dead_letters.note)")
    parser.add_argument("--delete-file", action="store_true", help="delete the quarantined file too")
    parser.add_argument("--dry-run", action="store_true", help="list what would be discarded")
    parser.add_argument("--json", action="store_true", help="JSON summary for scripts")


def cmd_dlq_discard(config, args) -> int:
    return _on_selection(config, args, "discard", lambda ledger, rows: _discard(config, args, ledger, rows))


def _discard(config, args, ledger: Ledger, rows: list[DeadLetter]) -> int:
    from . import dlq
    from .broker import Topology

    discarded, problems, removed = dlq.discard(ledger, config.amqp_url, Topology.for_config(config),
                                               config.landing_dir, rows, args.note, args.delete_file)
    if args.json:
        print_json({"discarded": [d.id for d in discarded], "problems": problems, "removed_from_queue": removed})
    else:
        for problem in problems:
            say_error(problem)
        print(f"discarded {len(discarded)} dead letter(s)"
              + (", quarantined files deleted" if args.delete_file else ", quarantined files kept"))
    return EXIT_FAILED if problems else EXIT_OK


COMMANDS = [
    Command("dlq", help="inspect, replay and discard dead letters",
            description="Dead letters: what failed, why, and what to do about it."),
    Command("dlq list", help="dead letters, newest last",
            description="List dead letters from ops.dead_letters (waiting ones unless told), and "
                        "how many messages the dead-letter queue holds.",
            handler=cmd_dlq_list, add_arguments=_list_arguments),
    Command("dlq show", help="one dead letter, whole",
            description="The whole envelope: reason, message, detail, event, file, run, replays.",
            handler=cmd_dlq_show, add_arguments=_show_arguments),
    Command("dlq replay", help="publish dead-lettered events again, after a fix",
            description="Re-publish the selected waiting dead letters (trigger 'replay'), take their "
                        "messages off the dead-letter queue, and wait for the consumers' verdict. "
                        "Files are loaded from quarantine. Something already loaded meanwhile is "
                        "recorded as skipped. Exit 1 if anything was refused or failed again.",
            handler=cmd_dlq_replay, add_arguments=_replay_arguments),
    Command("dlq discard", help="give up on dead letters, keeping the record",
            description="Mark the selected waiting dead letters discarded (with a note), take their "
                        "messages off the dead-letter queue; quarantined files are kept unless "
                        "--delete-file.",
            handler=cmd_dlq_discard, add_arguments=_discard_arguments),
]
