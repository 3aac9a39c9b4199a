"""The ledger: every statement that writes the ``ops`` tables, behind one door.

``ops.pipeline_runs`` (one row per run), ``ops.raw_ingest_manifest`` (what
was loaded, by checksum), ``ops.undeclared_fields`` (fields a source's
records hold that its schema does not declare), ``ops.dead_letters`` (what
was parked, and what became of it), ``ops.api_observations`` (what an API
already told us), ``ops.poll_state`` (each API source's cursor) and
``ops.partition_log`` (months made, detached, dropped). The consumer, the
dead-letter recorder, the poller, the ``dlq`` and partition commands and
the reports all go through ``Ledger``; no other module writes the ``ops``
tables (migrations aside: ``db.migrate`` records them in
``ops.schema_migrations``). tests/test_layers_ledger.py holds the code to it.

``Ledger`` is made of one part per seam, each in a module of its own:
``ledger_runs`` (runs), ``ledger_manifest`` (loads), ``ledger_dead_letters``,
``ledger_api`` (API sources), ``ledger_partitions`` (partition maintenance)
and ``ledger_reports`` (reads for reports), on ``ledger_base`` (the
connection, and text made storable). Those modules are the ledger's own:
callers import ``Ledger`` and the records it takes and gives from here.

Methods say whether they commit. Those that do not run inside the caller's
transaction (a load: COPY, manifest and run, one commit). Text written here
may come from anywhere (file names, event bodies, error messages quoting
data): it is made storable first, so that recording a failure cannot fail.
"""
from __future__ import annotations

from .ledger_api import ApiLedger
from .ledger_base import storable, storable_text
from .ledger_dead_letters import DEAD_LETTER_COLUMNS, WAITING, DeadLetter, DeadLetterLedger, Selector
from .ledger_manifest import LoadRecord, ManifestEntry, ManifestLedger
from .ledger_partitions import PartitionLedger
from .ledger_reports import ReportLedger
from .ledger_runs import INTERRUPTED, RUN_COLUMNS, TRIGGERS, FailedRun, RunLedger, RunStart

__all__ = ["DEAD_LETTER_COLUMNS", "INTERRUPTED", "RUN_COLUMNS", "TRIGGERS", "WAITING", "DeadLetter", "FailedRun",
           "Ledger", "LoadRecord", "ManifestEntry", "RunStart", "Selector", "storable", "storable_text"]


class Ledger(RunLedger, ManifestLedger, DeadLetterLedger, ApiLedger, PartitionLedger, ReportLedger):
    """The ``ops`` tables, through one connection."""
