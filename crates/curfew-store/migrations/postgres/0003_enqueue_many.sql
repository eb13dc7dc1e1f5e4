-- Batched transactional enqueue for applications on the same database:
--   SELECT * FROM curfew.enqueue_many('[
--       {"queue": "mail", "kind": "send_email", "payload": {"to": "a@b.c"}},
--       {"kind": "digest", "run_at": "2026-12-01T08:00:00Z", "idempotency_key": "digest-1"}
--   ]');
-- One statement for the whole array, inside the caller's transaction (the
-- jobs exist if and only if it commits). Each object: kind (required),
-- queue (default "default"), payload (default {}), priority (0), run_at
-- (RFC 3339; default now), max_attempts (20), idempotency_key. Returns one
-- row per job, in the array's order: job_id, and created = false when the
-- idempotency key was known (also earlier in the same array).
-- (SQLite has no such function: its callers use curfew's API.)
CREATE FUNCTION enqueue_many(jobs jsonb)
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
        t.j->>'idempotency_key') AS e
    ORDER BY t.n
$$;
