"""Events: the messages between producers (watcher, poller) and consumers.

A message body is a JSON object with a ``version`` field, checked against
``event.schema.json``; the routing key is ``<kind>.<source>`` and the AMQP
``message_id`` is the event id.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from importlib.resources import files
from typing import Any

import jsonschema

from .errors import PermanentError
from .landing import SOURCE_NAME

EVENT_VERSION = 1
# Bodies are small for file events; this bounds what a consumer will parse.
MAX_EVENT_BYTES = 1 << 20


@dataclass(frozen=True)
class FileEvent:
    """A complete file in the landing zone, ready to load."""

    source: str
    path: str  # relative to the landing zone, POSIX separators
    size: int
    mtime_ns: int
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    trigger: str = "file"
    replay_count: int = 0
    kind: str = "file"
    version: int = EVENT_VERSION

    @property
    def routing_key(self) -> str:
        return routing_key(self.kind, self.source)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()


def routing_key(kind: str, source: str) -> str:
    # A folder name that is not a valid source name still needs a routable key;
    # the consumer will dead-letter it as unknown_source.
    return f"{kind}.{source if SOURCE_NAME.match(source) else '_unknown'}"


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(files("ingestd.daemon").joinpath("event.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def parse_event(body: bytes) -> FileEvent:
    """Decode and check a message body; ``bad_event`` when it is not an event."""
    if len(body) > MAX_EVENT_BYTES:
        raise PermanentError("bad_event", f"message body of {len(body)} bytes exceeds {MAX_EVENT_BYTES}")
    try:
        doc: Any = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PermanentError("bad_event", f"message body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise PermanentError("bad_event", "message body is not a JSON object")
    error = jsonschema.exceptions.best_match(_validator().iter_errors(doc))
    if error is not None:
        pointer = "/" + "/".join(str(p) for p in error.absolute_path)
        raise PermanentError("bad_event", f"event is invalid at {pointer}: {error.message}", pointer=pointer,
                             keyword=error.validator)
    if doc["kind"] != "file":
        raise PermanentError("bad_event", f"events of kind {doc['kind']!r} are not handled by this version")
    known = {f for f in FileEvent.__dataclass_fields__}
    return FileEvent(**{k: v for k, v in doc.items() if k in known})
