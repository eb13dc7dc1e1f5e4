-- Paused queues (see src/lib.rs, Store::pause): a row per paused queue.
-- Claims skip a queue that has a row here, so every processor sharing the
-- store obeys at its next claim. Keep in step with
-- migrations/postgres/0004_paused_queues.sql.
CREATE TABLE paused_queues (
    queue     TEXT    PRIMARY KEY
        CHECK (length(queue) BETWEEN 1 AND 200 AND queue NOT GLOB '*[^A-Za-z0-9_.:-]*'),
    paused_at INTEGER NOT NULL
) STRICT;
