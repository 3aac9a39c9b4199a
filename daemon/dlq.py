"""Dead-letter operations: list, show, replay and discard, selectively.

``ops.dead_letters`` is the operator's view; ``ingest.dead`` holds the
messages. A replay publishes the event again (``trigger = replay``, replay
count + 1) and takes its old message off the dead queue; the file is loaded
from quarantine, where it waits. A discard keeps the record and drops the
message. Either way the table and the queue stay in agreement.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from .broker import Topology, open_connection
from .events import FileEvent, is_uuid, routing_key
from .landing import QUARANTINE_DIR, from_display, resolve_in_landing
from .ledger import DeadLetter, Ledger, Selector
from .publishing import Publisher

# Bounds one scan of ingest.dead (messages held unacked while it runs).
MAX_QUEUE_SCAN = 100_000
__all__ = ["DeadLetter", "Selector", "discard", "queue_depth", "remove_settled_messages", "replay",
           "replay_message", "wait_for_outcomes"]


def queue_depth(channel, queue: str) -> tuple[int, int]:
    """(messages, consumers) of a queue, without creating it."""
    result = channel.queue_declare(queue, passive=True)
    return result.method.message_count, result.method.consumer_count


class NotReplayable(Exception):
    """This dead letter cannot be replayed as it is (the message says why)."""


def replay_message(dead: DeadLetter, landing_dir: Path) -> tuple[str, bytes, str]:
    """(routing key, body, message id) of the replay of ``dead``."""
    doc = dead.event
    if not isinstance(doc, dict) or set(doc) == {"raw"}:
        raise NotReplayable("the message was not a JSON event; nothing to replay (discard it)")
    if doc.get("kind") == "payload" and dead.reason != "bad_event":
        # The stored answer is sent again: no new call to the API.
        if doc.get("body") is None:
            stored = doc.get("body_path")
            try:
                present = isinstance(stored, str) and resolve_in_landing(landing_dir, stored).exists()
            except Exception:  # noqa: BLE001
                present = False
            if not present:
                raise NotReplayable(f"the stored payload is no longer at {stored}")
        replayed = dict(doc, trigger="replay", replay_count=dead.replay_count + 1,
                        created_at=datetime.now(UTC).isoformat())
        return routing_key("payload", str(doc.get("source"))), json.dumps(replayed).encode(), str(dead.event_id)
    if dead.reason == "bad_event" or doc.get("kind") != "file":
        # Not a valid event when it failed: sent again as it was, for a
        # consumer that understands it now (routed by what the body claims
        # only where that names a kind and a source).
        kind = "payload" if doc.get("kind") == "payload" else "file"
        return routing_key(kind, str(doc.get("source", "_unknown"))[:255]), \
            json.dumps(doc).encode(), str(dead.event_id or uuid.uuid4())
    location = dead.file_path or doc.get("path")
    if not location or not isinstance(location, str) or not isinstance(doc.get("source"), str):
        raise NotReplayable("the dead letter names no file of a source")
    if PurePosixPath(location).parts[:1] != (QUARANTINE_DIR,):
        # A replay loads only what ingestd quarantined for this very dead
        # letter: a file left in the source's folder (never moved, or there
        # again, perhaps still being written) is the watcher's to load.
        raise NotReplayable(f"ingestd did not quarantine its file ({location}"
                            + ("" if dead.file_path else ", named by its event")
                            + "); a file in the source's folder is loaded by the watcher once it is complete "
                              "(or: ingestd publish PATH); discard this dead letter")
    if not dead.file_path:
        # Its event named a quarantined file that ingestd did not quarantine
        # for it (another dead letter's): that file is not this one's to load.
        raise NotReplayable(f"the file its event named, {location}, was not quarantined for this dead letter; "
                            "nothing to replay (discard it)")
    # A name that is not UTF-8 is stored with \xNN escapes: the file has the bytes.
    if not os.path.lexists(landing_dir / location) and os.path.lexists(landing_dir / from_display(location)):
        location = from_display(location)
    try:
        path = resolve_in_landing(landing_dir, location)
    except Exception as exc:  # noqa: BLE001 - path_rejected and the like
        raise NotReplayable(f"the file's path is not replayable: {exc}") from None
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise NotReplayable(f"the file is no longer at {location}") from None
    event = FileEvent(source=str(doc["source"]), path=location, size=st.st_size, mtime_ns=st.st_mtime_ns,
                      event_id=str(dead.event_id), trigger="replay", replay_count=dead.replay_count + 1)
    return event.routing_key, event.to_json(), event.event_id


def consumer_took_file(ledger: Ledger, dead: DeadLetter) -> bool:
    """Whether ``dead``'s quarantined file is one ingestd handled for it.

    A dead letter the recorder made from a message in the dead queue
    (``delivery_limit``) holds a quarantined file only when a consumer took
    its event on that file: the message alone is its sender's word. A row
    recorded otherwise (an earlier version moved files on a message's word)
    keeps its file from replay and ``--delete-file``. Other dead letters were
    made by the consumer that failed on the file: True."""
    if dead.reason != "delivery_limit" or not dead.file_path \
            or PurePosixPath(dead.file_path).parts[:1] != (QUARANTINE_DIR,):
        return True
    event = dead.event if isinstance(dead.event, dict) else {}
    paths = [p for p in (event.get("path"), dead.file_path) if isinstance(p, str)]
    return bool(dead.event_id and dead.source) and ledger.consumer_took(
        str(dead.event_id), str(dead.source), paths, None if dead.run_id is None else str(dead.run_id))


NOT_TAKEN = ("no consumer is recorded taking its event on {path} (the dead letter was recorded from a message "
             "alone); the file stays: check it, then move it back or delete it by hand")


@dataclass
class ReplayReport:
    published: list[DeadLetter] = field(default_factory=list)
    refused: list[tuple[DeadLetter, str]] = field(default_factory=list)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    removed_from_queue: int = 0


def replay(ledger: Ledger, publisher: Publisher, landing_dir: Path, rows: Iterable[DeadLetter], replay_limit: int,
           progress: Callable[[DeadLetter], None] = lambda d: None) -> ReplayReport:
    """Replay each waiting dead letter: stamp it, publish its event, and take
    its message off the dead queue.

    The stamp is committed before publishing, so that a consumer failing the
    replay at once records a new dead letter instead of taking the replay for
    a redelivery of the old one; a publish that fails takes the stamp back.
    """
    report = ReplayReport()
    for dead in rows:
        progress(dead)
        if dead.state != "waiting":
            report.refused.append((dead, f"already {dead.state}"))
            continue
        if dead.replay_count >= replay_limit:
            report.refused.append((dead, f"replay limit reached ({dead.replay_count} of {replay_limit}); "
                                         "fix the cause and discard it, or raise [dlq] replay_limit"))
            continue
        if not consumer_took_file(ledger, dead):
            report.refused.append((dead, NOT_TAKEN.format(path=dead.file_path)))
            continue
        try:
            key, body, message_id = replay_message(dead, landing_dir)
        except NotReplayable as exc:
            report.refused.append((dead, str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - a dead letter of any shape is refused, not the whole batch
            report.refused.append((dead, f"not replayable as recorded ({type(exc).__name__}: {exc})"[:500]))
            continue
        if not ledger.mark_replayed(dead.id):
            report.refused.append((dead, "replayed or discarded meanwhile by someone else"))
            continue
        try:
            publisher.publish(publisher.topology.events_exchange, key, body, message_id,
                              {"x-ingestd-replay-of": dead.id})
        except Exception as exc:  # noqa: BLE001 - the stamp goes back whatever failed: it still waits
            ledger.unmark_replayed(dead.id)
            report.refused.append((dead, f"could not publish: {type(exc).__name__}: {exc}"[:500]))
            continue
        report.published.append(dead)
    report.removed_from_queue = remove_settled_messages(ledger, publisher.url, publisher.topology)
    return report


def discard(ledger: Ledger, broker_url: str, topology: Topology, landing_dir: Path, rows: Iterable[DeadLetter],
            note: str | None, delete_file: bool) -> tuple[list[DeadLetter], list[str], int]:
    """Mark waiting dead letters discarded (with ``note``), drop their messages,
    and delete their quarantined files if asked. Returns (discarded, problems,
    messages removed)."""
    discarded, problems = [], []
    for dead in rows:
        if dead.state != "waiting":
            problems.append(f"#{dead.id}: already {dead.state}")
            continue
        if not ledger.mark_discarded(dead.id, note):
            problems.append(f"#{dead.id}: replayed or discarded meanwhile")
            continue
        discarded.append(dead)
        if delete_file and dead.file_path and PurePosixPath(dead.file_path).parts[0] == QUARANTINE_DIR:
            if not consumer_took_file(ledger, dead):
                problems.append(f"#{dead.id}: file not deleted: " + NOT_TAKEN.format(path=dead.file_path))
                continue
            try:
                resolve_in_landing(landing_dir, dead.file_path).unlink()
            except FileNotFoundError:
                pass
            except Exception as exc:  # noqa: BLE001 - reported, the discard stands
                problems.append(f"#{dead.id}: file not deleted: {exc}")
    removed = remove_settled_messages(ledger, broker_url, topology)
    return discarded, problems, removed


def _message_identity(message_id: str | None, body: bytes, headers: dict | None) -> tuple[str | None, int]:
    """(event id, replay count) of a dead message, as its dead letter was
    recorded: the body's own event id, else its message id; the replay count
    a bad event's message carries in a header (its body stays as it came),
    else the body's, else 0. Never fails, whatever the message."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        doc = None
    doc = doc if isinstance(doc, dict) else {}
    own = doc.get("event_id")
    event_id = str(uuid.UUID(own)) if isinstance(own, str) and is_uuid(own) else (
        str(uuid.UUID(message_id)) if isinstance(message_id, str) and is_uuid(message_id) else None)
    counted = (headers or {}).get("x-ingestd-replay-count")
    if type(counted) is not int:
        counted = doc.get("replay_count", 0)
    return event_id, counted if type(counted) is int else 0


def remove_settled_messages(ledger: Ledger, broker_url: str, topology: Topology) -> int:
    """Take off ``ingest.dead`` every message whose dead letter is replayed or
    discarded. A message is matched by its id and the replay count in its
    body, so a fresh failure of a replay (same event id, next count) stays.

    AMQP cannot delete one message: the queue is read without acks, the
    settled ones are acked, and the rest are handed back before this returns.
    """
    connection = open_connection(broker_url, name=topology.connection_name("dlq"))
    try:
        channel = connection.channel()
        held: list[tuple[int, str | None, int]] = []
        while len(held) < MAX_QUEUE_SCAN:
            method, properties, body = channel.basic_get(topology.dead_queue, auto_ack=False)
            if method is None:
                break
            held.append((method.delivery_tag, *_message_identity(properties.message_id, body, properties.headers)))
        ids = sorted({m for _, m, _ in held if m})
        if not ids:
            return 0
        settled = ledger.settled_messages(ids)
        removed = 0
        for tag, message_id, count in held:
            if (message_id, count) in settled:
                channel.basic_ack(tag)
                removed += 1
        _hand_back(channel, topology.dead_queue, len(held) - removed)
        return removed
    finally:
        if connection.is_open:
            connection.close()  # unacked messages go back to the queue


def _hand_back(channel, queue: str, kept: int, timeout: float = 5.0) -> None:
    """Return the messages read but kept, and wait (a few seconds at most)
    until the queue counts them again: a quorum queue takes them back
    asynchronously, and a `dlq list` right after a replay would otherwise
    see a dead queue short of the messages still waiting."""
    if not kept:
        return
    channel.basic_nack(0, multiple=True, requeue=True)
    deadline = time.monotonic() + timeout
    while queue_depth(channel, queue)[0] < kept and time.monotonic() < deadline:
        time.sleep(0.05)


def wait_for_outcomes(ledger: Ledger, event_ids: list[str], since: datetime, timeout: float,
                      tick: Callable[[int], None] = lambda n: None) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    counts = ledger.run_outcomes(event_ids, since)
    while sum(counts.values()) < len(event_ids) and time.monotonic() < deadline:
        time.sleep(0.25)
        counts = ledger.run_outcomes(event_ids, since)
        tick(sum(counts.values()))
    return counts
