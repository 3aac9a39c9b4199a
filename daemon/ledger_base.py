"""The ledger's common ground: one connection, statements run on it, text made storable.

The ledger's parts (``ledger_runs``, ``ledger_manifest``, ``ledger_dead_letters``,
``ledger_api``, ``ledger_partitions``, ``ledger_reports``) build on ``LedgerBase``;
callers use ``ledger.Ledger``, which is all of them.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg2.extensions

from . import landing
from .db import lock_key


def storable_text(value: str | None) -> str | None:
    """``value`` with U+0000 and lone surrogates shown as escapes."""
    return None if value is None else landing.storable_text(value)


def storable(value: Any) -> Any:
    """A JSON value with every string (keys too) made storable."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_text(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable(v) for v in value]
    return value


class LedgerBase:
    """One connection to the ``ops`` tables, and the ways statements run on it."""

    def __init__(self, conn: psycopg2.extensions.connection) -> None:
        self.conn = conn

    def _one(self, statement: str, params: Iterable[Any] = ()) -> tuple | None:
        with self.conn.cursor() as cur:
            cur.execute(statement, tuple(params))
            return cur.fetchone() if cur.description else None

    def _all(self, statement: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(statement, tuple(params))
            return cur.fetchall()

    def _run(self, statement: str, params: Iterable[Any] = ()) -> None:
        with self.conn.cursor() as cur:
            cur.execute(statement, tuple(params))

    def lock(self, *name: str) -> None:
        """Hold a lock named ``name`` until the transaction ends."""
        self._run("SELECT pg_advisory_xact_lock(%s)", (lock_key(*name),))
