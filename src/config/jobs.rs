//! The `[jobs]` section: the job store and its queues, validated.
//!
//! ```toml
//! [jobs]
//! store = "sqlite://curfew-jobs.db"   # or postgres://user@host/db
//! lease = "30s"                       # renewed every lease/3 while a job runs
//! max_crashes = 3                     # processor deaths before a job is parked dead
//! release_reserve = "5s"              # slice of graceful_timeout kept for the hand-back
//!
//! [jobs.queues.mail]
//! concurrency = 4
//! path = "/jobs/{kind}"               # POST to the app's own workers (default)
//! # command = ["python", "job.py"]    # or a command: payload on stdin, exit code decides
//! timeout = "10m"
//! max_attempts = 20
//! retry_backoff = "15s"              # first retry; later: 15 s + n⁴ s, scaled
//!
//! [jobs.retention]                    # finished jobs kept this long; 0 = for ever
//! succeeded = "1d"
//! cancelled = "1d"
//! dead = "14d"
//! interval = "1m"                     # how often the processor prunes
//!
//! [jobs.periodic.nightly]             # see `config::periodic`
//! cron = "0 3 * * *"
//! kind = "reindex"
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use super::raw::{OneOrMany, RawDuration, RawJobs, RawQueue, RawRetention, RawSize};
use super::{Checks, ConfigError, Ctx, Origins};
use curfew_store::Retention;

pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_CRASHES: i32 = 3;
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(600);
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
pub const DEFAULT_PATH: &str = "/jobs/{kind}";
pub const DEFAULT_QUEUE: &str = "default";
/// How often the processor prunes finished jobs by default.
pub const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// The default `release_reserve`: this, or a sixth of `graceful_timeout`
/// when that is less.
pub const DEFAULT_RELEASE_RESERVE: Duration = Duration::from_secs(5);

/// How a queue's jobs reach the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// `POST` to this path template (`{kind}`, `{queue}` filled in) on the
    /// app's own workers, through the same router as requests.
    Http { path: String },
    /// Run this command per job: payload on stdin, exit code decides.
    Command(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    pub name: String,
    /// Jobs of this queue running at once in this curfew.
    pub concurrency: usize,
    pub delivery: Delivery,
    /// A delivery running longer is cut off and counts as a failed attempt.
    pub timeout: Duration,
    /// Default `max_attempts` of jobs enqueued into this queue through curfew.
    pub max_attempts: i32,
    /// The delay before the first retry of a failed attempt; later retries
    /// grow like `15 s + n⁴ s`, scaled by `retry_backoff / 15 s`.
    pub retry_backoff: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobsConfig {
    pub store: String,
    pub lease: Duration,
    pub max_crashes: i32,
    pub release_reserve: Duration,
    pub poll_interval: Duration,
    pub max_payload: usize,
    /// This processor's stable name in lease owners (`node/boot`).
    pub node: String,
    pub pg_schema: String,
    /// By name.
    pub queues: Vec<QueueConfig>,
    /// How long finished jobs are kept (`[jobs.retention]`).
    pub retention: Retention,
    /// How often the processor prunes (`jobs.retention.interval`).
    pub prune_interval: Duration,
    /// The section as written (without `periodic`), in a canonical form
    /// (its `Debug`: the tables are ordered maps): what a reload compares,
    /// since defaults derived from `workers` or `graceful_timeout` change
    /// with them while `[jobs]` itself did not.
    pub given: String,
}

impl JobsConfig {
    pub fn queue(&self, name: &str) -> Option<&QueueConfig> {
        self.queues.iter().find(|q| q.name == name)
    }

    pub fn queue_names(&self) -> Vec<&str> {
        self.queues.iter().map(|q| q.name.as_str()).collect()
    }
}

/// What the rest of the configuration tells the jobs section.
pub struct Context<'a> {
    pub origins: &'a Origins,
    pub graceful_timeout: Duration,
    /// Requests the whole pool serves at once (workers × worker_concurrency).
    pub capacity: usize,
    /// [`Checks::Static`]: a command queue's program is not looked for.
    pub checks: Checks,
}

