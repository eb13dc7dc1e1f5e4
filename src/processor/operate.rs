//! `curfew enqueue` / `curfew jobs` requests from the control socket.

use super::Processor;
use super::api;
use crate::jobs::now_ms;

impl Processor {
    /// Answers a `curfew enqueue` / `curfew jobs` request: a message and,
    /// for enqueue, list and show, the data as JSON.
    pub async fn operate(
        &self,
        req: api::JobsRequest,
    ) -> Result<(String, Option<serde_json::Value>), api::ApiError> {
        use api::{ApiError, JobsRequest};
        let store = &self.inner.store;
        match req {
            JobsRequest::Enqueue { job } => {
                let job = job.into_new_job(now_ms())?;
                let queue = job.queue.clone();
                let e = self.enqueue(job).await?;
                let reply = api::EnqueueReply {
                    id: e.id,
                    created: e.created,
                    queue: queue.clone(),
                };
                let msg = if e.created {
                    format!("enqueued job {} in queue {queue}", e.id)
                } else {
                    format!(
                        "job {} exists already with this idempotency key (queue {queue}); nothing added",
                        e.id
                    )
                };
                Ok((msg, serde_json::to_value(reply).ok()))
            }
            JobsRequest::List {
                queue,
                state,
                limit,
                after,
            } => {
                let filter = crate::jobs::ListFilter {
                    queue,
                    state: match state {
                        None => None,
                        Some(s) => Some(
                            s.parse()
                                .map_err(|e| ApiError::bad(format!("invalid --state: {e}")))?,
                        ),
                    },
                    limit: limit.unwrap_or(crate::jobs::ListFilter::DEFAULT_LIMIT),
                    after_id: after,
                };
                let jobs = store.list(filter).await?;
                Ok((
                    format!("{} jobs", jobs.len()),
                    serde_json::to_value(jobs).ok(),
                ))
            }
            JobsRequest::Show { id } => match store.get(id).await? {
                Some(job) => Ok((format!("job {id}"), serde_json::to_value(job).ok())),
                None => Err(ApiError {
                    status: 404,
                    message: format!("job {id} not found"),
                }),
            },
            JobsRequest::Retry { id } => {
                store.retry(id).await?;
                for q in self.inner.queues.values() {
                    q.wake.notify_one();
                }
                Ok((format!("job {id} queued again"), None))
            }
            JobsRequest::Cancel { id } => {
                store.cancel(id).await?;
                Ok((format!("job {id} cancelled"), None))
            }
            JobsRequest::Delete { id } => {
                store.delete(id).await?;
                Ok((format!("job {id} deleted"), None))
            }
        }
    }
}
