-- Cheaper job writes (issue 12: PostgreSQL's CPU per job): the checks every
-- update of a job pays (1–3), and no wake-up for a job its own enqueue
-- claimed (4). PostgreSQL evaluates every CHECK constraint of a table on every
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

-- 4. An enqueue that claims in its own transaction (Store::enqueue_and_claim:
--    a processor with a free slot takes the job it enqueues) sets
--    `curfew.enqueue_claims` for that transaction, and the new job's
--    NOTIFY is left to it: every listening processor woke for a job that
--    was already taken and ran an empty claim and a next-run query. It
--    sends the NOTIFY itself when the job it claimed is another one. The
--    rest of the function is 0006's, unchanged.
CREATE OR REPLACE FUNCTION enqueue_ms(
    p_queue text,
    p_kind text,
    p_payload jsonb,
    p_priority integer,
    p_run_at bigint,
    p_max_attempts integer,
    p_idempotency_key text,
    p_unique_key text DEFAULT NULL,
    p_unique_scope text DEFAULT NULL,
    p_unique_for_ms bigint DEFAULT NULL,
    OUT job_id bigint,
    OUT created boolean
)
    LANGUAGE plpgsql VOLATILE
    SET search_path FROM CURRENT
    AS $$
DECLARE
    v_now bigint := now_ms();
    v_scope text;
    v_until bigint;
BEGIN
    IF p_unique_key IS NOT NULL THEN
        IF length(p_unique_key) NOT BETWEEN 1 AND 200 THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = 'invalid unique_key: it must be 1 to 200 characters';
        END IF;
        v_scope := coalesce(p_unique_scope, 'queued+running');
        IF v_scope = 'window' THEN
            IF p_unique_for_ms IS NULL OR p_unique_for_ms < 1 THEN
                RAISE EXCEPTION USING ERRCODE = '22023',
                    MESSAGE = 'invalid unique_scope: a window must be longer than 0';
            END IF;
            v_until := v_now + p_unique_for_ms;
        ELSIF v_scope NOT IN ('queued', 'queued+running') THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('invalid unique_scope %L: use queued, queued+running or a window such as ''10m''', v_scope);
        END IF;
    ELSIF p_unique_scope IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'invalid unique_scope: it needs a unique_key';
    END IF;
    LOOP
        IF v_scope = 'window' THEN
            -- The key's window is over: the next job takes it.
            UPDATE jobs SET unique_holder = NULL
            WHERE unique_holder = p_unique_key AND unique_until <= v_now;
        END IF;
        INSERT INTO jobs AS j
            (queue, kind, payload, priority, run_at, max_attempts, idempotency_key,
             unique_key, unique_scope, unique_until, unique_holder, created_at, updated_at)
        VALUES
            (p_queue, p_kind, coalesce(p_payload, '{}'::jsonb), coalesce(p_priority, 0),
             coalesce(p_run_at, v_now), coalesce(p_max_attempts, 20), p_idempotency_key,
             p_unique_key, v_scope, v_until, p_unique_key, v_now, v_now)
        ON CONFLICT DO NOTHING
        RETURNING j.id INTO job_id;
        IF job_id IS NOT NULL THEN
            created := true;
            IF current_setting('curfew.enqueue_claims', true) IS DISTINCT FROM 'on' THEN
                PERFORM pg_notify('curfew_jobs', p_queue);
            END IF;
            RETURN;
        END IF;
        -- A key exists: hand back that job. (Each statement of a volatile
        -- function takes a fresh snapshot, so a row committed by a
        -- concurrent insert is visible here.)
        created := false;
        IF p_idempotency_key IS NOT NULL THEN
            SELECT j.id INTO job_id FROM jobs AS j WHERE j.idempotency_key = p_idempotency_key;
            IF job_id IS NOT NULL THEN
                RETURN;
            END IF;
        END IF;
        IF p_unique_key IS NOT NULL THEN
            SELECT j.id INTO job_id FROM jobs AS j WHERE j.unique_holder = p_unique_key;
            IF job_id IS NOT NULL THEN
                RETURN;
            END IF;
        END IF;
        -- The conflicting job was deleted or gave its key up in between:
        -- insert again.
    END LOOP;
END
$$;
