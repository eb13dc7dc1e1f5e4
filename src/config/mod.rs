//! Configuration in two steps: raw layers ([`raw::RawConfig`]) from
//! `curfew.toml`, then the environment ([`env`]), then command-line flags,
//! merged in that order; then one validated, typed [`Config`] that the rest
//! of the program uses. Every error names the key, where it came from, the
//! value and what is allowed.

pub mod duration;
pub mod env;
pub mod jobs;
pub mod raw;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use raw::{OneOrMany, RawConfig, RawDuration};

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
    #[error("unknown environment variable {name}: it is not a curfew setting (known: {})", known.join(", "))]
    UnknownEnv { name: String, known: Vec<String> },
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
    /// An inherited, already listening socket on fd 3 (`LISTEN_FDS=1`).
    Fd,
    /// A free loopback port in `$PORT` and `{port}`; the worker binds it.
    Port,
    /// A Unix socket path in `{socket}` and `$CURFEW_SOCKET`; the worker binds it.
    Unix,
}

impl WorkerSocket {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerSocket::Fd => "fd",
            WorkerSocket::Port => "port",
            WorkerSocket::Unix => "unix",
        }
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
    pub faulthandler: bool,
    pub worker_stop_timeout: Duration,
    pub chdir: Option<PathBuf>,
    pub forwarded_allow: ForwardedAllow,
    pub admin_bind: Option<BindAddr>,
    pub control_socket: PathBuf,
    pub liveness: Option<Liveness>,
    pub hooks: std::collections::HashMap<crate::hooks::HookEvent, crate::hooks::HookSpec>,
    pub max_requests: Option<u64>,
    pub max_requests_jitter: u64,
    pub max_memory: Option<u64>,
    pub reload: ReloadStrategy,
    pub log_format: LogFormat,
    pub log_level: String,
    /// The job processor; `None` without a `[jobs]` section.
    pub jobs: Option<jobs::JobsConfig>,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
}

pub const DEFAULT_BIND: &str = "127.0.0.1:8000";
pub const DEFAULT_BACKLOG: usize = 1024;
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_GRACEFUL_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_WORKER_STOP_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_ABORT_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Longer than common load balancers' idle timeouts (AWS ALB 60 s), as the
/// backend's keep-alive must outlast the balancer's.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);

/// 2 × cores + 1, the gunicorn rule of thumb, used when neither `workers`
/// nor `WEB_CONCURRENCY` is set.
pub fn default_workers() -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    2 * cores + 1
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

/// Read, merge and validate all layers.
pub fn load(sources: Sources) -> Result<Config, ConfigError> {
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
            message: e.to_string(),
        })?;
        raw.merge(layer, &Origin::File(path.clone()), &mut origins);
    }
    raw.merge(
        env::layer(sources.env, &mut origins)?,
        &Origin::Env(String::new()),
        &mut Origins::new(),
    );
    raw.merge(sources.flags, &Origin::Flag, &mut origins);
    let mut cfg = validate(raw, &origins)?;
    cfg.config_file = file;
    Ok(cfg)
}

/// Checks values and builds errors that name the key and where it came from.
struct Ctx<'a> {
    origins: &'a Origins,
    /// Keys inside a table (`jobs.queues.mail.timeout`) came from wherever
    /// the table did: this top-level key's origin.
    section: Option<&'static str>,
}

impl<'a> Ctx<'a> {
    fn top(origins: &'a Origins) -> Ctx<'a> {
        Ctx {
            origins,
            section: None,
        }
    }

    fn section(origins: &'a Origins, key: &'static str) -> Ctx<'a> {
        Ctx {
            origins,
            section: Some(key),
        }
    }

    fn err(
        &self,
        key: impl AsRef<str>,
        value: impl fmt::Display,
        message: impl Into<String>,
    ) -> ConfigError {
        let key = key.as_ref();
        let origin_key = self.section.unwrap_or(key);
        ConfigError::Invalid {
            key: key.to_string(),
            origin: self
                .origins
                .get(origin_key)
                .cloned()
                .unwrap_or(Origin::Default),
            value: value.to_string(),
            message: message.into(),
        }
    }

