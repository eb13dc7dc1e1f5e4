//! Validation: the merged raw layer ([`RawConfig`]) becomes one typed
//! [`Config`], group by group (what the workers run, addresses, worker
//! health, recycling, hooks, logging; `[jobs]` in [`super::jobs`]), with the
//! checkers in [`Ctx`] (`ctx.rs`) shared by every group. Each error names the key, its
//! origin, the value and what is allowed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

pub(crate) use super::ctx::Ctx;
use super::hooks::{HookAction, HookEvent, HookSpec};
use super::parse::{parse_allow, parse_bind, resolve_program};
use super::raw::{OneOrMany, RawConfig, RawHook, RawSize};
use super::{
    AccessLogFormat, AccessLogTarget, BindAddr, Config, ConfigError, ForwardedAllow, Liveness,
    LogFormat, Origins, OutputLevel, ReloadStrategy, Secret, WorkerSocket, defaults, duration,
    jobs,
};

/// The least `timeout`, `header_timeout`, `client_body_timeout`,
/// `keepalive_timeout`, `send_timeout`, `tunnel_idle_timeout` (when on) and
/// `boot_timeout`: shorter, every request (or client, or boot) fails before
/// it can succeed — with `timeout` on a sync worker, each one aborts the
/// worker.
pub const MIN_CLIENT_TIMEOUT: Duration = Duration::from_millis(100);

/// The least `liveness_interval` and `liveness_timeout`.
pub const MIN_PROBE_TIMEOUT: Duration = Duration::from_millis(10);

/// What validation checks on this host besides the values themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checks {
    /// All that `serve` needs: the command and `chdir` exist,
    /// `admin_token_file` is read, `access_log`'s directory exists, each
    /// command queue's program is found.
    Full,
    /// The values only, none of the above: for `curfew check`, `curfew gen`
    /// and offline `curfew jobs`, which run where the app may not be
    /// installed (CI, an admin shell) and use none of those (the token is
    /// then left unread: `admin_token` is `None`).
    Static,
}

/// Turn a merged raw layer into a [`Config`], or say exactly what is wrong
/// ([`Checks::Full`]).
pub fn validate(raw: RawConfig, origins: &Origins) -> Result<Config, ConfigError> {
    validate_with(raw, origins, Checks::Full)
}

