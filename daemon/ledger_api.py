"""The ledger's API sources: ``ops.api_observations`` (what an API already
told us) and ``ops.poll_state`` (each API source's cursor).

Part of the ledger: callers use ``ledger.Ledger``.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import psycopg2.extras
from psycopg2.extras import Json

from .ledger_base import LedgerBase, storable_text


class ApiLedger(LedgerBase):
    """API sources: observations already loaded, and where each poll stands."""

    def seen_observations(self, source: str, keys: list[str]) -> set[tuple[str, str]]:
        """(record key, fingerprint) of the observations of ``source`` already
        loaded, among ``keys``; holds the source's observation lock until the
        transaction ends, so two loads of one source do not both take one."""
        self.lock("observations", source)
        rows = self._all("SELECT record_key, fingerprint FROM ops.api_observations WHERE source = %s"
                         " AND record_key = ANY(%s)", (source, keys))
        return {(key, fingerprint) for key, fingerprint in rows}

    def add_observations(self, source: str, run_id: uuid.UUID, observations: list[tuple[str, str]]) -> None:
        if not observations:
            return
        with self.conn.cursor() as cur:
            psycopg2.extras.execute_values(
                cur, "INSERT INTO ops.api_observations (source, record_key, fingerprint, run_id) VALUES %s"
                " ON CONFLICT DO NOTHING", [(source, key, fingerprint, run_id) for key, fingerprint in observations])

    def poll_state(self, source: str) -> tuple[dict[str, Any], datetime | None, str | None]:
        """(cursor, next poll, last status) of an API source."""
        row = self._one("SELECT cursor, next_poll_at, last_status FROM ops.poll_state WHERE source = %s", (source,))
        return (row[0], row[1], row[2]) if row else ({}, None, None)

    def save_poll_state(self, source: str, cursor: dict[str, Any], status: str, next_poll: datetime) -> None:
        self._run("INSERT INTO ops.poll_state (source, cursor, last_polled_at, last_status, next_poll_at, updated_at)"
                  " VALUES (%s, %s, now(), %s, %s, now()) ON CONFLICT (source) DO UPDATE SET cursor = EXCLUDED.cursor,"
                  " last_polled_at = now(), last_status = EXCLUDED.last_status,"
                  " next_poll_at = EXCLUDED.next_poll_at, updated_at = now()",
                  (source, Json(cursor), storable_text(status[:500]), next_poll))

    def poll_states(self) -> list[dict[str, Any]]:
        rows = self._all("SELECT source, next_poll_at, last_polled_at, last_status FROM ops.poll_state ORDER BY 1")
        return [{"source": s, "next_poll_at": n, "last_polled_at": p, "last_status": st} for s, n, p, st in rows]
