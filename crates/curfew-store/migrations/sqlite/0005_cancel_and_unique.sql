-- Cancelling a running job and unique jobs (issue 13, items 5 and 3; see
-- src/lib.rs, invariants 9 and 10). Numbered 0020 to stay clear of other
-- migrations written at the same time (sqlx applies any migration not yet
-- applied, whatever its number). Keep in step with
-- migrations/postgres/0020_cancel_and_unique.sql.

-- Set by Store::cancel on a running job: the processor running it stops
-- it and finishes it `cancelled`; every other way out of `running` (fail,
-- snooze, release, rescue) ends `cancelled` too. Kept afterwards as
-- history; cleared by a retry.
ALTER TABLE jobs ADD COLUMN cancel_requested_at INTEGER;

-- Unique jobs: the key and its scope as enqueued (`unique_until`: the end
-- of a `window` scope), and `unique_holder`, the key while the job holds
-- it (NULL once it no longer does). The partial unique index on the holder
-- is what makes a duplicate enqueue find the existing job, race-free.
ALTER TABLE jobs ADD COLUMN unique_key TEXT;
ALTER TABLE jobs ADD COLUMN unique_scope TEXT
    CHECK (unique_scope IS NULL OR unique_scope IN ('queued', 'queued+running', 'window'));
ALTER TABLE jobs ADD COLUMN unique_until INTEGER;
ALTER TABLE jobs ADD COLUMN unique_holder TEXT;

CREATE UNIQUE INDEX jobs_unique_holder ON jobs (unique_holder)
    WHERE unique_holder IS NOT NULL;

-- A processor's running jobs with a cancel request (polled every 500 ms
-- while it runs jobs): holds only those rows, so the poll reads nothing
-- else.
CREATE INDEX jobs_cancel_requested ON jobs (lease_owner)
    WHERE cancel_requested_at IS NOT NULL AND state = 'running';

-- A job gives its unique key up when it leaves its scope's states:
-- `queued` at its claim (a job that ran and waits for a retry does not
-- take it back), `queued+running` when it finishes. Whatever statement
-- moves the job, so no code path can forget it. (A `window` key is given
-- up by the next enqueue of the key after the window.)
CREATE TRIGGER jobs_unique_release AFTER UPDATE OF state ON jobs
    WHEN NEW.unique_holder IS NOT NULL AND (
        (NEW.unique_scope = 'queued' AND NEW.state <> 'queued')
        OR (NEW.unique_scope = 'queued+running'
            AND NEW.state IN ('succeeded', 'dead', 'cancelled')))
BEGIN
    UPDATE jobs SET unique_holder = NULL WHERE id = NEW.id;
END;
