"""RabbitMQ: names, topology, and a publisher with confirms and reconnects.

pika is not thread-safe: every thread that talks to the broker owns its own
``Publisher`` (or consumer connection), created in that thread.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from .errors import NotPermittedError, TransientError
from .logs import redact_text, redact_url

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger(__name__)

# Errors that mean "the broker or the connection is gone, try again later".
CONNECTION_ERRORS = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.AMQPChannelError,
    pika.exceptions.StreamLostError,
    pika.exceptions.ConnectionWrongStateError,
    pika.exceptions.ChannelWrongStateError,
    ConnectionError,
    OSError,
    # A server that accepts the connection but never finishes the AMQP handshake (a broker still
    # starting, another service on the port): pika's connector gives up with one of these.
    AMQPConnectorException,
)


@dataclass(frozen=True)
class Topology:
    """Exchange and queue names of one deployment (DESIGN.md), with its prefix."""

    prefix: str = ""
    delivery_limit: int = 5

    @classmethod
    def for_config(cls, config: Config) -> Topology:
        return cls(config.prefix, config.delivery_limit)

    @property
    def events_exchange(self) -> str:
        return f"{self.prefix}ingest.events"

    @property
    def events_queue(self) -> str:
        return f"{self.prefix}ingest.events"

    @property
    def dead_exchange(self) -> str:
        return f"{self.prefix}ingest.dead"

    @property
    def dead_queue(self) -> str:
        return f"{self.prefix}ingest.dead"

    @property
    def dead_audit_queue(self) -> str:
        """A copy of every dead message, consumed by the dead-letter recorder so
        that messages the broker dead-letters itself (delivery limit) are
        recorded in ops.dead_letters while ``ingest.dead`` keeps them for
        replay."""
        return f"{self.prefix}ingest.dead.audit"

    def connection_name(self, role: str) -> str:
        """Name shown by the broker (management UI, rabbitmqctl) for a connection."""
        return f"ingestd-{self.prefix}{role}"

    def events_queue_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": self.dead_exchange,
            "x-delivery-limit": self.delivery_limit,
            # Broker-side dead-lettering (delivery limit) is at-most-once unless
            # this strategy is set, and the strategy needs reject-publish.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    @staticmethod
    def dead_queue_arguments() -> dict[str, Any]:
        # `ingestd dlq replay/discard` read the dead queue without acks and hand
        # messages back, which counts as a failed delivery; RabbitMQ 4 drops a
        # message past its default limit of 20 (and on 3.10, -1 drops at once).
        # An explicit, unreachable limit keeps dead messages until an operator
        # settles them.
        return {"x-queue-type": "quorum", "x-delivery-limit": 1_000_000}

    def declare(self, channel) -> None:
        """Declare everything, idempotently. Differing arguments on an existing
        queue raise ``TopologyMismatch`` with what to do."""
        channel.exchange_declare(self.events_exchange, exchange_type="topic", durable=True)
        channel.exchange_declare(self.dead_exchange, exchange_type="fanout", durable=True)
        try:
            channel.queue_declare(self.dead_queue, durable=True, arguments=self.dead_queue_arguments())
            channel.queue_declare(self.dead_audit_queue, durable=True, arguments={"x-queue-type": "quorum"})
            channel.queue_declare(self.events_queue, durable=True, arguments=self.events_queue_arguments())
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 406:
                raise TopologyMismatch(
                    f"a queue exists with other settings than this config asks for ({exc.reply_text}); "
                    f"check broker.delivery_limit, or delete the queue after draining it "
                    f"(rabbitmqctl delete_queue {self.events_queue})"
                ) from None
            raise
        channel.queue_bind(self.events_queue, self.events_exchange, routing_key="#")
        channel.queue_bind(self.dead_queue, self.dead_exchange, routing_key="")
        channel.queue_bind(self.dead_audit_queue, self.dead_exchange, routing_key="")


class TopologyMismatch(Exception):
    """The broker holds queues declared with other arguments (needs an operator)."""


def connection_parameters(url: str, heartbeat: int = 30, name: str = "ingestd") -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.heartbeat = heartbeat
    params.blocked_connection_timeout = 60
    params.connection_attempts = 1
    params.socket_timeout = 10
    params.client_properties = {"connection_name": name}
    return params


def broker_urls(url: str) -> list[str]:
    """The nodes of ``broker.url``: one URL, or several (a cluster) separated by commas."""
    return [part.strip() for part in url.split(",") if part.strip()]


def open_connection(url: str, heartbeat: int = 30, name: str = "ingestd") -> pika.BlockingConnection:
    """Connect once, to the first node of ``url`` that answers, starting from a random one so
    that the processes of a deployment spread over a cluster's nodes. ``NotPermittedError`` when
    the broker refuses (login, virtual host), else ``TransientError``; never with the password."""
    urls = broker_urls(url)
    start = random.randrange(len(urls)) if len(urls) > 1 else 0
    nodes = [connection_parameters(node, heartbeat, name) for node in urls[start:] + urls[:start]]
    try:
        return pika.BlockingConnection(nodes if len(nodes) > 1 else nodes[0])
    except CONNECTION_ERRORS as exc:
        raise broker_connection_error(url, exc) from None


def broker_connection_error(url: str, exc: BaseException) -> TransientError:
    params = pika.URLParameters(broker_urls(url)[0])
    where = f"broker {redact_url(url)}"
    if isinstance(exc, (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError)):
        return NotPermittedError(f"{where}: the broker refused the login of user {params.credentials.username!r}",
                                 "fix the user or password in broker.url (or INGESTD_AMQP_URL); "
                                 "rabbitmqctl list_users shows the users")
    if isinstance(exc, pika.exceptions.ProbableAccessDeniedError):
        return NotPermittedError(f"{where}: virtual host {params.virtual_host!r} does not exist, or user "
                                 f"{params.credentials.username!r} has no access to it",
                                 f"rabbitmqctl add_vhost {params.virtual_host} and rabbitmqctl set_permissions -p "
                                 f"{params.virtual_host} {params.credentials.username} '.*' '.*' '.*', or fix the "
                                 "vhost in broker.url")
    text = str(exc) or type(exc).__name__
    if isinstance(exc, pika.exceptions.IncompatibleProtocolError):
        text = (f"the server at {params.host}:{params.port} closed the connection during the AMQP handshake "
                "(a port of another service? RabbitMQ listens on 5672)")
    elif isinstance(exc, AMQPConnectorException):
        text = (f"the server at {params.host}:{params.port} accepted the connection but did not finish the "
                f"AMQP handshake ({type(exc).__name__}; a broker still starting, or another service on the port?)")
    elif "Connection refused" in repr(exc) or "ConnectionRefused" in repr(exc):
        text = f"nothing accepts connections at {params.host}:{params.port} (is RabbitMQ running? is the port right?)"
    elif isinstance(exc, OSError) and getattr(exc, "errno", None) in (-2, -3, -5):
        text = f"host {params.host!r} does not resolve"
    return TransientError(f"{where} unreachable: {redact_text(text)}")


@dataclass(frozen=True)
class Message:
    """One message to publish: where to, its body and its id."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    headers: dict[str, Any] | None = None


