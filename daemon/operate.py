"""Operator commands: ``ingestd dlq …``, ``ingestd runs``, ``ingestd status``,
``ingestd publish``.

Human output is a table that fits 100 columns; ``--json`` prints JSON for
scripts. Errors go to stderr. Exit status: 0 done, 1 failed or needs
attention, 2 bad usage.
"""
from __future__ import annotations

import json
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import dlq
from .broker import Publisher, Topology, open_connection
from .db import connect
from .errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, TransientError
from .ledger import Ledger
from .logs import redact_url
from .reports import gather_status, run_detail, window_cell
from .table import cell, format_table, output_width, printable
from .timespec import parse_when


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def print_json(doc: Any) -> None:
    print(json.dumps(doc, default=_json_default, indent=2))


def _err(message: str) -> None:
    print(printable(f"ingestd: {message}"), file=sys.stderr)


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


def build_selector(args, waiting_only: bool) -> dlq.Selector:
    """Raises ValueError (bad usage) with the message to show."""
    since = parse_when(args.since) if getattr(args, "since", None) else None
    until = parse_when(args.until) if getattr(args, "until", None) else None
    return dlq.Selector(
        ids=getattr(args, "ids", None), source=args.source, reason=args.reason, since=since, until=until,
        include_replayed=not waiting_only and getattr(args, "include_replayed", False),
        include_discarded=not waiting_only and getattr(args, "include_discarded", False),
    )


def _ledger(config) -> Ledger:
    return Ledger(connect(config.database_url, config.connect_timeout_seconds, "ingestd-cli"))


def cmd_dlq_list(config, args) -> int:
    try:
        selector = build_selector(args, waiting_only=False)
    except ValueError as exc:
        _err(str(exc))
        return EXIT_USAGE
    ledger = _ledger(config)
    try:
        rows = ledger.dead_letters(selector, limit=args.limit)
        waiting = ledger.waiting_count()
    finally:
        ledger.conn.close()
    topology = Topology.for_config(config)
    depth: int | None = None
    try:
        connection = open_connection(config.amqp_url, config.heartbeat_seconds, topology.connection_name("dlq"))
        try:
            depth, _ = dlq.queue_depth(connection.channel(), topology.dead_queue)
        finally:
            if connection.is_open:
                connection.close()
    except Exception as exc:  # noqa: BLE001 - the table is still worth showing
        _err(f"cannot read the dead-letter queue: {exc}")
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
        _err(f"warning: {topology.dead_queue} holds {depth} message(s) but {waiting} dead letter(s) are waiting; "
             "a replay or discard removes settled messages, and the recorder (in `ingestd consume`/`run`) "
             "records messages the broker dead-lettered itself")
    return EXIT_OK


def _endpoint(dead: dlq.DeadLetter) -> str | None:
    event = dead.event if isinstance(dead.event, dict) else {}
    return event.get("endpoint") or event.get("path")


def cmd_dlq_show(config, args) -> int:
    ledger = _ledger(config)
    try:
        found = ledger.dead_letters(dlq.Selector(ids=[args.id], include_replayed=True, include_discarded=True))
        dead = found[0] if found else None
        if dead is None:
            _err(f"no dead letter with id {args.id}")
            return EXIT_FAILED
        chain = ledger.dead_letter_history(dead.event_id) if dead.event_id else []
        run = ledger.run(dead.run_id) if dead.run_id else None
        replay_run = ledger.replay_run(dead.event_id, dead.replayed_at) if dead.replayed_at and dead.event_id \
            else None
    finally:
        ledger.conn.close()
    location = _file_state(config, dead.file_path)
    if args.json:
        print_json({**dead.as_json(), "file_exists": location, "run": run,
                    "replay_run": replay_run,
                    "history": [d.as_json() for d in chain]})
        return EXIT_OK
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
    print(printable("\n".join(lines)))
    return EXIT_OK


def _file_state(config, file_path: str | None) -> bool | None:
    if not file_path:
        return None
    from .landing import resolve_in_landing
    try:
        path = resolve_in_landing(config.landing_dir, file_path)
    except Exception:  # noqa: BLE001
        return False
    return path.exists() or path.is_symlink()


def _selected(config, args, ledger: Ledger) -> list[dlq.DeadLetter] | None:
    """The waiting dead letters an operation applies to; None (after a message) on bad usage."""
    try:
        selector = build_selector(args, waiting_only=True)
    except ValueError as exc:
        _err(str(exc))
        return None
    if selector.is_empty and not args.all:
        _err("say which dead letters: --id ID, a filter (--source, --reason, --since, --until), or --all")
        return None
    return ledger.dead_letters(selector)


