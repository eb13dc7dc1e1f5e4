-- Periodic schedules (see src/lib.rs, Store::periodic_advance): a row per
-- schedule name holding the last instant handled. The enqueue of an instant
-- and the move of `last_instant` happen in one transaction, so each instant
-- is enqueued at most once across every curfew sharing the store, also after
-- retention pruned the jobs. Keep in step with
-- migrations/postgres/0007_periodic.sql.
CREATE TABLE periodic_schedules (
    name         TEXT    PRIMARY KEY
        CHECK (length(name) BETWEEN 1 AND 200 AND name NOT GLOB '*[^A-Za-z0-9_.:-]*'),
    -- The latest instant enqueued (or passed over, catch_up = "none"), unix ms.
    last_instant INTEGER NOT NULL,
    -- The job enqueued for it; NULL when none was (first sight, passed over).
    last_job_id  INTEGER,
    updated_at   INTEGER NOT NULL
) STRICT;
