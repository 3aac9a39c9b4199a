"""Events: the messages between producers (watcher, poller) and consumers.

A message body is a JSON object with a ``version`` field, checked against
``event.schema.json``; the routing key is ``<kind>.<source>`` and the AMQP
``message_id`` is the event id.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from importlib.resources import files
from typing import Any

import fastjsonschema
import jsonschema
import orjson

from .errors import PermanentError
from .landing import SOURCE_NAME

EVENT_VERSION = 1
# Bounds what a consumer will parse; payload bodies above the poller's inline
# limit (at most 8 MiB) travel as a file under _payloads/ instead.
MAX_EVENT_BYTES = 16 << 20
# A payload's context (FRED's series id) is added to each of its records.
MAX_CONTEXT_BYTES = 1024
LAST_YEAR = 9998


class _Message:
    """What every event does: its routing key and its JSON body."""

    @property
    def routing_key(self) -> str:
        return routing_key(self.kind, self.source)  # type: ignore[attr-defined]

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()  # type: ignore[call-overload]


@dataclass(frozen=True)
class FileEvent(_Message):
    """A complete file in the landing zone, ready to load."""

    source: str
    path: str  # relative to the landing zone, POSIX separators
    size: int
    mtime_ns: int
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    trigger: str = "file"
    replay_count: int = 0
    kind: str = "file"
    version: int = EVENT_VERSION


@dataclass(frozen=True)
class PayloadEvent(_Message):
    """An API response body, inline or stored under ``_payloads/``."""

    source: str
    endpoint: str  # the request URL with secrets removed
    status_code: int
    fetched_at: str
    body_sha256: str
    body_size: int
    body: str | None = None  # the response text, when small enough
    body_path: str | None = None  # else relative to the landing zone
    # Fields the poller adds to every record (FRED's series id, which its
    # observation objects do not carry).
    context: dict[str, Any] = field(default_factory=dict)
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    trigger: str = "api"
    replay_count: int = 0
    kind: str = "payload"
    version: int = EVENT_VERSION

    @property
    def path(self) -> str | None:
        return self.body_path


Event = FileEvent | PayloadEvent


def is_uuid(value: object) -> bool:
    """True when ``value`` reads as a UUID (an event id, a message id)."""
    try:
        uuid.UUID(str(value))
        return True
    except (ValueError, TypeError):
        return False


def routing_key(kind: str, source: str) -> str:
    # A folder name that is not a valid source name still needs a routable key;
    # the consumer will dead-letter it as unknown_source.
    return f"{kind}.{source if SOURCE_NAME.match(source) else '_unknown'}"


@lru_cache(maxsize=1)
def event_checks() -> tuple[Any, jsonschema.Draft202012Validator]:
    """The event schema compiled (fastjsonschema: a verdict in a few
    microseconds, where jsonschema takes a quarter of a millisecond, a tenth
    of a small file's whole load) and as jsonschema's validator, which words
    the reason when the compiled check refuses. Formats are annotations in
    both; the schema's keywords mean the same in draft 7 and 2020-12."""
    schema = json.loads(files("ingestd.daemon").joinpath("event.schema.json").read_text())
    return fastjsonschema.compile(schema, use_formats=False), jsonschema.Draft202012Validator(schema)


def parse_event(body: bytes) -> Event:
    """Decode and check a message body; ``bad_event`` when it is not an event."""
    if len(body) > MAX_EVENT_BYTES:
        raise PermanentError("bad_event", f"message body of {len(body)} bytes exceeds {MAX_EVENT_BYTES}")
    try:
        doc: Any = json.loads(body, parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PermanentError("bad_event", f"message body is not JSON: {exc}") from None
    except RecursionError:
        raise PermanentError("bad_event", "message body is nested deeper than an event can be") from None
    if not isinstance(doc, dict):
        raise PermanentError("bad_event", "message body is not a JSON object")
    fast, reference = event_checks()
    try:
        fast(doc)
        error = None
    except fastjsonschema.JsonSchemaValueException:
        error = jsonschema.exceptions.best_match(reference.iter_errors(doc))
    if error is not None:
        pointer = "/" + "/".join(str(p) for p in error.absolute_path)
        raise PermanentError("bad_event", f"event is invalid at {pointer}: {error.message}", pointer=pointer,
                             keyword=error.validator)
    cls = FileEvent if doc["kind"] == "file" else PayloadEvent
    known = set(cls.__dataclass_fields__)
    fields = {k: _integral(v) for k, v in doc.items() if k in known}
    if cls is PayloadEvent:
        _check_instant(fields["fetched_at"], "/fetched_at")
        _check_context(fields.get("context", {}))
    return cls(**fields)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_context(context: dict[str, Any]) -> None:
    """``bad_event`` unless the fields a payload adds to each of its records
    are JSON that bronze can store (no lone surrogate, no integer beyond 64
    bits, not nested past 254 levels) and small: they are repeated in every
    record, so their size multiplies the payload's."""
    try:
        text = orjson.dumps(context)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise PermanentError("bad_event", f"event is invalid at /context: not JSON bronze can store ({exc})",
                             pointer="/context") from None
    if len(text) > MAX_CONTEXT_BYTES:
        raise PermanentError("bad_event", f"event is invalid at /context: {len(text)} bytes, more than the "
                             f"{MAX_CONTEXT_BYTES} that are added to each record", pointer="/context")


def _integral(value: Any) -> Any:
    """JSON Schema's integers include 2.0: the event holds the integer."""
    return int(value) if type(value) is float else value


def _check_instant(text: str, pointer: str) -> None:
    """``bad_event`` unless ``text`` is an ISO 8601 date and time with its
    UTC offset (a fetch time becomes ``source_timestamp``, a timestamptz,
    which may partition bronze: a time without an offset is no instant)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise PermanentError("bad_event", f"event is invalid at {pointer}: {text[:64]!r} is not an ISO 8601 date "
                             f"and time ({exc})", pointer=pointer) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise PermanentError("bad_event", f"event is invalid at {pointer}: {text[:64]!r} has no UTC offset "
                             "(write it as 2024-01-02T03:04:05+00:00)", pointer=pointer)
    try:
        year = when.astimezone(UTC).year
    except OverflowError:
        year = 0
    if not 1 <= year <= LAST_YEAR:
        # Bronze may be partitioned by month of it: the month after it must still be a date.
        raise PermanentError("bad_event", f"event is invalid at {pointer}: {text[:64]!r} is not between the "
                             f"years 1 and {LAST_YEAR} in UTC", pointer=pointer)
