-- curfew job store, SQLite. Timestamps are unix milliseconds (INTEGER), ids
-- INTEGER. See src/jobs/mod.rs for the states and the invariants these
-- constraints enforce. Keep this file in step with
-- migrations/postgres/0001_create_jobs.sql (same columns, same meaning).

CREATE TABLE jobs (
    -- AUTOINCREMENT: an id is never reused after a delete, so a stale
    -- reference (a log line, an HTTP client) can never name another job.
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    queue            TEXT    NOT NULL
        CHECK (length(queue) BETWEEN 1 AND 200 AND queue NOT GLOB '*[^A-Za-z0-9_.:-]*'),
    kind             TEXT    NOT NULL
        CHECK (length(kind) BETWEEN 1 AND 200 AND kind NOT GLOB '*[^A-Za-z0-9_.:-]*'),
    payload          TEXT    NOT NULL CHECK (json_valid(payload)),
    priority         INTEGER NOT NULL DEFAULT 0,
    run_at           INTEGER NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts     INTEGER NOT NULL DEFAULT 20 CHECK (max_attempts >= 1),
    state            TEXT    NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled')),
    lease_owner      TEXT,
    lease_token      TEXT,
    lease_expires_at INTEGER,
    crashes          INTEGER NOT NULL DEFAULT 0 CHECK (crashes >= 0),
    releases         INTEGER NOT NULL DEFAULT 0 CHECK (releases >= 0),
    last_error       TEXT,
    idempotency_key  TEXT    UNIQUE,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    -- A lease exists exactly while the job runs.
    CONSTRAINT jobs_lease_iff_running CHECK (
        (state = 'running') = (lease_owner IS NOT NULL AND lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)
    )
) STRICT;

-- The general index in claim order (also serves stats and lookups by state,
-- e.g. the running jobs for rescue).
CREATE INDEX jobs_state_queue_priority_run_at_id ON jobs (state, queue, priority, run_at, id);

-- Claim: walked in exactly the claim order, holding only claimable rows.
CREATE INDEX jobs_claim ON jobs (queue, priority, run_at, id)
    WHERE state IN ('queued', 'failed');

-- next_run_at: the earliest run_at of a queue's waiting jobs.
CREATE INDEX jobs_next_run ON jobs (queue, run_at)
    WHERE state IN ('queued', 'failed');
