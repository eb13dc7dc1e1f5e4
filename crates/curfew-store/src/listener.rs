//! [`JobListener`]: the wake-ups of [`Store::listen`](crate::Store::listen),
//! from PostgreSQL's `LISTEN` or this process's own enqueues (SQLite).

use sqlx::postgres::PgListener;
use tokio::sync::broadcast;

use crate::error::StoreError;

/// Wake-ups from [`Store::listen`](crate::Store::listen).
pub struct JobListener {
    pub(crate) inner: ListenerInner,
    pub(crate) store: String,
}

pub(crate) enum ListenerInner {
    Postgres(Box<PgListener>),
    Local(broadcast::Receiver<String>),
}

impl std::fmt::Debug for JobListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobListener")
            .field("store", &self.store)
            .finish()
    }
}

impl JobListener {
    /// Waits for the next wake-up and returns its queue name. PostgreSQL:
    /// reconnects by itself after a lost connection (wake-ups sent meanwhile
    /// are lost, hence the polling); an error means the store was closed or
    /// the database is unreachable.
    pub async fn recv(&mut self) -> Result<String, StoreError> {
        match &mut self.inner {
            ListenerInner::Postgres(listener) => {
                let notification = listener
                    .recv()
                    .await
                    .map_err(|e| StoreError::from_sqlx(&self.store, e))?;
                Ok(notification.payload().to_owned())
            }
            ListenerInner::Local(rx) => loop {
                match rx.recv().await {
                    Ok(queue) => return Ok(queue),
                    // Missed some; the newest ones are still there.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(StoreError::from_sqlx(&self.store, sqlx::Error::PoolClosed));
                    }
                }
            },
        }
    }
}
