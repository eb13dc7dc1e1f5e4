//! The raw configuration layer: what a `curfew.toml`, the environment or the
//! command line says, before validation. Every field is optional so layers can
//! be merged; types are deliberately loose (signed integers, strings or
//! numbers for durations) so validation can name the key and say what is
//! allowed instead of a generic parse error.

use serde::Deserialize;

/// A value that may be given as one string or a list of strings.
#[derive(Debug, Clone, PartialEq)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A duration as written by a user: seconds as a number, or a string such as
/// `"30s"`, `"500ms"`, `"1m 30s"`.
#[derive(Debug, Clone, PartialEq)]
pub enum RawDuration {
    Int(i64),
    Float(f64),
    Text(String),
}

/// A hook as written: the command/URL, or a table with its own timeout.
/// Deserialised by hand (not `untagged`), so a table's misspelt key is
/// reported as an unknown field with its name, like every other table's.
#[derive(Debug, Clone, PartialEq)]
pub enum RawHook {
    Run(String),
    Table(RawHookTable),
}

/// `{ run = "...", timeout = "5s" }`: a hook with its own time budget.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawHookTable {
    pub run: String,
    #[serde(default)]
    pub timeout: Option<RawDuration>,
}

impl<'de> Deserialize<'de> for RawHook {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Hook;
        impl<'de> serde::de::Visitor<'de> for Hook {
            type Value = RawHook;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a command or http:// URL as a string, or a table { run = \"...\", timeout = \"5s\" }",
                )
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RawHook, E> {
                Ok(RawHook::Run(s.to_owned()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawHook, A::Error> {
                RawHookTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawHook::Table)
            }
        }
        d.deserialize_any(Hook)
    }
}

/// A byte size: a number of bytes or a string like "512MiB", "1GiB", "300MB".
#[derive(Debug, Clone, PartialEq)]
pub enum RawSize {
    Int(i64),
    Text(String),
}

// The loose types are deserialised by hand rather than `untagged`, so a
// value of the wrong type is reported as what the key takes ("expected a
// number of seconds or a string like \"30s\"") instead of "data did not
// match any variant of untagged enum RawDuration".

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneOrMany;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(s.to_owned()))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<OneOrMany, A::Error> {
                Vec::<String>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(OneOrMany::Many)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawDuration;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of seconds or a string like \"30s\", \"500ms\" or \"1m 30s\"")
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<RawDuration, E> {
                Ok(RawDuration::Int(n))
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<RawDuration, E> {
                // Beyond i64: far above the cap, which validation reports.
                Ok(i64::try_from(n).map_or(RawDuration::Float(n as f64), RawDuration::Int))
            }

            fn visit_f64<E: serde::de::Error>(self, x: f64) -> Result<RawDuration, E> {
                Ok(RawDuration::Float(x))
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Text(s.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawSize;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a whole number of bytes or a string like \"512MiB\" (for 5e8 bytes write 500000000 or \"500MB\")",
                )
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<RawSize, E> {
                Ok(RawSize::Int(n))
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<RawSize, E> {
                i64::try_from(n)
                    .map(RawSize::Int)
                    .map_err(|_| E::custom("a size of at most 2^63 - 1 bytes"))
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(s.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

impl std::fmt::Display for RawSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RawSize::Int(i) => write!(f, "{i}"),
            RawSize::Text(s) => write!(f, "{s:?}"),
        }
    }
}

impl RawSize {
    /// Bytes, or what is wrong.
    pub fn bytes(&self) -> Result<u64, String> {
        let text = match self {
            RawSize::Int(i) if *i < 0 => return Err("must not be negative".into()),
            RawSize::Int(i) => return Ok(*i as u64),
            RawSize::Text(s) => s.trim(),
        };
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (num, unit) = text.split_at(split);
        let n: f64 = num.parse().map_err(|_| {
            "write a size like \"512MiB\", \"1GiB\" or a number of bytes".to_string()
        })?;
        let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "kib" => 1024.0,
            "m" | "mb" => 1e6,
            "mib" => 1024.0 * 1024.0,
            "g" | "gb" => 1e9,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            other => {
                return Err(format!(
                    "unknown unit {other:?} (use B, KB, KiB, MB, MiB, GB or GiB)"
                ));
            }
        };
        let bytes = (n * mult) as u64;
        if bytes == 0 && n > 0.0 {
            // "0.5B" is not 0 as written; as 0 it would mean "no limit".
            return Err(
                "is less than one byte; give a whole number of bytes, or 0 where 0 means no limit"
                    .into(),
            );
        }
        Ok(bytes)
    }
}

impl std::fmt::Display for RawDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RawDuration::Int(i) => write!(f, "{i}"),
            RawDuration::Float(x) => write!(f, "{x}"),
            RawDuration::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// The `[jobs]` section as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawJobs {
    /// `sqlite:///path.db`, a file path, or `postgres://user@host/db`.
    pub store: Option<String>,
    pub lease: Option<RawDuration>,
    pub max_crashes: Option<i64>,
    pub release_reserve: Option<RawDuration>,
    pub poll_interval: Option<RawDuration>,
    pub max_payload: Option<RawSize>,
    pub node: Option<String>,
    pub pg_schema: Option<String>,
    pub queues: Option<std::collections::BTreeMap<String, RawQueue>>,
    pub retention: Option<RawRetention>,
    /// `[jobs.periodic.<name>]`: schedules (validated in `config::periodic`).
    pub periodic: Option<std::collections::BTreeMap<String, RawPeriodic>>,
}

