//! WAL checkpoints off the write path.
//!
//! SQLite's default (`wal_autocheckpoint = 1000` pages) runs a checkpoint
//! inside whichever commit crosses the threshold: that commit copies the
//! WAL into the database file and fsyncs both, milliseconds in which the
//! enqueue, claim or verdict that happened to be that commit waits, and
//! every writer queued behind it too (measured: an idle processor's 1 %
//! slowest enqueue → handler latencies at 4–4.6 ms against a 1.4 ms
//! median). Here the store's connections never checkpoint on commit; a
//! task does, on a connection of its own turn, after [`WRITES`] writes or
//! at the latest [`IDLE_AFTER`] after the first write since the last one.
//! A store that wrote those [`WRITES`] within [`BUSY_WINDOW`] is busy: it
//! checkpoints holding this process's writer turn, as SQLite would (a
//! checkpoint beside a stream of writes copies pages that are written again
//! at once, and throughput fell 10–15 % that way). A quieter store
//! checkpoints beside its writes, with `PASSIVE`: that never blocks a
//! writer or a reader, and copies what no reader still needs (the next
//! round copies the rest).
//!
//! A WAL is rewound (reused from its start) only when a writer finds every
//! frame of it copied, so under a steady stream of writes, which keep
//! appending while a checkpoint copies, it would never be rewound and would
//! grow without end. When a round leaves the WAL longer than
//! [`REWIND_FRAMES`], a second `PASSIVE` checkpoint runs holding this
//! process's writer turn: it has only the frames written during the first
//! to copy, and the next write rewinds the WAL. Writers wait for that short
//! one, as they used to wait for every checkpoint.
//!
//! Commits stay as durable as before: in WAL mode with
//! `synchronous=NORMAL` a commit is in the WAL when it returns, whether or
//! not a checkpoint ran; checkpoints only bound the WAL's growth and keep
//! reads fast.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::sqlite::SqlitePool;
use tokio::sync::mpsc;

/// Writes that make a checkpoint due.
pub const WRITES: u32 = 50;

/// [`WRITES`] writes within this time of the first one: a busy store.
pub const BUSY_WINDOW: Duration = Duration::from_millis(100);

/// The longest a write waits for its checkpoint.
pub const IDLE_AFTER: Duration = Duration::from_secs(1);

/// A WAL longer than this (frames of a page each, 4 KiB by default) after
/// a checkpoint gets a second one that lets it be rewound.
pub const REWIND_FRAMES: i64 = 2_000;

/// Told of writes; the checkpoint task ends when every clone is dropped
/// (with the last clone of the store).
#[derive(Clone)]
pub struct Checkpoints {
    due: mpsc::Sender<()>,
    /// Writes since the last checkpoint started.
    writes: Arc<AtomicU32>,
}

impl Checkpoints {
    /// Starts the checkpoint task for `pool` (on the current runtime).
    /// `write_lock`: the store's writer turn, held for a rewinding round.
    pub fn start(
        pool: SqlitePool,
        store: Arc<str>,
        write_lock: Arc<tokio::sync::Mutex<()>>,
    ) -> Checkpoints {
        let (due, mut rx) = mpsc::channel::<()>(1);
        let writes = Arc::new(AtomicU32::new(0));
        let counted = writes.clone();
        tokio::spawn(async move {
            // A first write since the last checkpoint...
            while rx.recv().await.is_some() {
                let first = tokio::time::Instant::now();
                // ... then WRITES writes, or IDLE_AFTER, whichever is first.
                let full = tokio::time::timeout(IDLE_AFTER, async {
                    while counted.load(Ordering::Relaxed) < WRITES {
                        if rx.recv().await.is_none() {
                            return false;
                        }
                    }
                    true
                })
                .await;
                if matches!(full, Ok(false)) || pool.is_closed() {
                    return;
                }
                counted.store(0, Ordering::Relaxed);
                // A store writing fast (WRITES writes within BUSY_WINDOW)
                // checkpoints in its writer turn, as SQLite itself would:
                // a checkpoint beside a stream of writes copies pages that
                // are written again at once, and never lets the WAL be
                // rewound. A quieter one checkpoints beside its writes.
                let busy = full.is_ok() && first.elapsed() < BUSY_WINDOW;
                let turn = if busy {
                    Some(write_lock.lock().await)
                } else {
                    None
                };
                let frames = checkpoint(&pool).await;
                drop(turn);
                let frames = match frames {
                    Ok(frames) => frames,
                    Err(e) => {
                        if pool.is_closed() {
                            return;
                        }
                        failed(&store, &e);
                        continue;
                    }
                };
                if !busy && frames > REWIND_FRAMES {
                    let _turn = write_lock.lock().await;
                    if let Err(e) = checkpoint(&pool).await {
                        failed(&store, &e);
                    }
                }
            }
        });
        Checkpoints { due, writes }
    }

    /// A write is about to happen.
    pub fn wrote(&self) {
        let n = self.writes.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 || n >= WRITES {
            // Full: the task has been told already.
            let _ = self.due.try_send(());
        }
    }
}

/// A failed checkpoint: the next write schedules another try, and the
/// checkpoint at close folds in whatever is left.
fn failed(store: &str, e: &sqlx::Error) {
    tracing::debug!(store = %store, error = %e, "WAL checkpoint failed; trying again after the next write.");
}

/// One `PASSIVE` checkpoint; the WAL's length in frames after it.
async fn checkpoint(pool: &SqlitePool) -> Result<i64, sqlx::Error> {
    // (busy, frames in the WAL, frames copied); -1s when not in WAL mode.
    let (_busy, frames, _copied): (i64, i64, i64) =
        sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(pool)
            .await?;
    Ok(frames)
}
