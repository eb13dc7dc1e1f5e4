-- Periodic schedules (see src/lib.rs, Store::periodic_advance): a row per
-- schedule name holding the last instant handled. The enqueue of an instant
-- and the move of `last_instant` happen in one transaction, so each instant
-- is enqueued at most once across every curfew sharing the store, also after
-- retention pruned the jobs. Keep in step with
-- migrations/sqlite/0007_periodic.sql.
CREATE TABLE periodic_schedules (
    name         text   PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.:-]{1,200}$'),
    -- The latest instant enqueued (or passed over, catch_up = "none"), unix ms.
    last_instant bigint NOT NULL,
    -- The job enqueued for it; NULL when none was (first sight, passed over).
    last_job_id  bigint,
    updated_at   bigint NOT NULL
);
