//! Delivering one job: an HTTP POST to the app's own workers through the
//! front's router (the same worker slots, concurrency and drain as
//! requests), or a command with the payload on stdin.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;

use super::run::StartMark;
use super::verdict::{self, MAX_ERROR_SNIPPET, Verdict};
use crate::config::jobs::fill_path;
use crate::proxy::Front;
use crate::proxy::headers::JOB_TOKEN_HEADER;
use crate::proxy::router::Rejected;
use crate::proxy::upstream;
use crate::supervisor::command::{self, AbortOnDrop, CommandOutcome, CommandSpec};
use crate::supervisor::reaper::{ExitStatus, Reaper};
use curfew_store::Job;

/// No worker slot became free: try the job again after this (no attempt spent).
const NO_WORKER_SNOOZE: Duration = Duration::from_secs(1);
/// A stopped command gets this long between SIGTERM and SIGKILL.
const COMMAND_GRACE: Duration = Duration::from_secs(2);

/// POST the job to `template` on one of the app's workers, within `timeout`
/// (waiting for a free worker slot included). `mark` follows whether the
/// job waits for a worker.
pub(super) async fn http(
    front: &Arc<Front>,
    template: &str,
    job: &Job,
    token: &str,
    timeout: Duration,
    mark: &mut StartMark<'_>,
) -> Verdict {
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started) + timeout;
    let path = fill_path(template, &job.kind, &job.queue);
    let body = Bytes::from(payload_json(job));
    let mut excluded: Vec<u64> = Vec::new();
    loop {
        // The future (and its borrow of `excluded`) ends with this block.
        let acquired = {
            let acquire = front
                .router
                .acquire(&Method::POST, &path, started, &excluded);
            tokio::pin!(acquire);
            // A free worker now: deliver. None: the job waits in the front's
            // queue (its place kept while the store is told so).
            let now = tokio::select! {
                biased;
                r = &mut acquire => Some(r),
                _ = std::future::ready(()) => None,
            };
            match now {
                Some(r) => Ok(r),
                None => {
                    if !mark.waiting().await {
                        return lost_lease();
                    }
                    tokio::time::timeout_at(deadline, acquire).await
                }
            }
        };
        let lease = match acquired {
            Err(_) => {
                return Verdict::Snooze {
                    after: NO_WORKER_SNOOZE,
                    why: format!("no worker became free within the job timeout ({timeout:?})"),
                };
            }
            Ok(Err(Rejected::QueueFull)) => {
                return Verdict::Snooze {
                    after: NO_WORKER_SNOOZE,
                    why: "every worker is busy and the request queue is full".to_owned(),
                };
            }
            Ok(Err(Rejected::Unavailable)) => {
                return Verdict::Snooze {
                    after: NO_WORKER_SNOOZE,
                    why: "no worker accepted the connection".to_owned(),
                };
            }
            Ok(Ok(lease)) => lease,
        };
        let (conn, ours) = tokio::join!(
            tokio::time::timeout_at(deadline, upstream::open(lease.pool.addr())),
            mark.started()
        );
        if !ours {
            return lost_lease();
        }
        let io = match conn {
            Err(_) => {
                return Verdict::Fail {
                    error: format!(
                        "timed out after {timeout:?} connecting to worker {}",
                        lease.worker_id
                    ),
                };
            }
            Ok(Err(e)) => {
                tracing::debug!(worker = lease.worker_id, error = %e, "Worker refused a job connection; trying another.");
                front.worker_refused(lease.uid);
                excluded.push(lease.uid);
                // Never reached the worker: not a served request.
                lease.unused();
                continue;
            }
            Ok(Ok(io)) => io,
        };
        let (mut tx, conn) = match http1::Builder::new().handshake::<_, Full<Bytes>>(io).await {
            Ok(pair) => pair,
            Err(e) => {
                excluded.push(lease.uid);
                tracing::debug!(worker = lease.worker_id, error = %e, "Job connection handshake failed; trying another worker.");
                lease.unused();
                continue;
            }
        };
        // Dropped with this function: the connection closes with it.
        let _conn = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let request = match build_request(&path, job, token, body.clone()) {
            Ok(r) => r,
            Err(e) => return Verdict::Fail { error: e },
        };
        let exchange = async {
            let res = tx.send_request(request).await?;
            let (parts, body) = res.into_parts();
            // Only the start of the body is kept (as the error text).
            let bytes = match Limited::new(body, 64 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => Bytes::new(),
            };
            Ok::<_, hyper::Error>((parts, bytes))
        };
        let outcome = tokio::time::timeout_at(deadline, exchange).await;
        let request_name = || {
            format!(
                "POST {path} (job {}, age {} ms)",
                job.id,
                started.elapsed().as_millis()
            )
        };
        return match outcome {
            Ok(Ok((parts, bytes))) => {
                let retry_after = parts
                    .headers
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok());
                let snippet = &bytes[..bytes.len().min(MAX_ERROR_SNIPPET)];
                verdict::of_http(
                    parts.status.as_u16(),
                    retry_after,
                    snippet,
                    SystemTime::now(),
                )
            }
            Ok(Err(_)) if front.router.stopped_by_curfew(lease.uid) => Verdict::Interrupted {
                why: format!(
                    "its worker {} was stopped by curfew (reload, recycle or scale down) before the job finished",
                    lease.worker_id
                ),
            },
            Ok(Err(e)) => {
                front.worker_broke(lease.uid, request_name());
                Verdict::Fail {
                    error: format!(
                        "worker {} failed during the job (it closed the connection or died): {e}",
                        lease.worker_id
                    ),
                }
            }
            Err(_) => {
                if front.worker_concurrency == 1 {
                    // A sync worker still busy with the job past its timeout
                    // is hung: it would take no other work. Abort it (stack
                    // dump) like a hung request.
                    front.worker_hung(
                        lease.uid,
                        format!("job exceeded its timeout ({timeout:?})"),
                        request_name(),
                    );
                }
                Verdict::Fail {
                    error: format!("timed out after {timeout:?}"),
                }
            }
        };
    }
}

