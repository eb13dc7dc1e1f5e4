//! The enqueue request as the application and the CLI send it (`POST /jobs`
//! on the admin address, `curfew enqueue` over the control socket), and its
//! checks. Every error names the field and the fix.

use curfew_store::{NewJob, StoreError, Unique, UniqueScope};

use super::EnqueueError;

pub use crate::protocol::jobs::{
    EnqueueManyReply, EnqueueReply, EnqueueRequest, JobsRequest, RunAt,
};

/// The largest `POST /jobs` body holding a batch (a JSON array or NDJSON).
pub const MAX_BATCH_BODY: usize = 64 << 20;

/// Integer `run_at` values that are unix *seconds* from 2001 to 5138 — as
/// milliseconds, dates in 1970–1973 that no one schedules for.
const SECONDS_LIKE: std::ops::Range<i64> = 1_000_000_000..100_000_000_000;

/// What went wrong, with the HTTP status it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn bad(message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
        }
    }
}

impl From<EnqueueError> for ApiError {
    fn from(e: EnqueueError) -> Self {
        let status = match &e {
            EnqueueError::UnknownQueue { .. } => 422,
            EnqueueError::Store(s) => store_status(s),
            EnqueueError::ShuttingDown => 503,
        };
        ApiError {
            status,
            message: e.to_string(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError {
            status: store_status(&e),
            message: e.to_string(),
        }
    }
}

/// The HTTP status of a store error.
pub fn store_status(e: &StoreError) -> u16 {
    match e {
        StoreError::InvalidInput { .. } | StoreError::InvalidUrl { .. } => 400,
        // 413 when every bad item is too large, else 400.
        StoreError::InvalidBatch { errors } => {
            if errors
                .iter()
                .all(|(_, e)| matches!(e, StoreError::PayloadTooLarge { .. }))
            {
                413
            } else {
                400
            }
        }
        StoreError::PayloadTooLarge { .. } => 413,
        StoreError::NotFound { .. } => 404,
        StoreError::WrongState { .. } => 409,
        StoreError::Unavailable { .. } => 503,
        _ => 500,
    }
}

impl EnqueueRequest {
    /// The job to store, or what is wrong. `now_ms` is the local clock.
    pub fn into_new_job(self, now_ms: i64) -> Result<NewJob, ApiError> {
        let run_at = match (self.run_at, self.delay_s) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad("give either `run_at` or `delay_s`, not both"));
            }
            // Unix seconds of this century read as milliseconds are a date
            // in early 1970: the job would run at once, silently. No one
            // schedules for 1970-01-12 .. 1973-03-03 in milliseconds.
            (Some(RunAt::Millis(ms)), None) if (SECONDS_LIKE).contains(&ms) => {
                return Err(ApiError::bad(format!(
                    "invalid run_at {ms}: run_at is in milliseconds since the epoch, and this looks like seconds; give {}, or an RFC 3339 time",
                    ms.saturating_mul(1000)
                )));
            }
            (Some(RunAt::Millis(ms)), None) => Some(ms),
            (Some(RunAt::Text(t)), None) => Some(parse_time(&t)?),
            (None, Some(d)) if d.is_finite() && (0.0..=1e10).contains(&d) => {
                Some(now_ms + (d * 1000.0) as i64)
            }
            (None, Some(d)) => {
                return Err(ApiError::bad(format!(
                    "invalid delay_s {d}: give a number of seconds, 0 or more"
                )));
            }
            (None, None) => None,
        };
        if let Some(key) = &self.idempotency_key
            && key.is_empty()
        {
            return Err(ApiError::bad(
                "invalid idempotency_key: it is empty; leave it out or give a unique string",
            ));
        }
        let unique = unique(self.unique_key, self.unique_scope.as_deref())?;
        Ok(NewJob {
            unique,
            queue: self
                .queue
                .unwrap_or_else(|| crate::config::jobs::DEFAULT_QUEUE.to_owned()),
            kind: self.kind,
            payload: self
                .payload
                .unwrap_or_else(|| serde_json::Value::Object(Default::default())),
            priority: self.priority.unwrap_or(0),
            run_at,
            max_attempts: self.max_attempts,
            idempotency_key: self.idempotency_key,
        })
    }
}

