-- curfew job store, PostgreSQL. Runs with search_path set to the store's
-- schema only (default "curfew"), so every object below is created there.
-- Timestamps are unix milliseconds (bigint), ids bigint. See src/jobs/mod.rs
-- for the states and the invariants these constraints enforce. Keep this file
-- in step with migrations/sqlite/0001_create_jobs.sql.

CREATE TABLE jobs (
    id               bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue            text    NOT NULL CONSTRAINT jobs_queue_format CHECK (queue ~ '^[A-Za-z0-9_.:-]{1,200}$'),
    kind             text    NOT NULL CONSTRAINT jobs_kind_format CHECK (kind ~ '^[A-Za-z0-9_.:-]{1,200}$'),
    payload          jsonb   NOT NULL DEFAULT '{}'::jsonb,
    priority         integer NOT NULL DEFAULT 0,
    run_at           bigint  NOT NULL,
    attempt          integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts     integer NOT NULL DEFAULT 20 CHECK (max_attempts >= 1),
    state            text    NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled')),
    lease_owner      text,
    lease_token      text,
    lease_expires_at bigint,
    crashes          integer NOT NULL DEFAULT 0 CHECK (crashes >= 0),
    releases         integer NOT NULL DEFAULT 0 CHECK (releases >= 0),
    last_error       text,
    idempotency_key  text    CONSTRAINT jobs_idempotency_key_unique UNIQUE,
    created_at       bigint  NOT NULL,
    updated_at       bigint  NOT NULL,
    started_at       bigint,
    finished_at      bigint,
    -- A lease exists exactly while the job runs.
    CONSTRAINT jobs_lease_iff_running CHECK (
        (state = 'running') = (lease_owner IS NOT NULL AND lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)
    )
) WITH (
    -- A queue table churns: vacuum after a fixed number of dead rows rather
    -- than a fraction of the table (the default lets dead tuples pile up in
    -- the claim index of a busy queue).
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 500,
    autovacuum_analyze_scale_factor = 0.05
);

-- The general index in claim order (also serves stats and lookups by state,
-- e.g. the running jobs for rescue).
CREATE INDEX jobs_state_queue_priority_run_at_id ON jobs (state, queue, priority, run_at, id);

-- Claim: walked in exactly the claim order, holding only claimable rows, so
-- `LIMIT n` stops after n rows instead of sorting the whole queue.
CREATE INDEX jobs_claim ON jobs (queue, priority, run_at, id)
    WHERE state IN ('queued', 'failed');

-- next_run_at: the earliest run_at of a queue's waiting jobs.
CREATE INDEX jobs_next_run ON jobs (queue, run_at)
    WHERE state IN ('queued', 'failed');

-- The database clock in unix milliseconds. Every lease and "now" comparison
-- uses it, so hosts with skewed clocks agree on when a lease expires.
CREATE FUNCTION now_ms() RETURNS bigint
    LANGUAGE sql STABLE
    AS $$ SELECT floor(extract(epoch FROM now()) * 1000)::bigint $$;

-- The one insert path, used by curfew itself and by enqueue() below. With an
-- idempotency key that already exists it returns the existing job's id and
-- created = false. A new job sends NOTIFY curfew_jobs '<queue>', delivered
-- when (and only if) the surrounding transaction commits.
CREATE FUNCTION enqueue_ms(
    p_queue text,
    p_kind text,
    p_payload jsonb,
    p_priority integer,
    p_run_at bigint,
    p_max_attempts integer,
    p_idempotency_key text,
    OUT job_id bigint,
    OUT created boolean
)
    LANGUAGE plpgsql VOLATILE
    SET search_path FROM CURRENT
    AS $$
DECLARE
    v_now bigint := now_ms();
BEGIN
    LOOP
        INSERT INTO jobs AS j
            (queue, kind, payload, priority, run_at, max_attempts, idempotency_key, created_at, updated_at)
        VALUES
            (p_queue, p_kind, coalesce(p_payload, '{}'::jsonb), coalesce(p_priority, 0),
             coalesce(p_run_at, v_now), coalesce(p_max_attempts, 20), p_idempotency_key, v_now, v_now)
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING j.id INTO job_id;
        IF job_id IS NOT NULL THEN
            created := true;
            PERFORM pg_notify('curfew_jobs', p_queue);
            RETURN;
        END IF;
        -- The key exists: hand back that job. (Each statement of a volatile
        -- function takes a fresh snapshot, so a row committed by a concurrent
        -- insert is visible here.)
        SELECT j.id INTO job_id FROM jobs AS j WHERE j.idempotency_key = p_idempotency_key;
        IF job_id IS NOT NULL THEN
            created := false;
            RETURN;
        END IF;
        -- The conflicting job was deleted in between: insert again.
    END LOOP;
END
$$;

-- Transactional enqueue for applications on the same database:
--   SELECT curfew.enqueue('mail', 'send_email', '{"to":"a@b.c"}');
-- called inside the application's own transaction, the job exists if and
-- only if that transaction commits. Returns the job id.
CREATE FUNCTION enqueue(
    queue text,
    kind text,
    payload jsonb,
    priority integer DEFAULT 0,
    run_at timestamptz DEFAULT now(),
    max_attempts integer DEFAULT 20,
    idempotency_key text DEFAULT NULL
) RETURNS bigint
    LANGUAGE sql VOLATILE
    SET search_path FROM CURRENT
    AS $$
    SELECT job_id FROM enqueue_ms(
        queue, kind, payload, priority,
        floor(extract(epoch FROM run_at) * 1000)::bigint,
        max_attempts, idempotency_key)
$$;
