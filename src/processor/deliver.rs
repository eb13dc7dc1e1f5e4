//! Delivering one job: an HTTP POST to the app's own workers through the
//! front's router (the same worker slots, concurrency and drain as
//! requests), or a command with the payload on stdin.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Limited};

use super::run::StartMark;
use super::verdict::{self, MAX_ERROR_SNIPPET, Verdict};
use crate::config::jobs::fill_path;
use crate::proxy::body::UpstreamBody;
use crate::proxy::dispatch::{DispatchError, Dispatched, Dispatcher, Observer, Work, until};
use crate::proxy::headers::JOB_TOKEN_HEADER;
use crate::supervisor::command::{self, CommandOutcome, CommandSpec};
use crate::supervisor::reaper::{ExitStatus, Reaper};
use curfew_store::Job;

/// No worker slot became free: try the job again after this (no attempt spent).
const NO_WORKER_SNOOZE: Duration = Duration::from_secs(1);
/// The most of a worker's answer kept (the start of it is the error text).
const MAX_ANSWER: usize = 64 * 1024;
/// A stopped command gets this long between SIGTERM and SIGKILL.
pub(super) const COMMAND_GRACE: Duration = Duration::from_secs(2);

/// POST the job to `template` on one of the app's workers, within `timeout`
/// (waiting for a free worker slot included). `mark` follows whether the
/// job waits for a worker.
pub(super) async fn http(
    dispatcher: &Dispatcher,
    template: &str,
    job: &Job,
    token: &str,
    timeout: Duration,
    mark: &mut StartMark<'_>,
) -> Verdict {
    let path = fill_path(template, &job.kind, &job.queue);
    let request = match build_request(&path, job, token, Bytes::from(payload_json(job))) {
        Ok(r) => r,
        Err(e) => return Verdict::Fail { error: e },
    };
    let work = Work {
        method: &Method::POST,
        path: &path,
        started: Instant::now(),
        timeout: Some(timeout),
        job: Some(job.id),
        body_done: None,
    };
    let answer = match dispatcher.dispatch(request, &work, mark).await {
        Ok(d) => read_answer(dispatcher, &work, d).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok((parts, bytes)) => {
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
        Err(e) => of_dispatch_error(e, timeout),
    }
}

/// The worker's answer: its head and the start of its body (the error
/// text), read within the job's deadline (past it, the worker is judged
/// like one that did not answer). A body read to its end gives the
/// connection back to the pool.
async fn read_answer(
    dispatcher: &Dispatcher,
    work: &Work<'_>,
    d: Dispatched,
) -> Result<(http::response::Parts, Bytes), DispatchError> {
    let (parts, body) = d.response.into_parts();
    let read = until(work.deadline(), Limited::new(body, MAX_ANSWER).collect()).await;
    match read {
        None => Err(dispatcher.timed_out(&d.lease, work)),
        Some(Ok(collected)) => {
            d.lease.pool.put(d.upstream);
            Ok((parts, collected.to_bytes()))
        }
        // Broken off or longer than we keep: the head is the answer (the
        // connection is not reused).
        Some(Err(_)) => Ok((parts, Bytes::new())),
    }
}

/// What a delivery that did not get an answer means for the job.
fn of_dispatch_error(e: DispatchError, timeout: Duration) -> Verdict {
    let snooze = |why: String| Verdict::Snooze {
        after: NO_WORKER_SNOOZE,
        why,
    };
    match e {
        DispatchError::NoWorkerInTime => snooze(format!(
            "no worker became free within the job timeout ({timeout:?})"
        )),
        DispatchError::QueueFull | DispatchError::Unavailable => snooze(e.to_string()),
        DispatchError::ConnectTimeout { worker } => Verdict::Fail {
            error: format!("timed out after {timeout:?} connecting to worker {worker}"),
        },
        DispatchError::Timeout { .. } => Verdict::Fail {
            error: format!("timed out after {timeout:?}"),
        },
        DispatchError::Broke {
            worker,
            stopped_by_curfew: true,
            ..
        } => Verdict::Interrupted {
            why: format!(
                "its worker {worker} was stopped by curfew (reload, recycle or scale down) before the job finished"
            ),
        },
        DispatchError::Broke { worker, source, .. } => Verdict::Fail {
            error: format!(
                "worker {worker} failed during the job (it closed the connection or died): {source}"
            ),
        },
        DispatchError::Abandoned => lost_lease(),
        // A job's body is curfew's own, never a client's.
        DispatchError::ClientBody { .. } | DispatchError::ClientSlow => Verdict::Fail {
            error: e.to_string(),
        },
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
) -> Result<Request<UpstreamBody>, String> {
    let value =
        |v: String| HeaderValue::from_str(&v).map_err(|e| format!("cannot send header: {e}"));
    let mut req = Request::new(UpstreamBody::bytes(body));
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
    let log: command::LineLogger = Arc::new(move |pid, stream, ev| {
        let traceback = ev
            .block
            .as_deref()
            .map(|b| tracing::field::display(crate::supervisor::output::OneLine(b)));
        let msg = &ev.message;
        crate::supervisor::output::at_level!(ev.level, job_id = id, queue = %queue, kind = %kind, pid, stream, traceback, "{msg}");
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

impl Observer for StartMark<'_> {
    async fn waiting(&mut self) -> bool {
        StartMark::waiting(self).await
    }
    async fn started(&mut self) -> bool {
        StartMark::started(self).await
    }
}