/// `unique_key` with its `unique_scope` (default `queued+running`). The
/// store checks the key's length and the window's bounds.
fn unique(key: Option<String>, scope: Option<&str>) -> Result<Option<Unique>, ApiError> {
    let Some(key) = key else {
        return match scope {
            Some(_) => Err(ApiError::bad(
                "invalid unique_scope: it needs a unique_key; give both or neither",
            )),
            None => Ok(None),
        };
    };
    if key.is_empty() {
        return Err(ApiError::bad(
            "invalid unique_key: it is empty; leave it out or give a key such as \"reindex:42\"",
        ));
    }
    let scope = match scope.map(str::trim) {
        None => UniqueScope::QueuedRunning,
        Some("queued") => UniqueScope::Queued,
        Some("queued+running") => UniqueScope::QueuedRunning,
        Some(text) => {
            let raw = crate::config::raw::RawDuration::Text(text.to_owned());
            match crate::config::duration::parse(&raw) {
                Ok(window) if !window.is_zero() => UniqueScope::Window(window),
                _ => {
                    return Err(ApiError::bad(format!(
                        "invalid unique_scope {text:?}: use \"queued\", \"queued+running\" or a window such as \"10m\""
                    )));
                }
            }
        }
    };
    Ok(Some(Unique { key, scope }))
}

/// An RFC 3339 time (or unix milliseconds as text) → unix milliseconds.
pub fn parse_time(text: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = text.trim().parse::<i64>() {
        return Ok(ms);
    }
    text.trim()
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| {
            ApiError::bad(format!(
                "invalid run_at {text:?}: {e}; give an RFC 3339 time such as \"2026-11-21T10:00:00Z\" or unix milliseconds"
            ))
        })
}

/// A job state as given by a user (`--state`, `?state=`).
pub fn parse_state(text: &str) -> Result<curfew_store::JobState, ApiError> {
    text.parse()
        .map_err(|e| ApiError::bad(format!("invalid state: {e}")))
}

/// Parses a `POST /jobs` body, naming the field that is wrong.
pub fn parse_body(body: &[u8]) -> Result<EnqueueRequest, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad(format!(
            "invalid job: {e}; send JSON like {{\"queue\": \"default\", \"kind\": \"send_email\", \"payload\": {{\"to\": \"a@b.c\"}}}}"
        ))
    })
}

/// Parses a batch: a JSON array of jobs, or NDJSON (one job per line;
/// blank lines skipped). An error names the job by its index (from 0).
/// A batch of more than `curfew_store::MAX_BATCH` jobs is refused as soon
/// as its job past the limit is met, before the rest is read: each job
/// read costs memory (64 MiB of tiny jobs would be millions of them), so
/// the count is checked while reading, not after.
pub fn parse_batch(body: &[u8]) -> Result<Vec<EnqueueRequest>, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::bad(format!("invalid batch: the body is not UTF-8: {e}")))?;
    let too_many = || {
        ApiError::bad(format!(
            "invalid batch, nothing stored: at most {} jobs in one batch; send the rest in another",
            curfew_store::MAX_BATCH
        ))
    };
    if text.trim_start().starts_with('[') {
        let mut de = serde_json::Deserializer::from_str(text);
        let jobs = serde::Deserializer::deserialize_seq(&mut de, BoundedJobs).and_then(|jobs| {
            de.end()?;
            Ok(jobs)
        });
        return match jobs {
            Ok(jobs) => Ok(jobs),
            Err(e) if e.to_string().starts_with(TOO_MANY) => Err(too_many()),
            Err(e) => Err(ApiError::bad(format!("invalid batch, nothing stored: {e}"))),
        };
    }
    let lines = text.lines().filter(|l| !l.trim().is_empty());
    if lines.clone().count() > curfew_store::MAX_BATCH {
        return Err(too_many());
    }
    lines
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| ApiError::bad(format!("invalid batch, nothing stored: job {i}: {e}")))
        })
        .collect()
}

