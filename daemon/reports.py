"""Run history and the status screen: what an operator reads first."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .broker import Topology, open_connection
from .config import ApiSource, Config
from .db import connect
from .errors import TransientError
from .ledger import Ledger
from .logs import redact_url


@dataclass
class Status:
    database: str = "unknown"
    broker: str = "unknown"
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    pollers: list[dict[str, Any]] = field(default_factory=list)
    dead_letters_waiting: int = 0
    problems: list[str] = field(default_factory=list)

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
    dead = status.queues.get("dead", {}).get("messages")
    if dead is not None and dead != status.dead_letters_waiting:
        status.problems.append(f"the dead-letter queue holds {dead} message(s) but {status.dead_letters_waiting} "
                               "dead letter(s) wait in ops.dead_letters")
