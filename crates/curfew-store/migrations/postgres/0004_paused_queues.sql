-- Paused queues (see src/lib.rs, Store::pause): a row per paused queue.
-- Claims skip a queue that has a row here, so every processor sharing the
-- store obeys at its next claim. Keep in step with
-- migrations/sqlite/0003_paused_queues.sql.
CREATE TABLE paused_queues (
    queue     text   PRIMARY KEY CHECK (queue ~ '^[A-Za-z0-9_.:-]{1,200}$'),
    paused_at bigint NOT NULL
);