def _plan(config, args, ledger: Ledger, action: str) -> list[dlq.DeadLetter] | int:
    """The waiting dead letters ``action`` applies to, or the exit status when
    there is nothing to do (bad usage, --dry-run, none selected)."""
    rows = _selected(config, args, ledger)
    if rows is None:
        return EXIT_USAGE
    if args.dry_run or not rows:
        done = {"replay": "replayed", "discard": "discarded"}[action]
        _print_selection(rows, f"would be {done}" if args.dry_run else f"to {action}", args.json)
        return EXIT_OK
    return rows


def cmd_dlq_replay(config, args) -> int:
    from tqdm import tqdm

    ledger = _ledger(config)
    try:
        rows = _plan(config, args, ledger, "replay")
        if isinstance(rows, int):
            return rows
        topology = Topology.for_config(config)
        publisher = Publisher(config.amqp_url, topology, config.heartbeat_seconds, "dlq-replay")
        # disable=None: tqdm draws only on a terminal.
        bar = tqdm(total=len(rows), unit="dead letter", desc="replaying", file=sys.stderr,
                   disable=True if args.json or len(rows) < 2 else None)
        try:
            report = dlq.replay(ledger, publisher, config.landing_dir, rows, config.replay_limit,
                                progress=lambda d: bar.update(1))
        finally:
            bar.close()
            publisher.close()
        counts: dict[str, int] = {}
        if report.published and args.wait > 0:
            ids = [str(d.event_id) for d in report.published]
            wait_bar = tqdm(total=len(ids), unit="event", desc="waiting for consumers", file=sys.stderr,
                            disable=True if args.json or len(ids) < 2 else None)
            counts = dlq.wait_for_outcomes(ledger, ids, report.started_at, args.wait,
                                           tick=lambda n: wait_bar.update(n - wait_bar.n))
            wait_bar.close()
    finally:
        ledger.conn.close()
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
            _err(f"dead letter #{dead.id} not replayed: {why}")
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


def _print_selection(rows, verb: str, as_json: bool) -> None:
    if as_json:
        print_json({"dead_letters": [r.as_json() for r in rows]})
        return
    if rows:
        print(format_table(["ID", "SOURCE", "REASON", "REPLAYS", "FILE", "ERROR"],
                           [[r.id, r.source, r.reason, r.replay_count, r.file_path, r.error] for r in rows],
                           shrink=[1, 4, 5]))
    print(f"{len(rows)} dead letter(s) {verb}")


def cmd_dlq_discard(config, args) -> int:
    ledger = _ledger(config)
    try:
        rows = _plan(config, args, ledger, "discard")
        if isinstance(rows, int):
            return rows
        topology = Topology.for_config(config)
        discarded, problems, removed = dlq.discard(ledger, config.amqp_url, topology, config.landing_dir, rows,
                                                   args.note, args.delete_file)
    finally:
        ledger.conn.close()
    if args.json:
        print_json({"discarded": [d.id for d in discarded], "problems": problems, "removed_from_queue": removed})
    else:
        for problem in problems:
            _err(problem)
        print(f"discarded {len(discarded)} dead letter(s)"
              + (", quarantined files deleted" if args.delete_file else ", quarantined files kept"))
    return EXIT_FAILED if problems else EXIT_OK


def cmd_runs(config, args) -> int:
    try:
        since = parse_when(args.since) if args.since else None
    except ValueError as exc:
        _err(str(exc))
        return EXIT_USAGE
    run_id = None
    if args.run_id is not None:
        try:
            run_id = uuid.UUID(args.run_id)
        except ValueError:
            _err(f"--id {printable(args.run_id)!s:.80}: not a run id (a UUID, as ingestd runs --json shows)")
            return EXIT_USAGE
    ledger = _ledger(config)
    try:
        rows = ledger.recent_runs(args.status, args.source, since, args.limit, run_id=run_id)
    finally:
        ledger.conn.close()
    if run_id is not None and not rows:
        _err(f"no run {run_id} (with these filters)")
        return EXIT_FAILED
    if args.json:
        print_json({"runs": rows})
        return EXIT_OK
    if run_id is not None:
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
        # Which servers, and who chose them: an INGESTD_DATABASE_URL exported for another project is
        # a surprise worth seeing.
        import textwrap
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
    return EXIT_FAILED if status.needs_attention else EXIT_OK


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