    fn int(
        &self,
        key: &str,
        v: Option<i64>,
        default: i64,
        min: i64,
        max: i64,
    ) -> Result<i64, ConfigError> {
        match v {
            None => Ok(default),
            Some(n) if n < min || n > max => {
                Err(self.err(key, n, format!("must be between {min} and {max}")))
            }
            Some(n) => Ok(n),
        }
    }

    fn count(
        &self,
        key: &str,
        v: Option<i64>,
        default: usize,
        min: i64,
        max: i64,
    ) -> Result<usize, ConfigError> {
        // `default` fits: every default count is far below i64::MAX.
        self.int(key, v, default as i64, min, max)
            .map(|n| n as usize)
    }

    fn duration(
        &self,
        key: &str,
        v: Option<RawDuration>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(raw) => duration::parse(&raw).map_err(|m| self.err(key, &raw, m)),
        }
    }

    /// [`Ctx::duration`], and at least `min` when given.
    fn duration_at_least(
        &self,
        key: &str,
        v: Option<RawDuration>,
        default: Duration,
        min: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = self.duration(key, v, default)?;
        if d < min {
            return Err(self.err(key, format!("{d:?}"), format!("must be at least {min:?}")));
        }
        Ok(d)
    }
}

/// Turn a merged raw layer into a [`Config`], or say exactly what is wrong.
pub fn validate(raw: RawConfig, origins: &Origins) -> Result<Config, ConfigError> {
    let cx = Ctx::top(origins);
    let command = match raw.command {
        None => return Err(ConfigError::NoCommand),
        Some(OneOrMany::Many(v)) => v,
        Some(OneOrMany::One(s)) => shlex::split(&s).ok_or_else(|| {
            cx.err(
                "command",
                format!("{s:?}"),
                "unbalanced quotes in the command string",
            )
        })?,
    };
    if command.is_empty() || command[0].is_empty() {
        return Err(ConfigError::NoCommand);
    }

    let chdir = raw.chdir.map(PathBuf::from);
    if let Some(dir) = &chdir
        && !dir.is_dir()
    {
        return Err(cx.err("chdir", dir.display(), "is not a directory"));
    }
    if let Err(msg) = resolve_program(&command[0], chdir.as_deref()) {
        return Err(cx.err("command", format!("{:?}", command[0]), msg));
    }

    let workers = cx.count("workers", raw.workers, default_workers(), 1, 1024)?;
    let worker_concurrency =
        cx.count("worker_concurrency", raw.worker_concurrency, 1, 1, 100_000)?;
    let backlog = cx.count("backlog", raw.backlog, DEFAULT_BACKLOG, 0, 1_000_000)?;

    let has_port = command.iter().any(|a| a.contains("{port}"));
    let has_socket = command.iter().any(|a| a.contains("{socket}"));
    if has_port && has_socket {
        return Err(cx.err(
            "command",
            command.join(" "),
            "use either {port} or {socket}, not both",
        ));
    }
    let worker_socket = match raw.worker_socket.as_deref() {
        None if has_port => WorkerSocket::Port,
        None if has_socket => WorkerSocket::Unix,
        None => WorkerSocket::Fd,
        Some("fd") if has_port || has_socket => {
            return Err(cx.err(
                "worker_socket",
                "\"fd\"",
                "the command has a {port} or {socket} placeholder; remove it or choose that mode",
            ));
        }
        Some("fd") => WorkerSocket::Fd,
        Some("port") if has_socket => {
            return Err(cx.err("worker_socket", "\"port\"", "the command uses {socket}"));
        }
        Some("port") => WorkerSocket::Port,
        Some("unix") if has_port => {
            return Err(cx.err("worker_socket", "\"unix\"", "the command uses {port}"));
        }
        Some("unix") => WorkerSocket::Unix,
        Some(other) => {
            return Err(cx.err(
                "worker_socket",
                format!("{other:?}"),
                "must be \"fd\", \"port\" or \"unix\"",
            ));
        }
    };

    let binds = raw
        .bind
        .map(OneOrMany::into_vec)
        .unwrap_or_else(|| vec![DEFAULT_BIND.to_string()]);
    if binds.is_empty() {
        return Err(cx.err(
            "bind",
            "[]",
            "give at least one address, e.g. \"127.0.0.1:8000\"",
        ));
    }
    let mut bind_addrs = Vec::new();
    for b in &binds {
        for addr in parse_bind(b).map_err(|m| cx.err("bind", format!("{b:?}"), m))? {
            if !bind_addrs.contains(&addr) {
                bind_addrs.push(addr);
            }
        }
    }

    let ready_path = match raw.ready_path {
        None => None,
        Some(p) if p.starts_with('/') && p.parse::<http::uri::PathAndQuery>().is_ok() => Some(p),
        Some(p) => {
            return Err(cx.err(
                "ready_path",
                format!("{p:?}"),
                "must be a URL path starting with '/', e.g. \"/health\"",
            ));
        }
    };

    let forwarded_allow = match raw.forwarded_allow_ips.map(OneOrMany::into_vec) {
        None => ForwardedAllow::Nets(vec![
            "127.0.0.1/32".parse().expect("literal network"),
            "::1/128".parse().expect("literal network"),
        ]),
        Some(list) => {
            parse_allow(&list).map_err(|m| cx.err("forwarded_allow_ips", format!("{list:?}"), m))?
        }
    };

    let admin_bind = match raw.admin_bind {
        None => None,
        Some(a) => {
            let addrs = parse_bind(&a).map_err(|m| cx.err("admin_bind", format!("{a:?}"), m))?;
            if addrs.iter().any(|x| bind_addrs.contains(x)) {
                return Err(cx.err(
                    "admin_bind",
                    format!("{a:?}"),
                    "must differ from every `bind` address",
                ));
            }
            addrs.into_iter().next()
        }
    };

    let max_requests = match cx.count("max_requests", raw.max_requests, 0, 0, i64::MAX)? {
        0 => None,
        n => Some(n as u64),
    };
    let max_requests_jitter = cx.count(
        "max_requests_jitter",
        raw.max_requests_jitter,
        0,
        0,
        i64::MAX,
    )? as u64;
    let max_memory = match raw.max_memory {
        None => None,
        Some(raw_size) => match raw_size.bytes() {
            Ok(0) => None,
            Ok(b) if b < 1 << 20 => {
                return Err(cx.err(
                    "max_memory",
                    &raw_size,
                    "must be at least 1MiB (or 0 for no limit)",
                ));
            }
            Ok(b) => Some(b),
            Err(m) => return Err(cx.err("max_memory", &raw_size, m)),
        },
    };
    let batch = cx.count("reload_batch", raw.reload_batch, 1, 1, 1024)?;
    let reload = match raw.reload_strategy.as_deref() {
        None | Some("all") => ReloadStrategy::AllAtOnce,
        Some("rolling") => ReloadStrategy::Rolling(batch),
        Some(other) => {
            return Err(cx.err(
                "reload_strategy",
                format!("{other:?}"),
                "must be \"all\" or \"rolling\"",
            ));
        }
    };

    let liveness = match raw.liveness_path {
        None => None,
        Some(p) if p.starts_with('/') && p.parse::<http::uri::PathAndQuery>().is_ok() => {
            let interval = cx.duration(
                "liveness_interval",
                raw.liveness_interval,
                Duration::from_secs(10),
            )?;
            let timeout = cx.duration(
                "liveness_timeout",
                raw.liveness_timeout,
                Duration::from_secs(5),
            )?;
            if interval.is_zero() {
                return Err(cx.err("liveness_interval", "0", "must be greater than zero"));
            }
            if timeout.is_zero() {
                return Err(cx.err("liveness_timeout", "0", "must be greater than zero"));
            }
            let failures = cx.count("liveness_failures", raw.liveness_failures, 3, 1, 100)? as u32;
            Some(Liveness {
                path: p,
                interval,
                timeout,
                failures,
            })
        }
        Some(p) => {
            return Err(cx.err(
                "liveness_path",
                format!("{p:?}"),
                "must be a URL path starting with '/', e.g. \"/health\"",
            ));
        }
    };
    let hook_timeout = cx.duration("hook_timeout", raw.hook_timeout, DEFAULT_HOOK_TIMEOUT)?;
    if hook_timeout.is_zero() {
        return Err(cx.err("hook_timeout", "0", "must be greater than zero"));
    }
    let mut hooks = std::collections::HashMap::new();
    for (name, raw_hook) in raw.hooks.unwrap_or_default() {
        let Some(event) = crate::hooks::HookEvent::from_name(&name) else {
            let known: Vec<&str> = crate::hooks::HookEvent::ALL
                .iter()
                .map(|e| e.as_str())
                .collect();
            return Err(cx.err(
                "hooks",
                format!("{name:?}"),
                format!("unknown hook; the hooks are {}", known.join(", ")),
            ));
        };
        let (run, timeout) = match raw_hook {
            raw::RawHook::Run(r) => (r, None),
            raw::RawHook::Table { run, timeout } => (run, timeout),
        };
        let action = crate::hooks::HookAction::parse(&run)
            .map_err(|m| cx.err("hooks", format!("{name} = {run:?}"), m))?;
        let timeout = match timeout {
            None => hook_timeout,
            Some(t) => match duration::parse(&t) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    return Err(cx.err(
                        "hooks",
                        format!("{name}.timeout = {t}"),
                        "must be greater than zero",
                    ));
                }
                Err(m) => return Err(cx.err("hooks", format!("{name}.timeout = {t}"), m)),
            },
        };
        hooks.insert(event, crate::hooks::HookSpec { action, timeout });
    }

    let log_format = match raw.log_format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(cx.err(
                "log_format",
                format!("{other:?}"),
                "must be \"text\" or \"json\"",
            ));
        }
    };
    let log_level = raw.log_level.unwrap_or_else(|| "info".into());
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&log_level) {
        return Err(cx.err(
            "log_level",
            format!("{log_level:?}"),
            format!("{e} (write e.g. \"info\" or \"curfew=debug,info\")"),
        ));
    }

    let raw_jobs = raw.jobs;
    let mut cfg = Config {
        command,
        workers,
        binds: bind_addrs,
        worker_socket,
        worker_concurrency,
        backlog,
        ready_path,
        boot_timeout: {
            let d = cx.duration("boot_timeout", raw.boot_timeout, DEFAULT_BOOT_TIMEOUT)?;
            if d.is_zero() {
                return Err(cx.err("boot_timeout", "0", "must be greater than zero"));
            }
            d
        },
        drain_delay: cx.duration("drain_delay", raw.drain_delay, Duration::ZERO)?,
        timeout: Some(cx.duration("timeout", raw.timeout, DEFAULT_TIMEOUT)?)
            .filter(|d| !d.is_zero()),
        keepalive_timeout: Some(cx.duration(
            "keepalive_timeout",
            raw.keepalive_timeout,
            DEFAULT_KEEPALIVE_TIMEOUT,
        )?)
        .filter(|d| !d.is_zero()),
        abort_timeout: cx.duration("abort_timeout", raw.abort_timeout, DEFAULT_ABORT_TIMEOUT)?,
        faulthandler: raw.faulthandler.unwrap_or(true),
        graceful_timeout: cx.duration(
            "graceful_timeout",
            raw.graceful_timeout,
            DEFAULT_GRACEFUL_TIMEOUT,
        )?,
        worker_stop_timeout: cx.duration(
            "worker_stop_timeout",
            raw.worker_stop_timeout,
            DEFAULT_WORKER_STOP_TIMEOUT,
        )?,
        chdir,
        forwarded_allow,
        admin_bind,
        control_socket: match raw.control_socket {
            Some(p) if p.is_empty() => {
                return Err(cx.err(
                    "control_socket",
                    "\"\"",
                    "give a path, e.g. \"/run/app/curfew.sock\"",
                ));
            }
            Some(p) => PathBuf::from(p),
            None => crate::control::default_path(),
        },
        hooks,
        liveness,
        max_requests,
        max_requests_jitter,
        max_memory,
        reload,
        log_format,
        log_level,
        jobs: None,
        config_file: None,
    };
    cfg.jobs = jobs::validate(
        raw_jobs,
        &jobs::Context {
            origins,
            graceful_timeout: cfg.graceful_timeout,
            capacity: cfg.workers * cfg.worker_concurrency,
        },
    )?;
    Ok(cfg)
}

