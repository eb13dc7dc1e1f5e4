//! `curfew enqueue` / `curfew jobs` requests from the control socket.

use super::Processor;
use super::api::{self, ApiError, EnqueueReply, EnqueueRequest};
use crate::protocol::jobs::JobsReply;
use curfew_store::{Job, now_ms};

impl Processor {
    /// Enqueues a job as the API and the CLI send it.
    pub async fn submit(&self, request: EnqueueRequest) -> Result<EnqueueReply, ApiError> {
        let job = request.into_new_job(now_ms())?;
        let queue = job.queue.clone();
        let e = self.enqueue(job).await?;
        Ok(EnqueueReply {
            id: e.id,
            created: e.created,
            queue,
        })
    }

    /// One job, or 404.
    pub async fn job(&self, id: i64) -> Result<Job, ApiError> {
        self.inner.store.get(id).await?.ok_or_else(|| ApiError {
            status: 404,
            message: format!("job {id} not found"),
        })
    }

    /// Answers a `curfew enqueue` / `curfew jobs` request: a message and,
    /// for enqueue, list and show, the data.
    pub async fn operate(
        &self,
        req: api::JobsRequest,
    ) -> Result<(String, Option<JobsReply>), api::ApiError> {
        use api::JobsRequest;
        let store = &self.inner.store;
        match req {
            JobsRequest::Enqueue { job } => {
                let reply = self.submit(job).await?;
                let (id, queue) = (reply.id, &reply.queue);
                let msg = if reply.created {
                    format!("enqueued job {id} in queue {queue}")
                } else {
                    format!(
                        "job {id} exists already with this idempotency key (queue {queue}); nothing added"
                    )
                };
                Ok((msg, Some(JobsReply::Enqueued(reply))))
            }
            JobsRequest::List {
                queue,
                state,
                limit,
                after,
            } => {
                let filter = curfew_store::ListFilter {
                    queue,
                    state: state.as_deref().map(api::parse_state).transpose()?,
                    limit: limit.unwrap_or(curfew_store::ListFilter::DEFAULT_LIMIT),
                    after_id: after,
                };
                let jobs = store.list(filter).await?;
                Ok((format!("{} jobs", jobs.len()), Some(JobsReply::Jobs(jobs))))
            }
            JobsRequest::Show { id } => {
                let job = self.job(id).await?;
                Ok((format!("job {id}"), Some(JobsReply::Job(Box::new(job)))))
            }
            JobsRequest::Retry { id } => {
                // The store wakes the job's queue (NOTIFY / in-process).
                store.retry(id).await?;
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
