"""Dead-lettering: park an event that cannot be loaded, with its reason.

Three ways into ``ingest.dead``, one record each in ``ops.dead_letters``:
the consumer's own (the data is at fault), a message that is not an event,
and the broker's (delivery limit), which the dead-letter recorder notices.
"""
from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ingestd.daemon.errors import PermanentError
from ingestd.daemon.events import MAX_EVENT_BYTES, Event, FileEvent, is_uuid
from ingestd.daemon.landing import (
    QUARANTINE_DIR,
    SOURCE_NAME,
    Moved,
    check_event_path,
    display_path,
    movable_entry,
    move_file,
    quarantine_path,
)
from ingestd.daemon.ledger import FailedRun, Ledger, storable, storable_text
from ingestd.daemon.metrics import DEAD_LETTERS, RUNS

from .context import IngestContext, Outcome

log = logging.getLogger(__name__)


def quarantine(landing_dir: Path, source: str, event_path: str | None, trigger: str, tag: str,
               identity: tuple[Any, Any]) -> Moved | None:
    """Move an event's file to ``_quarantine/<source>/...``; None when there is
    nothing the event may move: a path outside its source's folder, a
    folder, a file already in quarantine, nothing at all, or a file that is
    not the one the event describes (``identity``: its size and mtime in
    nanoseconds, as the watcher saw them; a file replaced or still growing
    stays for the event that follows). A symlink moves as the link itself,
    wherever it points."""
    if not event_path:
        return None
    try:
        location = check_event_path(source, event_path, trigger)
    except PermanentError:
        return None
    entry = None if location.quarantined else movable_entry(landing_dir, event_path)
    if entry is None or not _is_described(entry, identity):
        return None
    return move_file(landing_dir, entry, quarantine_path(landing_dir, location), tag)


def _is_described(entry: Path, identity: tuple[Any, Any]) -> bool:
    try:
        st = os.lstat(entry)
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) == identity


def owned_file_path(ledger: Ledger, event_id: str, event_path: str | None, replay_count: int,
                    consumer_took: bool = True) -> str | None:
    """The ``file_path`` a new dead letter may hold: the event's file where
    it lies in its source's folder, but a quarantined file only when an
    earlier failure of this very event put it there and was replayed, and
    a consumer took this replay (``consumer_took``: a message in the dead
    queue is only its sender's word). An event naming another dead letter's
    quarantined file gets none, so that no ``dlq`` command acts on that file
    through it."""
    if not event_path:
        return None
    shown = display_path(event_path)
    if PurePosixPath(event_path).parts[:1] != (QUARANTINE_DIR,):
        return shown
    return shown if consumer_took and replay_count > 0 and \
        ledger.replayed_from_quarantine(event_id, shown, replay_count) else None


def _note_move(ledger: Ledger, dead_letter_id: int, moved: Moved | None) -> None:
    """Record where quarantine put a dead letter's file (nothing when nothing moved)."""
    if moved is not None:
        ledger.note_file_moved(dead_letter_id, moved.relative, moved.error)


