"""The ledger's dead letters: ``ops.dead_letters``, what was parked and what became of it.

Part of the ledger: callers use ``ledger.Ledger``.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg2.extras import Json

from .errors import REASONS
from .ledger_base import LedgerBase, storable, storable_text

# A dead letter still waiting for an operator: neither replayed nor discarded.
WAITING = "replayed_at IS NULL AND discarded_at IS NULL"
DEAD_LETTER_COLUMNS = ("id", "event_id", "source", "reason", "error", "detail", "event", "run_id", "file_path",
                       "dead_lettered_at", "replayed_at", "replay_count", "discarded_at", "note")


@dataclass
class DeadLetter:
    id: int
    event_id: str | None
    source: str | None
    reason: str
    error: str
    detail: dict[str, Any]
    event: Any
    run_id: str | None
    file_path: str | None
    dead_lettered_at: datetime
    replayed_at: datetime | None
    replay_count: int
    discarded_at: datetime | None
    note: str | None

    @property
    def state(self) -> str:
        if self.discarded_at:
            return "discarded"
        return "replayed" if self.replayed_at else "waiting"

    def as_json(self) -> dict[str, Any]:
        out = {c: getattr(self, c) for c in DEAD_LETTER_COLUMNS}
        for key in ("event_id", "run_id"):
            out[key] = None if out[key] is None else str(out[key])
        for key in ("dead_lettered_at", "replayed_at", "discarded_at"):
            out[key] = out[key].isoformat() if out[key] else None
        out["state"] = self.state
        return out


@dataclass
class Selector:
    """Which dead letters an operation applies to. Values are SQL parameters."""

    ids: list[int] | None = None
    source: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    include_replayed: bool = False
    include_discarded: bool = False

    def __post_init__(self) -> None:
        if self.reason is not None and self.reason not in REASONS:
            raise ValueError(f"unknown reason {self.reason!r}; one of: {', '.join(REASONS)}")

    @property
    def is_empty(self) -> bool:
        return not (self.ids or self.source or self.reason or self.since or self.until)

    def where(self) -> tuple[str, list[Any]]:
        tests = (("id = ANY(%s)", list(self.ids) if self.ids else None), ("source = %s", self.source),
                 ("reason = %s", self.reason), ("dead_lettered_at >= %s", self.since),
                 ("dead_lettered_at < %s", self.until))
        clauses = [clause for clause, value in tests if value]
        params = [value for _, value in tests if value]
        if not self.include_replayed:
            clauses.append("replayed_at IS NULL")
        if not self.include_discarded:
            clauses.append("discarded_at IS NULL")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


class DeadLetterLedger(LedgerBase):
    """Dead letters: added, looked up, replayed or discarded."""

    def add_dead_letter(self, *, event_id: str | None, source: str | None, reason: str, error: str,
                        detail: dict[str, Any], event: Any, run_id: uuid.UUID | None, file_path: str | None,
                        replay_count: int = 0) -> int:
        """Insert a dead letter (no commit); returns its id."""
        row = self._one(
            "INSERT INTO ops.dead_letters (event_id, source, reason, error, detail, event, run_id, file_path,"
            " replay_count) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (event_id, storable_text(source), reason, storable_text(error), Json(storable(detail)),
             Json(storable(event)), run_id, storable_text(file_path), replay_count))
        assert row is not None
        return row[0]

    def waiting_dead_letter(self, event_id: str, replay_count: int) -> dict[str, Any] | None:
        """The waiting dead letter of this delivery of an event (same replay),
        if an earlier delivery of the same message already recorded one."""
        row = self._one(f"SELECT id, file_path FROM ops.dead_letters WHERE event_id = %s AND replay_count = %s"
                        f" AND {WAITING} ORDER BY id DESC LIMIT 1", (event_id, replay_count))
        return None if row is None else {"id": row[0], "file_path": row[1]}

    def next_replay_count(self, event_id: str) -> int:
        """The replay count of a new failure of ``event_id``: one more than
        its last replayed dead letter, 0 when none was replayed (no commit)."""
        row = self._one("SELECT max(replay_count) + 1 FROM ops.dead_letters WHERE event_id = %s"
                        " AND replayed_at IS NOT NULL", (event_id,))
        return row[0] if row and row[0] is not None else 0

    def replayed_from_quarantine(self, event_id: str, file_path: str, replay_count: int) -> bool:
        """True when an earlier dead letter of this event holds ``file_path``
        in quarantine and was replayed, the replay before ``replay_count``:
        the file that a failed replay carries on (no commit)."""
        row = self._one("SELECT 1 FROM ops.dead_letters WHERE event_id = %s AND file_path = %s"
                        " AND replay_count = %s AND replayed_at IS NOT NULL LIMIT 1",
                        (event_id, storable_text(file_path), replay_count - 1))
        return row is not None

    def note_file_moved(self, dead_letter_id: int, relative: str | None, error: str | None) -> None:
        """Where a dead letter's file went (quarantine), or why it stayed; commits."""
        self._run("UPDATE ops.dead_letters SET file_path = COALESCE(%s, file_path), detail = detail || %s::jsonb"
                  " WHERE id = %s", (storable_text(relative),
                                     json.dumps({"quarantine_error": storable_text(error)} if error else {}),
                                     dead_letter_id))
        self.conn.commit()

    def dead_letters(self, selector: Selector, limit: int | None = None) -> list[DeadLetter]:
        where, params = selector.where()
        rows = self._all(f"SELECT {', '.join(DEAD_LETTER_COLUMNS)} FROM ops.dead_letters{where} ORDER BY id"
                         + (" LIMIT %s" if limit else ""), params + ([limit] if limit else []))
        return [DeadLetter(*row) for row in rows]

    def dead_letter_history(self, event_id: str) -> list[DeadLetter]:
        """Every dead letter of one event: the first failure and each failed replay."""
        rows = self._all(f"SELECT {', '.join(DEAD_LETTER_COLUMNS)} FROM ops.dead_letters WHERE event_id = %s"
                         " ORDER BY id", (event_id,))
        return [DeadLetter(*row) for row in rows]

    def waiting_by_source_reason(self) -> dict[tuple[str | None, str], int]:
        """Dead letters waiting, counted per (source, reason)."""
        return {(source, reason): count for source, reason, count in self._all(
            f"SELECT source, reason, count(*) FROM ops.dead_letters WHERE {WAITING} GROUP BY source, reason")}

    def waiting_count(self) -> int:
        row = self._one(f"SELECT count(*) FROM ops.dead_letters WHERE {WAITING}")
        return row[0] if row else 0

    def mark_replayed(self, dead_letter_id: int) -> bool:
        """Stamp a waiting dead letter replayed; False when it no longer waits. Commits."""
        row = self._one(f"UPDATE ops.dead_letters SET replayed_at = now() WHERE id = %s AND {WAITING} RETURNING id",
                        (dead_letter_id,))
        self.conn.commit()
        return row is not None

    def unmark_replayed(self, dead_letter_id: int) -> None:
        """Take a replay stamp back (its publish failed); commits."""
        self._run("UPDATE ops.dead_letters SET replayed_at = NULL WHERE id = %s", (dead_letter_id,))
        self.conn.commit()

    def mark_discarded(self, dead_letter_id: int, note: str | None) -> bool:
        """Stamp a waiting dead letter discarded; False when it no longer waits. Commits."""
        row = self._one(f"UPDATE ops.dead_letters SET discarded_at = now(), note = %s WHERE id = %s AND {WAITING}"
                        " RETURNING id", (storable_text(note), dead_letter_id))
        self.conn.commit()
        return row is not None

    def settled_messages(self, event_ids: list[str]) -> set[tuple[str, int]]:
        """(event id, replay count) of dead messages no dead letter waits for."""
        rows = self._all(f"SELECT event_id::text, replay_count, bool_or({WAITING}) FROM ops.dead_letters"
                         " WHERE event_id = ANY(%s::uuid[]) GROUP BY 1, 2", (event_ids,))
        self.conn.commit()
        return {(event_id, count) for event_id, count, waiting in rows if not waiting}
