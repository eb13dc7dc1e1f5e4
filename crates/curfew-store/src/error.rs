//! [`StoreError`]: what can go wrong in the job store, sorted by what the
//! caller should do about it.

use super::model::JobState;

/// An error of the job store.
///
/// - [`InvalidUrl`](StoreError::InvalidUrl), [`InvalidInput`](StoreError::InvalidInput),
///   [`PayloadTooLarge`](StoreError::PayloadTooLarge),
///   [`InvalidBatch`](StoreError::InvalidBatch): the caller's mistake;
///   name the field, do not retry.
/// - [`NotFound`](StoreError::NotFound), [`WrongState`](StoreError::WrongState):
///   the job is not there or not in a state that allows the operation.
/// - [`Unavailable`](StoreError::Unavailable): the database cannot be reached
///   or is busy right now; retry with backoff ([`StoreError::is_retryable`]).
/// - [`Database`](StoreError::Database), [`Migration`](StoreError::Migration),
///   [`NewerSchema`](StoreError::NewerSchema),
///   [`Corrupt`](StoreError::Corrupt): anything else; a bug or an operator's
///   problem.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid job store URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },

    #[error("invalid {field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },

    #[error(
        "invalid payload: it is {size} bytes, over the limit of {limit} bytes (max_payload_bytes)"
    )]
    PayloadTooLarge { size: usize, limit: usize },

    /// Items of a batch ([`Store::enqueue_many`](crate::Store::enqueue_many))
    /// that are invalid, each with its index (from 0) and what is wrong;
    /// nothing of the batch was stored.
    #[error("invalid batch, nothing stored: {}", batch_errors(.errors))]
    InvalidBatch { errors: Vec<(usize, StoreError)> },

    #[error("job {id} not found")]
    NotFound { id: i64 },

    #[error("cannot {action} job {id} in state {state}{hint}")]
    WrongState {
        id: i64,
        action: &'static str,
        state: JobState,
        hint: &'static str,
    },

    #[error("job store {store} is unavailable: {source}")]
    Unavailable {
        store: String,
        #[source]
        source: sqlx::Error,
    },

    /// The store's schema has a migration this build does not know: a
    /// newer curfew migrated it (a rollback after an upgrade). Refused
    /// rather than run against a schema this code was not written for.
    #[error(
        "job store {store} was migrated by a newer curfew: its schema has migration {applied}, this curfew knows migrations up to {known}. Run the newer curfew, or restore the store from a backup taken before the upgrade (curfew never downgrades a store's schema)"
    )]
    NewerSchema {
        store: String,
        applied: i64,
        known: i64,
    },

    #[error("job store {store}: migration failed: {source}")]
    Migration {
        store: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    #[error("job store {store}: {source}")]
    Database {
        store: String,
        #[source]
        source: sqlx::Error,
    },

    #[error("job store {store}: job {id} cannot be read: {reason}")]
    Corrupt {
        store: String,
        id: i64,
        reason: String,
    },
}

