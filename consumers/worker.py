"""The consumer role: take events off ``ingest.events`` and ingest them.

Each ``ConsumerWorker`` owns one broker connection (its I/O thread keeps
heartbeats flowing) and one work thread that does the slow part. Acks are
handed back to the connection thread with ``add_callback_threadsafe`` and
sent only after the database transaction has committed.
"""
from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pika

from ingestd.daemon.backoff import keep_trying
from ingestd.daemon.broker import CONNECTION_ERRORS, Publisher, Topology, TopologyMismatch, open_connection
from ingestd.daemon.config import Config, LiveConfig
from ingestd.daemon.errors import Shutdown, TransientError
from ingestd.daemon.logs import redact_text

from . import group
from .ingest import IngestContext, ingest_message

log = logging.getLogger(__name__)

# How often, at most, an idle work thread serves its own connections'
# heartbeats (a third of the heartbeat interval when that is shorter).
IDLE_TICK_SECONDS = 5.0


@dataclass(frozen=True)
class Delivery:
    channel: object
    delivery_tag: int
    body: bytes
    redelivered: bool
    message_id: str | None = None  # the AMQP message id (a bad event is parked under it)


def ack_plan(settled: set[int]) -> tuple[int | None, list[int]]:
    """How to ack the deliveries of a batch at the indexes ``settled``: the
    last of the first ones in a row, acked with ``multiple`` (one frame for
    them all; every delivery before them on the channel was answered, since
    batches are taken in the order of delivery and each is answered before
    the next), or None; and the others, one by one."""
    first = 0
    while first in settled:
        first += 1
    if first < 2:
        return None, sorted(settled)
    return first - 1, sorted(index for index in settled if index >= first)