def dead_letter_event(ctx: IngestContext, ledger: Ledger, event: Event, run_id: uuid.UUID,
                      exc: PermanentError) -> Outcome:
    """Dead-letter an event whose data is at fault.

    Order matters for crash safety: publish to the dead exchange (confirmed),
    then commit the dead-letter row with the run's failure, then move the
    file. A crash in between at worst duplicates the dead message; a
    redelivery finds the committed row and only finishes the move.
    """
    failure = exc.failure
    existing = ledger.waiting_dead_letter(event.event_id, event.replay_count)
    if existing is None:
        # Header strings travel as UTF-8: an event's text may hold what UTF-8 cannot (a lone surrogate).
        headers = {"x-ingestd-reason": failure.reason, "x-ingestd-error": storable_text(failure.message[:1000]),
                   "x-ingestd-run-id": str(run_id), "x-ingestd-source": storable_text(event.source)}
        ctx.publisher.publish(ctx.topology.dead_exchange, event.routing_key, event.to_json(), event.event_id,
                              headers)
        dead_letter_id = ledger.add_dead_letter(
            event_id=event.event_id, source=event.source if SOURCE_NAME.match(event.source) else None,
            reason=failure.reason, error=failure.message, detail=failure.detail,
            event=json.loads(event.to_json()), run_id=run_id,
            file_path=owned_file_path(ledger, event.event_id, event.path, event.replay_count),
            replay_count=event.replay_count)
        total, invalid = failure.detail.get("rows_total"), failure.detail.get("rows_invalid")
        valid = total - invalid if isinstance(total, int) and isinstance(invalid, int) else None
        quality = failure.detail.get("quality")
        ledger.finish_run(run_id, "failure", error=failure.message, reason=failure.reason, rows_total=total,
                          rows_valid=valid, rows_invalid=invalid,
                          quality=quality if isinstance(quality, dict) else None)
    else:
        dead_letter_id = existing["id"]
        ledger.finish_run(run_id, "failure", error=f"already dead-lettered as #{dead_letter_id}: {failure.message}",
                          reason=failure.reason)
    ledger.conn.commit()
    # Only dropped files move (a symlink out of the zone too, as a link); a
    # stored API payload stays where its event finds it; an event that
    # names something it may not touch moves nothing.
    if isinstance(event, FileEvent) and failure.reason != "bad_event":
        _note_move(ledger, dead_letter_id, quarantine(ctx.config.landing_dir, event.source, event.path,
                                                      event.trigger, str(run_id)[:8], (event.size, event.mtime_ns)))
    # Records checked before the refusal (too many invalid ones): counted once, by the first delivery.
    total, invalid = failure.detail.get("rows_total"), failure.detail.get("rows_invalid")
    counted = existing is None and isinstance(total, int) and isinstance(invalid, int)
    return Outcome("failure", run_id, reason=failure.reason, message=failure.message,
                   rows_valid=total - invalid if counted else 0, rows_invalid=invalid if counted else 0)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


_NOT_JSON = object()