/// Validate the `[jobs]` section; `None` when it is absent (no processor).
/// Keys are checked in the order of [`JobsConfig`]'s fields, so of several
/// mistakes the same one is always reported.
pub fn validate(raw: Option<RawJobs>, cx: &Context<'_>) -> Result<Option<JobsConfig>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let given = format!("{raw:?}");
    let c = Ctx::section(cx.origins, "jobs");
    let store = store_url(&c, raw.store)?;
    let Leases {
        lease,
        max_crashes,
        release_reserve,
    } = leases(
        &c,
        raw.lease,
        raw.max_crashes,
        raw.release_reserve,
        cx.graceful_timeout,
    )?;
    let poll_interval = c.duration_at_least(
        "jobs.poll_interval",
        raw.poll_interval,
        DEFAULT_POLL_INTERVAL,
        Duration::from_millis(50),
    )?;
    let max_payload = max_payload(&c, raw.max_payload)?;
    let node = node(&c, raw.node)?;
    let pg_schema = pg_schema(&c, raw.pg_schema)?;
    let queues = queues(&c, raw.queues, cx.capacity, cx.checks)?;
    let (retention, prune_interval) = retention(&c, raw.retention.unwrap_or_default())?;
    Ok(Some(JobsConfig {
        store,
        lease,
        max_crashes,
        release_reserve,
        poll_interval,
        max_payload,
        node,
        pg_schema,
        queues,
        retention,
        prune_interval,
        given,
    }))
}

/// `[jobs.retention]`: a period per finished state (`0`: kept for ever)
/// and the pruning interval.
fn retention(c: &Ctx<'_>, raw: RawRetention) -> Result<(Retention, Duration), ConfigError> {
    let d = Retention::DEFAULT;
    let period = |key: &str, v: Option<RawDuration>, default: Option<Duration>| {
        let v = v.map(days_as_hours);
        c.optional(key, v, default.unwrap_or(Duration::ZERO))
    };
    let retention = Retention {
        succeeded: period("jobs.retention.succeeded", raw.succeeded, d.succeeded)?,
        cancelled: period("jobs.retention.cancelled", raw.cancelled, d.cancelled)?,
        dead: period("jobs.retention.dead", raw.dead, d.dead)?,
    };
    let interval = c.duration_at_least(
        "jobs.retention.interval",
        raw.interval.map(days_as_hours),
        DEFAULT_PRUNE_INTERVAL,
        Duration::from_secs(1),
    )?;
    Ok((retention, interval))
}

/// `"14d"` / `"14 days"` as `"336h"`: retention periods are written in days,
/// which the duration parser refuses (a calendar day is not always 24 h;
/// here it is). Anything else is left to the parser.
fn days_as_hours(raw: RawDuration) -> RawDuration {
    let RawDuration::Text(text) = &raw else {
        return raw;
    };
    let t = text.trim();
    let number = t
        .strip_suffix("days")
        .or_else(|| t.strip_suffix("day"))
        .or_else(|| t.strip_suffix('d'))
        .map(str::trim_end);
    match number.and_then(|n| n.parse::<u64>().ok()) {
        Some(days) => match days.checked_mul(24) {
            Some(hours) => RawDuration::Text(format!("{hours}h")),
            None => raw,
        },
        None => raw,
    }
}

fn store_url(c: &Ctx<'_>, store: Option<String>) -> Result<String, ConfigError> {
    let store = store.unwrap_or_else(|| "sqlite://curfew-jobs.db".to_owned());
    if let Err(e) = curfew_store::check_url(&store) {
        return Err(c.err(
            "jobs.store",
            format!("{:?}", curfew_store::redact(&store)),
            e.to_string(),
        ));
    }
    Ok(store)
}

/// The lease, and what happens when it runs out or is handed back.
struct Leases {
    lease: Duration,
    max_crashes: i32,
    release_reserve: Duration,
}