fn parse_bind(s: &str) -> Result<Vec<BindAddr>, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("a unix address needs a path: \"unix:/run/app.sock\"".into());
        }
        return Ok(vec![BindAddr::Unix(PathBuf::from(path))]);
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(vec![BindAddr::Tcp(a)]);
    }
    if !s.contains(':') {
        return Err("must be host:port (e.g. \"0.0.0.0:8000\") or unix:/path".into());
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| {
            format!("cannot resolve: {e}; use host:port (e.g. \"0.0.0.0:8000\") or unix:/path")
        })?
        .collect();
    if addrs.is_empty() {
        return Err("resolves to no address".into());
    }
    Ok(addrs.into_iter().map(BindAddr::Tcp).collect())
}

fn parse_allow(list: &[String]) -> Result<ForwardedAllow, String> {
    let mut nets = Vec::new();
    for item in list {
        let item = item.trim();
        if item == "*" {
            return Ok(ForwardedAllow::All);
        }
        let net = match item.parse::<IpNet>() {
            Ok(n) => n,
            Err(_) => match item.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => {
                    return Err(format!(
                        "{item:?} is not an IP address or CIDR network (or \"*\" for any)"
                    ));
                }
            },
        };
        nets.push(net);
    }
    Ok(ForwardedAllow::Nets(nets))
}

