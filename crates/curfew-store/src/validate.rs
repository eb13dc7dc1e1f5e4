//! Input checks shared by both backends, so both reject the same things
//! with the same words. Each error names the field.

use std::time::Duration;

use super::error::StoreError;
use super::model::{DEFAULT_MAX_ATTEMPTS, NewJob, Unique, UniqueScope, duration_ms};

/// The longest unique window: a year.
pub const MAX_UNIQUE_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);

/// Longest queue, kind, owner or idempotency key, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// `last_error` and release reasons are cut to this many bytes: a job that
/// fails with a megabyte of stack trace must not bloat the queue table.
pub const MAX_ERROR_BYTES: usize = 16 * 1024;

/// A [`NewJob`] that passed validation, its payload serialized.
#[derive(Debug)]
pub(crate) struct ValidJob {
    pub queue: String,
    pub kind: String,
    pub payload: String,
    pub priority: i32,
    pub run_at: Option<i64>,
    pub max_attempts: i32,
    pub idempotency_key: Option<String>,
    pub unique: Option<Unique>,
}

impl ValidJob {
    pub fn unique_key(&self) -> Option<&str> {
        self.unique.as_ref().map(|u| u.key.as_str())
    }

    pub fn unique_scope(&self) -> Option<&'static str> {
        self.unique.as_ref().map(|u| u.scope.as_str())
    }

    pub fn unique_window_ms(&self) -> Option<i64> {
        self.unique.as_ref().and_then(|u| u.scope.window_ms())
    }
}

pub(crate) fn new_job(job: NewJob, max_payload_bytes: usize) -> Result<ValidJob, StoreError> {
    name("queue", &job.queue)?;
    name("kind", &job.kind)?;
    let max_attempts = job.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if max_attempts < 1 {
        return Err(StoreError::invalid(
            "max_attempts",
            format!("{max_attempts}; it must be at least 1"),
        ));
    }
    if let Some(run_at) = job.run_at
        && run_at < 0
    {
        return Err(StoreError::invalid(
            "run_at",
            format!("{run_at}; it is unix milliseconds and must not be negative"),
        ));
    }
    if let Some(key) = &job.idempotency_key {
        text("idempotency_key", key)?;
    }
    if let Some(unique) = &job.unique {
        text("unique_key", &unique.key)?;
        if let UniqueScope::Window(window) = unique.scope
            && (window < Duration::from_millis(1) || window > MAX_UNIQUE_WINDOW)
        {
            return Err(StoreError::invalid(
                "unique_scope",
                format!("a window of {window:?}; it must be 1 ms to 366 days"),
            ));
        }
    }
    if has_nul(&job.payload) {
        return Err(StoreError::invalid(
            "payload",
            "it contains a NUL character (\\u0000), which PostgreSQL cannot store",
        ));
    }
    let payload = serde_json::to_string(&job.payload)
        .map_err(|e| StoreError::invalid("payload", e.to_string()))?;
    if payload.len() > max_payload_bytes {
        return Err(StoreError::PayloadTooLarge {
            size: payload.len(),
            limit: max_payload_bytes,
        });
    }
    Ok(ValidJob {
        queue: job.queue,
        kind: job.kind,
        payload,
        priority: job.priority,
        run_at: job.run_at,
        max_attempts,
        idempotency_key: job.idempotency_key,
        unique: job.unique,
    })
}

/// A queue or kind: 1 to 200 of `A-Z a-z 0-9 _ . : -`.
pub(crate) fn name(field: &'static str, value: &str) -> Result<(), StoreError> {
    if value.is_empty() {
        return Err(StoreError::invalid(field, "it is empty"));
    }
    let chars = value.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(StoreError::invalid(
            field,
            format!("it is {chars} characters long; at most {MAX_NAME_CHARS} are allowed"),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        return Err(StoreError::invalid(
            field,
            format!("{value:?} contains {bad:?}; only letters, digits and _ . : - are allowed"),
        ));
    }
    Ok(())
}

/// Free text identifying something (an owner, an idempotency key): 1 to 200
/// characters, no NUL.
pub(crate) fn text(field: &'static str, value: &str) -> Result<(), StoreError> {
    if value.is_empty() {
        return Err(StoreError::invalid(field, "it is empty"));
    }
    let chars = value.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(StoreError::invalid(
            field,
            format!("it is {chars} characters long; at most {MAX_NAME_CHARS} are allowed"),
        ));
    }
    if value.contains('\0') {
        return Err(StoreError::invalid(field, "it contains a NUL character"));
    }
    Ok(())
}

