//! `curfew enqueue` / `curfew jobs` requests from the control socket.

use super::Processor;
use super::api::{self, ApiError, EnqueueManyReply, EnqueueReply, EnqueueRequest};
use crate::protocol::jobs::JobsReply;
use curfew_store::{CancelOutcome, Job, now_ms};

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

    /// Enqueues many jobs in one transaction, all or nothing. Every bad job
    /// is named by its index (from 0): first the request's own checks and
    /// the queue, then the store's.
    pub async fn submit_many(
        &self,
        requests: Vec<EnqueueRequest>,
    ) -> Result<EnqueueManyReply, ApiError> {
        if requests.is_empty() {
            return Ok(EnqueueManyReply {
                jobs: Vec::new(),
                created: 0,
            });
        }
        if requests.len() > curfew_store::MAX_BATCH {
            return Err(ApiError::bad(format!(
                "invalid batch: {} jobs; at most {} in one batch",
                requests.len(),
                curfew_store::MAX_BATCH
            )));
        }
        let now = now_ms();
        let mut jobs = Vec::with_capacity(requests.len());
        let mut errors: Vec<(usize, ApiError)> = Vec::new();
        for (i, request) in requests.into_iter().enumerate() {
            let checked = request
                .into_new_job(now)
                .and_then(|job| self.with_queue_defaults(job).map_err(ApiError::from))
                .and_then(|job| {
                    self.inner.store.check(&job)?;
                    Ok(job)
                });
            match checked {
                Ok(job) => jobs.push(job),
                Err(e) => errors.push((i, e)),
            }
        }
        if let Some((_, first)) = errors.first() {
            let status = if errors.iter().all(|(_, e)| e.status == first.status) {
                first.status
            } else {
                400
            };
            let listed: Vec<String> = errors
                .iter()
                .map(|(i, e)| format!("job {i}: {}", e.message))
                .collect();
            return Err(ApiError {
                status,
                message: format!("invalid batch, nothing stored: {}", listed.join("; ")),
            });
        }
        let queues: Vec<String> = jobs.iter().map(|j| j.queue.clone()).collect();
        let enqueued = self.inner.store.enqueue_many(jobs).await?;
        let mut woken: Vec<&str> = Vec::new();
        for q in &queues {
            if !woken.contains(&q.as_str()) {
                woken.push(q);
                if let Some(state) = self.inner.queues.get(q) {
                    state.wake.notify_one();
                }
            }
        }
        let created = enqueued.iter().filter(|e| e.created).count();
        tracing::info!(
            jobs = enqueued.len(),
            created,
            queues = %woken.join(","),
            "Enqueued a batch of jobs."
        );
        Ok(EnqueueManyReply {
            jobs: enqueued
                .into_iter()
                .zip(queues)
                .map(|(e, queue)| EnqueueReply {
                    id: e.id,
                    created: e.created,
                    queue,
                })
                .collect(),
            created,
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
            JobsRequest::EnqueueMany { jobs } => {
                let reply = self.submit_many(jobs).await?;
                let msg = format!(
                    "enqueued {} jobs ({} new, {} known by idempotency key)",
                    reply.jobs.len(),
                    reply.created,
                    reply.jobs.len() - reply.created
                );
                Ok((msg, Some(JobsReply::EnqueuedMany(reply))))
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
                    // `curfew jobs` (a local operator) shows them.
                    with_payload: true,
                    newest_first: false,
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
                let msg = match self.cancel(id).await? {
                    CancelOutcome::Cancelled => format!("job {id} cancelled"),
                    CancelOutcome::Requested => format!(
                        "job {id} is running: cancel requested; the curfew running it stops it (within a second or so) and it ends cancelled"
                    ),
                };
                Ok((msg, None))
            }
            JobsRequest::Delete { id } => {
                store.delete(id).await?;
                Ok((format!("job {id} deleted"), None))
            }
            JobsRequest::Pause { queue } => {
                let msg = if store.pause(&queue).await? {
                    tracing::info!(
                        queue,
                        "Queue paused: no processor sharing the store claims from it."
                    );
                    format!(
                        "queue {queue} paused: no new jobs are claimed from it on any curfew sharing the store; running jobs go on"
                    )
                } else {
                    format!("queue {queue} was paused already")
                };
                Ok((msg, None))
            }
            JobsRequest::Resume { queue } => {
                let msg = if store.resume(&queue).await? {
                    tracing::info!(queue, "Queue resumed.");
                    if let Some(q) = self.inner.queues.get(&queue) {
                        q.wake.notify_one();
                    }
                    format!("queue {queue} resumed")
                } else {
                    format!("queue {queue} was not paused")
                };
                Ok((msg, None))
            }
        }
    }
}