/// Check the worker program can be run: a path must name an executable file;
/// a bare name must be found in `PATH`.
pub fn resolve_program(program: &str, chdir: Option<&Path>) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        let full = match (p.is_relative(), chdir) {
            (true, Some(dir)) => dir.join(&p),
            _ => p,
        };
        return if is_exec(&full) {
            Ok(full)
        } else if full.exists() {
            Err(format!("{} is not an executable file", full.display()))
        } else {
            Err(format!(
                "command not found: {} does not exist",
                full.display()
            ))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let cand = dir.join(program);
        if is_exec(&cand) {
            return Ok(cand);
        }
    }
    Err(format!(
        "command not found: `{program}` is not in PATH (install it, activate its virtualenv, or give its full path)"
    ))
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
        assert_eq!(c.graceful_timeout, Duration::from_secs(30));
        assert_eq!(
            c.binds,
            vec![BindAddr::Tcp("127.0.0.1:8000".parse().expect("addr"))]
        );
        assert_eq!(c.workers, default_workers());
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
        assert!(e.to_string().contains("gracefull_timeout"), "{e}");
    }

    #[test]
    fn command_not_found() {
        let e = cfg(r#"command = "definitely-not-a-command-xyz""#).expect_err("missing");
        assert!(e.to_string().contains("command not found"), "{e}");
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
            ("boot_timeout = 0", "boot_timeout"),
            ("worker_socket = \"pipe\"", "worker_socket"),
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
        let a = parse_allow(&["10.0.0.0/8".into(), "192.168.1.1".into()]).expect("valid");
        assert!(a.trusts("10.1.2.3".parse().expect("ip")));
        assert!(a.trusts("::ffff:10.1.2.3".parse().expect("ip")));
        assert!(!a.trusts("11.0.0.1".parse().expect("ip")));
        assert_eq!(
            parse_allow(&["*".into()]).expect("valid"),
            ForwardedAllow::All
        );
    }
}
