-- The ops schema: run history, the manifest of loaded files, dead letters and
-- the poller's cursors. ops.schema_migrations itself is created by the
-- migration runner (daemon/db.py) before this file is applied.
CREATE SCHEMA IF NOT EXISTS ops;
CREATE SCHEMA IF NOT EXISTS bronze;

CREATE TABLE ops.pipeline_runs (
    run_id         uuid PRIMARY KEY,
    event_id       uuid,
    source         text NOT NULL,
    trigger        text NOT NULL CHECK (trigger IN ('file', 'api', 'replay', 'manual')),
    status         text NOT NULL CHECK (status IN ('running', 'success', 'failure', 'skipped')),
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    rows_total     bigint,
    rows_valid     bigint,
    rows_invalid   bigint,
    error_summary  text,
    reason         text,
    worker         text,
    file_path      text,
    file_size      bigint,
    checksum       text
);
CREATE INDEX pipeline_runs_source_started ON ops.pipeline_runs (source, started_at DESC);
CREATE INDEX pipeline_runs_event ON ops.pipeline_runs (event_id);
CREATE INDEX pipeline_runs_status_started ON ops.pipeline_runs (status, started_at DESC);

CREATE TABLE ops.raw_ingest_manifest (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source           text NOT NULL,
    source_filename  text NOT NULL,
    checksum         text NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    size_bytes       bigint NOT NULL,
    row_count        bigint NOT NULL,
    status           text NOT NULL DEFAULT 'loaded',
    ingested_at      timestamptz NOT NULL DEFAULT now(),
    run_id           uuid NOT NULL REFERENCES ops.pipeline_runs (run_id),
    event_id         uuid,
    UNIQUE (source, checksum)
);
CREATE INDEX raw_ingest_manifest_event ON ops.raw_ingest_manifest (event_id);

CREATE TABLE ops.dead_letters (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id          uuid,
    source            text,
    reason            text NOT NULL,
    error             text NOT NULL,
    detail            jsonb NOT NULL DEFAULT '{}'::jsonb,
    event             jsonb,
    run_id            uuid,
    file_path         text,
    dead_lettered_at  timestamptz NOT NULL DEFAULT now(),
    replayed_at       timestamptz,
    replay_count      integer NOT NULL DEFAULT 0,
    discarded_at      timestamptz,
    note              text
);
CREATE INDEX dead_letters_waiting ON ops.dead_letters (dead_lettered_at)
    WHERE replayed_at IS NULL AND discarded_at IS NULL;
CREATE INDEX dead_letters_source_reason ON ops.dead_letters (source, reason);

CREATE TABLE ops.poll_state (
    source          text PRIMARY KEY,
    cursor          jsonb NOT NULL DEFAULT '{}'::jsonb,
    last_polled_at  timestamptz,
    last_status     text,
    next_poll_at    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
