//! What the job API and the status report may take from the store, so that
//! no flood of API calls or scrapes can starve the processor itself: the
//! store's pool is shared with claims, lease renewals and verdicts, and a
//! job whose lease cannot be renewed is lost to another processor.
//!
//! - At most [`API_STORE_CALLS`] job-API requests (admin HTTP and control
//!   socket) use the store at once; the pool has that many connections on
//!   top of what the queues need. A request that waits [`API_WAIT`] for its
//!   turn gets 503 with `Retry-After` (nothing was done).
//! - At most one listing with payloads is built at a time, each bounded by
//!   [`PAYLOAD_PAGE_BYTES`], so `GET /jobs?payload=1` cannot multiply
//!   curfew's memory by the number of clients.
//! - Status and metrics: one store count in flight at a time; callers that
//!   arrive while one runs wait and share a result that started after they
//!   arrived (never an older one).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::api::ApiError;
use curfew_store::QueueStats;

/// Job-API requests that may use the store at once.
pub const API_STORE_CALLS: usize = 4;
/// How long a job-API request waits for its turn before 503.
pub const API_WAIT: Duration = Duration::from_secs(5);
/// How long a listing with payloads waits for the one payload page.
pub const PAYLOAD_WAIT: Duration = Duration::from_secs(30);
/// Payload bytes one `GET /jobs?payload=1` page may carry (by
/// `jobs.max_payload`: at least one job).
pub const PAYLOAD_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Most jobs with payloads in one page, for payloads up to `max_payload`.
pub fn payload_page_limit(max_payload: usize) -> u32 {
    (PAYLOAD_PAGE_BYTES / max_payload.max(1)).clamp(1, u32::MAX as usize) as u32
}

pub(super) struct Gate {
    api: Arc<Semaphore>,
    payload: Arc<Semaphore>,
    stats: tokio::sync::Mutex<Option<Counted>>,
}

/// The store's counts, and when the query that produced them started.
#[derive(Clone)]
pub(super) struct Counted {
    pub(super) started: Instant,
    pub(super) stats: Option<Vec<QueueStats>>,
    pub(super) paused: Vec<String>,
}

/// A job-API request's turn at the store (and, for a listing with
/// payloads, the one payload page being built).
pub struct ApiTurn {
    _api: OwnedSemaphorePermit,
    _payload: Option<OwnedSemaphorePermit>,
}

impl Gate {
    pub(super) fn new() -> Self {
        Gate {
            api: Arc::new(Semaphore::new(API_STORE_CALLS)),
            payload: Arc::new(Semaphore::new(1)),
            stats: tokio::sync::Mutex::new(None),
        }
    }

    pub(super) async fn turn(&self, with_payloads: bool) -> Result<ApiTurn, ApiError> {
        let busy = |waited: Duration| ApiError {
            status: 503,
            message: format!(
                "the job store is busy with other API requests (at most {API_STORE_CALLS} at once, one page of payloads at a time; waited {waited:?}); nothing was done: retry"
            ),
        };
        // The payload turn first (a waiting payload listing must not sit on
        // one of the API's store turns meanwhile); pages are built one at a
        // time, each in well under a second, so a listing waits longer.
        let payload = match with_payloads {
            true => match tokio::time::timeout(PAYLOAD_WAIT, self.payload.clone().acquire_owned())
                .await
            {
                Ok(Ok(p)) => Some(p),
                // The semaphores are never closed; a timeout is the busy case.
                _ => return Err(busy(PAYLOAD_WAIT)),
            },
            false => None,
        };
        match tokio::time::timeout(API_WAIT, self.api.clone().acquire_owned()).await {
            Ok(Ok(api)) => Ok(ApiTurn {
                _api: api,
                _payload: payload,
            }),
            _ => Err(busy(API_WAIT)),
        }
    }

    /// The store's counts by `count`, shared with every caller that arrived
    /// while it ran.
    pub(super) async fn counted<F, Fut>(&self, count: F) -> Counted
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Counted>,
    {
        let arrived = Instant::now();
        let mut cached = self.stats.lock().await;
        if let Some(c) = cached.as_ref()
            && c.started >= arrived
        {
            return c.clone();
        }
        let fresh = count().await;
        *cached = Some(fresh.clone());
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_payload_page_is_bounded_by_bytes() {
        assert_eq!(payload_page_limit(1024 * 1024), 4);
        assert_eq!(payload_page_limit(64 * 1024 * 1024), 1);
        assert_eq!(payload_page_limit(1024), 4096);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_count_that_started_after_them() {
        let gate = Arc::new(Gate::new());
        let queries = Arc::new(AtomicUsize::new(0));
        let count = |q: Arc<AtomicUsize>| {
            move || async move {
                let started = Instant::now();
                q.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                Counted {
                    started,
                    stats: Some(Vec::new()),
                    paused: Vec::new(),
                }
            }
        };
        // The first caller runs a count; eight arriving while it runs wait,
        // then share exactly one more (the first began before they arrived).
        let first = tokio::spawn({
            let (g, q) = (gate.clone(), queries.clone());
            async move { g.counted(count(q)).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let (g, q) = (gate.clone(), queries.clone());
                tokio::spawn(async move { g.counted(count(q)).await })
            })
            .collect();
        first.await.expect("first");
        for w in waiters {
            w.await.expect("waiter");
        }
        assert_eq!(queries.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_api_turns_a_request_waits_then_gets_503() {
        let gate = Gate::new();
        let mut held = Vec::new();
        for _ in 0..API_STORE_CALLS {
            held.push(gate.turn(false).await.expect("a turn"));
        }
        let e = gate.turn(false).await.err().expect("busy");
        assert_eq!(e.status, 503);
        assert!(e.message.contains("retry"), "{}", e.message);
        drop(held.pop());
        assert!(gate.turn(false).await.is_ok());
    }
}
