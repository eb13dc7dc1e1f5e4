//! The SQLite backend: one file, WAL mode, `synchronous=NORMAL`,
//! `busy_timeout` 5 s.
//!
//! SQLite has one writer at a time. Every write here takes the database's
//! write lock before it reads anything, so a read-then-write (claim's
//! subquery, rescue's candidate list, enqueue's idempotency check) can never
//! act on a stale snapshot, also when several processes share the file (they
//! wait for each other up to `busy_timeout`): a write of several statements
//! runs in a `BEGIN IMMEDIATE` transaction; a write that is one statement
//! (claim, heartbeat, complete, fail, snooze, release) runs on its own,
//! which SQLite makes a write transaction that takes the write lock when the
//! statement starts, before its first read, exactly as `BEGIN IMMEDIATE`
//! does, and commits when it ends, without the two extra round trips to the
//! connection's thread. Inside one process the writers also queue on a mutex
//! first, so they wait in order instead of polling the lock.
//!
//! `synchronous=NORMAL` in WAL mode: a commit survives a crash of the
//! process (SIGKILL included); after a power loss or an OS crash the last
//! commits before it may be rolled back. Use PostgreSQL where that matters.
//!
//! "Now" is the local clock: every process sharing the file is on one host.
//! Wake-ups are in-process only (a broadcast channel); a process that shares
//! the file learns of another's jobs by polling.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard, broadcast};

use super::error::StoreError;
use super::model::Job;
use super::{StoreOptions, row};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a writer waits for another process's write lock.
pub const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A random UUID v4 in SQL, evaluated per row (SQLite has no uuid function).
macro_rules! uuid_v4_sql {
    () => {
        "lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || \
         substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (random() & 3), 1) || \
         substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))"
    };
}

mod checkpoint;
// After `uuid_v4_sql!`, which they use.
mod claim;
mod lease;
mod manage;
mod periodic;

/// A job store in a SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// `sqlite://<path>`, for errors and logs.
    name: Arc<str>,
    write_lock: Arc<Mutex<()>>,
    wake: broadcast::Sender<String>,
    max_payload_bytes: usize,
    /// Told of every write (see [`checkpoint`]).
    checkpoints: checkpoint::Checkpoints,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("name", &self.name)
            .finish()
    }
}

/// A write transaction holding both the in-process writer mutex and
/// SQLite's write lock. Dropped without [`WriteTx::finish`] it rolls back.
struct WriteTx {
    tx: Transaction<'static, Sqlite>,
    _turn: OwnedMutexGuard<()>,
}

impl WriteTx {
    /// Commits when `result` is Ok, rolls back otherwise.
    async fn finish<T>(self, store: &str, result: Result<T, sqlx::Error>) -> Result<T, StoreError> {
        match result {
            Ok(value) => {
                self.tx
                    .commit()
                    .await
                    .map_err(|e| StoreError::from_sqlx(store, e))?;
                Ok(value)
            }
            Err(e) => {
                // Roll back now rather than when the connection is next used,
                // so the write lock is not held meanwhile.
                let _ = self.tx.rollback().await;
                Err(StoreError::from_sqlx(store, e))
            }
        }
    }
}

/// A new store file is created private (0600): jobs carry payloads.
/// SQLite gives the `-wal` and `-shm` files the database file's mode. An
/// existing file keeps its mode (the operator's choice); losing a race
/// with another process creating it is fine (it creates it the same way).
fn create_private(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() || path.as_os_str() == ":memory:" {
        return;
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        // SQLite reports a real problem (a missing directory) itself.
        tracing::debug!(path = %path.display(), error = %e, "Could not create the store file in advance.");
    }
}

