-- Cancelling a running job and unique jobs (issue 13, items 5 and 3; see
-- src/lib.rs, invariants 9 and 10). Numbered 0020 to stay clear of other
-- migrations written at the same time (sqlx applies any migration not yet
-- applied, whatever its number). Keep in step with
-- migrations/sqlite/0020_cancel_and_unique.sql.

-- Set by Store::cancel on a running job: the processor running it stops
-- it and finishes it `cancelled`; every other way out of `running` (fail,
-- snooze, release, rescue) ends `cancelled` too. Kept afterwards as
-- history; cleared by a retry.
ALTER TABLE jobs ADD COLUMN cancel_requested_at bigint;

-- Unique jobs: the key and its scope as enqueued (`unique_until`: the end
-- of a `window` scope), and `unique_holder`, the key while the job holds
-- it (NULL once it no longer does). The partial unique index on the holder
-- is what makes a duplicate enqueue find the existing job, race-free.
ALTER TABLE jobs ADD COLUMN unique_key text;
ALTER TABLE jobs ADD COLUMN unique_scope text
    CHECK (unique_scope IS NULL OR unique_scope IN ('queued', 'queued+running', 'window'));
ALTER TABLE jobs ADD COLUMN unique_until bigint;
ALTER TABLE jobs ADD COLUMN unique_holder text;

CREATE UNIQUE INDEX jobs_unique_holder ON jobs (unique_holder)
    WHERE unique_holder IS NOT NULL;

-- A processor's running jobs with a cancel request (polled every 500 ms
-- while it runs jobs).
CREATE INDEX jobs_cancel_requested ON jobs (lease_owner)
    WHERE cancel_requested_at IS NOT NULL AND state = 'running';

-- A job gives its unique key up when it leaves its scope's states:
-- `queued` at its claim (a job that ran and waits for a retry does not
-- take it back), `queued+running` when it finishes. Whatever statement
-- moves the job, so no code path can forget it. (A `window` key is given
-- up by the next enqueue of the key after the window.)
CREATE FUNCTION jobs_unique_release() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.unique_holder := NULL;
    RETURN NEW;
END
$$;

CREATE TRIGGER jobs_unique_release BEFORE UPDATE OF state ON jobs
    FOR EACH ROW
    WHEN (NEW.unique_holder IS NOT NULL AND (
        (NEW.unique_scope = 'queued' AND NEW.state <> 'queued')
        OR (NEW.unique_scope = 'queued+running'
            AND NEW.state IN ('succeeded', 'dead', 'cancelled'))))
    EXECUTE FUNCTION jobs_unique_release();

-- The one insert path gains the unique key: `p_unique_scope` is 'queued',
-- 'queued+running' (the default with a key) or 'window' with
-- `p_unique_for_ms`. A duplicate (by idempotency key first, then by unique
-- key) returns the existing job with created = false. Dropped and created
-- again (a new overload beside the old one would make calls ambiguous);
-- enqueue() calls it, so it goes too and comes back with the new
-- parameters.
DROP FUNCTION enqueue(text, text, jsonb, integer, timestamptz, integer, text);
DROP FUNCTION enqueue_ms(text, text, jsonb, integer, bigint, integer, text);

CREATE FUNCTION enqueue_ms(
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
            PERFORM pg_notify('curfew_jobs', p_queue);
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

-- The window of a unique_scope written for SQL callers: NULL for 'queued'
-- and 'queued+running', else the interval ('10m', '1 hour') in ms; an
-- error naming the field for anything else.
CREATE FUNCTION unique_window_ms(p_scope text) RETURNS bigint
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
    IF p_scope IS NULL OR p_scope IN ('queued', 'queued+running') THEN
        RETURN NULL;
    END IF;
    BEGIN
        RETURN floor(extract(epoch FROM p_scope::interval) * 1000)::bigint;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow
                   OR interval_field_overflow OR invalid_parameter_value THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('invalid unique_scope %L: use queued, queued+running or a window such as ''10m''', p_scope);
    END;
END
$$;

-- Transactional enqueue for applications on the same database (see
-- 0001): unique_scope is 'queued', 'queued+running' (the default with a
-- unique_key) or an interval ('10m', '1 hour') for a window.
CREATE FUNCTION enqueue(
    queue text,
    kind text,
    payload jsonb,
    priority integer DEFAULT 0,
    run_at timestamptz DEFAULT now(),
    max_attempts integer DEFAULT 20,
    idempotency_key text DEFAULT NULL,
    unique_key text DEFAULT NULL,
    unique_scope text DEFAULT NULL
) RETURNS bigint
    LANGUAGE sql VOLATILE
    SET search_path FROM CURRENT
    AS $$
    SELECT job_id FROM enqueue_ms(
        queue, kind, payload, priority,
        floor(extract(epoch FROM run_at) * 1000)::bigint,
        max_attempts, idempotency_key, unique_key,
        CASE WHEN unique_scope IS NULL OR unique_scope IN ('queued', 'queued+running')
             THEN unique_scope ELSE 'window' END,
        unique_window_ms(unique_scope))
$$;

-- enqueue_many (0003) with unique_key / unique_scope per object.
CREATE OR REPLACE FUNCTION enqueue_many(jobs jsonb)
    RETURNS TABLE (job_id bigint, created boolean)
    LANGUAGE sql VOLATILE
    SET search_path FROM CURRENT
    AS $$
    SELECT e.job_id, e.created
    FROM jsonb_array_elements(jobs) WITH ORDINALITY AS t(j, n)
    CROSS JOIN LATERAL enqueue_ms(
        coalesce(t.j->>'queue', 'default'),
        t.j->>'kind',
        coalesce(t.j->'payload', '{}'::jsonb),
        coalesce((t.j->>'priority')::integer, 0),
        CASE WHEN t.j ? 'run_at'
             THEN floor(extract(epoch FROM (t.j->>'run_at')::timestamptz) * 1000)::bigint
        END,
        coalesce((t.j->>'max_attempts')::integer, 20),
        t.j->>'idempotency_key',
        t.j->>'unique_key',
        CASE WHEN t.j->>'unique_scope' IS NULL
                  OR t.j->>'unique_scope' IN ('queued', 'queued+running')
             THEN t.j->>'unique_scope' ELSE 'window' END,
        unique_window_ms(t.j->>'unique_scope')) AS e
    ORDER BY t.n
$$;