fn leases(
    c: &Ctx<'_>,
    lease: Option<RawDuration>,
    max_crashes: Option<i64>,
    release_reserve: Option<RawDuration>,
    graceful_timeout: Duration,
) -> Result<Leases, ConfigError> {
    let lease = c.duration_at_least("jobs.lease", lease, DEFAULT_LEASE, Duration::from_secs(1))?;
    let max_crashes = c.int(
        "jobs.max_crashes",
        max_crashes,
        DEFAULT_MAX_CRASHES as i64,
        0,
        1000,
    )? as i32;
    let default_reserve = DEFAULT_RELEASE_RESERVE.min(graceful_timeout / 6);
    let release_reserve = c.duration_at_least(
        "jobs.release_reserve",
        release_reserve,
        default_reserve,
        Duration::ZERO,
    )?;
    if !graceful_timeout.is_zero() && release_reserve >= graceful_timeout {
        return Err(c.err(
            "jobs.release_reserve",
            format!("{release_reserve:?}"),
            format!(
                "must be less than graceful_timeout ({graceful_timeout:?}): running jobs get graceful_timeout minus this to finish"
            ),
        ));
    }
    Ok(Leases {
        lease,
        max_crashes,
        release_reserve,
    })
}

fn max_payload(c: &Ctx<'_>, raw: Option<RawSize>) -> Result<usize, ConfigError> {
    match raw {
        None => Ok(DEFAULT_MAX_PAYLOAD),
        Some(size) => match size.bytes() {
            Ok(b) if (1..=64 << 20).contains(&b) => Ok(b as usize),
            Ok(_) => Err(c.err(
                "jobs.max_payload",
                &size,
                "must be between 1 byte and 64MiB",
            )),
            Err(m) => Err(c.err("jobs.max_payload", &size, m)),
        },
    }
}

fn node(c: &Ctx<'_>, raw: Option<String>) -> Result<String, ConfigError> {
    let node = match raw {
        Some(n) => n,
        None => default_node(),
    };
    if node.is_empty()
        || node.contains('/')
        || node.chars().any(char::is_control)
        || node.len() > 200
    {
        return Err(c.err(
            "jobs.node",
            format!("{node:?}"),
            "must be a non-empty name without '/' or control characters, at most 200 bytes (default: the host name)",
        ));
    }
    Ok(node)
}

fn pg_schema(c: &Ctx<'_>, raw: Option<String>) -> Result<String, ConfigError> {
    let pg_schema = raw.unwrap_or_else(|| "curfew".to_owned());
    if pg_schema.is_empty()
        || pg_schema.len() > 63
        || !pg_schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        || pg_schema.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(c.err(
            "jobs.pg_schema",
            format!("{pg_schema:?}"),
            "must be lower-case letters, digits and '_' (not starting with a digit), at most 63 bytes",
        ));
    }
    Ok(pg_schema)
}

/// Every `[jobs.queues.<q>]`; one `default` queue when the table is absent.
fn queues(
    c: &Ctx<'_>,
    raw: Option<BTreeMap<String, RawQueue>>,
    capacity: usize,
    checks: Checks,
) -> Result<Vec<QueueConfig>, ConfigError> {
    let raw_queues =
        raw.unwrap_or_else(|| BTreeMap::from([(DEFAULT_QUEUE.to_owned(), RawQueue::default())]));
    if raw_queues.is_empty() {
        return Err(c.err(
            "jobs.queues",
            "{}",
            "declare at least one queue, e.g. [jobs.queues.default]",
        ));
    }
    // Jobs delivered over HTTP take worker slots: half of the pool is
    // shared among those queues (at least one each), so together they
    // leave web requests the other half. A command queue takes no slot.
    let http_queues = raw_queues
        .values()
        .filter(|q| q.command.is_none())
        .count()
        .max(1);
    let half = (capacity / 2).max(1);
    let mut queues = Vec::new();
    for (name, q) in raw_queues {
        let default_concurrency = if q.command.is_none() {
            (half / http_queues).max(1)
        } else {
            half
        };
        queues.push(queue(&name, q, c, default_concurrency, checks)?);
    }
    Ok(queues)
}