impl SqliteStore {
    /// Opens the file and migrates it. Processes opening a new file at the
    /// same moment can get `SQLITE_BUSY` without SQLite's busy handler being
    /// consulted (the switch of a fresh file to WAL, or a reader meeting a
    /// WAL recovery in progress): such an open is tried again, for up to
    /// `acquire_timeout`.
    pub(crate) async fn open(path: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        let deadline = tokio::time::Instant::now() + options.acquire_timeout;
        let mut pause = std::time::Duration::from_millis(10);
        loop {
            match SqliteStore::open_once(path, options).await {
                Err(StoreError::Unavailable { source, .. })
                    if is_busy(&source) && tokio::time::Instant::now() + pause < deadline =>
                {
                    tracing::debug!(error = %source, "SQLite store busy while opening; trying again.");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    async fn open_once(path: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        let name: Arc<str> = format!("sqlite://{}", path.display()).into();
        create_private(path);
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            // Checkpoints run in a task of their own, not in a commit.
            .pragma("wal_autocheckpoint", "0")
            .optimize_on_close(true, 400);
        // No ping before each use: sqlx's SQLite ping is a message to the
        // connection's worker thread and back (two thread hand-offs per
        // store call) and proves only that the thread is alive. sqlx still
        // pings a connection when it goes back to the pool, and closes it
        // there if its thread has died.
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .test_before_acquire(false)
            .connect_with(connect)
            .await
            .map_err(|e| StoreError::from_sqlx(&name, e))?;
        let (wake, _) = broadcast::channel(1024);
        let write_lock = Arc::new(Mutex::new(()));
        let checkpoints =
            checkpoint::Checkpoints::start(pool.clone(), name.clone(), write_lock.clone());
        let store = SqliteStore {
            pool,
            name,
            write_lock,
            wake,
            max_payload_bytes: options.max_payload_bytes,
            checkpoints,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Runs the migrations inside one `BEGIN IMMEDIATE` transaction (each
    /// migration becomes a savepoint), so processes opening the same new
    /// file at once apply them exactly once.
    async fn migrate(&self) -> Result<(), StoreError> {
        let w = self.begin_write().await?;
        let mut tx = w.tx;
        // `run_direct` (public, doc-hidden) is `Migrator::run` without its
        // `Acquire` bound, which would make the whole `open` future "not
        // general enough" to be spawned (a known sqlx limitation).
        let result = MIGRATOR.run_direct(None, &mut *tx, false).await;
        match result {
            Ok(()) => tx
                .commit()
                .await
                .map_err(|e| StoreError::from_sqlx(&self.name, e)),
            Err(source) => {
                let _ = tx.rollback().await;
                Err(StoreError::from_migration(&self.name, &MIGRATOR, source))
            }
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes
    }

    fn err(&self, e: sqlx::Error) -> StoreError {
        StoreError::from_sqlx(&self.name, e)
    }

    /// This process's turn to write, for a write that is one statement
    /// (run outside `BEGIN`: SQLite opens its write transaction when the
    /// statement starts, write lock first, and commits when it ends or
    /// rolls it back when it fails). Held until the statement is done.
    async fn writer_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.checkpoints.wrote();
        self.write_lock.lock().await
    }

    async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        self.checkpoints.wrote();
        let turn = self.write_lock.clone().lock_owned().await;
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.err(e))?;
        Ok(WriteTx { tx, _turn: turn })
    }

    /// A row's payload ([`row::Payload`]): text that `json_valid` passed
    /// but serde cannot hold (a number beyond a 64-bit float, nesting past
    /// serde's limit, bytes that are not UTF-8 — `json_valid` does not look)
    /// is this row's fault alone. Read as bytes, so that a payload stored as
    /// a BLOB or with bad UTF-8 is such a row too, not a failed read.
    fn payload(&self, row: &SqliteRow) -> row::Payload {
        let bytes: &[u8] = row.try_get("payload").map_err(|e| self.err(e))?;
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => return Ok(Err(format!("its payload is not UTF-8 text: {e}"))),
        };
        Ok(serde_json::from_str(text)
            .map_err(|e| format!("its payload is not JSON curfew can read: {e}")))
    }

    /// A row read for an operator (get, list): a payload that cannot be
    /// read is shown as such ([`Job::payload_error`]), not an error for
    /// the whole read.
    fn job(&self, row: &SqliteRow) -> Result<Job, StoreError> {
        row::job(&self.name, row, self.payload(row)?)
    }

    /// The rows of a claim, those that cannot be read set apart.
    fn claimed(&self, rows: &[SqliteRow]) -> row::ClaimedRows {
        row::claimed(&self.name, rows, |r| self.payload(r))
    }

    fn jobs(&self, rows: &[SqliteRow]) -> Result<Vec<Job>, StoreError> {
        rows.iter().map(|r| self.job(r)).collect()
    }

    fn wake(&self, queue: &str) {
        // No receiver is fine: nobody is waiting.
        let _ = self.wake.send(queue.to_owned());
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<String> {
        self.wake.subscribe()
    }

    pub(crate) async fn close(&self) {
        // Fold the WAL back into the database file on a clean shutdown.
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await
        {
            tracing::debug!(store = %self.name, error = %e, "WAL checkpoint at close failed");
        }
        self.pool.close().await;
    }
}

/// SQLITE_BUSY or SQLITE_LOCKED (any extended code).
fn is_busy(e: &sqlx::Error) -> bool {
    matches!(super::error::sqlite_primary_code(e), Some(5 | 6))
}
