//! The job API on the admin address:
//!
//! | request                                   | answer                                    |
//! |-------------------------------------------|-------------------------------------------|
//! | `POST /jobs` (JSON, see [`EnqueueRequest`]) | 201 `{"id","created":true,"queue"}`; 200 with `created: false` for a known idempotency key |
//! | `POST /jobs` with a JSON array of jobs, or NDJSON (`Content-Type: application/x-ndjson`) | one transaction, all or nothing: 201 `{"jobs": [{"id","created","queue"}…], "created": n}` (200 when none was new); an error names each bad job by index |
//! | `GET /jobs/<id>`                          | 200 the job (`cancel_requested_at` set while a cancel of a running job is pending); 404 |
//! | `POST /jobs/<id>/cancel`                  | 200 `{"id","outcome":"cancelled"}` for a queued or failed job; 202 `{"id","outcome":"cancel_requested"}` for a running one (the curfew running it stops it and it ends `cancelled`); 404; 409 for a finished job |
//! | `GET /jobs?queue=&state=&limit=&after=&payload=1&order=` | 200 `{"jobs": [...]}` (payloads only with `payload=1`; `limit` ≤ 500, and with payloads ≤ 4 MiB / `jobs.max_payload`; `order=newest`: by id descending, `after` then pages down) |
//!
//! The `Idempotency-Key` header is the same as the body's `idempotency_key`.
//! Errors are JSON `{"error": "..."}` with 400 (bad input, naming the
//! field), 404, 405, 413 (payload over `jobs.max_payload`), 422 (unknown
//! queue), 503 (the API's store turns all taken for 5 s — see
//! `processor::gate`; `Retry-After: 1`: nothing was stored; or the store
//! unreachable, or curfew stopping mid-write: maybe stored if the write was
//! sent, see `EnqueueError::ShuttingDown`).

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::processor::Processor;
use crate::processor::api::{self, ApiError};
use crate::processor::gate;
use curfew_store::{CancelOutcome, ListFilter};

pub async fn respond(jobs: Option<&Processor>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(jobs) = jobs else {
        return error(&ApiError {
            status: 404,
            message: "no job processor: add a [jobs] section to curfew.toml".to_owned(),
        });
    };
    match handle(jobs, req).await {
        Ok(r) => r,
        Err(e) => error(&e),
    }
}

async fn handle(
    jobs: &Processor,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::POST, "/jobs") => enqueue(jobs, req).await,
        (Method::GET, "/jobs") => list(jobs, req.uri().query().unwrap_or("")).await,
        (Method::POST, p) if p.starts_with("/jobs/") && p.ends_with("/cancel") => {
            let _turn = jobs.api_turn(false).await?;
            let id = job_id(p.trim_end_matches("/cancel"))?;
            let (status, outcome) = match jobs.cancel(id).await? {
                CancelOutcome::Cancelled => (StatusCode::OK, "cancelled"),
                CancelOutcome::Requested => (StatusCode::ACCEPTED, "cancel_requested"),
            };
            Ok(json(
                status,
                &serde_json::json!({ "id": id, "outcome": outcome }),
            ))
        }
        (Method::GET, p) => {
            let _turn = jobs.api_turn(false).await?;
            Ok(json(StatusCode::OK, &jobs.job(job_id(p)?).await?))
        }
        (m, p) => Err(ApiError {
            status: 405,
            message: format!(
                "{m} {p} is not supported: POST /jobs enqueues (one job, or a JSON array / NDJSON of jobs), GET /jobs/<id> reads a job, POST /jobs/<id>/cancel cancels one"
            ),
        }),
    }
}

/// The id of `/jobs/<id>`, or 404.
fn job_id(path: &str) -> Result<i64, ApiError> {
    path.strip_prefix("/jobs/")
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| ApiError {
            status: 404,
            message: format!("not found: {path}; a job is at /jobs/<numeric id>"),
        })
}

