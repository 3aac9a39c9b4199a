"""The ledger's reads for reports (``ingestd status``, health, metrics): per
source, runs, records checked and fields undeclared. Reads only.

Part of the ledger: callers use ``ledger.Ledger``.
"""
from __future__ import annotations

from typing import Any

from .ledger_base import LedgerBase
from .ledger_dead_letters import WAITING


class ReportLedger(LedgerBase):
    """Reads for reports: what ran, per source."""

    def is_migrated(self) -> bool:
        row = self._one("SELECT to_regclass('ops.pipeline_runs') IS NOT NULL")
        return bool(row and row[0])

    def last_successes(self, configured: list[str]) -> dict[str, float]:
        """Unix time of each configured source's last successful run, where it has one."""
        rows = self._all("SELECT n.source, extract(epoch FROM (SELECT max(finished_at) FROM ops.pipeline_runs r"
                         " WHERE r.source = n.source AND status = 'success'))::float8"
                         " FROM unnest(%s::text[]) AS n(source)", (configured,))
        return {source: when for source, when in rows if when is not None}

    def source_summaries(self, configured: list[str]) -> list[dict[str, Any]]:
        """Per source (configured, run in the last week, or with waiting dead
        letters): last success and failure, rows today, dead letters waiting."""
        # The sources that ran are found by skipping through the (source, …)
        # index, one probe a source, rather than by reading a week of runs.
        rows = self._all(f"""
            WITH RECURSIVE ran(source) AS (
                (SELECT source FROM ops.pipeline_runs ORDER BY source LIMIT 1)
                UNION ALL
                SELECT (SELECT r.source FROM ops.pipeline_runs r WHERE r.source > ran.source ORDER BY r.source
                        LIMIT 1)
                FROM ran WHERE ran.source IS NOT NULL),
            names AS (
                SELECT unnest(%s::text[]) AS source
                UNION SELECT ran.source FROM ran WHERE ran.source IS NOT NULL AND EXISTS (
                    SELECT 1 FROM ops.pipeline_runs r WHERE r.source = ran.source
                    AND r.started_at > now() - interval '7 days')
                UNION SELECT DISTINCT source FROM ops.dead_letters WHERE source IS NOT NULL AND {WAITING})
            SELECT n.source,
                (SELECT max(finished_at) FROM ops.pipeline_runs r WHERE r.source = n.source AND status = 'success'),
                (SELECT max(finished_at) FROM ops.pipeline_runs r WHERE r.source = n.source AND status = 'failure'),
                (SELECT coalesce(sum(rows_total), 0) FROM ops.pipeline_runs r WHERE r.source = n.source
                    AND status = 'success' AND finished_at >= date_trunc('day', now())),
                (SELECT count(*) FROM ops.dead_letters d WHERE d.source = n.source AND {WAITING})
            FROM names n ORDER BY n.source""", (configured,))
        return [{"source": name, "configured": name in configured, "last_success": ok, "last_failure": fail,
                 "rows_today": int(rows_today), "dead_letters_waiting": waiting}
                for name, ok, fail, rows_today, waiting in rows]

    def source_quality(self, names: list[str], fields_shown: int = 5) -> dict[str, dict[str, Any]]:
        """Per source: records checked and invalid in runs started in the
        last hour and the last day (loads, and files refused as
        ``schema_rejected``), and the fields its records held that its schema
        does not declare: how many in all, and the first ``fields_shown`` of
        those first seen in the last day."""
        rows = self._all("""
            SELECT n.source, h.checked, h.invalid, d.checked, d.invalid,
                (SELECT count(*) FROM ops.undeclared_fields u WHERE u.source = n.source),
                (SELECT count(*) FROM ops.undeclared_fields u WHERE u.source = n.source
                    AND u.first_seen_at > now() - interval '1 day'),
                ARRAY(SELECT u.field FROM ops.undeclared_fields u WHERE u.source = n.source
                    AND u.first_seen_at > now() - interval '1 day' ORDER BY u.first_seen_at DESC, u.field
                    LIMIT %s)
            FROM unnest(%s::text[]) AS n(source)
            CROSS JOIN LATERAL (
                SELECT coalesce(sum(coalesce(r.rows_valid, 0) + coalesce(r.rows_invalid, 0)), 0),
                       coalesce(sum(r.rows_invalid), 0)
                FROM ops.pipeline_runs r WHERE r.source = n.source AND r.started_at > now() - interval '1 hour'
                AND r.status IN ('success', 'failure')) AS h(checked, invalid)
            CROSS JOIN LATERAL (
                SELECT coalesce(sum(coalesce(r.rows_valid, 0) + coalesce(r.rows_invalid, 0)), 0),
                       coalesce(sum(r.rows_invalid), 0)
                FROM ops.pipeline_runs r WHERE r.source = n.source AND r.started_at > now() - interval '1 day'
                AND r.status IN ('success', 'failure')) AS d(checked, invalid)""", (fields_shown, names))
        return {name: {"last_hour": {"checked": int(hc), "invalid": int(hi)},
                       "last_day": {"checked": int(dc), "invalid": int(di)},
                       "undeclared_fields": int(total), "undeclared_new_today": int(new),
                       "undeclared_new_today_names": list(shown)}
                for name, hc, hi, dc, di, total, new, shown in rows}
