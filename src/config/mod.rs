//! Configuration in two steps: raw layers ([`raw::RawConfig`]) from
//! `curfew.toml`, then the environment ([`env`]), then command-line flags,
//! merged in that order; then one validated, typed [`Config`] that the rest
//! of the program uses. Every error names the key, where it came from, the
//! value and what is allowed.

mod ctx;
pub mod defaults;
pub mod duration;
pub mod env;
pub mod hooks;
pub mod jobs;
mod parse;
pub mod periodic;
pub mod raw;
pub mod reload;
mod suggest;
mod validate;

pub use parse::resolve_program;
pub(crate) use validate::Ctx;
pub use validate::{Checks, log_filter, validate, validate_with};

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use raw::RawConfig;

/// Where a setting came from (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Env(String),
    Flag,
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "in {}", p.display()),
            Origin::Env(v) => write!(f, "in environment variable {v}"),
            Origin::Flag => f.write_str("on the command line"),
            Origin::Default => f.write_str("(default)"),
        }
    }
}

pub type Origins = HashMap<&'static str, Origin>;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("unknown environment variable {name}: it is not a curfew setting; {}", match suggestion {
        Some(s) => format!("did you mean {s}?"),
        None => format!("the settings are {}", known.join(", ")),
    })]
    UnknownEnv {
        name: String,
        suggestion: Option<String>,
        known: Vec<String>,
    },
    #[error("invalid `{key}` = {value} {origin}: {message}")]
    Invalid {
        key: String,
        origin: Origin,
        value: String,
        message: String,
    },
    #[error(
        "no worker command: give it after `--` (curfew serve -- uvicorn app:app --fd 3) or as `command` in curfew.toml"
    )]
    NoCommand,
}

/// How each worker receives its listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerSocket {
    /// An inherited, already listening Unix socket on fd 3 (`LISTEN_FDS=1`),
    /// made by curfew in its private run directory.
    Fd,
    /// The same on a loopback TCP socket (`"fd-tcp"`), for a worker that
    /// only takes a TCP socket on fd 3 or must see a peer address.
    FdTcp,
    /// A free loopback port in `$PORT` and `{port}`; the worker binds it.
    Port,
    /// A Unix socket path in `{socket}` and `$CURFEW_SOCKET`; the worker binds it.
    Unix,
}

impl WorkerSocket {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerSocket::Fd => "fd",
            WorkerSocket::FdTcp => "fd-tcp",
            WorkerSocket::Port => "port",
            WorkerSocket::Unix => "unix",
        }
    }

    /// Whether worker sockets live in curfew's private run directory.
    pub fn uses_run_dir(self) -> bool {
        matches!(self, WorkerSocket::Fd | WorkerSocket::Unix)
    }

    /// Whether the worker inherits its listening socket on fd 3.
    pub fn inherited(self) -> bool {
        matches!(self, WorkerSocket::Fd | WorkerSocket::FdTcp)
    }
}

/// A public address curfew accepts client connections on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindAddr::Tcp(a) => write!(f, "{a}"),
            BindAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The liveness probe of workers that serve several requests at once: a
/// worker failing `failures` probes in a row is aborted as hung.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liveness {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub failures: u32,
}

/// How a reload replaces the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadStrategy {
    /// Boot the whole new generation, switch when all are ready.
    AllAtOnce,
    /// Replace this many workers at a time (for memory-tight hosts).
    Rolling(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A level of the worker output curfew relays (`worker_log_level`), least
/// severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OutputLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl OutputLevel {
    /// A level name as loggers write it (`WARNING`, `err`, `fatal`, …).
    pub fn from_name(name: &str) -> Option<OutputLevel> {
        Some(match name.to_ascii_lowercase().as_str() {
            "trace" | "debug" | "verbose" => OutputLevel::Debug,
            "info" | "information" | "notice" | "log" => OutputLevel::Info,
            "warn" | "warning" => OutputLevel::Warn,
            "error" | "err" | "critical" | "crit" | "fatal" | "alert" | "emerg" | "emergency"
            | "panic" | "exception" => OutputLevel::Error,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OutputLevel::Debug => "debug",
            OutputLevel::Info => "info",
            OutputLevel::Warn => "warn",
            OutputLevel::Error => "error",
        }
    }
}

/// Where curfew's access log goes (`access_log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// `-`: curfew's stdout (its own logs are on stderr).
    Stdout,
    File(PathBuf),
}

/// How an access log line is written (`access_log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// Apache/nginx "combined", plus curfew's timings and worker.
    Combined,
    /// One JSON object per line.
    Json,
}

