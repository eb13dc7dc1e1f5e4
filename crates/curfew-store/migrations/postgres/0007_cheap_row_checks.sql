-- Checks every update of a job pays, made cheap (issue 12: PostgreSQL's CPU
-- per job). PostgreSQL evaluates every CHECK constraint of a table on every
-- UPDATE of a row, whichever columns it sets, and a job is updated at least
-- twice (claim, completion). SQLite needs none of this: its checks are
-- GLOBs, its triggers are compiled into the cached statement, and an update
-- there rewrites only the index entries of the columns it changes.
--
-- 1. The name format `~ '^[A-Za-z0-9_.:-]{1,200}$'`: PostgreSQL's regex
--    engine expands the bounded repeat into 200 states, ~12 µs per test on
--    this project's benchmark machine, four tests per job (queue and kind,
--    at the claim and at the completion): a sixth of the database's CPU in
--    the job benchmark. The same rule as "no character outside the set, and
--    1 to 200 characters" costs ~0.3 µs. The names and the rule stay; the
--    old constraint accepted exactly what the new one does, so the rows in
--    the table already pass (the ADD still checks them).
ALTER TABLE jobs
    DROP CONSTRAINT jobs_queue_format,
    ADD CONSTRAINT jobs_queue_format
        CHECK (queue !~ '[^A-Za-z0-9_.:-]' AND length(queue) BETWEEN 1 AND 200),
    DROP CONSTRAINT jobs_kind_format,
    ADD CONSTRAINT jobs_kind_format
        CHECK (kind !~ '[^A-Za-z0-9_.:-]' AND length(kind) BETWEEN 1 AND 200);

-- The same rule on the other two tables of names (not on a hot path; one
-- way to write it).
ALTER TABLE paused_queues
    DROP CONSTRAINT paused_queues_queue_check,
    ADD CONSTRAINT paused_queues_queue_check
        CHECK (queue !~ '[^A-Za-z0-9_.:-]' AND length(queue) BETWEEN 1 AND 200);
ALTER TABLE periodic_schedules
    DROP CONSTRAINT periodic_schedules_name_check,
    ADD CONSTRAINT periodic_schedules_name_check
        CHECK (name !~ '[^A-Za-z0-9_.:-]' AND length(name) BETWEEN 1 AND 200);

-- 2. The unique-key trigger's WHEN (0006): PostgreSQL reads a trigger's WHEN
--    clause from its stored form once per statement that may fire it, so a
--    long one costs every claim and completion, unique job or not. The
--    WHEN now only asks whether the row holds a key, and the function
--    decides which state change gives it up, with the same rule as before.
CREATE OR REPLACE FUNCTION jobs_unique_release() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF (NEW.unique_scope = 'queued' AND NEW.state <> 'queued')
        OR (NEW.unique_scope = 'queued+running'
            AND NEW.state IN ('succeeded', 'dead', 'cancelled')) THEN
        NEW.unique_holder := NULL;
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER jobs_unique_release ON jobs;
CREATE TRIGGER jobs_unique_release BEFORE UPDATE OF state ON jobs
    FOR EACH ROW
    WHEN (NEW.unique_holder IS NOT NULL)
    EXECUTE FUNCTION jobs_unique_release();

-- 3. The idempotency key's uniqueness, from a UNIQUE constraint to a
--    partial unique index on the rows that have a key. A B-tree indexes
--    NULLs too, and an update that cannot be HOT (a claim or a completion
--    changes indexed columns) adds an entry to every index: a job without
--    a key (most jobs) wrote three NULL entries into this index for
--    nothing. The enqueue's `ON CONFLICT DO NOTHING` and its lookup by key
--    work with either.
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
ALTER TABLE jobs DROP CONSTRAINT jobs_idempotency_key_unique;
