"""What the roles need of a publisher: the ``Publisher`` protocol.

The watcher, the poller, ``dlq replay`` and the consumers (dead-lettering)
take any object of this shape. In the daemon it is ``broker.Publisher``
(RabbitMQ, publisher confirms, reconnects), one per thread that publishes;
tests may hand in a stand-in that records what it is given
(tests/doubles.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .broker import Message, Topology


class Publisher(Protocol):
    """Publishes messages, each confirmed or refused, to one broker."""

    # The broker's URL (``dlq replay`` opens its own connection there to
    # tidy the dead queue) and the deployment's names.
    url: str
    topology: Topology

    @property
    def connected(self) -> bool:
        """True while the connection is open."""
        ...

    def connect(self) -> str | None:
        """Open the connection now; None when connected, else why not."""
        ...

    def publish(self, exchange: str, routing_key: str, body: bytes, message_id: str,
                headers: dict[str, Any] | None = None) -> None:
        """Publish one message, returning once the broker confirmed it;
        ``TransientError`` when it did not."""
        ...

    def publish_many(self, messages: list[Message]) -> list[str | None]:
        """Publish several, then wait for their confirms: for each, None when
        confirmed, else why not."""
        ...

    def process_events(self) -> None:
        """Serve the connection (heartbeats) while idle, from the owning thread."""
        ...

    def close(self) -> None:
        """Close the connection (open again by the next publish)."""
        ...
