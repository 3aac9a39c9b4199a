-- Observations of API sources already in bronze, by the provider's identity
-- of a record (FRED: series and date; Valet: date) and a fingerprint of its
-- values. A poll with a look-back window answers many observations again:
-- the unchanged ones are not loaded twice, a revised one (new fingerprint) is
-- a new bronze row, so bronze keeps the history of revisions.
CREATE TABLE ops.api_observations (
    source         text NOT NULL,
    record_key     text NOT NULL,
    fingerprint    text NOT NULL,
    run_id         uuid NOT NULL,
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, record_key, fingerprint)
);