/// [`validate`] with the host checks `checks` says. Each group of settings
/// is checked by a function of its own; the struct literal at the end names
/// every field of [`Config`].
pub fn validate_with(
    raw: RawConfig,
    origins: &Origins,
    checks: Checks,
) -> Result<Config, ConfigError> {
    let cx = Ctx::top(origins);
    let program = program(&cx, &raw, checks)?;
    let (default_concurrency, why) = defaults::worker_concurrency(&program.command);
    let worker_concurrency = cx.count(
        "worker_concurrency",
        raw.worker_concurrency,
        default_concurrency,
        1,
        100_000,
    )?;
    let net = network(&cx, &raw)?;
    let health = health(&cx, &raw, worker_concurrency)?;
    let recycle = recycle(&cx, &raw)?;
    let hooks = hooks(&cx, &raw)?;
    let (log_format, log_level) = logging(&cx, &raw)?;
    let worker_log_level = worker_log_level(&cx, &raw)?;
    let (access_log, access_log_format) = access_log(&cx, &raw, checks)?;
    let client = client(&cx, &raw)?;
    let admin_token = admin_token(&cx, &raw, checks)?;
    let graceful_timeout = cx.duration(
        "graceful_timeout",
        raw.graceful_timeout.clone(),
        defaults::GRACEFUL_TIMEOUT,
    )?;
    let workers = cx.count(
        "workers",
        raw.workers,
        defaults::workers(),
        1,
        defaults::MAX_WORKERS as i64,
    )?;
    let worker_concurrency_default = raw.worker_concurrency.is_none().then_some(why);
    let mut raw_jobs = raw.jobs;
    let raw_periodic = raw_jobs.as_mut().and_then(|j| j.periodic.take());
    let jobs = jobs::validate(
        raw_jobs,
        &jobs::Context {
            origins,
            graceful_timeout,
            capacity: workers * worker_concurrency,
            checks,
        },
    )?;
    let periodic = match &jobs {
        Some(j) => super::periodic::validate(&Ctx::section(origins, "jobs"), raw_periodic, j)?,
        None => Vec::new(),
    };
    Ok(Config {
        command: program.command,
        workers,
        binds: net.binds,
        worker_socket: program.worker_socket,
        worker_concurrency,
        backlog: cx.count("backlog", raw.backlog, defaults::BACKLOG, 0, 1_000_000)?,
        ready_path: health.ready_path,
        boot_timeout: health.boot_timeout,
        drain_delay: cx.duration("drain_delay", raw.drain_delay, defaults::DRAIN_DELAY)?,
        graceful_timeout,
        timeout: health.timeout,
        abort_timeout: health.abort_timeout,
        keepalive_timeout: cx.optional_at_least(
            "keepalive_timeout",
            raw.keepalive_timeout,
            defaults::KEEPALIVE_TIMEOUT,
            MIN_CLIENT_TIMEOUT,
        )?,
        header_timeout: client.header_timeout,
        max_header_size: client.max_header_size,
        request_buffering: raw.request_buffering.unwrap_or(worker_concurrency == 1),
        max_request_body: client.max_request_body,
        client_body_timeout: client.client_body_timeout,
        response_buffering: raw
            .response_buffering
            .unwrap_or(defaults::RESPONSE_BUFFERING),
        send_timeout: cx.optional_at_least(
            "send_timeout",
            raw.send_timeout,
            defaults::SEND_TIMEOUT,
            MIN_CLIENT_TIMEOUT,
        )?,
        tunnel_idle_timeout: cx.optional_at_least(
            "tunnel_idle_timeout",
            raw.tunnel_idle_timeout,
            defaults::TUNNEL_IDLE_TIMEOUT,
            MIN_CLIENT_TIMEOUT,
        )?,
        retry_idempotent: raw.retry_idempotent.unwrap_or(defaults::RETRY_IDEMPOTENT),
        keep_underscore_headers: cx.one_of(
            "underscore_headers",
            raw.underscore_headers.clone(),
            defaults::UNDERSCORE_HEADERS,
            &["drop", "keep"],
        )? == "keep",
        max_connections: cx.count(
            "max_connections",
            raw.max_connections,
            defaults::MAX_CONNECTIONS,
            1,
            10_000_000,
        )?,
        proxy_threads: cx.count(
            "proxy_threads",
            raw.proxy_threads,
            defaults::proxy_threads(),
            1,
            256,
        )?,
        faulthandler: raw.faulthandler.unwrap_or(defaults::FAULTHANDLER),
        // Not 0: every stop would SIGKILL at once and count as forced.
        worker_stop_timeout: cx.positive(
            "worker_stop_timeout",
            raw.worker_stop_timeout,
            defaults::WORKER_STOP_TIMEOUT,
        )?,
        chdir: program.chdir,
        forwarded_allow: net.forwarded_allow,
        admin_bind: net.admin_bind,
        admin_token,
        control_socket: net.control_socket,
        liveness: health.liveness,
        hooks,
        max_requests: recycle.max_requests,
        max_requests_jitter: recycle.max_requests_jitter,
        max_memory: recycle.max_memory,
        reload: recycle.reload,
        log_format,
        log_level,
        worker_log_level,
        access_log,
        access_log_format,
        access_log_query: raw.access_log_query.unwrap_or(defaults::ACCESS_LOG_QUERY),
        jobs,
        periodic,
        config_file: None,
        worker_concurrency_default,
    })
}

/// What the workers run: `command`, `chdir`, `worker_socket`.
struct Program {
    command: Vec<String>,
    chdir: Option<PathBuf>,
    worker_socket: WorkerSocket,
}

