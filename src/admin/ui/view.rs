//! What one load (or poll) of the status page reads, and no more: the
//! status report (as `/status`), the HTTP totals for the chart, and the
//! most recent failed and dead jobs — two list queries of at most
//! [`RECENT`] jobs each, without payloads, each given at most
//! [`STORE_TIMEOUT`].

use std::time::Duration;

use curfew_store::{Job, JobState, ListFilter};

use crate::admin::AdminState;
use crate::protocol::status::Status;

/// Most failed and dead jobs a page shows (the newest).
pub const RECENT: u32 = 20;
/// How long a page waits for the store's job list.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// The page's data.
#[derive(Debug, Clone)]
pub struct View {
    pub status: Status,
    pub http: HttpTotals,
    pub recent: Recent,
    /// The CSRF token of the viewer's session: the page offers actions.
    /// `None`: read-only (no forms).
    pub csrf: Option<String>,
}

/// Requests answered and their total duration, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HttpTotals {
    pub requests: u64,
    pub latency_sum_s: f64,
}

/// The recent failed and dead jobs, or why they are not shown.
#[derive(Debug, Clone)]
pub enum Recent {
    /// No `[jobs]` section.
    NoProcessor,
    /// Not for this viewer: an admin address reachable from other hosts
    /// without an admin_token (the job API is refused there too).
    Hidden,
    /// The store did not answer.
    Unavailable(String),
    /// Newest first.
    Jobs(Vec<Job>),
}

/// Reads the page's data; `with_jobs` false hides the job list.
pub async fn gather(state: &AdminState, with_jobs: bool, csrf: Option<String>) -> View {
    let status = state.status.report().await;
    let (requests, latency_sum_s) = state.metrics.request_totals();
    let recent = match (&state.jobs, with_jobs) {
        (None, _) => Recent::NoProcessor,
        (Some(_), false) => Recent::Hidden,
        // The job API's share of the store (`processor::gate`): a page load
        // is an API call like any other.
        (Some(p), true) => match p.api_turn(false).await {
            Ok(_turn) => recent_jobs(p.store()).await,
            Err(e) => Recent::Unavailable(e.message),
        },
    };
    View {
        status,
        http: HttpTotals {
            requests,
            latency_sum_s,
        },
        recent,
        csrf,
    }
}

async fn recent_jobs(store: &curfew_store::Store) -> Recent {
    let page = |state| {
        store.list(ListFilter {
            state: Some(state),
            limit: RECENT,
            with_payload: false,
            newest_first: true,
            ..ListFilter::default()
        })
    };
    let both = tokio::time::timeout(STORE_TIMEOUT, async {
        let dead = page(JobState::Dead).await?;
        let failed = page(JobState::Failed).await?;
        Ok::<_, curfew_store::StoreError>((dead, failed))
    })
    .await;
    match both {
        Ok(Ok((dead, failed))) => Recent::Jobs(newest(dead, failed)),
        Ok(Err(e)) => Recent::Unavailable(e.to_string()),
        Err(_) => Recent::Unavailable(format!(
            "the job store did not answer within {}s",
            STORE_TIMEOUT.as_secs()
        )),
    }
}

/// The [`RECENT`] most recently changed of both lists (by `updated_at`,
/// then id).
fn newest(dead: Vec<Job>, failed: Vec<Job>) -> Vec<Job> {
    newest_by(dead, failed, |j| (j.updated_at, j.id))
}

fn newest_by<T>(a: Vec<T>, b: Vec<T>, key: impl Fn(&T) -> (i64, i64)) -> Vec<T> {
    let mut all: Vec<T> = a.into_iter().chain(b).collect();
    all.sort_by_key(|t| std::cmp::Reverse(key(t)));
    all.truncate(RECENT as usize);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_of_both_lists_are_kept_and_no_more() {
        // (updated_at, id)
        let dead: Vec<(i64, i64)> = (0..20).map(|i| (i, i)).collect();
        let failed: Vec<(i64, i64)> = (100..120).map(|i| (i - 90, i)).collect();
        let shown = newest_by(dead, failed, |t| *t);
        assert_eq!(shown.len(), RECENT as usize);
        assert_eq!(shown[0], (29, 119), "newest first");
        assert!(shown.windows(2).all(|w| w[0] >= w[1]));
        assert!(shown.iter().any(|t| t.1 < 100), "dead ones among them");
    }
}