/// `job 3: invalid kind: …; job 7: …`.
fn batch_errors(errors: &[(usize, StoreError)]) -> String {
    errors
        .iter()
        .map(|(i, e)| format!("job {i}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl StoreError {
    /// True when the same call may succeed later (the database was
    /// unreachable, busy, or restarting).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    /// True when the store refused the input itself: the same call can
    /// never succeed (a bad value, a payload too large, a constraint). Not
    /// for errors of the store's own (a timeout, a failover, a missing
    /// table): those may pass, or need the operator, not a skip.
    pub fn is_refused_input(&self) -> bool {
        match self {
            StoreError::InvalidInput { .. }
            | StoreError::PayloadTooLarge { .. }
            | StoreError::InvalidBatch { .. } => true,
            StoreError::Database { source, .. } => match source {
                sqlx::Error::Database(db) => {
                    if let Some(primary) = sqlite_primary_code(source) {
                        // TOOBIG, CONSTRAINT, MISMATCH.
                        return matches!(primary, 18..=20);
                    }
                    // PostgreSQL: data exception, integrity constraint.
                    db.code()
                        .is_some_and(|c| c.starts_with("22") || c.starts_with("23"))
                }
                _ => false,
            },
            _ => false,
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        StoreError::InvalidInput {
            field,
            reason: reason.into(),
        }
    }

    /// A failed migration run of `migrator`: a migration applied to the
    /// store that `migrator` does not have is [`StoreError::NewerSchema`].
    pub(crate) fn from_migration(
        store: &str,
        migrator: &sqlx::migrate::Migrator,
        source: sqlx::migrate::MigrateError,
    ) -> Self {
        let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        match source {
            // One this build should have had (renumbered, removed) is a
            // plain migration error, not a newer curfew's.
            sqlx::migrate::MigrateError::VersionMissing(applied) if applied > known => {
                StoreError::NewerSchema {
                    store: store.to_owned(),
                    applied,
                    known,
                }
            }
            source => StoreError::Migration {
                store: store.to_owned(),
                source,
            },
        }
    }

    /// Sorts a database error into [`StoreError::Unavailable`] or
    /// [`StoreError::Database`]. `store` names the store (password redacted).
    pub(crate) fn from_sqlx(store: &str, source: sqlx::Error) -> Self {
        let store = store.to_owned();
        if is_unavailable(&source) {
            StoreError::Unavailable { store, source }
        } else {
            StoreError::Database { store, source }
        }
    }
}

/// The primary result code of a SQLite error (SQLite reports extended
/// codes; the primary code is their low byte). `None` for anything else —
/// in particular PostgreSQL's SQLSTATEs, many of which are digits too
/// (`08006`, `40001`, `53300`).
pub(crate) fn sqlite_primary_code(error: &sqlx::Error) -> Option<i32> {
    match error {
        sqlx::Error::Database(db) => {
            db.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
            db.code()?.parse::<i32>().ok().map(|c| c & 0xff)
        }
        _ => None,
    }
}

/// Whether a database error means "the database cannot serve us right now"
/// rather than "this statement is wrong".
fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else {
                return false;
            };
            if let Some(primary) = sqlite_primary_code(error) {
                // BUSY, LOCKED, IOERR, FULL, CANTOPEN.
                return matches!(primary, 5 | 6 | 10 | 13 | 14);
            }
            // PostgreSQL SQLSTATE: connection exception, insufficient
            // resources, operator intervention (shutdown, recovery, a
            // cancelled statement: statement_timeout), serialization
            // failure and deadlock, lock_timeout, a read-only transaction
            // (a pooled connection to a primary demoted by a failover), an
            // idle-in-transaction timeout.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || matches!(
                    code.as_ref(),
                    "57014" | "40001" | "40P01" | "55P03" | "25006" | "25P03"
                )
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database error with a given SQLSTATE, as PostgreSQL would report it.
    #[derive(Debug)]
    struct Sqlstate(&'static str);

    impl std::fmt::Display for Sqlstate {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for Sqlstate {}

    impl sqlx::error::DatabaseError for Sqlstate {
        fn message(&self) -> &str {
            self.0
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn postgres(code: &'static str) -> StoreError {
        StoreError::from_sqlx(
            "postgres://x",
            sqlx::Error::Database(Box::new(Sqlstate(code))),
        )
    }

    #[test]
    fn postgres_sqlstates_are_not_read_as_sqlite_codes() {
        // All-digit SQLSTATEs: connection failure, serialization failure,
        // too many connections. Read as SQLite codes they were "not retryable".
        for code in ["08006", "40001", "53300", "57P01", "40P01"] {
            assert!(postgres(code).is_retryable(), "{code}");
        }
        for code in ["23505", "42P01", "22P02"] {
            assert!(!postgres(code).is_retryable(), "{code}");
        }
    }

    #[test]
    fn timeouts_and_failovers_pass_and_only_bad_input_is_refused() {
        // statement_timeout, lock_timeout, read-only after a failover,
        // idle-in-transaction timeout: worth another try, never a skip.
        for code in ["57014", "55P03", "25006", "25P03"] {
            assert!(postgres(code).is_retryable(), "{code}");
            assert!(!postgres(code).is_refused_input(), "{code}");
        }
        for code in ["23505", "22P02", "22003"] {
            assert!(postgres(code).is_refused_input(), "{code}");
        }
        // A missing table or function is the operator's, not the input's.
        assert!(!postgres("42P01").is_refused_input());
        assert!(StoreError::invalid("kind", "empty").is_refused_input());
        assert!(!StoreError::from_sqlx("x", sqlx::Error::PoolTimedOut).is_refused_input());
    }

    #[test]
    fn connection_errors_are_retryable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = StoreError::from_sqlx("sqlite:///x", sqlx::Error::Io(io));
        assert!(error.is_retryable());
        assert!(StoreError::from_sqlx("x", sqlx::Error::PoolTimedOut).is_retryable());
        assert!(!StoreError::from_sqlx("x", sqlx::Error::RowNotFound).is_retryable());
    }

    #[test]
    fn wrong_state_reads_as_a_sentence() {
        let error = StoreError::WrongState {
            id: 7,
            action: "delete",
            state: JobState::Running,
            hint: "; wait until it finishes or is released",
        };
        assert_eq!(
            error.to_string(),
            "cannot delete job 7 in state running; wait until it finishes or is released"
        );
    }
}
