-- Indexes for the operator's commands over large ops tables (measured with
-- python -m bench.scale, 1,000,000 runs and 100,000 dead letters):
-- `ingestd status` reads each source's last success and failure and today's
-- rows; `ingestd runs` without a filter reads the newest runs; the waiting
-- dead letters are counted per source.
CREATE INDEX IF NOT EXISTS pipeline_runs_source_status_finished
    ON ops.pipeline_runs (source, status, finished_at DESC);
CREATE INDEX IF NOT EXISTS pipeline_runs_started ON ops.pipeline_runs (started_at DESC);
CREATE INDEX IF NOT EXISTS dead_letters_waiting_source ON ops.dead_letters (source)
    WHERE replayed_at IS NULL AND discarded_at IS NULL;