fn program(cx: &Ctx<'_>, raw: &RawConfig, checks: Checks) -> Result<Program, ConfigError> {
    let command = match raw.command.clone() {
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
    let chdir = raw.chdir.clone().map(PathBuf::from);
    if let Some(dir) = &chdir
        && checks == Checks::Full
        && !dir.is_dir()
    {
        return Err(cx.err("chdir", dir.display(), "is not a directory"));
    }
    if checks == Checks::Full
        && let Err(msg) = resolve_program(&command[0], chdir.as_deref())
    {
        return Err(cx.err("command", format!("{:?}", command[0]), msg));
    }
    let has_port = command.iter().any(|a| a.contains("{port}"));
    let has_socket = command.iter().any(|a| a.contains("{socket}"));
    if has_port && has_socket {
        return Err(cx.err(
            "command",
            command.join(" "),
            "use either {port} or {socket}, not both",
        ));
    }
    let implied = if has_port {
        "port"
    } else if has_socket {
        "unix"
    } else {
        "fd"
    };
    let mode = cx.one_of(
        "worker_socket",
        raw.worker_socket.clone(),
        implied,
        &["fd", "fd-tcp", "port", "unix"],
    )?;
    let worker_socket = match (mode.as_str(), has_port, has_socket) {
        ("fd", false, false) => WorkerSocket::Fd,
        ("fd-tcp", false, false) => WorkerSocket::FdTcp,
        (m @ ("fd" | "fd-tcp"), _, _) => {
            return Err(cx.err(
                "worker_socket",
                format!("{m:?}"),
                "the command has a {port} or {socket} placeholder; remove it or choose that mode",
            ));
        }
        ("port", _, true) => {
            return Err(cx.err("worker_socket", "\"port\"", "the command uses {socket}"));
        }
        ("port", _, _) => WorkerSocket::Port,
        ("unix", true, _) => {
            return Err(cx.err("worker_socket", "\"unix\"", "the command uses {port}"));
        }
        _ => WorkerSocket::Unix,
    };
    Ok(Program {
        command,
        chdir,
        worker_socket,
    })
}

/// `admin_token` or `admin_token_file` (one of them), at least 16
/// characters.
fn admin_token(
    cx: &Ctx<'_>,
    raw: &RawConfig,
    checks: Checks,
) -> Result<Option<Secret>, ConfigError> {
    let token = match (raw.admin_token.clone(), raw.admin_token_file.clone()) {
        (Some(_), Some(_)) => {
            return Err(cx.err(
                "admin_token_file",
                "(set)",
                "give admin_token or admin_token_file, not both",
            ));
        }
        (Some(t), None) => ("admin_token", t),
        (None, Some(_)) if checks == Checks::Static => return Ok(None),
        (None, Some(path)) => match std::fs::read_to_string(&path) {
            Ok(t) => ("admin_token_file", t.trim().to_owned()),
            Err(e) => {
                return Err(cx.err(
                    "admin_token_file",
                    format!("{path:?}"),
                    format!("cannot read it: {e}"),
                ));
            }
        },
        (None, None) => return Ok(None),
    };
    let (key, value) = token;
    if value.chars().count() < 16 || value.chars().any(char::is_whitespace) {
        return Err(cx.err(
            key,
            "(hidden)",
            "must be at least 16 characters without spaces (e.g. `openssl rand -hex 24`)",
        ));
    }
    Ok(Some(Secret::new(value)))
}

/// Addresses: `bind`, `admin_bind`, `forwarded_allow_ips`, `control_socket`.
struct Network {
    binds: Vec<BindAddr>,
    admin_bind: Option<BindAddr>,
    forwarded_allow: ForwardedAllow,
    control_socket: PathBuf,
}

fn network(cx: &Ctx<'_>, raw: &RawConfig) -> Result<Network, ConfigError> {
    let binds = raw
        .bind
        .clone()
        .map(OneOrMany::into_vec)
        .unwrap_or_else(|| vec![defaults::BIND.to_string()]);
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
    let allow = raw
        .forwarded_allow_ips
        .clone()
        .map(OneOrMany::into_vec)
        .unwrap_or_else(|| {
            defaults::FORWARDED_ALLOW_IPS
                .iter()
                .map(|ip| ip.to_string())
                .collect()
        });
    let forwarded_allow =
        parse_allow(&allow).map_err(|m| cx.err("forwarded_allow_ips", format!("{allow:?}"), m))?;
    let admin_bind = match raw.admin_bind.clone() {
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
            // One address is bound: a name that resolves to several
            // (`localhost`: ::1 and 127.0.0.1) would leave probes to the
            // others refused.
            if addrs.len() > 1 {
                let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                return Err(cx.err(
                    "admin_bind",
                    format!("{a:?}"),
                    format!(
                        "resolves to several addresses ({}); give one of them, e.g. {:?}",
                        list.join(", "),
                        list[0]
                    ),
                ));
            }
            addrs.into_iter().next()
        }
    };
    let control_socket = match raw.control_socket.clone() {
        Some(p) if p.is_empty() => {
            return Err(cx.err(
                "control_socket",
                "\"\"",
                "give a path, e.g. \"/run/app/curfew.sock\"",
            ));
        }
        Some(p) => PathBuf::from(p),
        None => defaults::control_socket(),
    };
    // One socket file cannot be two listeners (the second bind would find
    // the first one live and blame "a running curfew").
    let unix_socket = BindAddr::Unix(control_socket.clone());
    if bind_addrs.contains(&unix_socket) || admin_bind.as_ref() == Some(&unix_socket) {
        let other = if bind_addrs.contains(&unix_socket) {
            "bind"
        } else {
            "admin_bind"
        };
        return Err(cx.err(
            "control_socket",
            format!("{:?}", control_socket.display().to_string()),
            format!(
                "is also a `{other}` address (unix:{}); give each socket a path of its own",
                control_socket.display()
            ),
        ));
    }
    Ok(Network {
        binds: bind_addrs,
        admin_bind,
        forwarded_allow,
        control_socket,
    })
}

