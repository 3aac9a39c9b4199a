"""Test doubles that stand in for the daemon's own parts (never for
PostgreSQL or RabbitMQ themselves)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ingestd.daemon.broker import Message, Topology


@dataclass
class RecordingPublisher:
    """A ``publishing.Publisher`` that keeps what it is given, for tests of
    the consumer that need no broker: ``(exchange, routing key, body,
    message id, headers)`` in ``sent``; every message counts as confirmed."""

    topology: Topology = field(default_factory=Topology)
    sent: list[tuple[str, str, bytes, str, dict[str, Any] | None]] = field(default_factory=list)
    url: str = "amqp://recording"

    def publish(self, exchange: str, routing_key: str, body: bytes, message_id: str,
                headers: dict[str, Any] | None = None) -> None:
        self.sent.append((exchange, routing_key, body, message_id, headers))

    def publish_many(self, messages: list[Message]) -> list[str | None]:
        for m in messages:
            self.publish(m.exchange, m.routing_key, m.body, m.message_id, m.headers)
        return [None] * len(messages)

    @property
    def connected(self) -> bool:
        return True

    def connect(self) -> str | None:
        return None

    def process_events(self) -> None:
        pass

    def close(self) -> None:
        pass