fn queue(
    name: &str,
    q: RawQueue,
    c: &Ctx<'_>,
    default_concurrency: usize,
    checks: Checks,
) -> Result<QueueConfig, ConfigError> {
    let key = |k: &str| format!("jobs.queues.{name}.{k}");
    if name.is_empty()
        || name.chars().count() > curfew_store::MAX_NAME_CHARS
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
    {
        return Err(c.err(
            "jobs.queues",
            format!("{name:?}"),
            format!(
                "a queue name is 1 to {} characters of A-Z a-z 0-9 _ . : -",
                curfew_store::MAX_NAME_CHARS
            ),
        ));
    }
    let concurrency = c.int(
        &key("concurrency"),
        q.concurrency,
        default_concurrency as i64,
        1,
        10_000,
    )? as usize;
    let delivery = match (q.path, q.command) {
        (Some(_), Some(_)) => {
            return Err(c.err(
                key("command"),
                "…",
                "give either `path` (HTTP to the app's workers) or `command`, not both",
            ));
        }
        (None, Some(cmd)) => {
            let argv = match cmd {
                OneOrMany::Many(v) => v,
                OneOrMany::One(s) => shlex::split(&s).ok_or_else(|| {
                    c.err(
                        key("command"),
                        format!("{s:?}"),
                        "unbalanced quotes in the command string",
                    )
                })?,
            };
            if argv.is_empty() || argv[0].is_empty() {
                return Err(c.err(
                    key("command"),
                    "[]",
                    "give a program to run, e.g. [\"python\", \"job.py\"]",
                ));
            }
            if checks == Checks::Full
                && let Err(m) = super::resolve_program(&argv[0], None)
            {
                return Err(c.err(key("command"), format!("{:?}", argv[0]), m));
            }
            Delivery::Command(argv)
        }
        (path, None) => {
            let path = path.unwrap_or_else(|| DEFAULT_PATH.to_owned());
            check_path_template(&path).map_err(|m| c.err(key("path"), format!("{path:?}"), m))?;
            Delivery::Http { path }
        }
    };
    let timeout = c.duration_at_least(
        &key("timeout"),
        q.timeout,
        DEFAULT_JOB_TIMEOUT,
        Duration::from_millis(10),
    )?;
    let max_attempts = c.int(
        &key("max_attempts"),
        q.max_attempts,
        curfew_store::DEFAULT_MAX_ATTEMPTS as i64,
        1,
        10_000,
    )? as i32;
    let retry_backoff = c.duration_at_least(
        &key("retry_backoff"),
        q.retry_backoff,
        curfew_store::backoff::BASE,
        Duration::from_millis(10),
    )?;
    // The store never waits longer than CAP between attempts: a larger
    // first delay would silently be CAP.
    if retry_backoff > curfew_store::backoff::CAP {
        return Err(c.err(
            key("retry_backoff"),
            format!("{retry_backoff:?}"),
            format!(
                "must be at most {}h: no retry waits longer than that",
                curfew_store::backoff::CAP.as_secs() / 3600
            ),
        ));
    }
    Ok(QueueConfig {
        name: name.to_owned(),
        concurrency,
        delivery,
        timeout,
        max_attempts,
        retry_backoff,
    })
}

/// A path template: starts with `/`, placeholders `{kind}` and `{queue}`
/// only, and a valid URL path once they are filled in.
fn check_path_template(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("must be a URL path starting with '/', e.g. \"/jobs/{kind}\"".into());
    }
    let filled = fill_path(path, "kind", "queue");
    if filled.contains('{') || filled.contains('}') {
        return Err("the only placeholders are {kind} and {queue}".into());
    }
    if filled.parse::<http::uri::PathAndQuery>().is_err() {
        return Err("is not a valid URL path".into());
    }
    Ok(())
}

/// The delivery path of a job: the template with `{kind}` and `{queue}`
/// replaced. Kinds and queues are restricted to URL-safe characters by the
/// store, so no escaping is needed.
pub fn fill_path(template: &str, kind: &str, queue: &str) -> String {
    template.replace("{kind}", kind).replace("{queue}", queue)
}