/// `[jobs.retention]` as written: how long finished jobs are kept.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    pub succeeded: Option<RawDuration>,
    pub cancelled: Option<RawDuration>,
    pub dead: Option<RawDuration>,
    /// How often the processor looks for finished jobs to delete.
    pub interval: Option<RawDuration>,
}

/// One `[jobs.periodic.<name>]` table as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawPeriodic {
    /// A cron expression (5 fields, or 6 with seconds first).
    pub cron: Option<String>,
    /// Or a fixed period, counted from the Unix epoch.
    pub every: Option<RawDuration>,
    /// IANA time zone of `cron` (default UTC).
    pub timezone: Option<String>,
    pub queue: Option<String>,
    pub kind: Option<String>,
    /// Any TOML value, sent as JSON.
    pub payload: Option<serde_json::Value>,
    pub priority: Option<i64>,
    pub max_attempts: Option<i64>,
    /// `"last"` (default) or `"none"`.
    pub catch_up: Option<String>,
}

/// One `[jobs.queues.<name>]` table as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    pub concurrency: Option<i64>,
    /// HTTP delivery: a path template on the app's workers (`/jobs/{kind}`).
    pub path: Option<String>,
    /// Command delivery: the payload on stdin, the exit code decides.
    pub command: Option<OneOrMany>,
    pub timeout: Option<RawDuration>,
    pub max_attempts: Option<i64>,
    /// Delay before the first retry (later ones grow like 15 s + n⁴ s, scaled).
    pub retry_backoff: Option<RawDuration>,
}

/// How a value set by a higher layer combines with the one below it:
/// replaces it, except for tables merged key by key (`[jobs]`, and `hooks`
/// event by event).
pub trait Layer: Sized {
    fn over(self, _below: Option<Self>) -> Self {
        self
    }
}

impl Layer for i64 {}
impl Layer for bool {}
impl Layer for String {}
impl Layer for OneOrMany {}
impl Layer for RawDuration {}
impl Layer for RawSize {}
/// Hooks merge event by event: `--hook when_ready=…` adds that hook to the
/// file's (it used to drop every other one silently); an event set again
/// replaces the one below.
impl Layer for std::collections::BTreeMap<String, RawHook> {
    fn over(self, below: Option<Self>) -> Self {
        let mut merged = below.unwrap_or_default();
        merged.extend(self);
        merged
    }
}

impl RawJobs {
    /// The origin key (`jobs.<key>`) of each key this layer sets: a higher
    /// layer replaces `[jobs]` key by key (`queues`, `retention` and
    /// `periodic` whole), so an error names the layer of its key.
    pub fn origin_keys(&self) -> Vec<&'static str> {
        [
            (self.store.is_some(), "jobs.store"),
            (self.lease.is_some(), "jobs.lease"),
            (self.max_crashes.is_some(), "jobs.max_crashes"),
            (self.release_reserve.is_some(), "jobs.release_reserve"),
            (self.poll_interval.is_some(), "jobs.poll_interval"),
            (self.max_payload.is_some(), "jobs.max_payload"),
            (self.node.is_some(), "jobs.node"),
            (self.pg_schema.is_some(), "jobs.pg_schema"),
            (self.queues.is_some(), "jobs.queues"),
            (self.retention.is_some(), "jobs.retention"),
            (self.periodic.is_some(), "jobs.periodic"),
        ]
        .into_iter()
        .filter_map(|(set, key)| set.then_some(key))
        .collect()
    }
}

