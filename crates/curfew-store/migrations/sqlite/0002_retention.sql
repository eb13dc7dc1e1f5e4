-- Retention (see src/lib.rs, "Retention"): finished jobs are deleted by
-- state and age in bounded batches. This index walks exactly the finished
-- rows of one state, oldest first, so a batch reads only what it deletes.
-- `finished_at` is set exactly in the finished states (succeeded, cancelled,
-- dead; a retry clears it). The predicate is `IS NOT NULL` rather than a
-- list of states because SQLite's planner can prove only that one from the
-- prune's `finished_at < ?` (it never uses a partial index on a state
-- list for `state = '…'`).
-- Keep in step with migrations/postgres/0002_retention.sql.
CREATE INDEX jobs_finished ON jobs (state, finished_at)
    WHERE finished_at IS NOT NULL;
