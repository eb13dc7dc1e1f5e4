-- An enqueue that claims in its own transaction (Store::enqueue_and_claim:
-- a processor with a free slot takes the job it enqueues) in one statement,
-- so in one round trip: until now it was `BEGIN` (with the `SET LOCAL` of
-- 0007), the enqueue, the claim, a NOTIFY if due and `COMMIT`: four or
-- five round trips of ~0.1 ms each on loopback before the job could start (issue 12: enqueue → handler
-- latency). As one statement outside a transaction block it is its own
-- transaction: one commit, as before.
--
-- The claim is a statement of its own after the enqueue (each statement of
-- a volatile function sees what the ones before it wrote), so it takes the
-- new job or one ahead of it in claim order. It is the claim of
-- `COMPLETE_AND_CLAIM` (src/postgres/claim.rs) for one job: keep the two in
-- step (the conformance suite's `an_enqueue_claims_the_queues_next_job_in_its_commit`
-- checks that they claim alike: order, priority, run_at, paused queues).
--
-- The NOTIFY of a job it created (none for a key that answered with an
-- existing job): none when the job it claimed is the new one (0007's
-- `curfew.enqueue_claims`, set around the enqueue only and put back as it
-- was, so a caller's later enqueues in the same transaction notify as
-- usual); sent here when it claimed another job or none.
--
-- `claimed` is the claimed row (NULL when nothing was claimed); callers
-- read it as columns with `(r.claimed).*`.
CREATE FUNCTION enqueue_and_claim_ms(
    p_queue text,
    p_kind text,
    p_payload jsonb,
    p_priority integer,
    p_run_at bigint,
    p_max_attempts integer,
    p_idempotency_key text,
    p_unique_key text,
    p_unique_scope text,
    p_unique_for_ms bigint,
    p_owner text,
    p_lease_ms bigint
)
    RETURNS TABLE (job_id bigint, created boolean, claimed jobs)
    LANGUAGE plpgsql VOLATILE
    SET search_path FROM CURRENT
    AS $$
DECLARE
    v_prev text := current_setting('curfew.enqueue_claims', true);
BEGIN
    PERFORM set_config('curfew.enqueue_claims', 'on', true);
    SELECT e.job_id, e.created INTO job_id, created
    FROM enqueue_ms(p_queue, p_kind, p_payload, p_priority, p_run_at, p_max_attempts,
                    p_idempotency_key, p_unique_key, p_unique_scope, p_unique_for_ms) AS e;
    PERFORM set_config('curfew.enqueue_claims', coalesce(v_prev, ''), true);

    WITH picked AS (
        SELECT q.id FROM jobs AS q
        WHERE q.state IN ('queued', 'failed') AND q.queue = p_queue AND q.run_at <= now_ms()
          AND NOT EXISTS (SELECT 1 FROM paused_queues AS p WHERE p.queue = p_queue)
        ORDER BY q.priority, q.run_at, q.id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    UPDATE jobs AS j SET
        state = 'running',
        attempt = j.attempt + 1,
        lease_owner = p_owner,
        lease_token = gen_random_uuid()::text,
        lease_expires_at = now_ms() + p_lease_ms,
        started_at = now_ms(),
        updated_at = now_ms()
    FROM picked
    WHERE j.id = picked.id
    RETURNING j.* INTO claimed;

    IF created AND (claimed.id IS NULL OR claimed.id <> job_id) THEN
        PERFORM pg_notify('curfew_jobs', p_queue);
    END IF;
    RETURN NEXT;
END
$$;
