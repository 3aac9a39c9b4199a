"""Run history and the status screen: what an operator reads first."""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .broker import Topology, open_connection
from .config import ApiSource, Config
from .db import connect
from .errors import TransientError
from .ledger import Ledger
from .logs import redact_url
from .table import cell


@dataclass
class Status:
    database: str = "unknown"
    broker: str = "unknown"
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    pollers: list[dict[str, Any]] = field(default_factory=list)
    dead_letters_waiting: int = 0
    # Per source: records checked and invalid over the last hour and day, undeclared fields.
    quality: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    # Worth a look, not a failure: schema drift.
    notes: list[str] = field(default_factory=list)

    @property
    def needs_attention(self) -> bool:
        return bool(self.problems)


def gather_status(config: Config) -> Status:
    """Everything ``ingestd status`` shows; never raises for an unreachable service."""
    status = Status()
    _read_queues(config, status)
    _read_ledger(config, status)
    if status.database == "ok":
        _judge(config, status)
    return status


def _read_queues(config: Config, status: Status) -> None:
    topology = Topology.for_config(config)
    try:
        connection = open_connection(config.amqp_url, config.heartbeat_seconds, topology.connection_name("status"))
        try:
            channel = connection.channel()
            for label, queue in (("events", topology.events_queue), ("dead", topology.dead_queue)):
                try:
                    result = channel.queue_declare(queue, passive=True)
                    status.queues[label] = {"queue": queue, "messages": result.method.message_count,
                                            "consumers": result.method.consumer_count}
                except Exception:  # noqa: BLE001 - a missing queue closes the channel
                    status.queues[label] = {"queue": queue, "messages": None, "consumers": None}
                    channel = connection.channel()
            status.broker = "ok"
        finally:
            if connection.is_open:
                connection.close()
    except TransientError as exc:
        status.broker = "unreachable"
        status.problems.append(str(exc))


def _read_ledger(config: Config, status: Status) -> None:
    try:
        conn = connect(config.database_url, config.connect_timeout_seconds, "ingestd-status")
    except TransientError as exc:
        status.database = "unreachable"
        status.problems.append(str(exc))
        return
    try:
        ledger = Ledger(conn)
        if not ledger.is_migrated():
            status.database = "not migrated"
            status.problems.append(f"database {redact_url(config.database_url)} has no ingestd tables: "
                                   "run ingestd migrate")
            return
        status.database = "ok"
        status.sources = ledger.source_summaries(sorted(config.sources))
        status.dead_letters_waiting = ledger.waiting_count()
        status.pollers = ledger.poll_states()
        status.quality = ledger.source_quality([s["source"] for s in status.sources])
    finally:
        conn.close()


def _judge(config: Config, status: Status) -> None:
    """The problems an operator should hear of."""
    if status.dead_letters_waiting:
        status.problems.append(f"{status.dead_letters_waiting} dead letter(s) waiting: ingestd dlq list")
    events = status.queues.get("events", {})
    if status.broker == "ok" and events.get("consumers") is None:
        status.problems.append(f"queue {events.get('queue')} does not exist: nothing has started yet; "
                               "start ingestd run (or ingestd consume)")
    elif events.get("consumers") == 0:
        waiting = f" and {events['messages']} event(s) waiting" if events.get("messages") else ""
        status.problems.append(f"no consumer on {events['queue']}{waiting}: nothing loads what arrives; "
                               "start ingestd consume (or ingestd run)")
    now = datetime.now(UTC)
    for poller in status.pollers:
        source = config.source(poller["source"])
        due = poller["next_poll_at"]
        if not isinstance(source, ApiSource) or due is None:
            continue
        grace = timedelta(seconds=max(60.0, source.interval_seconds / 2))
        if now - due > grace:
            status.problems.append(f"API source {poller['source']} is overdue: its poll was due at "
                                   f"{due.astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')}: is ingestd poll "
                                   "(or ingestd run) running?")
    _judge_quality(config, status)
    dead = status.queues.get("dead", {}).get("messages")
    if dead is not None and dead != status.dead_letters_waiting:
        status.problems.append(f"the dead-letter queue holds {dead} message(s) but {status.dead_letters_waiting} "
                               "dead letter(s) wait in ops.dead_letters")


def _judge_quality(config: Config, status: Status) -> None:
    """A source whose invalid records over the last hour exceed its objective
    (the IngestdDataQuality alert's figure) needs attention; fields new today
    that its schema does not declare are worth a note."""
    for name, figures in status.quality.items():
        hour = figures["last_hour"]
        source = config.sources.get(name)
        objective = (source.objectives.get("invalid_record_ratio") if source is not None else None)
        if objective is None:
            objective = config.invalid_record_ratio
        if hour["checked"] and hour["invalid"] / hour["checked"] > objective:
            status.problems.append(
                f"source {name}: {hour['invalid']} of the {hour['checked']} records checked in the last hour were "
                f"invalid ({percent(hour['invalid'], hour['checked'])}; objective at most "
                f"{objective * 100:g} %): ingestd runs --source {name}")
        if figures["undeclared_new_today"]:
            shown = figures["undeclared_new_today_names"]
            more = figures["undeclared_new_today"] - len(shown)
            names = ", ".join(cell(n) for n in shown) + (f" and {more} more" if more > 0 else "")
            status.notes.append(f"source {name}: {figures['undeclared_new_today']} field(s) its schema does not "
                                f"declare, first seen today: {names}")


