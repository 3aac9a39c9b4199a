-- What happened to bronze partitions (daemon/partitions.py): each month made
-- (ahead of time, on demand in a load, or by `ingestd partitions migrate`)
-- and each month dropped by retention, with its rows and size when it went
-- ('detached' first: a month detached but not yet dropped is finished by
-- the next maintenance).
CREATE TABLE IF NOT EXISTS ops.partition_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    source      text NOT NULL,
    partition   text NOT NULL,
    action      text NOT NULL CHECK (action IN ('created', 'detached', 'dropped', 'migrated')),
    range_from  timestamptz,
    range_to    timestamptz,
    rows        bigint,
    bytes       bigint,
    by_whom     text NOT NULL
);
CREATE INDEX IF NOT EXISTS partition_log_source_at ON ops.partition_log (source, at DESC);
