-- What each run's records said about their quality (consumers/quality.py):
-- the share missing each required field, the most frequent failures, and
-- schema drift (fields the schema does not declare, declared ones never
-- seen). A nullable column without a default: added without rewriting the
-- table, and NULL for the runs before it.
ALTER TABLE ops.pipeline_runs ADD COLUMN IF NOT EXISTS quality jsonb;

-- Each field a source's records held that its schema does not declare, from
-- the first run that loaded it: a field new here is what the alert on new
-- undeclared fields counts (ingestd_undeclared_fields_new_total).
CREATE TABLE IF NOT EXISTS ops.undeclared_fields (
    source         text NOT NULL,
    field          text NOT NULL,
    first_run      uuid NOT NULL,
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, field)
);
