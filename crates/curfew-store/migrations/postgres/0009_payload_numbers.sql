-- A payload number no JSON reader of the field can hold. jsonb keeps
-- numbers of any size (`{"n": 1e400}`), but curfew reads a payload with
-- serde_json, as most apps read theirs, into 64-bit floats: a job with
-- such a number could be stored through the SQL API (`enqueue`,
-- `enqueue_many`) and then never read back. Every claim that picked it
-- failed as a whole, its rows stayed `running` until their leases ran out,
-- and the rescue blamed a dead processor, round after round. Such a
-- payload is now refused when it is written, naming the field and the fix.
-- (Through curfew's own API it never got in: the request's JSON is parsed
-- first.) Only inserts and payload updates pay for the check, not the
-- claims and completions.
CREATE FUNCTION jobs_payload_numbers() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = '22023',
        MESSAGE = 'invalid payload: it holds a number beyond a 64-bit float (about ±1.8e308), which no JSON reader of the app can take; send it as a string';
END
$$;

CREATE TRIGGER jobs_payload_numbers BEFORE INSERT OR UPDATE OF payload ON jobs
    FOR EACH ROW
    WHEN (jsonb_path_exists(NEW.payload,
        'strict $.** ? (@.type() == "number" && (@ > 1.7976931348623157e308 || @ < -1.7976931348623157e308))'))
    EXECUTE FUNCTION jobs_payload_numbers();