/// The run's lease was lost: it is being abandoned (the caller ignores
/// this verdict).
fn lost_lease() -> Verdict {
    Verdict::Interrupted {
        why: "its lease was lost before delivery".to_owned(),
    }
}

fn build_request(
    path: &str,
    job: &Job,
    token: &str,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let value =
        |v: String| HeaderValue::from_str(&v).map_err(|e| format!("cannot send header: {e}"));
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = path
        .parse()
        .map_err(|e| format!("delivery path {path:?} is not a valid URL path: {e}"))?;
    let h = req.headers_mut();
    h.insert(header::HOST, HeaderValue::from_static("curfew-jobs"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert("x-job-id", value(job.id.to_string())?);
    h.insert("x-job-attempt", value(job.attempt.to_string())?);
    h.insert("x-job-max-attempts", value(job.max_attempts.to_string())?);
    h.insert("x-job-kind", value(job.kind.clone())?);
    h.insert("x-job-queue", value(job.queue.clone())?);
    h.insert(JOB_TOKEN_HEADER, value(token.to_owned())?);
    Ok(req)
}

/// The job's payload as JSON text, as the app receives it.
fn payload_json(job: &Job) -> Vec<u8> {
    // Serializing a `serde_json::Value` into memory cannot fail: its map
    // keys are strings and nothing is written to I/O.
    serde_json::to_vec(&job.payload).unwrap_or_default()
}

/// Run `argv` for the job: the payload (JSON) on stdin, the job in
/// `CURFEW_JOB_*` variables; exit 0 done, 75 snooze, else failed. `stop`
/// ends it early (SIGTERM, SIGKILL after a grace): then `None`. A command
/// never waits for a worker: its claim is its start.
pub(super) async fn command(
    reaper: &Reaper,
    argv: &[String],
    cwd: Option<&std::path::Path>,
    job: &Job,
    timeout: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> Option<Verdict> {
    let mut stdin = payload_json(job);
    stdin.push(b'\n');
    let (id, queue, kind) = (job.id, job.queue.clone(), job.kind.clone());
    let log: command::LineLogger = Arc::new(move |pid, stream, line| {
        tracing::info!(job_id = id, queue = %queue, kind = %kind, pid, stream, "{line}");
    });
    let spec = CommandSpec {
        argv,
        env: vec![
            ("CURFEW_JOB_ID".to_owned(), job.id.to_string()),
            ("CURFEW_JOB_ATTEMPT".to_owned(), job.attempt.to_string()),
            (
                "CURFEW_JOB_MAX_ATTEMPTS".to_owned(),
                job.max_attempts.to_string(),
            ),
            ("CURFEW_JOB_KIND".to_owned(), job.kind.clone()),
            ("CURFEW_JOB_QUEUE".to_owned(), job.queue.clone()),
        ],
        stdin,
        cwd,
        log,
    };
    let timed_out = AtomicBool::new(false);
    let stop = async {
        tokio::select! {
            _ = tokio::time::sleep(timeout) => timed_out.store(true, Ordering::Relaxed),
            _ = stop => {}
        }
    };
    match command::run_graceful(reaper, spec, stop, COMMAND_GRACE).await {
        CommandOutcome::Exited {
            status,
            last_stderr,
        } => {
            let code = match status {
                ExitStatus::Code(c) => Some(c),
                ExitStatus::Signal(_) => None,
            };
            Some(verdict::of_exit(
                code,
                &status.to_string(),
                last_stderr.as_deref(),
            ))
        }
        CommandOutcome::Stopped if timed_out.load(Ordering::Relaxed) => Some(Verdict::Fail {
            error: format!("timed out after {timeout:?}"),
        }),
        CommandOutcome::Stopped => None,
        CommandOutcome::SpawnFailed(e) => Some(Verdict::Fail { error: e }),
        CommandOutcome::Lost => Some(Verdict::Fail {
            error: "its exit status was lost".to_owned(),
        }),
    }
}