async fn enqueue(
    jobs: &Processor,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let header_key = match req.headers().get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    ApiError::bad("invalid Idempotency-Key header: it must be visible ASCII")
                })?
                .to_owned(),
        ),
    };
    let ndjson = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            let t = t.trim_start().to_ascii_lowercase();
            t.starts_with("application/x-ndjson")
                || t.starts_with("application/jsonl")
                || t.starts_with("application/jsonlines")
        });
    // The payload limit plus room for the envelope (a batch: up to 64 MiB);
    // past it, 413 without reading the rest.
    let limit = (jobs.config().max_payload + 64 * 1024).max(api::MAX_BATCH_BODY);
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ApiError {
                status: 413,
                message: format!(
                    "invalid payload: the request body is over {limit} bytes (jobs.max_payload is {} bytes)",
                    jobs.config().max_payload
                ),
            });
        }
        Err(e) => return Err(ApiError::bad(format!("cannot read the request body: {e}"))),
    };
    // The store turn only once the body is read: a slow client must not
    // hold one of the API's few turns while it uploads.
    let _turn = jobs.api_turn(false).await?;
    if ndjson || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        if header_key.is_some() {
            return Err(ApiError::bad(
                "the Idempotency-Key header names one job; in a batch give each job its idempotency_key",
            ));
        }
        let reply = jobs.submit_many(api::parse_batch(&body)?).await?;
        let status = if reply.created > 0 {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        return Ok(json(status, &reply));
    }
    if body.len() > jobs.config().max_payload + 64 * 1024 {
        return Err(ApiError {
            status: 413,
            message: format!(
                "invalid payload: the request body is {} bytes (jobs.max_payload is {} bytes)",
                body.len(),
                jobs.config().max_payload
            ),
        });
    }
    let mut request = api::parse_body(&body)?;
    match (&request.idempotency_key, header_key) {
        (Some(a), Some(b)) if *a != b => {
            return Err(ApiError::bad(
                "the Idempotency-Key header and the body's idempotency_key differ; give one",
            ));
        }
        (None, Some(b)) => request.idempotency_key = Some(b),
        _ => {}
    }
    let reply = jobs.submit(request).await?;
    let status = if reply.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(status, &reply))
}

async fn list(jobs: &Processor, query: &str) -> Result<Response<Full<Bytes>>, ApiError> {
    let mut filter = parse_filter(query)?;
    if filter.with_payload {
        // A page of payloads is bounded in bytes, not only in jobs (500
        // payloads of 1 MiB would be half a gigabyte); page with `after`.
        filter.limit = filter
            .limit
            .min(gate::payload_page_limit(jobs.config().max_payload));
    }
    let _turn = jobs.api_turn(filter.with_payload).await?;
    let found = jobs.store().list(filter).await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "jobs": found })))
}

/// Most jobs one `GET /jobs` page returns.
pub const MAX_API_LIMIT: u32 = 500;

/// `queue=&state=&limit=&after=&payload=&order=` → a list filter.
pub fn parse_filter(query: &str) -> Result<ListFilter, ApiError> {
    // Payloads only when asked for (`payload=1`): a page of large payloads
    // would cost memory for a list that rarely needs them.
    let mut filter = ListFilter {
        with_payload: false,
        ..ListFilter::default()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "queue" => filter.queue = Some(v.to_owned()),
            "state" => filter.state = Some(api::parse_state(v)?),
            "limit" => filter.limit = v
                .parse()
                .ok()
                .filter(|n| (1..=MAX_API_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::bad(format!(
                        "invalid limit {v:?}: give 1 to {MAX_API_LIMIT} (page with after=<last id>)"
                    ))
                })?,
            "payload" => {
                filter.with_payload = match v {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => {
                        return Err(ApiError::bad(format!(
                            "invalid payload {v:?}: give 1 (include the payloads) or 0"
                        )));
                    }
                }
            }
            "order" => {
                filter.newest_first = match v {
                    "newest" => true,
                    "oldest" => false,
                    _ => {
                        return Err(ApiError::bad(format!(
                            "invalid order {v:?}: give newest (by id, descending) or oldest"
                        )));
                    }
                }
            }
            "after" => {
                filter.after_id =
                    Some(v.parse().map_err(|_| {
                        ApiError::bad(format!("invalid after {v:?}: give a job id"))
                    })?)
            }
            other => {
                return Err(ApiError::bad(format!(
                    "unknown query parameter {other:?}: use queue, state, limit, after, payload, order"
                )));
            }
        }
    }
    Ok(filter)
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(e: &ApiError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = json(status, &serde_json::json!({ "error": e.message }));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let f = parse_filter("queue=mail&state=dead&limit=5&after=10").expect("valid");
        assert_eq!(f.queue.as_deref(), Some("mail"));
        assert_eq!(f.state, Some(curfew_store::JobState::Dead));
        assert_eq!(f.limit, 5);
        assert_eq!(f.after_id, Some(10));
        assert!(!f.with_payload, "payloads only when asked for");
        assert!(parse_filter("payload=1").expect("valid").with_payload);
        assert!(
            parse_filter("limit=501")
                .expect_err("over the cap")
                .message
                .contains("1 to 500")
        );
        assert!(parse_filter("payload=yes").is_err());
        assert!(parse_filter("order=newest").expect("valid").newest_first);
        assert!(!parse_filter("order=oldest").expect("valid").newest_first);
        assert!(
            parse_filter("order=desc")
                .expect_err("bad")
                .message
                .contains("newest")
        );
        assert!(
            parse_filter("state=bogus")
                .expect_err("bad")
                .message
                .contains("state")
        );
        assert!(
            parse_filter("limit=x")
                .expect_err("bad")
                .message
                .contains("limit")
        );
        assert!(
            parse_filter("sort=id")
                .expect_err("bad")
                .message
                .contains("sort")
        );
        assert_eq!(
            parse_filter("").expect("empty").limit,
            ListFilter::DEFAULT_LIMIT
        );
    }
}