/// When a worker counts as ready, alive or hung: `ready_path`,
/// `boot_timeout`, `timeout`, `abort_timeout`, `liveness_*`.
struct Health {
    ready_path: Option<String>,
    boot_timeout: Duration,
    timeout: Option<Duration>,
    abort_timeout: Duration,
    liveness: Option<Liveness>,
}

fn health(cx: &Ctx<'_>, raw: &RawConfig, worker_concurrency: usize) -> Result<Health, ConfigError> {
    // The probe's settings are checked whether or not it is on: a bad value
    // is a mistake even before liveness_path is added.
    let interval = cx.positive_at_least(
        "liveness_interval",
        raw.liveness_interval.clone(),
        defaults::LIVENESS_INTERVAL,
        MIN_PROBE_TIMEOUT,
    )?;
    let timeout = cx.positive_at_least(
        "liveness_timeout",
        raw.liveness_timeout.clone(),
        defaults::LIVENESS_TIMEOUT,
        MIN_PROBE_TIMEOUT,
    )?;
    let failures = cx.count(
        "liveness_failures",
        raw.liveness_failures,
        defaults::LIVENESS_FAILURES,
        1,
        100,
    )? as u32;
    let liveness = match cx.url_path("liveness_path", raw.liveness_path.clone())? {
        None => None,
        Some(path) if worker_concurrency == 1 => {
            return Err(cx.err(
                "liveness_path",
                format!("{path:?}"),
                "is for workers with worker_concurrency > 1, and worker_concurrency is 1 (a sync worker is found hung by `timeout` instead, and would never be probed); remove liveness_path, or set worker_concurrency if the workers are async",
            ));
        }
        Some(path) => Some(Liveness {
            path,
            interval,
            timeout,
            failures,
        }),
    };
    Ok(Health {
        ready_path: cx.url_path("ready_path", raw.ready_path.clone())?,
        boot_timeout: cx.positive_at_least(
            "boot_timeout",
            raw.boot_timeout.clone(),
            defaults::BOOT_TIMEOUT,
            MIN_CLIENT_TIMEOUT,
        )?,
        timeout: cx.optional_at_least(
            "timeout",
            raw.timeout.clone(),
            defaults::TIMEOUT,
            MIN_CLIENT_TIMEOUT,
        )?,
        abort_timeout: cx.duration(
            "abort_timeout",
            raw.abort_timeout.clone(),
            defaults::ABORT_TIMEOUT,
        )?,
        liveness,
    })
}

/// What a client may send, and how slowly: `header_timeout`,
/// `max_header_size`, `max_request_body`, `client_body_timeout`.
struct Client {
    header_timeout: Option<Duration>,
    max_header_size: usize,
    max_request_body: Option<u64>,
    client_body_timeout: Option<Duration>,
}