class Publisher:
    """Publishes persistent, mandatory messages with publisher confirms.

    ``publish`` returns only once the broker has confirmed the message; it
    raises ``TransientError`` when it cannot (broker down, message returned or
    nacked), and the caller keeps its input for a later try.
    ``publish_many`` sends several before it waits: their confirms come back
    together (a burst of files costs one wait, not one per file).

    pika's blocking channel waits for each confirm in ``basic_publish``; to
    have several in flight, messages go out and confirms and returns come
    back on the channel's own asynchronous side (``BlockingChannel._impl``),
    and the wait is the one pika's blocking calls use (``_flush_output``):
    internals of pika 1.x, which setup.cfg pins.
    """

    def __init__(self, url: str, topology: Topology, heartbeat: int = 30, role: str = "publisher") -> None:
        self.url = url
        self.topology = topology
        self.heartbeat = heartbeat
        self.name = topology.connection_name(role)
        self._connection: pika.BlockingConnection | None = None
        self._channel = None
        # Confirm bookkeeping: the current channel's next delivery tag; of the
        # batch being sent, tag -> message id of what is in flight (acks and
        # nacks take them out), what was nacked, and the message ids returned
        # as unroutable.
        self._next_tag = 1
        self._in_flight: dict[int, str] = {}
        self._nacked: set[int] = set()
        self._returned: set[str] = set()
        self._select_ok = False

    def _ensure(self):
        if self._channel is not None and self._channel.is_open and self._connection.is_open:
            return self._channel
        self.close()
        self._connection = open_connection(self.url, self.heartbeat, self.name)
        try:
            channel = self._connection.channel()
            self.topology.declare(channel)
            self._confirm_mode(channel)
        except CONNECTION_ERRORS as exc:
            self.close()
            raise TransientError(f"broker channel failed: {redact_text(str(exc) or type(exc).__name__)}") from None
        self._channel = channel
        return channel

    def _confirm_mode(self, channel) -> None:
        self._next_tag, self._select_ok = 1, False
        channel._impl.add_on_return_callback(self._on_return)
        channel._impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_select_ok)
        self._wait(lambda: self._select_ok, channel)

    def _on_select_ok(self, _frame) -> None:
        self._select_ok = True

    def _on_confirm(self, frame) -> None:
        method = frame.method
        tags = [t for t in self._in_flight if t <= method.delivery_tag] if method.multiple else [method.delivery_tag]
        for tag in tags:
            if self._in_flight.pop(tag, None) is not None and isinstance(method, pika.spec.Basic.Nack):
                self._nacked.add(tag)

    def _on_return(self, _channel, _method, properties, _body) -> None:
        # A return comes before the ack of the same message.
        if properties.message_id:
            self._returned.add(properties.message_id)

    @staticmethod
    def _wait(done, channel) -> None:
        """Serve the connection until ``done()``, as pika's own blocking
        calls wait (a dead connection shows by its heartbeats); connection
        and channel errors propagate."""
        channel._flush_output(done)
        if not done():
            raise pika.exceptions.ChannelWrongStateError("channel closed while waiting for confirms")

    @property
    def connected(self) -> bool:
        return self._channel is not None and self._channel.is_open and self._connection.is_open

    def connect(self) -> str | None:
        """Open the connection now; None when connected, else why not."""
        try:
            self._ensure()
            return None
        except TransientError as exc:
            return str(exc)

    def publish(self, exchange: str, routing_key: str, body: bytes, message_id: str,
                headers: dict[str, Any] | None = None) -> None:
        problem = self.publish_many([Message(exchange, routing_key, body, message_id, headers)])[0]
        if problem is not None:
            raise TransientError(problem)

    def publish_many(self, messages: list[Message]) -> list[str | None]:
        """Publish all, then wait for their confirms: for each message, None
        when the broker confirmed it, else why not (the caller keeps it for
        a later try)."""
        # A connection that sat idle may have been closed by the broker
        # (missed heartbeats) without pika knowing yet: one fresh connection
        # is tried at once. Only confirmed messages count as sent, so sending
        # the rest again keeps at-least-once.
        for attempt in (1, 2):
            channel = self._ensure()
            self._in_flight, self._nacked, self._returned = {}, set(), set()
            tags: list[int] = []
            try:
                for message in messages:
                    channel._impl.basic_publish(message.exchange, message.routing_key, message.body,
                                                self._properties(message), mandatory=True)
                    tags.append(self._next_tag)
                    self._in_flight[self._next_tag] = message.message_id
                    self._next_tag += 1
                self._wait(lambda: not self._in_flight, channel)
            except CONNECTION_ERRORS as exc:
                why = f"publish failed: {redact_text(str(exc) or type(exc).__name__)}"
                sent = len(tags) - len(self._in_flight)
                verdicts = [self._verdict(m, t, why) for m, t in zip(messages, tags, strict=False)]
                self.close()
                if attempt == 1 and not sent:
                    continue
                return verdicts + [why] * (len(messages) - len(tags))
            verdicts = [self._verdict(m, t, "no confirm from the broker") for m, t in zip(messages, tags, strict=True)]
            if self._nacked:
                # RabbitMQ 3.10 can leave a channel refusing every publish to a
                # quorum queue after its quorum was lost and regained (the
                # cluster test saw nacks for minutes after): the next try
                # starts on a fresh channel.
                self.close()
            return verdicts
        raise AssertionError("unreachable")

    @staticmethod
    def _properties(message: Message) -> pika.BasicProperties:
        return pika.BasicProperties(content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent,
                                    message_id=message.message_id, timestamp=int(time.time()),
                                    headers=message.headers or None)

    def _verdict(self, message: Message, tag: int, otherwise: str) -> str | None:
        """Why ``message`` (sent as ``tag``) was not confirmed, or None."""
        if message.message_id in self._returned:
            return f"message {message.message_id} was returned as unroutable by {message.exchange!r}"
        if tag in self._nacked:
            return f"broker refused message {message.message_id} (nack)"
        return otherwise if tag in self._in_flight else None

    def process_events(self) -> None:
        """Serve heartbeats while idle (call from the owning thread)."""
        if self._connection is not None and self._connection.is_open:
            try:
                self._connection.process_data_events(time_limit=0)
            except CONNECTION_ERRORS:
                self.close()

    def close(self) -> None:
        conn, self._connection, self._channel = self._connection, None, None
        if conn is not None:
            try:
                if conn.is_open:
                    conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail in many ways
                pass
