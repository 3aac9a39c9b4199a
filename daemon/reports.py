"""Run history and the status screen: what an operator reads first."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .broker import Topology, open_connection
from .config import Config
from .db import connect
from .errors import TransientError
from .logs import redact_url

RUN_COLUMNS = ("run_id", "event_id", "source", "trigger", "status", "started_at", "finished_at", "rows_total",
               "rows_valid", "rows_invalid", "error_summary", "reason", "worker", "file_path")


def recent_runs(conn, status: str | None = None, source: str | None = None, since: datetime | None = None,
                limit: int = 20) -> list[dict[str, Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if status:
        clauses.append("status = %s")
        params.append(status)
    if source:
        clauses.append("source = %s")
        params.append(source)
    if since:
        clauses.append("started_at >= %s")
        params.append(since)
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    with conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM ops.pipeline_runs{where}"
                    " ORDER BY started_at DESC LIMIT %s", params + [limit])
        return [dict(zip(RUN_COLUMNS, row, strict=True)) for row in cur.fetchall()]


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
    topology = Topology(config.prefix, config.delivery_limit)
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
    try:
        conn = connect(config.database_url, config.connect_timeout_seconds, "ingestd-status")
    except TransientError as exc:
        status.database = "unreachable"
        status.problems.append(str(exc))
        return status
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('ops.pipeline_runs') IS NOT NULL")
            if not cur.fetchone()[0]:
                status.database = "not migrated"
                status.problems.append(f"database {redact_url(config.database_url)} has no ingestd tables: "
                                       "run ingestd migrate")
                return status
            status.database = "ok"
            cur.execute("""
                WITH names AS (
                    SELECT unnest(%s::text[]) AS source
                    UNION SELECT DISTINCT source FROM ops.pipeline_runs WHERE started_at > now() - interval '7 days'
                    UNION SELECT DISTINCT source FROM ops.dead_letters
                        WHERE source IS NOT NULL AND replayed_at IS NULL AND discarded_at IS NULL)
                SELECT n.source,
                    (SELECT max(finished_at) FROM ops.pipeline_runs r WHERE r.source = n.source AND status = 'success'),
                    (SELECT max(finished_at) FROM ops.pipeline_runs r WHERE r.source = n.source AND status = 'failure'),
                    (SELECT coalesce(sum(rows_total), 0) FROM ops.pipeline_runs r WHERE r.source = n.source
                        AND status = 'success' AND finished_at >= date_trunc('day', now())),
                    (SELECT count(*) FROM ops.dead_letters d WHERE d.source = n.source
                        AND replayed_at IS NULL AND discarded_at IS NULL)
                FROM names n ORDER BY n.source""", (sorted(config.sources),))
            for name, last_ok, last_fail, rows_today, waiting in cur.fetchall():
                status.sources.append({"source": name, "configured": name in config.sources,
                                       "last_success": last_ok, "last_failure": last_fail,
                                       "rows_today": int(rows_today), "dead_letters_waiting": waiting})
            cur.execute("SELECT count(*) FROM ops.dead_letters WHERE replayed_at IS NULL AND discarded_at IS NULL")
            status.dead_letters_waiting = cur.fetchone()[0]
            cur.execute("SELECT source, next_poll_at, last_polled_at, last_status FROM ops.poll_state ORDER BY 1")
            status.pollers = [{"source": s, "next_poll_at": n, "last_polled_at": p, "last_status": st}
                              for s, n, p, st in cur.fetchall()]
    finally:
        conn.close()
    if status.dead_letters_waiting:
        status.problems.append(f"{status.dead_letters_waiting} dead letter(s) waiting: ingestd dlq list")
    events = status.queues.get("events", {})
    if events.get("consumers") == 0 and events.get("messages"):
        status.problems.append(f"no consumer on {events['queue']} and {events['messages']} event(s) waiting: "
                               "start ingestd consume (or ingestd run)")
    now = datetime.now(UTC)
    for poller in status.pollers:
        source = config.source(poller["source"])
        due = poller["next_poll_at"]
        if source is None or source.kind != "api" or due is None:
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
    return status