def percent(part: int, whole: int) -> str:
    """``part / whole`` as a percentage rounded down, so that 1 invalid record
    in 100,000 never reads as 100 % valid, nor 0 as more than 0."""
    tenths = math.floor(part * 1000 / whole) if whole else 0
    return f"{tenths / 10:.1f} %"


def valid_share(valid: int | None, invalid: int | None) -> str:
    """The share of a run's (or a window's) checked records that were valid; ``-`` when none were."""
    checked = (valid or 0) + (invalid or 0)
    return percent(valid or 0, checked) if checked else "-"


def window_cell(window: dict[str, int]) -> str:
    checked = window["checked"]
    return "-" if not checked else f"{valid_share(checked - window['invalid'], window['invalid'])} of {checked}"


def run_detail(run: dict[str, Any], width: int) -> list[str]:
    """One run whole, for ``ingestd runs --id``: what happened and what its records said."""
    def line(label: str, value: Any) -> list[str]:
        return textwrap.wrap(f"{label + ':':<20}{cell(value)}", max(width, 40),
                             subsequent_indent=" " * 20, break_on_hyphens=False) or [label + ":"]

    lines: list[str] = []
    for label, key in (("run", "run_id"), ("event", "event_id"), ("source", "source"), ("trigger", "trigger"),
                       ("status", "status"), ("started", "started_at"), ("finished", "finished_at"),
                       ("worker", "worker"), ("file", "file_path"), ("reason", "reason"),
                       ("error" if run.get("status") != "success" else "remarks", "error_summary")):
        if run.get(key) is not None:
            lines += line(label, run[key])
    if run.get("rows_total") is not None:
        valid, invalid = run["rows_valid"], run["rows_invalid"]
        lines += line("records", f"{run['rows_total']}: {valid or 0} valid, {invalid or 0} invalid "
                                 f"({valid_share(valid, invalid)} valid)")
    quality = run.get("quality")
    if not isinstance(quality, dict):
        return lines  # a run from before quality was kept (NULL), or nothing readable
    # Read as it may be: a row written by another version or by hand holds anything, of any size.
    total = run.get("rows_total") or 0
    missing = quality.get("missing_required")
    if isinstance(missing, dict):
        shares = [(name, share) for name, share in missing.items()
                  if isinstance(share, (int, float)) and not isinstance(share, bool) and math.isfinite(share)]
        if shares:
            lines += line("missing required", _some([f"{_name(name)} {share * 100:.1f} %"
                                                     for name, share in shares[:SHOWN + 1]], len(shares))
                          + _and_more(quality, "missing_required_more", len(shares)))
    failures = quality.get("top_failures")
    failures = [f for f in failures[:SHOWN] if isinstance(f, dict)] if isinstance(failures, list) else []
    if failures:
        lines.append("top failures:")
        for failure in failures:
            count = failure.get("count")
            lines += line(f"  {count if isinstance(count, int) else '?'}x",
                          f"{_name(failure.get('keyword'))} at {_name(failure.get('pointer'))}")
    undeclared = quality.get("undeclared_fields", ())
    if isinstance(undeclared, list):
        lines += line("undeclared fields", (_some([_name(n) for n in undeclared[:SHOWN + 1]], len(undeclared))
                                            or "none") + _and_more(quality, "undeclared_more", len(undeclared)))
    never_seen = quality.get("never_seen", ())
    if isinstance(never_seen, list) and total:
        lines += line("never seen", (_some([_name(n) for n in never_seen[:SHOWN + 1]], len(never_seen)) or "none")
                      + _and_more(quality, "never_seen_more", len(never_seen)))
    return lines


# At most so many names of one list, each cut at so many characters (as consumers/quality.py keeps them).
SHOWN = 100
NAME_CHARS = 200


def _name(value: Any) -> str:
    text = value if isinstance(value, str) else "?"
    return text if len(text) <= NAME_CHARS else text[:NAME_CHARS - 1] + "…"


def _and_more(quality: dict[str, Any], flag: str, listed: int) -> str:
    """`` and more`` when the run had more names than it kept (and all it kept are shown)."""
    return " and more" if quality.get(flag) is True and listed <= SHOWN else ""


def _some(shown: list[str], total: int) -> str:
    """The first ``SHOWN`` of ``total`` names, and how many more there are."""
    more = total - SHOWN
    return ", ".join(shown[:SHOWN]) + (f" and {more} more" if more > 0 else "")
