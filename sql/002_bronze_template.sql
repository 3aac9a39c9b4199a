-- The template every bronze.<source> table is created from, on first use:
--   CREATE TABLE bronze.<source> (LIKE bronze._template INCLUDING ALL)
-- (see consumers/bronze.py). Each copy gets its own identity sequence.
CREATE TABLE bronze._template (
    -- CACHE: each loading session takes ids 1,000 at a time (gaps are harmless;
    -- one sequence call per row is a measurable part of COPY time).
    id                 bigint GENERATED ALWAYS AS IDENTITY (CACHE 1000) PRIMARY KEY,
    source             text NOT NULL,
    raw_data           jsonb NOT NULL,
    record_number      bigint NOT NULL,
    validation_status  text NOT NULL CHECK (validation_status IN ('valid', 'invalid')),
    validation_errors  jsonb,
    source_timestamp   timestamptz,
    ingested_at        timestamptz NOT NULL DEFAULT now(),
    pipeline_run_id    uuid NOT NULL,
    event_id           uuid,
    file_path          text,
    file_hash          text,
    file_size          bigint,
    api_endpoint       text,
    api_response_code  integer
);
COMMENT ON TABLE bronze._template IS
    'Template of bronze.<source> tables (ingestd); holds no rows.';