fn client(cx: &Ctx<'_>, raw: &RawConfig) -> Result<Client, ConfigError> {
    let size = |key: &str, v: &Option<RawSize>, default: u64| match v {
        None => Ok(default),
        Some(s) => s.bytes().map_err(|m| cx.err(key, s, m)),
    };
    let max_header_size = size(
        "max_header_size",
        &raw.max_header_size,
        defaults::MAX_HEADER_SIZE,
    )?;
    if !(8 * 1024..=1024 * 1024).contains(&max_header_size) {
        return Err(cx.err(
            "max_header_size",
            raw.max_header_size
                .as_ref()
                .map_or(String::new(), |s| s.to_string()),
            "must be between 8KiB and 1MiB",
        ));
    }
    let max_request_body = size(
        "max_request_body",
        &raw.max_request_body,
        defaults::MAX_REQUEST_BODY,
    )?;
    Ok(Client {
        header_timeout: cx.optional_at_least(
            "header_timeout",
            raw.header_timeout.clone(),
            defaults::HEADER_TIMEOUT,
            MIN_CLIENT_TIMEOUT,
        )?,
        // Checked against 8KiB..=1MiB above.
        max_header_size: max_header_size as usize,
        max_request_body: Some(max_request_body).filter(|b| *b > 0),
        client_body_timeout: cx.optional_at_least(
            "client_body_timeout",
            raw.client_body_timeout.clone(),
            defaults::CLIENT_BODY_TIMEOUT,
            MIN_CLIENT_TIMEOUT,
        )?,
    })
}

/// When and how workers are replaced: `max_requests`, `max_requests_jitter`,
/// `max_memory`, `reload_strategy`, `reload_batch`.
struct Recycle {
    max_requests: Option<u64>,
    max_requests_jitter: u64,
    max_memory: Option<u64>,
    reload: ReloadStrategy,
}