def _parse_body(body: bytes) -> Any:
    """The message body as sent, or ``_NOT_JSON``."""
    try:
        return json.loads(body[:MAX_EVENT_BYTES], parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return _NOT_JSON


def storable_json(body: bytes, parsed: Any = None) -> Any:
    """The message body as JSON PostgreSQL can store (strings with U+0000 or
    lone surrogates shown as escapes), or an excerpt of its bytes in
    ``{"raw": ...}`` when it is not JSON. Never fails, whatever the body."""
    doc = _parse_body(body) if parsed is None else parsed
    if doc is _NOT_JSON:
        # Kept as text for the operator: bytes that are not UTF-8 as \xNN
        # escapes, never replaced by another character.
        return {"raw": storable_text(body[:4096].decode("utf-8", errors="backslashreplace"))}
    return storable(doc)


def _event_id_of(doc: Any) -> str | None:
    value = doc.get("event_id") if isinstance(doc, dict) else None
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def dead_letter_bad_event(ctx: IngestContext, body: bytes, exc: PermanentError,
                          message_id: str | None = None) -> Outcome:
    """A message that is not an event: recorded and parked, nothing to move.

    The row's ``event_id`` is the id the message is parked under: the body's
    own event id when it has a valid one, else its message id (a replay
    keeps it), else a new one. A replay that fails again adds the next
    replay count, so ``[dlq] replay_limit`` ends the loop.
    """
    doc = storable_json(body)
    event_id = _event_id_of(doc) or (str(uuid.UUID(message_id)) if is_uuid(message_id) else str(uuid.uuid4()))
    failure = exc.failure
    ledger = ctx.ledger()
    replay_count = ledger.next_replay_count(event_id)
    # The body stays as it came; the header tells `dlq` which failure of the
    # event this message is (daemon/dlq.py: remove_settled_messages).
    ctx.publisher.publish(ctx.topology.dead_exchange, "bad_event", body, event_id,
                          {"x-ingestd-reason": failure.reason, "x-ingestd-replay-count": replay_count,
                           "x-ingestd-error": storable_text(failure.message[:1000])})
    source = doc.get("source") if isinstance(doc, dict) and isinstance(doc.get("source"), str) else None
    run_id = ledger.record_failed_run(FailedRun(source, "file", failure.message, failure.reason, ctx.worker,
                                                event_id=event_id))
    ledger.add_dead_letter(event_id=event_id, source=source if source and SOURCE_NAME.match(source) else None,
                           reason=failure.reason, error=failure.message, detail=failure.detail, event=doc,
                           run_id=run_id, file_path=None, replay_count=replay_count)
    ledger.conn.commit()
    DEAD_LETTERS.labels("_unknown", failure.reason).inc()
    RUNS.labels("_unknown", "failure").inc()
    log.warning("bad event dead-lettered", extra={"run_id": str(run_id), "event_id": event_id, "step": "parse_event",
                                                  "status": "failure", "reason": failure.reason,
                                                  "detail": failure.message})
    return Outcome("failure", run_id, reason=failure.reason, message=failure.message)


def x_death_summary(headers: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The ``x-death`` header in plain JSON: newest first, with counts."""
    summary = []
    for death in (headers or {}).get("x-death") or []:
        if isinstance(death, dict):
            summary.append({k: (v.decode() if isinstance(v, bytes) else v if isinstance(v, (int, str)) else str(v))
                            for k, v in death.items() if k in ("reason", "queue", "count", "exchange", "time")})
    return summary


@dataclass(frozen=True)
class _DeadMessage:
    """A message in the dead queue, as its headers and body say (the
    sender's word, whoever sent it)."""

    event_id: str
    replay_count: int
    # ``x-death``, newest first, and the broker's reason in the newest.
    deaths: list[dict[str, Any]]
    broker_reason: str
    # The body as sent (a path may name a file whose name is not UTF-8),
    # for the quarantine move; ``doc`` is what the table shows.
    sent: Any
    doc: Any
    fields: dict[str, str]
    source: str | None
    path: str | None
    # The broker says it gave up on the message in the events queue.
    from_events: bool

    @property
    def is_file(self) -> bool:
        return self.path is not None and self.fields.get("kind", "file") == "file"

    @property
    def trigger(self) -> str:
        trigger = self.doc.get("trigger") if isinstance(self.doc, dict) else None
        if trigger in ("file", "api", "replay", "manual"):
            return trigger
        return "api" if self.fields.get("kind") == "payload" else "file"


def _read_dead_message(message_id: str | None, headers: dict[str, Any] | None, body: bytes,
                       events_queue: str | None) -> _DeadMessage:
    sent = _parse_body(body)
    doc = storable_json(body, sent)
    event_id = _event_id_of(doc) or (str(uuid.UUID(message_id)) if is_uuid(message_id) else str(uuid.uuid4()))
    replay_count = doc.get("replay_count", 0) if isinstance(doc, dict) else 0
    replay_count = replay_count if isinstance(replay_count, int) and 0 <= replay_count < 2**31 else 0
    deaths = x_death_summary(headers)
    fields = _string_fields(sent)
    source = fields.get("source")
    return _DeadMessage(
        event_id=event_id, replay_count=replay_count, deaths=deaths,
        broker_reason=deaths[0].get("reason", "unknown") if deaths else "unknown", sent=sent, doc=doc,
        fields=fields, source=source if source and SOURCE_NAME.match(source) else None,
        path=display_path(fields["path"]) if fields.get("path") else None,
        from_events=events_queue is not None and any(d.get("queue") == events_queue for d in deaths))


def _consumer_took(ledger: Ledger, dead: _DeadMessage) -> bool:
    """True when a consumer took this very event on the message's file and
    never finished (a run still ``running``): the one proof that the
    message is not made up. Looked up before that run is closed."""
    return dead.is_file and dead.source is not None and \
        ledger.unfinished_run(dead.event_id, dead.source, dead.fields["path"], dead.sent.get("size")) is not None


def _dead_message_error(dead: _DeadMessage, taken: bool) -> tuple[str, dict[str, Any]]:
    """The dead letter's error and detail: what the broker said, and why a
    file was left in place when it was."""
    if dead.from_events and (taken or not dead.is_file):
        message = f"the broker dead-lettered the message ({dead.broker_reason}): a consumer kept failing on it"
    elif dead.from_events:
        message = (f"the message says the broker dead-lettered it ({dead.broker_reason}), "
                   "but no consumer is recorded taking it")
    else:
        message = f"a message reached the dead-letter queue without a consumer failing on it ({dead.broker_reason})"
    detail: dict[str, Any] = {"x_death": dead.deaths, "broker_reason": dead.broker_reason}
    if dead.is_file and not (dead.from_events and taken):
        detail["file_left"] = (
            f"{dead.path} left in place: " + (
                f"no consumer took event {dead.event_id} on that file (ops.pipeline_runs holds no unfinished run "
                "of it), and the message alone moves nothing" if dead.from_events else
                "the broker did not say it gave up on the message in the events queue")
            + ("" if PurePosixPath(dead.fields["path"]).parts[:1] == (QUARANTINE_DIR,) else
               f"; the watcher loads the file (or: ingestd publish {dead.path})"))
    return message, detail


def record_broker_dead_letter(ledger: Ledger, landing_dir: Path, message_id: str | None, headers: dict[str, Any] | None,
                              body: bytes, worker: str, events_queue: str | None = None) -> int | None:
    """Record a message that reached ``ingest.dead`` without the consumer
    dead-lettering it (the broker's delivery limit, a rejection).

    Returns the new ``ops.dead_letters`` id; None for messages the consumer
    dead-lettered itself (they carry ``x-ingestd-reason``) or already recorded.
    Its file, if any, is quarantined like any dead-lettered file, but only
    when the ledger shows that a consumer took this very event on that file
    and never finished it (a run still ``running``, which this closes as
    interrupted), and the broker says it gave up on the message in
    ``events_queue`` (``x-death``). Headers and body are the sender's word:
    anyone who may publish to the dead exchange can write them. A message
    no consumer took is recorded, moves nothing, and its dead letter says
    why its file was left in place (``detail.file_left``).
    """
    if headers and "x-ingestd-reason" in headers:
        return None
    dead = _read_dead_message(message_id, headers, body, events_queue)
    if ledger.waiting_dead_letter(dead.event_id, dead.replay_count) is not None:
        ledger.conn.rollback()
        return None
    taken = _consumer_took(ledger, dead)
    message, detail = _dead_message_error(dead, taken)
    ledger.close_interrupted([dead.event_id], "the broker dead-lettered the message")
    run_id = ledger.record_failed_run(FailedRun(dead.source, dead.trigger, message, "delivery_limit", worker,
                                                event_id=dead.event_id, file_path=dead.path))
    dead_letter_id = ledger.add_dead_letter(
        event_id=dead.event_id, source=dead.source, reason="delivery_limit", error=message,
        detail=detail, event=dead.doc, run_id=run_id,
        file_path=owned_file_path(ledger, dead.event_id, dead.fields.get("path"), dead.replay_count,
                                  consumer_took=taken),
        replay_count=dead.replay_count)
    ledger.conn.commit()
    if dead.is_file and dead.from_events and taken:
        identity = (dead.sent.get("size"), dead.sent.get("mtime_ns"))  # ``fields`` holds only strings
        _note_move(ledger, dead_letter_id, quarantine(landing_dir, dead.fields.get("source", ""),
                                                      dead.fields["path"], dead.fields.get("trigger", "file"),
                                                      str(run_id)[:8], identity))
    DEAD_LETTERS.labels(dead.source or "_unknown", "delivery_limit").inc()
    log.warning("broker dead-lettered a message; recorded", extra={
        "run_id": str(run_id), "event_id": dead.event_id, "source": dead.source, "step": "record_dead_letter",
        "status": "failure", "reason": "delivery_limit", "detail": message})
    return dead_letter_id


def _string_fields(doc: Any) -> dict[str, str]:
    """The string fields that locate a file, of a body as sent."""
    if not isinstance(doc, dict):
        return {}
    return {k: v for k, v in doc.items() if k in ("source", "path", "trigger", "kind") and isinstance(v, str)}


def record_unrecorded_dead_message(ledger: Ledger, message_id: str | None, body: bytes, worker: str,
                                   error: str) -> int:
    """The last resort of the recorder: a dead message that could not be
    recorded in full still gets its row, with an excerpt of its body."""
    ledger.conn.rollback()
    event_id = str(uuid.UUID(message_id)) if is_uuid(message_id) else str(uuid.uuid4())
    dead_letter_id = ledger.add_dead_letter(
            event_id=event_id, source=None, reason="delivery_limit",
            error=f"the broker dead-lettered a message that could not be recorded in full: {error}"[:2000],
            detail={"recorded_by": worker}, event={"raw": body[:4096].decode("utf-8", "backslashreplace")},
            run_id=None, file_path=None)
    ledger.conn.commit()
    return dead_letter_id