/// The start of the error [`BoundedJobs`] stops at the limit with.
const TOO_MANY: &str = "too many jobs";

/// A JSON array of jobs read one job at a time, each straight into an
/// [`EnqueueRequest`], stopping past `curfew_store::MAX_BATCH`.
struct BoundedJobs;

impl<'de> serde::de::Visitor<'de> for BoundedJobs {
    type Value = Vec<EnqueueRequest>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of jobs")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error as _;
        let mut jobs = Vec::new();
        loop {
            let i = jobs.len();
            let job = seq.next_element::<EnqueueRequest>().map_err(|e| {
                // serde_json adds the position to the outer error.
                let e = e.to_string();
                let e = e.split(" at line ").next().unwrap_or_default();
                A::Error::custom(format!("job {i}: {e}"))
            })?;
            match job {
                Some(_) if i == curfew_store::MAX_BATCH => return Err(A::Error::custom(TOO_MANY)),
                Some(job) => jobs.push(job),
                None => return Ok(jobs),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_past_the_limit_is_refused_while_read() {
        let job = r#"{"kind": "a"}"#;
        let max = curfew_store::MAX_BATCH;
        let array = |n: usize| format!("[{}]", vec![job; n].join(","));
        assert_eq!(
            parse_batch(array(max).as_bytes()).expect("the most").len(),
            max
        );
        // One more, and then junk that is never read.
        let over = format!(
            "{}, not json at all",
            &array(max + 1)[..array(max + 1).len() - 1]
        );
        let e = parse_batch(over.as_bytes()).expect_err("one too many");
        assert!(e.message.contains("at most 10000 jobs"), "{}", e.message);
        let ndjson = vec![job; max + 1].join("\n");
        let e = parse_batch(ndjson.as_bytes()).expect_err("one too many");
        assert!(e.message.contains("at most 10000 jobs"), "{}", e.message);
        // Not an array of jobs, or trailing junk.
        for bad in [r#"[{"kind": "a"}] x"#, r#"[1]"#] {
            let e = parse_batch(bad.as_bytes()).expect_err(bad);
            assert!(e.message.starts_with("invalid batch"), "{}", e.message);
        }
    }

    #[test]
    fn batches_as_an_array_or_ndjson_name_the_bad_job() {
        let jobs = parse_batch(br#"[{"kind": "a"}, {"kind": "b", "queue": "q"}]"#).expect("array");
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[1].queue.as_deref(), Some("q"));
        let jobs = parse_batch(b"{\"kind\": \"a\"}\n\n{\"kind\": \"b\"}\n").expect("ndjson");
        assert_eq!(jobs.len(), 2);
        let e = parse_batch(br#"[{"kind": "a"}, {"kind": "b", "prio": 1}]"#).expect_err("bad");
        assert!(
            e.message.contains("job 1") && e.message.contains("prio"),
            "{}",
            e.message
        );
        let e = parse_batch(b"{\"kind\": \"a\"}\n{oops}\n").expect_err("bad line");
        assert!(e.message.contains("job 1"), "{}", e.message);
        assert_eq!(parse_batch(b"[]").expect("empty").len(), 0);
    }

    #[test]
    fn minimal_request_gets_defaults() {
        let r = parse_body(br#"{"kind": "send"}"#).expect("valid");
        let job = r.into_new_job(1000).expect("valid");
        assert_eq!(job.queue, "default");
        assert_eq!(job.payload, serde_json::json!({}));
        assert_eq!(job.run_at, None);
        assert_eq!(job.priority, 0);
    }

    #[test]
    fn times_and_delays() {
        let r = parse_body(br#"{"kind": "k", "run_at": "2026-11-21T10:00:00Z"}"#).expect("valid");
        assert_eq!(
            r.into_new_job(0).expect("ok").run_at,
            Some(1_795_255_200_000)
        );
        let r = parse_body(br#"{"kind": "k", "run_at": 5}"#).expect("valid");
        assert_eq!(r.into_new_job(0).expect("ok").run_at, Some(5));
        let r = parse_body(br#"{"kind": "k", "delay_s": 1.5}"#).expect("valid");
        assert_eq!(r.into_new_job(1000).expect("ok").run_at, Some(2500));
        // Seconds given where milliseconds are meant: refused, not run at once.
        let e = parse_body(br#"{"kind": "k", "run_at": 1767225600}"#)
            .expect("parses")
            .into_new_job(0)
            .expect_err("seconds");
        assert!(
            e.message.contains("looks like seconds") && e.message.contains("1767225600000"),
            "{}",
            e.message
        );
        let r = parse_body(br#"{"kind": "k", "run_at": 1767225600000}"#).expect("valid");
        assert_eq!(
            r.into_new_job(0).expect("ok").run_at,
            Some(1_767_225_600_000)
        );
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let e = parse_body(br#"{"kind": "k", "queu": "x"}"#).expect_err("unknown field");
        assert!(e.message.contains("queu"), "{}", e.message);
        assert_eq!(e.status, 400);
        let e = parse_body(br#"{"payload": {}}"#).expect_err("no kind");
        assert!(e.message.contains("kind"), "{}", e.message);
        let e = parse_body(b"not json").expect_err("not json");
        assert!(e.message.contains("invalid job"), "{}", e.message);
        let e = parse_body(br#"{"kind": "k", "run_at": "tomorrow"}"#)
            .expect("parses")
            .into_new_job(0)
            .expect_err("bad time");
        assert!(e.message.contains("run_at"), "{}", e.message);
        let e = parse_body(br#"{"kind": "k", "run_at": 1, "delay_s": 1}"#)
            .expect("parses")
            .into_new_job(0)
            .expect_err("both");
        assert!(e.message.contains("delay_s"), "{}", e.message);
        let e = parse_body(br#"{"kind": "k", "delay_s": -1}"#)
            .expect("parses")
            .into_new_job(0)
            .expect_err("negative");
        assert!(e.message.contains("delay_s"), "{}", e.message);
        let e = parse_body(br#"{"kind": "k", "idempotency_key": ""}"#)
            .expect("parses")
            .into_new_job(0)
            .expect_err("empty key");
        assert!(e.message.contains("idempotency_key"), "{}", e.message);
    }

    #[test]
    fn unique_keys_and_scopes() {
        let job = |body: &str| parse_body(body.as_bytes()).expect("parses").into_new_job(0);
        let u = job(r#"{"kind": "k", "unique_key": "r:1"}"#)
            .expect("valid")
            .unique
            .expect("unique");
        assert_eq!(
            (u.key.as_str(), u.scope),
            ("r:1", UniqueScope::QueuedRunning)
        );
        let u = job(r#"{"kind": "k", "unique_key": "r", "unique_scope": "queued"}"#)
            .expect("valid")
            .unique
            .expect("unique");
        assert_eq!(u.scope, UniqueScope::Queued);
        let u = job(r#"{"kind": "k", "unique_key": "r", "unique_scope": "10m"}"#)
            .expect("valid")
            .unique
            .expect("unique");
        assert_eq!(
            u.scope,
            UniqueScope::Window(std::time::Duration::from_secs(600))
        );
        for (body, field) in [
            (r#"{"kind": "k", "unique_scope": "queued"}"#, "unique_scope"),
            (r#"{"kind": "k", "unique_key": ""}"#, "unique_key"),
            (
                r#"{"kind": "k", "unique_key": "r", "unique_scope": "often"}"#,
                "unique_scope",
            ),
            (
                r#"{"kind": "k", "unique_key": "r", "unique_scope": "0s"}"#,
                "unique_scope",
            ),
        ] {
            let e = job(body).expect_err(body);
            assert!(
                e.message.contains(field) && e.status == 400,
                "{body}: {}",
                e.message
            );
        }
    }

    #[test]
    fn store_errors_map_to_statuses() {
        assert_eq!(
            store_status(&StoreError::PayloadTooLarge { size: 2, limit: 1 }),
            413
        );
        assert_eq!(store_status(&StoreError::NotFound { id: 1 }), 404);
    }
}
