-- A unique key's window that is over gives the key up to the next job of
-- that key, whatever the new job's scope. Until now only an enqueue with a
-- window scope cleared an expired window holder (enqueue_ms, 0007), so an
-- enqueue of the same key with the `queued` or `queued+running` scope (one
-- key space across scopes) met the old, finished job's hold and got that
-- job back (`created: false`) until retention deleted it: nothing was
-- enqueued. Before each insert of a job holding a key, a holder of the key
-- whose window is over lets go. (enqueue_ms's own release for window
-- enqueues stays: it finds nothing left to clear.) SQLite's enqueue does
-- the same in Rust.
CREATE FUNCTION jobs_unique_window_over() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
    AS $$
BEGIN
    UPDATE jobs SET unique_holder = NULL
    WHERE unique_holder = NEW.unique_holder AND unique_until <= now_ms();
    RETURN NEW;
END
$$;

CREATE TRIGGER jobs_unique_window_over BEFORE INSERT ON jobs
    FOR EACH ROW
    WHEN (NEW.unique_holder IS NOT NULL)
    EXECUTE FUNCTION jobs_unique_window_over();