class ConsumerWorker:
    """One consumer: a connection thread and a work thread."""

    def __init__(self, config: Config, name: str, stop: threading.Event,
                 context_factory: Callable[[], IngestContext] | None = None,
                 live: LiveConfig | None = None) -> None:
        self.config = config
        self.live = live
        self.name = name
        self.stop = stop
        self.topology = Topology.for_config(config)
        self._context_factory = context_factory or self._default_context
        self._work: queue.Queue[Delivery | None] = queue.Queue()
        self._busy = threading.Event()
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None  # pika's BlockingChannel of the current connection
        self.heartbeat: Callable[[], None] = lambda: None
        self.report: Callable[[str | None], None] = lambda problem: None
        self._worker_thread: threading.Thread | None = None
        self.fatal: BaseException | None = None

    def _default_context(self) -> IngestContext:
        publisher = Publisher(self.config.amqp_url, self.topology, self.config.heartbeat_seconds,
                              f"{self.name}-dead-letters")
        return IngestContext(self.live or self.config, publisher, self.name)

    # -- connection thread ------------------------------------------------
    def run(self) -> None:
        worker = threading.Thread(target=self._work_loop, name=f"{self.name}-work", daemon=True)
        worker.start()
        self._worker_thread = worker
        def lost(exc: BaseException, delay: float) -> None:
            self.report(str(exc) or type(exc).__name__)
            log.warning("broker connection lost; reconnecting", extra={
                "step": "consume", "status": "retry", "worker": self.name, "error": str(exc) or type(exc).__name__,
                "retry_in_s": round(delay, 2)})
        try:
            keep_trying(self._consume, stop=self.stop, errors=(TransientError, *CONNECTION_ERRORS), on_retry=lost)
        except TopologyMismatch as exc:
            log.critical(str(exc), extra={"step": "consume", "status": "fatal"})
            self.fatal = exc
            raise
        except Shutdown:
            pass
        finally:
            self._work.put(None)
            worker.join(timeout=max(1.0, self.config.stop_timeout_seconds))

    def _consume(self) -> None:
        connection = open_connection(self.config.amqp_url, self.config.heartbeat_seconds,
                                     self.topology.connection_name(self.name))
        self._connection = connection
        try:
            channel = connection.channel()
            self.topology.declare(channel)
            channel.basic_qos(prefetch_count=self.config.prefetch)
            channel.basic_consume(self.topology.events_queue, self._on_message)
            self._channel = channel
            self.report(None)
            log.info("consuming", extra={"step": "consume", "status": "started", "worker": self.name,
                                         "queue": self.topology.events_queue})
            while not self.stop.is_set():
                if connection.is_closed:
                    # Lost inside a callback (an ack that met the closed
                    # socket swallows the error): pika cannot serve this
                    # connection again; reconnect.
                    raise pika.exceptions.ConnectionWrongStateError("the broker connection closed")
                connection.process_data_events(time_limit=0.5)
                if self._worker_thread is None or not self._worker_thread.is_alive():
                    # Without its work thread this consumer would take messages
                    # and never ack them: fail loudly so the supervisor stops.
                    raise RuntimeError(f"work thread of {self.name} died")
                self.heartbeat()
            self._drain_on_stop(connection, channel)
        finally:
            self._channel = None
            self._connection = None
            try:
                if connection.is_open:
                    connection.close()
            except Exception:  # noqa: BLE001 - the connection may already be broken
                pass

    def _drain_on_stop(self, connection, channel) -> None:
        """Stop taking work; let the event in hand finish (and be acked)."""
        try:
            for tag in list(channel.consumer_tags):
                channel.basic_cancel(tag)
        except CONNECTION_ERRORS:
            return
        deadline = time.monotonic() + self.config.stop_timeout_seconds
        while self._busy.is_set() and time.monotonic() < deadline and connection.is_open:
            connection.process_data_events(time_limit=0.2)
        if connection.is_open:
            connection.process_data_events(time_limit=0)
        if self._busy.is_set():
            log.warning("stop deadline passed with an event in hand; the broker will redeliver it",
                        extra={"step": "stop", "status": "requeue", "worker": self.name})

    def _on_message(self, channel, method, properties, body) -> None:
        message_id = properties.message_id if isinstance(properties.message_id, str) else None
        self._work.put(Delivery(channel, method.delivery_tag, body, bool(method.redelivered), message_id))

    def _ack(self, channel, delivery_tag: int) -> None:
        self._answer(channel, "basic_ack", delivery_tag)

    def _ack_through(self, channel, delivery_tag: int) -> None:
        self._answer(channel, "basic_ack", delivery_tag, multiple=True)

    def _nack(self, channel, delivery_tag: int) -> None:
        self._answer(channel, "basic_nack", delivery_tag, requeue=True)

    def _answer(self, channel, verb: str, delivery_tag: int, **options: bool) -> None:
        # Runs on the connection thread. A tag of an earlier channel must not be
        # answered on a new one (the broker would close it); that message is
        # redelivered instead, and the manifest makes it a no-op. A channel
        # lost meanwhile takes the delivery with it, the same way.
        if channel is self._channel and channel.is_open:
            try:
                getattr(channel, verb)(delivery_tag, **options)
            except CONNECTION_ERRORS:
                pass

    # -- work thread ------------------------------------------------------
    def _work_loop(self) -> None:
        ctx = self._context_factory()
        idle_tick = max(0.5, min(IDLE_TICK_SECONDS, self.config.heartbeat_seconds / 3))
        try:
            while True:
                try:
                    delivery = self._work.get(timeout=idle_tick)
                except queue.Empty:
                    # Idle: the dead-letter publisher answers the broker's
                    # heartbeats, so its connection is alive when needed.
                    ctx.publisher.process_events()
                    continue
                if delivery is None or self.stop.is_set():
                    return
                deliveries, last = self._take_more(delivery)
                deliveries = [d for d in deliveries if d.channel is self._channel]  # others: redelivered already
                if deliveries:
                    self._busy.set()
                    try:
                        self._handle_all(ctx, deliveries)
                    except Shutdown:
                        return
                    finally:
                        self._busy.clear()
                if last:
                    return
        finally:
            ctx.close()

    def _take_more(self, first: Delivery) -> tuple[list[Delivery], bool]:
        """``first`` and what else has arrived, up to a group (the prefetch
        bounds how many can have arrived); True when the stop sentinel came
        with them."""
        deliveries = [first]
        while len(deliveries) < group.MAX_EVENTS:
            try:
                more = self._work.get_nowait()
            except queue.Empty:
                break
            if more is None:
                return deliveries, True
            deliveries.append(more)
        return deliveries, False

    def _handle_all(self, ctx: IngestContext, deliveries: list[Delivery]) -> None:
        """Small files among ``deliveries`` together (``group.py``), the rest
        one by one; each message acked once its event is done."""
        settled: set[int] = set()
        if len(deliveries) > 1:
            try:
                group.ingest_group(ctx, [d.body for d in deliveries], lambda index, _: settled.add(index))
            except Exception as exc:  # noqa: BLE001 - the events not done take the single way, with its retries
                ctx.drop_connection()
                log.warning("a group of small files stopped; its events not done are handled one by one",
                            extra={"step": "ingest", "status": "retry", "worker": self.name,
                                   "error": redact_text(str(exc).strip()[:300]) or type(exc).__name__})
            self._ack_settled(deliveries, settled)
        for index, delivery in enumerate(deliveries):
            if index not in settled:
                if self.stop.is_set():
                    return  # unacked: the broker redelivers
                self._handle(ctx, delivery)

    def _ack_settled(self, deliveries: list[Delivery], settled: set[int]) -> None:
        """Ack the deliveries a group ended (committed, or dead-lettered)."""
        through, singles = ack_plan(settled)
        if through is not None:
            self._settle(self._ack_through, deliveries[through])
        for index in singles:
            self._settle(self._ack, deliveries[index])

    def _handle(self, ctx: IngestContext, delivery: Delivery) -> None:
        def transient(exc: BaseException, delay: float) -> None:
            ctx.drop_connection()
            log.warning("transient failure; retrying the event", extra={
                "step": "ingest", "status": "retry", "worker": self.name, "error": str(exc),
                "retry_in_s": round(delay, 2)})
        try:
            keep_trying(lambda: ingest_message(ctx, delivery.body, delivery.redelivered, delivery.message_id),
                        stop=self.stop, errors=(TransientError,), on_retry=transient)
        except Exception:  # noqa: BLE001 - a bug must not kill the worker
            # Not the data's fault and not a known transient error: leave the
            # message unacked for redelivery; the delivery limit dead-letters
            # it if it keeps failing.
            ctx.drop_connection()
            log.exception("unexpected error handling an event; it will be redelivered",
                          extra={"step": "ingest", "status": "error", "worker": self.name})
            self._settle(self._nack, delivery)
            self.stop.wait(1.0)
            return
        self._settle(self._ack, delivery)

    def _settle(self, action, delivery: Delivery) -> None:
        """Hand an ack or nack to the connection thread. A connection that is
        gone takes the delivery with it (the broker redelivers)."""
        connection = self._connection
        if connection is not None:
            try:
                connection.add_callback_threadsafe(functools.partial(action, delivery.channel,
                                                                     delivery.delivery_tag))
            except CONNECTION_ERRORS:
                pass
