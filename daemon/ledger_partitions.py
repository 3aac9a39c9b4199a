"""The ledger's part in partition maintenance: ``ops.partition_log`` (months
made, detached, dropped; tables migrated), and the loads whose rows a
dropped month took (``ops.raw_ingest_manifest``: ``expired``).

Part of the ledger: callers use ``ledger.Ledger``.
"""
from __future__ import annotations

from datetime import datetime

from psycopg2 import sql

from .ledger_base import LedgerBase


class PartitionLedger(LedgerBase):
    """What partition maintenance records."""

    def expire_loads(self, source: str, partition: str) -> int:
        """Before retention drops ``bronze.<partition>`` (detached, in the
        drop's transaction): count its rows against the loads they came
        from; a load whose rows are then all gone becomes ``expired``, with
        when and this partition. How many did (no commit)."""
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL(
                "WITH gone AS (SELECT pipeline_run_id AS run_id, file_hash AS checksum, count(*) AS n FROM {}"
                " GROUP BY 1, 2), done AS (UPDATE ops.raw_ingest_manifest m"
                " SET rows_expired = least(m.row_count, m.rows_expired + g.n),"
                " status = CASE WHEN m.rows_expired + g.n >= m.row_count THEN 'expired' ELSE 'loaded' END,"
                " expired_at = CASE WHEN m.rows_expired + g.n >= m.row_count THEN now() END,"
                " expired_partition = CASE WHEN m.rows_expired + g.n >= m.row_count THEN %s END"
                " FROM gone g WHERE m.source = %s AND m.checksum = g.checksum AND m.run_id = g.run_id"
                " AND m.status = 'loaded' RETURNING m.status)"
                " SELECT count(*) FROM done WHERE status = 'expired'").format(
                    sql.Identifier("bronze", partition)), (partition, source))
            return int(cur.fetchone()[0])

    def record_partition(self, source: str, partition: str, action: str, lower: datetime | None,
                         upper: datetime | None, by: str, rows: int | None = None, size: int | None = None) -> None:
        """A month made, detached or dropped, or a table migrated
        (``action``), as a row of ``ops.partition_log`` (no commit)."""
        self._run("INSERT INTO ops.partition_log (source, partition, action, range_from, range_to, rows, bytes,"
                  " by_whom) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                  (source, partition, action, lower, upper, rows, size, by))