fn recycle(cx: &Ctx<'_>, raw: &RawConfig) -> Result<Recycle, ConfigError> {
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
    let max_memory = match raw.max_memory.clone() {
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
    let batch = cx.count(
        "reload_batch",
        raw.reload_batch,
        defaults::RELOAD_BATCH,
        1,
        1024,
    )?;
    let strategy = cx.one_of(
        "reload_strategy",
        raw.reload_strategy.clone(),
        defaults::RELOAD_STRATEGY,
        &["all", "rolling"],
    )?;
    if strategy != "rolling" && raw.reload_batch.is_some() {
        return Err(cx.err(
            "reload_batch",
            batch,
            format!(
                "is used only with reload_strategy = \"rolling\" (it is {strategy:?}); set that too, or remove reload_batch"
            ),
        ));
    }
    let reload = if strategy == "rolling" {
        ReloadStrategy::Rolling(batch)
    } else {
        ReloadStrategy::AllAtOnce
    };
    Ok(Recycle {
        max_requests,
        max_requests_jitter,
        max_memory,
        reload,
    })
}

/// `hooks` and `hook_timeout`.
fn hooks(cx: &Ctx<'_>, raw: &RawConfig) -> Result<HashMap<HookEvent, HookSpec>, ConfigError> {
    let hook_timeout = cx.positive(
        "hook_timeout",
        raw.hook_timeout.clone(),
        defaults::HOOK_TIMEOUT,
    )?;
    let mut hooks = HashMap::new();
    for (name, raw_hook) in raw.hooks.clone().unwrap_or_default() {
        let Some(event) = HookEvent::from_name(&name) else {
            let known: Vec<&str> = HookEvent::ALL.iter().map(|e| e.as_str()).collect();
            return Err(cx.err(
                "hooks",
                format!("{name:?}"),
                format!("unknown hook; the hooks are {}", known.join(", ")),
            ));
        };
        let (run, timeout) = match raw_hook {
            RawHook::Run(r) => (r, None),
            RawHook::Table(t) => (t.run, t.timeout),
        };
        let action =
            HookAction::parse(&run).map_err(|m| cx.err("hooks", format!("{name} = {run:?}"), m))?;
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
        hooks.insert(event, HookSpec { action, timeout });
    }
    Ok(hooks)
}

/// `log_format` and `log_level`.
fn logging(cx: &Ctx<'_>, raw: &RawConfig) -> Result<(LogFormat, String), ConfigError> {
    let format = match cx
        .one_of(
            "log_format",
            raw.log_format.clone(),
            defaults::LOG_FORMAT,
            &["text", "json"],
        )?
        .as_str()
    {
        "json" => LogFormat::Json,
        _ => LogFormat::Text,
    };
    let level = raw
        .log_level
        .clone()
        .unwrap_or_else(|| defaults::LOG_LEVEL.into());
    if let Err(m) = check_filter(&level) {
        return Err(cx.err("log_level", format!("{level:?}"), m));
    }
    Ok((format, level))
}

/// The filter `logging::init` installs for `log_level`. The job store's
/// database driver logs its own reconnects and slow statements at
/// INFO/WARN; curfew reports store trouble itself (once per outage).
/// Unless the filter names `sqlx`, keep only its errors.
pub fn log_filter(level: &str) -> String {
    if level.contains("sqlx") {
        level.to_owned()
    } else {
        format!("{level},sqlx=error")
    }
}

/// Checks `log_level` as it will be installed ([`log_filter`]): at least one
/// directive (an empty filter, or only commas, would leave `sqlx=error`
/// alone, which turns every other line off, ERROR included), and one
/// tracing-subscriber parses.
fn check_filter(level: &str) -> Result<(), String> {
    if level.split(',').all(|d| d.trim().is_empty()) {
        return Err(
            "is empty, which would turn off every log line; give a level such as \"info\" (or \"error\" for the fewest lines)"
                .into(),
        );
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(log_filter(level))
        .map(|_| ())
        .map_err(|e| format!("{e} (write e.g. \"info\" or \"curfew=debug,info\")"))
}

/// `worker_log_level`: the least level of worker output relayed.
fn worker_log_level(cx: &Ctx<'_>, raw: &RawConfig) -> Result<Option<OutputLevel>, ConfigError> {
    let v = cx.one_of(
        "worker_log_level",
        raw.worker_log_level.clone(),
        defaults::WORKER_LOG_LEVEL,
        &["debug", "info", "warn", "error", "off"],
    )?;
    Ok(OutputLevel::from_name(&v))
}

/// `access_log` and `access_log_format`.
fn access_log(
    cx: &Ctx<'_>,
    raw: &RawConfig,
    checks: Checks,
) -> Result<(Option<AccessLogTarget>, AccessLogFormat), ConfigError> {
    let format = match cx
        .one_of(
            "access_log_format",
            raw.access_log_format.clone(),
            defaults::ACCESS_LOG_FORMAT,
            &["combined", "json"],
        )?
        .as_str()
    {
        "json" => AccessLogFormat::Json,
        _ => AccessLogFormat::Combined,
    };
    let value = raw
        .access_log
        .clone()
        .unwrap_or_else(|| defaults::ACCESS_LOG.to_owned());
    let target = match value.trim() {
        "off" => return Ok((None, format)),
        "-" => AccessLogTarget::Stdout,
        "" => {
            return Err(cx.err(
                "access_log",
                "\"\"",
                "must be \"-\" (stdout), a file path, or \"off\"",
            ));
        }
        path if checks == Checks::Static => AccessLogTarget::File(PathBuf::from(path)),
        path => {
            let path = PathBuf::from(path);
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !dir.is_dir() {
                return Err(cx.err(
                    "access_log",
                    format!("{value:?}"),
                    format!("its directory {} does not exist", dir.display()),
                ));
            }
            if path.is_dir() {
                return Err(cx.err(
                    "access_log",
                    format!("{value:?}"),
                    "is a directory; give a file path",
                ));
            }
            AccessLogTarget::File(path)
        }
    };
    Ok((Some(target), format))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlx_is_quiet_unless_named() {
        assert_eq!(log_filter("info"), "info,sqlx=error");
        assert_eq!(log_filter("debug,sqlx=debug"), "debug,sqlx=debug");
    }

    /// `log_level = ""` (an unset template variable) would install only
    /// `sqlx=error`, which turns off every other line, ERROR included.
    #[test]
    fn an_empty_log_level_is_refused() {
        for empty in ["", " ", ",", " , ,"] {
            let e = check_filter(empty).expect_err(empty);
            assert!(e.contains("empty") && e.contains("\"info\""), "{e}");
        }
        assert!(check_filter("info").is_ok());
        assert!(check_filter("curfew=debug,info").is_ok());
        assert!(check_filter("sqlx=debug,warn").is_ok());
        assert!(check_filter("info,curfew=loud").is_err());
    }
}
