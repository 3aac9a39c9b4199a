-- Retention and the manifest (daemon/partitions.py, daemon/ledger.py). When
-- retention drops a bronze month, each load with rows in it counts them in
-- rows_expired; a load whose rows are all gone becomes 'expired', with when
-- and the partition that took its last rows. The same bytes dropped again
-- then load anew (a new 'loaded' row); a load with rows still in bronze stays
-- 'loaded', so that no row is ever in bronze twice. The manifest stays unique
-- on (source, checksum) among the loads whose rows bronze holds.
ALTER TABLE ops.raw_ingest_manifest
    ADD COLUMN rows_expired bigint NOT NULL DEFAULT 0,
    ADD COLUMN expired_at timestamptz,
    ADD COLUMN expired_partition text,
    ADD CONSTRAINT raw_ingest_manifest_status CHECK (status IN ('loaded', 'expired')),
    ADD CONSTRAINT raw_ingest_manifest_rows_expired CHECK (rows_expired BETWEEN 0 AND row_count),
    ADD CONSTRAINT raw_ingest_manifest_expired CHECK (
        (status = 'expired') = (expired_at IS NOT NULL)
        AND (expired_at IS NULL) = (expired_partition IS NULL)
        AND (status = 'loaded' OR rows_expired = row_count));

CREATE UNIQUE INDEX raw_ingest_manifest_loaded ON ops.raw_ingest_manifest (source, checksum)
    WHERE status = 'loaded';
ALTER TABLE ops.raw_ingest_manifest DROP CONSTRAINT raw_ingest_manifest_source_checksum_key;
CREATE INDEX raw_ingest_manifest_expired ON ops.raw_ingest_manifest (source, checksum)
    WHERE status = 'expired';
