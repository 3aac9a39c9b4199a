"""What a consumer worker carries from event to event, and how an event ended."""
from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg2.extensions

from ingestd.daemon import db, partitions
from ingestd.daemon.broker import Topology
from ingestd.daemon.config import Config, LiveConfig, SourceConfig
from ingestd.daemon.ledger import Ledger
from ingestd.daemon.publishing import Publisher

from .validation import RecordValidator


@dataclass
class Outcome:
    """How an event ended: ``success``, ``skipped`` or ``failure`` (dead-lettered)."""

    status: str
    run_id: uuid.UUID | None
    rows: int = 0
    reason: str | None = None
    message: str = ""
    rows_valid: int = 0
    rows_invalid: int = 0
    bytes_read: int = 0
    # Fields the schema does not declare, first seen in the source by this load.
    new_fields: list[str] = field(default_factory=list)


class IngestContext:
    """What a worker needs to handle events; one per worker thread.

    ``publisher`` dead-letters events (``publishing.Publisher``: in the
    daemon ``broker.Publisher``, made by the worker for its own thread)."""

    def __init__(self, settings: Config | LiveConfig, publisher: Publisher, worker: str) -> None:
        self.settings = settings
        self.publisher = publisher
        self.worker = worker
        config = self.config
        self.database = db.OnDemand(config.database_url, config.connect_timeout_seconds, f"ingestd-{worker}")
        self._validators: dict[str, tuple[SourceConfig, RecordValidator]] = {}
        # Sources whose bronze table is known to exist (after a commit).
        self.tables: set[str] = set()
        # What this worker knows of partitioned bronze tables (daemon/partitions.py).
        self.layouts: dict[str, partitions.Layout] = {}
        # Seam for fault tests: called between COPY and COMMIT.
        self.before_commit: Callable[[], None] | None = None

    @property
    def config(self) -> Config:
        """The configuration now (a live one follows edits of the file)."""
        return self.settings.get() if isinstance(self.settings, LiveConfig) else self.settings

    @property
    def topology(self) -> Topology:
        return self.publisher.topology

    def conn(self) -> psycopg2.extensions.connection:
        return self.database.get()

    def ledger(self) -> Ledger:
        return Ledger(self.database.get())

    def drop_connection(self) -> None:
        self.database.drop()

    def validator(self, source: SourceConfig) -> RecordValidator:
        cached = self._validators.get(source.name)
        if cached is None or cached[0] is not source:  # new, or the config was reloaded
            cached = (source, RecordValidator(source.schema, source.name, source.format_keyword))
            self._validators[source.name] = cached
        return cached[1]

    def close(self) -> None:
        self.drop_connection()
        self.publisher.close()