/// Which peers may set `X-Forwarded-*` headers that curfew passes on.
#[derive(Debug, Clone, PartialEq)]
pub enum ForwardedAllow {
    All,
    Nets(Vec<IpNet>),
}

impl ForwardedAllow {
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match self {
            ForwardedAllow::All => true,
            ForwardedAllow::Nets(nets) => nets.iter().any(|n| n.contains(&ip)),
        }
    }
}

/// A secret setting: compared in constant time, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    /// `given` equals the secret; the time taken does not depend on where
    /// they differ (hand-written: a few lines, no crate needed).
    pub fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        let mut diff = a.len() ^ b.len();
        for (i, x) in a.iter().enumerate() {
            diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }

    /// The value, for passing on (never for logs).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub command: Vec<String>,
    pub workers: usize,
    pub binds: Vec<BindAddr>,
    pub worker_socket: WorkerSocket,
    pub worker_concurrency: usize,
    pub backlog: usize,
    pub ready_path: Option<String>,
    pub boot_timeout: Duration,
    pub drain_delay: Duration,
    pub graceful_timeout: Duration,
    /// `None` when disabled (`timeout = 0`).
    pub timeout: Option<Duration>,
    pub abort_timeout: Duration,
    /// `None` when disabled (`keepalive_timeout = 0`).
    pub keepalive_timeout: Option<Duration>,
    /// `None` when disabled (`header_timeout = 0`).
    pub header_timeout: Option<Duration>,
    /// Bytes of a request head (request line and headers).
    pub max_header_size: usize,
    /// Read the whole request body before it takes a worker.
    pub request_buffering: bool,
    /// `None`: no limit (`max_request_body = 0`).
    pub max_request_body: Option<u64>,
    /// `None` when disabled (`client_body_timeout = 0`).
    pub client_body_timeout: Option<Duration>,
    /// Read worker responses into a spool, freeing the worker at its end.
    pub response_buffering: bool,
    /// `None` when disabled (`send_timeout = 0`).
    pub send_timeout: Option<Duration>,
    /// An upgraded connection idle both ways this long is closed; `None`
    /// when disabled (`tunnel_idle_timeout = 0`).
    pub tunnel_idle_timeout: Option<Duration>,
    /// Client connections open at once on the public addresses.
    pub max_connections: usize,
    /// Threads serving client connections.
    pub proxy_threads: usize,
    /// Retry a bodiless GET/HEAD/OPTIONS once when its worker died.
    pub retry_idempotent: bool,
    /// Keep request header fields whose names have a `_` (`underscore_headers
    /// = "keep"`); by default they are dropped.
    pub keep_underscore_headers: bool,
    pub faulthandler: bool,
    pub worker_stop_timeout: Duration,
    pub chdir: Option<PathBuf>,
    pub forwarded_allow: ForwardedAllow,
    pub admin_bind: Option<BindAddr>,
    /// Required by the admin endpoint (but its probes) when set.
    pub admin_token: Option<Secret>,
    pub control_socket: PathBuf,
    pub liveness: Option<Liveness>,
    pub hooks: HashMap<hooks::HookEvent, hooks::HookSpec>,
    pub max_requests: Option<u64>,
    pub max_requests_jitter: u64,
    pub max_memory: Option<u64>,
    pub reload: ReloadStrategy,
    pub log_format: LogFormat,
    pub log_level: String,
    /// Worker output relayed at or above this level; `None`: none (`off`).
    pub worker_log_level: Option<OutputLevel>,
    /// curfew's access log; `None`: off.
    pub access_log: Option<AccessLogTarget>,
    pub access_log_format: AccessLogFormat,
    /// Log the query string (off: it often carries tokens).
    pub access_log_query: bool,
    /// The job processor; `None` without a `[jobs]` section.
    pub jobs: Option<jobs::JobsConfig>,
    /// `[jobs.periodic.<name>]`, by name (empty without `[jobs]`). Kept
    /// apart from `jobs`: a reload applies it.
    pub periodic: Vec<periodic::PeriodicConfig>,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// When `worker_concurrency` was not given: what was chosen from the
    /// command and why, for one INFO line at start ([`Config::log_defaults`]).
    pub worker_concurrency_default: Option<String>,
}

impl Config {
    /// Logs (INFO) the defaults curfew derived rather than took as given.
    pub fn log_defaults(&self) {
        if let Some(why) = &self.worker_concurrency_default {
            tracing::info!(worker_concurrency = self.worker_concurrency, "{why}");
        }
    }
}