/// The node part of a lease owner `node/boot`: text without `/`, so that
/// `node/` is an unambiguous prefix.
pub(crate) fn node(value: &str) -> Result<(), StoreError> {
    text("node", value)?;
    if value.contains('/') {
        return Err(StoreError::invalid(
            "node",
            format!("{value:?} contains '/', which separates node and boot in a lease owner"),
        ));
    }
    Ok(())
}

/// A lease length in milliseconds, at least 1.
pub(crate) fn lease(lease: Duration) -> Result<i64, StoreError> {
    let ms = duration_ms(lease);
    if ms < 1 {
        return Err(StoreError::invalid(
            "lease",
            format!("{lease:?}; it must be at least 1 ms"),
        ));
    }
    Ok(ms)
}

pub(crate) fn max_crashes(value: i32) -> Result<(), StoreError> {
    if value < 0 {
        return Err(StoreError::invalid(
            "max_crashes",
            format!("{value}; it must not be negative"),
        ));
    }
    Ok(())
}

/// An error message or release reason as stored: NUL replaced, cut to
/// [`MAX_ERROR_BYTES`] on a character boundary.
pub(crate) fn error_text(value: &str) -> String {
    let mut end = value.len().min(MAX_ERROR_BYTES);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = value[..end].replace('\0', "\u{FFFD}");
    if end < value.len() {
        out.push_str(" …[truncated]");
    }
    out
}

fn has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field_of(result: Result<impl std::fmt::Debug, StoreError>) -> &'static str {
        match result {
            Err(StoreError::InvalidInput { field, .. }) => field,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn names_allow_the_documented_characters_only() {
        assert!(name("queue", "mail.high:eu-1_x").is_ok());
        assert_eq!(field_of(name("queue", "")), "queue");
        assert_eq!(field_of(name("kind", "send email")), "kind");
        assert_eq!(field_of(name("kind", "é")), "kind");
        assert!(name("queue", &"q".repeat(200)).is_ok());
        assert_eq!(field_of(name("queue", &"q".repeat(201))), "queue");
    }

    #[test]
    fn new_jobs_are_checked_field_by_field() {
        let ok = NewJob::new("q", "k", json!({"a": 1}));
        let valid = new_job(ok.clone(), 1024).expect("valid");
        assert_eq!(valid.payload, r#"{"a":1}"#);
        assert_eq!(valid.max_attempts, DEFAULT_MAX_ATTEMPTS);
        let zero = NewJob {
            max_attempts: Some(0),
            ..ok.clone()
        };
        assert_eq!(field_of(new_job(zero, 1024)), "max_attempts");
        let nul = NewJob::new("q", "k", json!({"a": "x\u{0}y"}));
        assert_eq!(field_of(new_job(nul, 1024)), "payload");
        let key = NewJob {
            idempotency_key: Some(String::new()),
            ..ok.clone()
        };
        assert_eq!(field_of(new_job(key, 1024)), "idempotency_key");
        let unique = |key: &str, scope| NewJob {
            unique: Some(Unique {
                key: key.to_owned(),
                scope,
            }),
            ..ok.clone()
        };
        assert!(new_job(unique("k", UniqueScope::Queued), 1024).is_ok());
        let long = "k".repeat(MAX_NAME_CHARS + 1);
        assert_eq!(
            field_of(new_job(unique(&long, UniqueScope::Queued), 1024)),
            "unique_key"
        );
        assert_eq!(
            field_of(new_job(unique("", UniqueScope::QueuedRunning), 1024)),
            "unique_key"
        );
        let never = UniqueScope::Window(Duration::ZERO);
        assert_eq!(field_of(new_job(unique("k", never), 1024)), "unique_scope");
        let too_long = UniqueScope::Window(MAX_UNIQUE_WINDOW + Duration::from_secs(1));
        assert_eq!(
            field_of(new_job(unique("k", too_long), 1024)),
            "unique_scope"
        );
        match new_job(ok, 3) {
            Err(StoreError::PayloadTooLarge { size: 7, limit: 3 }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_text_is_bounded_and_clean() {
        assert_eq!(error_text("a\0b"), "a\u{FFFD}b");
        let long = "é".repeat(MAX_ERROR_BYTES);
        let cut = error_text(&long);
        assert!(cut.len() <= MAX_ERROR_BYTES + 20);
        assert!(cut.ends_with("[truncated]"));
    }

    #[test]
    fn nodes_cannot_contain_the_separator() {
        assert!(node("web-1").is_ok());
        assert_eq!(field_of(node("a/b")), "node");
    }
}
