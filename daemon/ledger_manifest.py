"""The ledger's manifest: ``ops.raw_ingest_manifest``, what was loaded, by checksum.

A load done is recorded in one statement: its manifest row, its run a
success, and the fields its schema does not declare (``ops.undeclared_fields``).
Part of the ledger: callers use ``ledger.Ledger``.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from psycopg2.extras import Json

from .db import lock_key
from .ledger_base import LedgerBase, storable, storable_text


@dataclass(frozen=True)
class ManifestEntry:
    source: str
    source_filename: str
    checksum: str
    size_bytes: int
    row_count: int
    run_id: uuid.UUID
    event_id: str | None


# A load done, as recorded: its manifest row, valid and invalid record
# counts, the run's remarks, and its records' quality (consumers/quality.py).
LoadRecord = tuple[ManifestEntry, int, int, str | None, dict[str, Any] | None]


class ManifestLedger(LedgerBase):
    """Loads: recorded, claimed, and looked up by event or by bytes."""

    def record_loads(self, loads: list[LoadRecord]) -> dict[uuid.UUID, list[str]]:
        """Loads done: their manifest rows, their runs a success, and the
        fields their schemas do not declare. No commit; one round trip
        however many (the values quoted by psycopg2, as parameters). Returns,
        per run, the undeclared fields its source had never held before."""
        with self.conn.cursor() as cur:
            manifest = b", ".join(cur.mogrify(
                "(%s, %s, %s, %s, %s, %s, %s)",
                (e.source, storable_text(e.source_filename), e.checksum, e.size_bytes, e.row_count, e.run_id,
                 e.event_id)) for e, _, _, _, _ in loads)
            runs = b", ".join(cur.mogrify(
                "(%s::uuid, %s::bigint, %s::bigint, %s::bigint, %s::text, %s::text, %s::jsonb)",
                (e.run_id, e.row_count, valid, invalid, storable_text(remarks), e.checksum,
                 None if quality is None else Json(storable(quality))))
                for e, valid, invalid, remarks, quality in loads)
            # In one order, so that two loads adding the same fields cannot deadlock; a field that
            # several of these loads hold is first seen in the first of them (rows after it conflict).
            fields = [cur.mogrify("(%s, %s, %s::uuid)", (source, name, run_id)) for source, name, _, run_id in sorted(
                {(e.source, storable_text(name), n, e.run_id) for n, (e, _, _, _, quality) in enumerate(loads)
                 for name in (quality or {}).get("undeclared_fields", ())}, key=lambda item: item[:3])]
            # Last, so that its rows are what the cursor holds.
            new_fields = (b"; INSERT INTO ops.undeclared_fields (source, field, first_run) VALUES "
                          + b", ".join(fields) + b" ON CONFLICT DO NOTHING RETURNING first_run, field"
                          if fields else b"")
            cur.execute(b"INSERT INTO ops.raw_ingest_manifest (source, source_filename, checksum, size_bytes,"
                        b" row_count, run_id, event_id) VALUES " + manifest + b";"
                        b" UPDATE ops.pipeline_runs r SET status = 'success', finished_at = clock_timestamp(),"
                        b" rows_total = v.total, rows_valid = v.valid, rows_invalid = v.invalid,"
                        b" error_summary = v.remarks, checksum = v.checksum, quality = v.quality"
                        b" FROM (VALUES " + runs + b") AS v(run_id, total, valid, invalid, remarks, checksum,"
                        b" quality) WHERE r.run_id = v.run_id" + new_fields)
            found: dict[uuid.UUID, list[str]] = {}
            for run_id, name in (cur.fetchall() if fields else ()):
                found.setdefault(uuid.UUID(str(run_id)), []).append(name)
            return found

    def loaded_event(self, event_id: str) -> dict[str, Any] | None:
        """The manifest row of an event already loaded; ends the transaction,
        so that none stays open while the input is read."""
        row = self._one("SELECT run_id, source_filename, checksum FROM ops.raw_ingest_manifest WHERE event_id = %s",
                        (event_id,))
        self.conn.rollback()
        return None if row is None else {"run_id": row[0], "source_filename": row[1], "checksum": row[2]}

    def loaded_events(self, event_ids: list[str]) -> set[str]:
        """Which of these events are loaded already; ends the transaction."""
        rows = self._all("SELECT event_id::text FROM ops.raw_ingest_manifest WHERE event_id = ANY(%s::uuid[])",
                         (event_ids,))
        self.conn.rollback()
        return {row[0] for row in rows}

    def claim(self, loads: list[tuple[str, str]]) -> list[bool]:
        """For a group's loads, as ``(source, checksum)``: take each one's
        dedup lock without waiting, in one statement. True where the lock
        was free and the bytes are not in the manifest (neither loaded nor
        expired: a load again after retention takes the single way, which
        says so); the locks are held until the transaction ends. A group
        never waits on another worker, so two groups cannot deadlock."""
        if not loads:
            return []
        rows = self._all(
            "SELECT pg_try_advisory_xact_lock(t.k) AND NOT EXISTS (SELECT 1 FROM ops.raw_ingest_manifest m"
            " WHERE m.source = t.s AND m.checksum = t.c AND m.status = 'loaded') AND NOT EXISTS (SELECT 1"
            " FROM ops.raw_ingest_manifest m WHERE m.source = t.s AND m.checksum = t.c AND m.status = 'expired')"
            " FROM unnest(%s::bigint[], %s::text[], %s::text[]) WITH ORDINALITY AS t(k, s, c, n) ORDER BY t.n",
            ([lock_key(source, checksum) for source, checksum in loads], [source for source, _ in loads],
             [checksum for _, checksum in loads]))
        return [bool(row[0]) for row in rows]

    def loaded_bytes(self, source: str, checksum: str) -> dict[str, Any] | None:
        """The manifest row of the same bytes loaded into ``source``: the one
        whose rows bronze holds, all or some (``status`` 'loaded'), else the
        latest whose rows retention dropped ('expired'); None when never
        loaded (no commit)."""
        keys = ("status", "run_id", "source_filename", "ingested_at", "row_count", "rows_expired", "expired_at",
                "expired_partition")
        columns = ", ".join(keys)
        row = self._one(f"(SELECT {columns} FROM ops.raw_ingest_manifest WHERE source = %s AND checksum = %s"
                        " AND status = 'loaded') UNION ALL"
                        f" (SELECT {columns} FROM ops.raw_ingest_manifest WHERE source = %s AND checksum = %s"
                        " AND status = 'expired' ORDER BY expired_at DESC LIMIT 1) LIMIT 1",
                        (source, checksum, source, checksum))
        return None if row is None else dict(zip(keys, row, strict=True))