/// The inputs to [`load`].
#[derive(Debug, Default)]
pub struct Sources {
    /// `--config` or `CURFEW_CONFIG`; when `None`, `./curfew.toml` is read if it exists.
    pub config_file: Option<PathBuf>,
    /// The environment (normally `std::env::vars()`).
    pub env: Vec<(String, String)>,
    /// The settings given as flags.
    pub flags: RawConfig,
    /// Directory `./curfew.toml` is looked for in.
    pub cwd: PathBuf,
}

/// Read, merge and validate all layers ([`Checks::Full`]).
pub fn load(sources: Sources) -> Result<Config, ConfigError> {
    load_with(sources, Checks::Full)
}

/// [`load`] with the host checks `checks` says.
pub fn load_with(sources: Sources, checks: Checks) -> Result<Config, ConfigError> {
    let mut origins = Origins::new();
    let mut raw = RawConfig::default();
    let file = match sources.config_file {
        Some(p) => Some(p),
        None => {
            let p = sources.cwd.join("curfew.toml");
            p.is_file().then_some(p)
        }
    };
    if let Some(path) = &file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let layer: RawConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: suggest::unknown_key_message(&e.to_string()),
        })?;
        raw.merge(layer, &Origin::File(path.clone()), &mut origins);
    }
    raw.merge(
        env::layer(sources.env, &mut origins)?,
        &Origin::Env(String::new()),
        &mut Origins::new(),
    );
    raw.merge(sources.flags, &Origin::Flag, &mut origins);
    let mut cfg = validate_with(raw, &origins, checks)?;
    cfg.config_file = file;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml_text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("curfew.toml");
        std::fs::write(&path, toml_text).expect("write");
        load(Sources {
            config_file: Some(path),
            env: vec![],
            flags: RawConfig::default(),
            cwd: dir.path().into(),
        })
    }

    #[test]
    fn defaults_and_fd_mode() {
        let c = cfg(r#"command = "sh -c 'exit 0'""#).expect("valid");
        assert_eq!(c.command, vec!["sh", "-c", "exit 0"]);
        assert_eq!(c.worker_socket, WorkerSocket::Fd);
        assert_eq!(c.worker_concurrency, 1);
        assert_eq!(c.graceful_timeout, Duration::from_secs(20));
        assert_eq!(
            c.binds,
            vec![BindAddr::Tcp("127.0.0.1:8000".parse().expect("addr"))]
        );
        assert_eq!(c.workers, defaults::workers());
    }

    #[test]
    fn placeholders_select_socket_mode() {
        assert_eq!(
            cfg(r#"command = ["sh", "--port={port}"]"#)
                .expect("ok")
                .worker_socket,
            WorkerSocket::Port
        );
        assert_eq!(
            cfg(r#"command = ["sh", "{socket}"]"#)
                .expect("ok")
                .worker_socket,
            WorkerSocket::Unix
        );
        let e = cfg(r#"command = ["sh", "{port}"]
worker_socket = "fd""#)
        .expect_err("conflict");
        assert!(e.to_string().contains("worker_socket"), "{e}");
        let tcp = cfg("command = \"sh\"\nworker_socket = \"fd-tcp\"").expect("fd-tcp");
        assert_eq!(tcp.worker_socket, WorkerSocket::FdTcp);
        let e = cfg(r#"command = ["sh", "{socket}"]
worker_socket = "fd-tcp""#)
        .expect_err("conflict");
        assert!(e.to_string().contains("\"fd-tcp\""), "{e}");
        let e = cfg("command = \"sh\"\nworker_socket = \"tcp\"").expect_err("unknown mode");
        assert!(e.to_string().contains("fd-tcp"), "names the choices: {e}");
    }

    #[test]
    fn negative_timeout_names_key_source_and_value() {
        let e = cfg("command = \"sh\"\ngraceful_timeout = \"-5s\"").expect_err("negative");
        let m = e.to_string();
        assert!(
            m.contains("graceful_timeout")
                && m.contains("-5s")
                && m.contains("negative")
                && m.contains("curfew.toml"),
            "{m}"
        );
    }

    #[test]
    fn unknown_key_in_file() {
        let e = cfg("command = \"sh\"\ngracefull_timeout = 3").expect_err("unknown");
        let m = e.to_string();
        assert!(
            m.contains("unknown key `gracefull_timeout`: did you mean `graceful_timeout`?"),
            "{m}"
        );
        assert!(!m.contains("max_requests"), "no list of every key: {m}");
    }

    #[test]
    fn command_not_found() {
        let e = cfg(r#"command = "definitely-not-a-command-xyz""#).expect_err("missing");
        assert!(e.to_string().contains("command not found"), "{e}");
    }

    /// `curfew check`, `gen` and offline `curfew jobs` validate the values
    /// only: a command, chdir, token file, access log directory or command
    /// queue that exists only where the app is deployed is not required.
    #[test]
    fn static_checks_leave_the_host_alone() {
        let text = "command = \"uvicorn-not-here-xyz app:app\"\nchdir = \"/no/such/app\"\nadmin_token_file = \"/run/secrets/not-here\"\naccess_log = \"/no/such/dir/access.log\"\n[jobs.queues.shell]\ncommand = \"no-such-job-xyz\"";
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("curfew.toml");
        std::fs::write(&path, text).expect("write");
        let sources = || Sources {
            config_file: Some(path.clone()),
            env: vec![],
            flags: RawConfig::default(),
            cwd: dir.path().into(),
        };
        assert!(load(sources()).is_err(), "serve checks them all");
        let c = load_with(sources(), Checks::Static).expect("the values are valid");
        assert_eq!(c.admin_token, None);
        // A bad value is still an error.
        std::fs::write(&path, format!("{text}\nworkers = 0")).expect("write");
        assert!(load_with(sources(), Checks::Static).is_err());
    }

    /// `admin_bind` binds one address: a name that resolves to several is
    /// refused (whether `localhost` does depends on /etc/hosts).
    #[test]
    fn admin_bind_must_name_one_address() {
        use std::net::ToSocketAddrs;
        let several = ("localhost", 9).to_socket_addrs().map_or(0, |a| a.count()) > 1;
        let r = cfg("command = \"sh\"\nadmin_bind = \"localhost:9\"");
        if several {
            let e = r.expect_err("several addresses").to_string();
            assert!(e.contains("admin_bind") && e.contains("several"), "{e}");
        } else {
            assert!(r.is_ok(), "{r:?}");
        }
        assert!(cfg("command = \"sh\"\nadmin_bind = \"127.0.0.1:9\"").is_ok());
    }

    #[test]
    fn missing_command() {
        assert!(matches!(cfg("workers = 2"), Err(ConfigError::NoCommand)));
    }

    #[test]
    fn bad_values() {
        for (text, key) in [
            ("workers = 0", "workers"),
            ("worker_concurrency = -1", "worker_concurrency"),
            ("bind = \"8000\"", "bind"),
            ("bind = \"unix:\"", "bind"),
            ("ready_path = \"health\"", "ready_path"),
            ("log_format = \"xml\"", "log_format"),
            (
                "forwarded_allow_ips = [\"10.0.0.0/33\"]",
                "forwarded_allow_ips",
            ),
            (
                "forwarded_allow_ips = [\"*\", \"10.0.0.0/33\"]",
                "forwarded_allow_ips",
            ),
            ("worker_stop_timeout = 0", "worker_stop_timeout"),
            // Ignored without reload_strategy = "rolling".
            ("reload_batch = 2", "reload_batch"),
            // One socket file for two listeners.
            (
                "bind = \"unix:/tmp/curfew-x.sock\"\ncontrol_socket = \"/tmp/curfew-x.sock\"",
                "control_socket",
            ),
            (
                "admin_bind = \"unix:/tmp/curfew-a.sock\"\ncontrol_socket = \"/tmp/curfew-a.sock\"",
                "control_socket",
            ),
            ("liveness_interval = \"soon\"", "liveness_interval"),
            ("liveness_failures = -4", "liveness_failures"),
            ("liveness_timeout = 0", "liveness_timeout"),
            ("max_request_body = \"0.5B\"", "max_request_body"),
            ("max_memory = \"0.5\"", "max_memory"),
            (
                "[hooks]\non_exit = { run = \"true\", timout = 3 }",
                "timout",
            ),
            ("boot_timeout = 0", "boot_timeout"),
            ("worker_socket = \"pipe\"", "worker_socket"),
            ("worker_log_level = \"loud\"", "worker_log_level"),
            ("access_log = \"/no/such/dir/access.log\"", "access_log"),
            ("access_log = \"\"", "access_log"),
            ("access_log = \"/tmp\"", "access_log"),
            ("access_log_format = \"clf\"", "access_log_format"),
            // Durations above 10 years would overflow `Instant` arithmetic.
            ("graceful_timeout = 1e19", "graceful_timeout"),
            ("boot_timeout = 9223372036854775807", "boot_timeout"),
            ("drain_delay = \"87601h\"", "drain_delay"),
            ("[jobs]\nlease = 1e19", "jobs.lease"),
            (
                "[hooks]\non_exit = { run = \"true\", timeout = 1e19 }",
                "hooks",
            ),
            ("log_level = \"\"", "log_level"),
            // Shorter than anything can succeed in; 1e-10 would be 0 (off).
            ("timeout = \"1ms\"", "timeout"),
            ("timeout = 1e-10", "timeout"),
            ("header_timeout = \"1ns\"", "header_timeout"),
            ("keepalive_timeout = 0.05", "keepalive_timeout"),
            ("client_body_timeout = \"99ms\"", "client_body_timeout"),
            ("send_timeout = \"10ms\"", "send_timeout"),
            ("tunnel_idle_timeout = \"10ms\"", "tunnel_idle_timeout"),
            ("boot_timeout = \"10ms\"", "boot_timeout"),
            ("liveness_timeout = \"1ms\"", "liveness_timeout"),
            ("liveness_interval = \"1ms\"", "liveness_interval"),
        ] {
            let e = cfg(&format!("command = \"sh\"\n{text}")).expect_err(text);
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn layers_override_in_order_file_env_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "command = \"sh\"\nworkers = 2\nbacklog = 5\ndrain_delay = 1",
        )
        .expect("write");
        let flags = RawConfig {
            workers: Some(9),
            ..Default::default()
        };
        let c = load(Sources {
            config_file: Some(path),
            env: vec![
                ("CURFEW_WORKERS".into(), "4".into()),
                ("CURFEW_BACKLOG".into(), "6".into()),
            ],
            flags,
            cwd: dir.path().into(),
        })
        .expect("valid");
        assert_eq!(c.workers, 9);
        assert_eq!(c.backlog, 6);
        assert_eq!(c.drain_delay, Duration::from_secs(1));
    }

    /// Inside `[jobs]`, an error names the layer of its own key: a bad
    /// queue in the file is the file's, even with `--jobs-store` given.
    #[test]
    fn jobs_errors_name_the_layer_of_their_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "command = \"sh\"\n[jobs.queues.mail]\ntimeout = \"1ms\"",
        )
        .expect("write");
        let load_with_flag = |store: &str| {
            load(Sources {
                config_file: Some(path.clone()),
                env: vec![],
                flags: RawConfig {
                    jobs: Some(raw::RawJobs {
                        store: Some(store.to_owned()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                cwd: dir.path().into(),
            })
            .expect_err("bad")
            .to_string()
        };
        let e = load_with_flag(&format!("{}/x.db", dir.path().display()));
        assert!(
            e.contains("jobs.queues.mail.timeout") && e.contains("c.toml"),
            "{e}"
        );
        let e = load_with_flag("mysql://x");
        assert!(
            e.contains("jobs.store") && e.contains("on the command line"),
            "{e}"
        );
    }

    #[test]
    fn env_error_names_the_variable_in_validation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = load(Sources {
            config_file: None,
            env: vec![
                ("CURFEW_COMMAND".into(), "sh".into()),
                ("CURFEW_GRACEFUL_TIMEOUT".into(), "-1".into()),
            ],
            flags: RawConfig::default(),
            cwd: dir.path().into(),
        })
        .expect_err("negative");
        assert!(e.to_string().contains("CURFEW_GRACEFUL_TIMEOUT"), "{e}");
    }

    #[test]
    fn forwarded_allow() {
        let a = parse::parse_allow(&["10.0.0.0/8".into(), "192.168.1.1".into()]).expect("valid");
        assert!(a.trusts("10.1.2.3".parse().expect("ip")));
        assert!(a.trusts("::ffff:10.1.2.3".parse().expect("ip")));
        assert!(!a.trusts("11.0.0.1".parse().expect("ip")));
        assert_eq!(
            parse::parse_allow(&["*".into()]).expect("valid"),
            ForwardedAllow::All
        );
        // A comma list in one string, as gunicorn's FORWARDED_ALLOW_IPS.
        let a = parse::parse_allow(&["10.0.0.1, 10.0.0.2".into()]).expect("valid");
        assert!(a.trusts("10.0.0.2".parse().expect("ip")));
        assert!(!a.trusts("10.0.0.3".parse().expect("ip")));
        assert!(parse::parse_allow(&["10.0.0.1,".into()]).is_err());
    }
}
