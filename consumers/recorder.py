"""The dead-letter recorder: keeps ``ops.dead_letters`` in step with ``ingest.dead``.

It consumes ``ingest.dead.audit`` (a copy of every dead message) and records
the ones the broker dead-lettered itself, so that ``ingestd dlq list`` shows
every message the dead-letter queue holds. It runs beside the consumers.
"""
from __future__ import annotations

import logging
import threading

import psycopg2

from ingestd.daemon import db
from ingestd.daemon.backoff import keep_trying
from ingestd.daemon.broker import CONNECTION_ERRORS, Topology, open_connection
from ingestd.daemon.config import Config
from ingestd.daemon.errors import Shutdown, TransientError
from ingestd.daemon.ledger import Ledger

from .dead_letter import record_broker_dead_letter, record_unrecorded_dead_message

log = logging.getLogger(__name__)


class DeadLetterRecorder:
    def __init__(self, config: Config, stop: threading.Event, name: str = "recorder") -> None:
        self.config = config
        self.stop = stop
        self.name = name
        self.topology = Topology.for_config(config)
        self.database = db.OnDemand(config.database_url, config.connect_timeout_seconds, f"ingestd-{name}")

    def run(self) -> None:
        def interrupted(exc: BaseException, delay: float) -> None:
            self.database.drop()
            log.warning("dead-letter recorder interrupted; retrying", extra={
                "step": "record_dead_letter", "status": "retry", "error": str(exc) or type(exc).__name__,
                "retry_in_s": round(delay, 2)})
        try:
            keep_trying(self._consume, stop=self.stop, errors=(TransientError, psycopg2.Error, *CONNECTION_ERRORS),
                        on_retry=interrupted)
        except Shutdown:
            pass
        finally:
            self.database.drop()

    def _consume(self) -> None:
        connection = open_connection(self.config.amqp_url, self.config.heartbeat_seconds,
                                     self.topology.connection_name(self.name))
        try:
            channel = connection.channel()
            self.topology.declare(channel)
            channel.basic_qos(prefetch_count=10)
            for method, properties, body in channel.consume(self.topology.dead_audit_queue, inactivity_timeout=0.5):
                if self.stop.is_set():
                    break
                if method is None:
                    continue
                self._record(properties, body)
                channel.basic_ack(method.delivery_tag)
            channel.cancel()
        finally:
            if connection.is_open:
                connection.close()

    def _record(self, properties, body: bytes) -> None:
        ledger = Ledger(self.database.get())
        try:
            record_broker_dead_letter(ledger, self.config.landing_dir, properties.message_id, properties.headers,
                                      body, self.name, self.topology.events_queue)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            raise  # database gone: reconnect, the message comes back
        except Exception as exc:  # noqa: BLE001 - one odd message must not stop the recorder
            # Recorded all the same, with an excerpt of its body, so
            # that `ingestd dlq list` shows every dead message.
            log.exception("could not record a dead message in full; recording an excerpt", extra={
                "step": "record_dead_letter", "status": "error", "event_id": properties.message_id})
            record_unrecorded_dead_message(ledger, properties.message_id, body, self.name,
                                           f"{type(exc).__name__}: {exc}")