/// The host name, else "localhost".
fn default_node() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().replace('/', "_"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::RawDuration;

    fn cx(origins: &Origins) -> Context<'_> {
        Context {
            origins,
            graceful_timeout: Duration::from_secs(30),
            capacity: 8,
            checks: Checks::Full,
        }
    }

    fn parse(text: &str) -> Result<Option<JobsConfig>, ConfigError> {
        #[derive(serde::Deserialize)]
        struct W {
            jobs: RawJobs,
        }
        let w: W = toml::from_str(text).expect("toml");
        let origins = Origins::new();
        validate(Some(w.jobs), &cx(&origins))
    }

    fn key_of(r: Result<Option<JobsConfig>, ConfigError>) -> String {
        match r {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn absent_section_means_no_processor() {
        let origins = Origins::new();
        assert_eq!(validate(None, &cx(&origins)).expect("ok"), None);
    }

    #[test]
    fn empty_section_gets_defaults_and_a_default_queue() {
        let c = parse("[jobs]").expect("valid").expect("some");
        assert_eq!(c.store, "sqlite://curfew-jobs.db");
        assert_eq!(c.lease, DEFAULT_LEASE);
        assert_eq!(c.release_reserve, Duration::from_secs(5));
        assert_eq!(c.queues.len(), 1);
        let q = &c.queues[0];
        assert_eq!(q.name, "default");
        assert_eq!(q.concurrency, 4, "half of the pool's capacity");
        assert_eq!(
            q.delivery,
            Delivery::Http {
                path: DEFAULT_PATH.into()
            }
        );
        assert_eq!(q.max_attempts, 20);
    }

    /// Half of the pool (8 here) is shared by the HTTP queues, so web
    /// requests keep the other half whatever the number of queues; a
    /// command queue takes no worker slot and keeps the half.
    #[test]
    fn default_concurrency_splits_half_the_pool_among_http_queues() {
        let c = parse(
            "[jobs.queues.mail]\n[jobs.queues.reports]\n[jobs.queues.shell]\ncommand = \"true\"",
        )
        .expect("valid")
        .expect("some");
        assert_eq!(c.queue("mail").expect("mail").concurrency, 2);
        assert_eq!(c.queue("reports").expect("reports").concurrency, 2);
        assert_eq!(c.queue("shell").expect("shell").concurrency, 4);
        let c = parse(
            "[jobs.queues.a]\n[jobs.queues.b]\n[jobs.queues.c]\n[jobs.queues.d]\n[jobs.queues.e]",
        )
        .expect("valid")
        .expect("some");
        assert!(
            c.queues.iter().all(|q| q.concurrency == 1),
            "at least one each"
        );
    }

    #[test]
    fn queues_with_path_or_command() {
        let c = parse(
            r#"
            [jobs]
            store = "postgres://u@h/db"
            [jobs.queues.mail]
            concurrency = 2
            path = "/tasks/{queue}/{kind}"
            timeout = "5s"
            max_attempts = 3
            [jobs.queues.shell]
            command = "sh -c 'cat'"
            "#,
        )
        .expect("valid")
        .expect("some");
        let mail = c.queue("mail").expect("mail");
        assert_eq!(mail.concurrency, 2);
        assert_eq!(mail.timeout, Duration::from_secs(5));
        assert_eq!(
            fill_path("/tasks/{queue}/{kind}", "send", "mail"),
            "/tasks/mail/send"
        );
        assert_eq!(
            c.queue("shell").expect("shell").delivery,
            Delivery::Command(vec!["sh".into(), "-c".into(), "cat".into()])
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[jobs]\nstore = \"mysql://x\"", "jobs.store"),
            ("[jobs]\nlease = \"10ms\"", "jobs.lease"),
            ("[jobs]\nrelease_reserve = \"30s\"", "jobs.release_reserve"),
            ("[jobs]\nnode = \"a/b\"", "jobs.node"),
            ("[jobs]\npg_schema = \"Bad-Name\"", "jobs.pg_schema"),
            ("[jobs]\nmax_payload = 0", "jobs.max_payload"),
            ("[jobs]\nqueues = {}", "jobs.queues"),
            ("[jobs.queues.\"a b\"]", "jobs.queues"),
            (
                "[jobs.queues.q]\nconcurrency = 0",
                "jobs.queues.q.concurrency",
            ),
            ("[jobs.queues.q]\npath = \"jobs\"", "jobs.queues.q.path"),
            ("[jobs.queues.q]\npath = \"/j/{job}\"", "jobs.queues.q.path"),
            (
                "[jobs.queues.q]\npath = \"/j\"\ncommand = \"true\"",
                "jobs.queues.q.command",
            ),
            (
                "[jobs.queues.q]\ncommand = \"no-such-program-xyz\"",
                "jobs.queues.q.command",
            ),
            (
                "[jobs.queues.q]\nmax_attempts = 0",
                "jobs.queues.q.max_attempts",
            ),
            (
                "[jobs.queues.q]\nretry_backoff = \"1ms\"",
                "jobs.queues.q.retry_backoff",
            ),
            // Retries never wait longer than 24 h (the store's cap).
            (
                "[jobs.queues.q]\nretry_backoff = \"25h\"",
                "jobs.queues.q.retry_backoff",
            ),
        ];
        for (text, key) in cases {
            assert_eq!(key_of(parse(text)), key, "{text}");
        }
    }

    #[test]
    fn retention_defaults_days_and_zero_for_ever() {
        let c = parse("[jobs]").expect("valid").expect("some");
        assert_eq!(c.retention, Retention::DEFAULT);
        assert_eq!(c.prune_interval, DEFAULT_PRUNE_INTERVAL);
        let c = parse(
            "[jobs.retention]\nsucceeded = \"2h\"\ncancelled = 0\ndead = \"30d\"\ninterval = \"10s\"",
        )
        .expect("valid")
        .expect("some");
        assert_eq!(c.retention.succeeded, Some(Duration::from_secs(7200)));
        assert_eq!(c.retention.cancelled, None, "0 keeps them");
        assert_eq!(c.retention.dead, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(c.prune_interval, Duration::from_secs(10));
        let c = parse("[jobs.retention]\ndead = \"1 day\"")
            .expect("valid")
            .expect("some");
        assert_eq!(c.retention.dead, Some(Duration::from_secs(86_400)));
        for (text, key) in [
            (
                "[jobs.retention]\nsucceeded = \"soon\"",
                "jobs.retention.succeeded",
            ),
            (
                "[jobs.retention]\ncancelled = -1",
                "jobs.retention.cancelled",
            ),
            ("[jobs.retention]\ndead = \"x d\"", "jobs.retention.dead"),
            (
                "[jobs.retention]\ninterval = \"100ms\"",
                "jobs.retention.interval",
            ),
        ] {
            assert_eq!(key_of(parse(text)), key, "{text}");
        }
        assert!(toml::from_str::<RawRetention>("succeded = 1").is_err());
    }

    /// Every `[jobs]` key is in the jobs guide's table (docs/jobs.md).
    #[test]
    fn the_readme_documents_every_jobs_key() {
        let readme = include_str!("../../docs/jobs.md");
        let section = readme
            .split("## Background jobs")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("docs/jobs.md has a Background jobs section");
        let keys = [
            "store",
            "lease",
            "max_crashes",
            "release_reserve",
            "poll_interval",
            "max_payload",
            "node",
            "pg_schema",
            "queues.<name>.concurrency",
            "queues.<name>.path",
            "queues.<name>.command",
            "queues.<name>.timeout",
            "queues.<name>.max_attempts",
            "queues.<name>.retry_backoff",
            "retention.succeeded",
            "retention.cancelled",
            "retention.dead",
            "retention.interval",
            "periodic.<name>.cron",
            "periodic.<name>.every",
            "periodic.<name>.timezone",
            "periodic.<name>.queue",
            "periodic.<name>.kind",
            "periodic.<name>.payload",
            "periodic.<name>.priority",
            "periodic.<name>.max_attempts",
            "periodic.<name>.catch_up",
        ];
        for key in keys {
            assert!(
                section.contains(&format!("| `{key}` |")),
                "README's jobs table lacks `{key}`"
            );
        }
    }

    #[test]
    fn unknown_keys_are_rejected_by_the_parser() {
        assert!(toml::from_str::<RawJobs>("stor = \"x\"").is_err());
        assert!(toml::from_str::<RawQueue>("concurency = 1").is_err());
    }

    #[test]
    fn a_higher_layer_overrides_field_by_field() {
        use crate::config::raw::Layer;
        let file = RawJobs {
            store: Some("a.db".into()),
            lease: Some(RawDuration::Int(10)),
            ..RawJobs::default()
        };
        let flag = RawJobs {
            store: Some("b.db".into()),
            ..RawJobs::default()
        };
        let merged = flag.over(Some(file));
        assert_eq!(merged.store.as_deref(), Some("b.db"));
        assert_eq!(merged.lease, Some(RawDuration::Int(10)));
    }
}