impl Layer for RawJobs {
    fn over(self, below: Option<Self>) -> Self {
        let Some(b) = below else { return self };
        RawJobs {
            store: self.store.or(b.store),
            lease: self.lease.or(b.lease),
            max_crashes: self.max_crashes.or(b.max_crashes),
            release_reserve: self.release_reserve.or(b.release_reserve),
            poll_interval: self.poll_interval.or(b.poll_interval),
            max_payload: self.max_payload.or(b.max_payload),
            node: self.node.or(b.node),
            pg_schema: self.pg_schema.or(b.pg_schema),
            queues: self.queues.or(b.queues),
            retention: self.retention.or(b.retention),
            periodic: self.periodic.or(b.periodic),
        }
    }
}

/// Defines [`RawConfig`], its list of keys and a field-wise merge in one place,
/// so a new setting cannot be added to one and forgotten in the others.
macro_rules! raw_config {
    ($( $(#[$meta:meta])* $field:ident : $ty:ty ),* $(,)?) => {
        /// One layer of settings. `deny_unknown_fields`: a misspelt key is an error.
        #[derive(Debug, Clone, Default, Deserialize, PartialEq)]
        #[serde(deny_unknown_fields)]
        pub struct RawConfig {
            $( $(#[$meta])* pub $field: Option<$ty>, )*
        }

        impl RawConfig {
            /// Every key a layer may set.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// Overlay `other` on `self`: what `other` sets wins. Records, for
            /// each key `other` sets, that it came from `origin`.
            pub fn merge(&mut self, other: RawConfig, origin: &super::Origin, origins: &mut super::Origins) {
                for key in other.jobs.as_ref().map(RawJobs::origin_keys).unwrap_or_default() {
                    origins.insert(key, origin.clone());
                }
                $(
                    if let Some(value) = other.$field {
                        self.$field = Some(value.over(self.$field.take()));
                        origins.insert(stringify!($field), origin.clone());
                    }
                )*
            }
        }
    };
}

raw_config! {
    /// The worker command: a list (`["uvicorn", "app:app", "--fd", "3"]`) or a
    /// string split like a shell would (no shell is run).
    command: OneOrMany,
    /// Number of worker processes.
    workers: i64,
    /// Public addresses: `host:port` or `unix:/path`.
    bind: OneOrMany,
    /// How a worker gets its socket: `fd`, `port` or `unix`.
    worker_socket: String,
    /// Requests a worker serves at once.
    worker_concurrency: i64,
    /// Requests that may wait at the front when every worker is busy.
    backlog: i64,
    /// Path probed to decide a worker is ready.
    ready_path: String,
    boot_timeout: RawDuration,
    /// A request with no response headers after this long gets 504; a sync
    /// worker (concurrency 1) serving it is hung and is aborted. 0 = off.
    timeout: RawDuration,
    /// Idle client keep-alive connections are closed after this (0 = never).
    keepalive_timeout: RawDuration,
    /// Time a client has to send a request's head (0 = no limit).
    header_timeout: RawDuration,
    /// Largest request head (request line and headers) accepted: "32KiB".
    max_header_size: RawSize,
    /// Read the whole request body before it takes a worker (default: on
    /// when worker_concurrency = 1).
    request_buffering: bool,
    /// Largest request body accepted: "100MiB" (0 = no limit).
    max_request_body: RawSize,
    /// A client that sends nothing of its body for this long gets 408 (0 = no limit).
    client_body_timeout: RawDuration,
    /// Read a worker's response as fast as it writes it (memory, then a
    /// temporary file), so a slow client does not hold the worker.
    response_buffering: bool,
    /// A client that reads nothing of its response for this long is
    /// disconnected (0 = no limit).
    send_timeout: RawDuration,
    /// An upgraded connection (WebSocket) that carries nothing either way
    /// for this long is closed (0 = no limit).
    tunnel_idle_timeout: RawDuration,
    /// Client connections open at once on the public addresses; more wait
    /// in the kernel's accept queue.
    max_connections: i64,
    /// Threads serving client connections (each its own event loop).
    proxy_threads: i64,
    /// Retry a GET/HEAD/OPTIONS once on another worker when its worker
    /// died before answering.
    retry_idempotent: bool,
    /// `drop` (default) or `keep` request header fields with a `_` in
    /// their names.
    underscore_headers: String,
    /// Time a hung worker gets between SIGABRT (stack dump) and SIGKILL.
    abort_timeout: RawDuration,
    /// Set PYTHONFAULTHANDLER=1 in workers (Python dumps its stack on SIGABRT).
    faulthandler: bool,
    drain_delay: RawDuration,
    graceful_timeout: RawDuration,
    worker_stop_timeout: RawDuration,
    /// Directory the workers run in.
    chdir: String,
    /// Peers whose X-Forwarded-* headers are trusted.
    forwarded_allow_ips: OneOrMany,
    /// Recycle a worker after this many requests (0 = never).
    max_requests: i64,
    /// Add a random 0..=N to max_requests per worker, so they do not all
    /// recycle at once.
    max_requests_jitter: i64,
    /// Recycle a worker whose RSS (with its children) exceeds this: "512MiB".
    max_memory: RawSize,
    /// Reload: "all" (whole new generation, then switch) or "rolling".
    reload_strategy: String,
    /// Rolling reload: workers replaced per step.
    reload_batch: i64,
    /// Path of the control socket (`curfew status`, `reload`, `stop`, `scale`).
    control_socket: String,
    /// Lifecycle hooks: event name → a command or http:// URL, or
    /// `{ run = "...", timeout = "5s" }`.
    hooks: std::collections::BTreeMap<String, RawHook>,
    /// Default time budget of a hook.
    hook_timeout: RawDuration,
    /// Liveness probe path (workers with worker_concurrency > 1); off when unset.
    liveness_path: String,
    liveness_interval: RawDuration,
    liveness_timeout: RawDuration,
    /// Consecutive failed probes before the worker is aborted as hung.
    liveness_failures: i64,
    /// Address of the admin endpoint (`/healthz`, `/readyz`); off when unset.
    admin_bind: String,
    /// Bearer token the admin endpoint requires (all but the probes).
    admin_token: String,
    /// A file holding admin_token (e.g. a mounted secret).
    admin_token_file: String,
    /// `text` or `json`.
    log_format: String,
    /// The job processor (`[jobs]`; from the environment or a flag as an
    /// inline TOML table, which replaces the file's whole section).
    jobs: RawJobs,
    /// A tracing filter (`info`, `debug`, `curfew=debug,info`).
    log_level: String,
    /// Worker output relayed at or above: `debug`, `info`, `warn`, `error`
    /// or `off`.
    worker_log_level: String,
    /// curfew's access log: `-` (stdout), a file path, or `off`.
    access_log: String,
    /// `combined` or `json`.
    access_log_format: String,
    /// Log the query string with the path.
    access_log_query: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loose_types() {
        let raw: RawConfig = toml::from_str(
            r#"
            command = "uvicorn app:app --fd 3"
            workers = 4
            bind = ["127.0.0.1:8000", "unix:/tmp/x.sock"]
            graceful_timeout = "1m 30s"
            drain_delay = 5
            worker_stop_timeout = 2.5
            "#,
        )
        .expect("valid toml");
        assert_eq!(
            raw.command,
            Some(OneOrMany::One("uvicorn app:app --fd 3".into()))
        );
        assert_eq!(raw.workers, Some(4));
        assert_eq!(raw.drain_delay, Some(RawDuration::Int(5)));
        assert_eq!(raw.worker_stop_timeout, Some(RawDuration::Float(2.5)));
    }

    /// A hook's table denies unknown keys like every other table; a hook
    /// of the wrong type says what a hook is.
    #[test]
    fn hook_tables_deny_unknown_keys() {
        let raw: RawConfig = toml::from_str(
            "[hooks]\non_exit = \"./flush.sh\"\nworker_exit = { run = \"./page.sh\", timeout = \"3s\" }",
        )
        .expect("valid");
        let hooks = raw.hooks.expect("hooks");
        assert_eq!(hooks["on_exit"], RawHook::Run("./flush.sh".into()));
        assert_eq!(
            hooks["worker_exit"],
            RawHook::Table(RawHookTable {
                run: "./page.sh".into(),
                timeout: Some(RawDuration::Text("3s".into())),
            })
        );
        let err = toml::from_str::<RawConfig>(
            "[hooks]\nworker_exit = { run = \"./page.sh\", timout = \"3s\" }",
        )
        .expect_err("typo");
        assert!(err.to_string().contains("unknown field `timout`"), "{err}");
        let err = toml::from_str::<RawConfig>("[hooks]\nworker_exit = { run = 5 }")
            .expect_err("wrong type");
        assert!(!err.to_string().contains("untagged"), "{err}");
        let err = toml::from_str::<RawConfig>("[hooks]\nworker_exit = 5").expect_err("a number");
        assert!(
            err.to_string().contains("a command or http:// URL"),
            "{err}"
        );
    }

    #[test]
    fn hooks_merge_event_by_event() {
        let mut origins = super::super::Origins::new();
        let mut base: RawConfig =
            toml::from_str("[hooks]\nworker_exit = \"./page.sh\"\non_exit = \"./flush.sh\"")
                .expect("valid");
        let flags = RawConfig {
            hooks: Some(
                [
                    ("when_ready".to_owned(), RawHook::Run("./ready.sh".into())),
                    ("on_exit".to_owned(), RawHook::Run("./other.sh".into())),
                ]
                .into(),
            ),
            ..Default::default()
        };
        base.merge(flags, &super::super::Origin::Flag, &mut origins);
        let hooks = base.hooks.expect("hooks");
        assert_eq!(hooks.len(), 3, "{hooks:?}");
        assert_eq!(hooks["worker_exit"], RawHook::Run("./page.sh".into()));
        assert_eq!(hooks["on_exit"], RawHook::Run("./other.sh".into()));
        assert_eq!(hooks["when_ready"], RawHook::Run("./ready.sh".into()));
    }

    /// A value of the wrong type says what the key takes, not which Rust
    /// enum failed to match.
    #[test]
    fn type_errors_say_what_the_key_takes() {
        for (text, wanted) in [
            (
                "graceful_timeout = true",
                "a number of seconds or a string like",
            ),
            ("max_memory = 5e8", "a whole number of bytes"),
            ("bind = 8000", "a string or a list of strings"),
            ("bind = [8000]", "string"),
            ("[hooks]\nx = { run = 5 }", "string"),
        ] {
            let e = toml::from_str::<RawConfig>(text)
                .expect_err(text)
                .to_string();
            assert!(e.contains(wanted) && !e.contains("untagged"), "{text}: {e}");
        }
        let raw: RawConfig = toml::from_str(
            "graceful_timeout = 2.5\ndrain_delay = 3\nboot_timeout = \"1m\"\nmax_memory = 1024\nmax_request_body = \"1MiB\"\nbind = \"a:1\"\nforwarded_allow_ips = [\"*\"]",
        )
        .expect("valid");
        assert_eq!(raw.graceful_timeout, Some(RawDuration::Float(2.5)));
        assert_eq!(raw.drain_delay, Some(RawDuration::Int(3)));
        assert_eq!(raw.boot_timeout, Some(RawDuration::Text("1m".into())));
        assert_eq!(raw.max_memory, Some(RawSize::Int(1024)));
        assert_eq!(raw.max_request_body, Some(RawSize::Text("1MiB".into())));
        assert_eq!(raw.bind, Some(OneOrMany::One("a:1".into())));
        assert_eq!(
            raw.forwarded_allow_ips,
            Some(OneOrMany::Many(vec!["*".into()]))
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = toml::from_str::<RawConfig>("wokers = 3").expect_err("unknown key");
        assert!(err.to_string().contains("wokers"), "{err}");
    }

    #[test]
    fn merge_overlays_and_records_origin() {
        let mut base = RawConfig {
            workers: Some(2),
            backlog: Some(5),
            ..Default::default()
        };
        let mut origins = super::super::Origins::new();
        base.merge(
            RawConfig {
                workers: Some(8),
                ..Default::default()
            },
            &super::super::Origin::Flag,
            &mut origins,
        );
        assert_eq!(base.workers, Some(8));
        assert_eq!(base.backlog, Some(5));
        assert_eq!(origins.get("workers"), Some(&super::super::Origin::Flag));
        assert!(!origins.contains_key("backlog"));
    }
}
