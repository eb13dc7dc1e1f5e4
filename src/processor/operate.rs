//! `curfew enqueue` / `curfew jobs` requests from the control socket.

use super::Processor;
use super::api::{self, ApiError, EnqueueManyReply, EnqueueReply, EnqueueRequest};
use super::store_ops;
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
    /// for enqueue, list, show, periodic and prune, the data (the
    /// store-only operations through [`store_ops::operate`]).
    pub async fn operate(
        &self,
        req: api::JobsRequest,
    ) -> Result<(String, Option<JobsReply>), api::ApiError> {
        use api::JobsRequest;
        let store = &self.inner.store;
        let periodic = self.periodic_schedules();
        let cx = store_ops::StoreContext {
            retention: &self.inner.cfg.retention,
            periodic: &periodic,
        };
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
            // A cancel through this curfew stops a run of its own at once
            // (the others learn of it by their poll).
            JobsRequest::Cancel { id } => {
                let msg = store_ops::cancel_message(id, self.cancel(id).await?);
                Ok((msg, None))
            }
            // Resume also wakes this processor's loop of the queue at once.
            JobsRequest::Resume { queue } => {
                let wake = self.inner.queues.get(&queue).cloned();
                let answer = store_ops::operate(store, &cx, JobsRequest::Resume { queue }).await?;
                if let Some(q) = wake {
                    q.wake.notify_one();
                }
                Ok(answer)
            }
            // A page of payloads is bounded in bytes (as on `GET /jobs`):
            // this process is also the web front.
            JobsRequest::List {
                queue,
                state,
                limit,
                after,
                payload: true,
            } => {
                let page = super::gate::payload_page_limit(self.inner.cfg.max_payload);
                let limit = limit.unwrap_or(curfew_store::ListFilter::DEFAULT_LIMIT);
                let req = JobsRequest::List {
                    queue,
                    state,
                    limit: Some(limit.min(page)),
                    after,
                    payload: true,
                };
                store_ops::operate(store, &cx, req).await
            }
            other => store_ops::operate(store, &cx, other).await,
        }
    }
}
