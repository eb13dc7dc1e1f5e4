//! Every top-level setting's default: the constants validation uses, and the
//! same values as `curfew serve --help` and the README's configuration table
//! show them ([`shown`]). A unit test checks that every key has one, that
//! `--help` prints it and that the README's table agrees.

use std::path::PathBuf;
use std::time::Duration;

pub const BIND: &str = "127.0.0.1:8000";
/// `worker_concurrency` for a sync worker (and any command not known to be
/// async): one request at a time.
pub const WORKER_CONCURRENCY: usize = 1;
/// `worker_concurrency` for an async server ([`ASYNC_SERVERS`]): many
/// requests at once on one event loop. 32 keeps a few slow requests from
/// filling a worker while still bounding what one worker holds (the rest
/// waits in curfew's queue, where any worker can take it).
pub const ASYNC_WORKER_CONCURRENCY: usize = 32;
/// Programs that serve many requests at once per process.
pub const ASYNC_SERVERS: &[&str] = &[
    "uvicorn",
    "hypercorn",
    "granian",
    "daphne",
    "node",
    "bun",
    "deno",
];
pub const BACKLOG: usize = 1024;
/// The most workers: `workers`, `curfew scale` and SIGTTIN stop here.
pub const MAX_WORKERS: usize = 1024;
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(30);
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Longer than common load balancers' idle timeouts (AWS ALB 60 s), as the
/// backend's keep-alive must outlast the balancer's.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// nginx's largest header buffers (4 × 8 KiB) hold as much.
pub const MAX_HEADER_SIZE: u64 = 32 * 1024;
pub const MAX_REQUEST_BODY: u64 = 100 * 1024 * 1024;
pub const CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
pub const RESPONSE_BUFFERING: bool = true;
/// nginx's `send_timeout`.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// An upgraded connection (WebSocket) holds a worker slot: one that carries
/// no byte either way for this long is closed. Longer than nginx's 60 s
/// `proxy_read_timeout`, so WebSocket apps without pings of their own (Node's
/// `ws` sends none by default) survive ordinary pauses.
pub const TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Two descriptors each (client and worker) stay well inside the hard
/// open-file limit curfew raises itself to (commonly 524288; 4096 at least
/// under Docker's default).
pub const MAX_CONNECTIONS: usize = 10_000;
pub const RETRY_IDEMPOTENT: bool = false;
/// nginx's `underscores_in_headers off`.
pub const UNDERSCORE_HEADERS: &str = "drop";
pub const ABORT_TIMEOUT: Duration = Duration::from_secs(2);
pub const FAULTHANDLER: bool = true;
pub const DRAIN_DELAY: Duration = Duration::ZERO;
/// With `worker_stop_timeout` and the 2 s margin the stop budget is 27 s:
/// inside the 30 s that Kubernetes, Heroku and Render give by default.
pub const GRACEFUL_TIMEOUT: Duration = Duration::from_secs(20);
pub const WORKER_STOP_TIMEOUT: Duration = Duration::from_secs(5);
pub const FORWARDED_ALLOW_IPS: &[&str] = &["127.0.0.1", "::1"];
pub const LIVENESS_INTERVAL: Duration = Duration::from_secs(10);
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(5);
pub const LIVENESS_FAILURES: usize = 3;
pub const RELOAD_STRATEGY: &str = "all";
pub const RELOAD_BATCH: usize = 1;
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(10);
pub const LOG_FORMAT: &str = "text";
pub const LOG_LEVEL: &str = "info";
/// Every worker line goes to curfew's logger; `log_level` decides as for
/// curfew's own lines.
pub const WORKER_LOG_LEVEL: &str = "debug";
pub const ACCESS_LOG: &str = "off";
pub const ACCESS_LOG_FORMAT: &str = "combined";
/// Query strings often carry tokens (password resets, OAuth codes, signed
/// URLs): not logged unless asked for.
pub const ACCESS_LOG_QUERY: bool = false;

/// 2 × cores + 1, the gunicorn rule of thumb, used when neither `workers`
/// nor `WEB_CONCURRENCY` is set.
pub fn workers() -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    2 * cores + 1
}

/// One proxy thread per four cores, at least one: the workers need the
/// cores far more than the proxy (a proxied request costs curfew a small
/// fraction of what the app spends on it), and on a small host one thread
/// batches more events per wake-up than two that wake each other
/// (bench/RESULTS.md, issue 12).
pub fn proxy_threads() -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (cores / 4).max(1)
}

/// The server a worker command runs: the program's file name, looking
/// through `python -m X`, `uv run X` (also poetry, pipenv, hatch, pdm),
/// `env VAR=… X` and `npx X`.
pub fn server_of(command: &[String]) -> Option<&str> {
    let mut args = command.iter().map(String::as_str);
    let mut program = args.next()?;
    loop {
        let name = program.rsplit('/').next().unwrap_or(program);
        let next = match name {
            "uv" | "poetry" | "pipenv" | "hatch" | "pdm" => match args.next() {
                Some("run") => args.find(|a| !a.starts_with('-')),
                _ => return Some(name),
            },
            "env" => args.find(|a| !a.starts_with('-') && !a.contains('=')),
            "npx" => args.find(|a| !a.starts_with('-')),
            _ if name.starts_with("python") => {
                let mut module = None;
                while let Some(a) = args.next() {
                    if a == "-m" {
                        module = args.next();
                        break;
                    }
                    if !a.starts_with('-') {
                        break;
                    }
                }
                match module {
                    Some(m) => return Some(m.split('.').next().unwrap_or(m)),
                    None => return Some(name),
                }
            }
            _ => return Some(name),
        };
        program = next?;
    }
}

/// The default `worker_concurrency` for `command`, and the sentence that
/// says why (logged at start when the setting was not given).
pub fn worker_concurrency(command: &[String]) -> (usize, String) {
    match server_of(command) {
        Some(s) if ASYNC_SERVERS.contains(&s) => (
            ASYNC_WORKER_CONCURRENCY,
            format!(
                "Serving up to {ASYNC_WORKER_CONCURRENCY} requests at once per worker: `{s}` is an async server (worker_concurrency not set; set it to change this, and liveness_path to catch a blocked event loop)."
            ),
        ),
        s => (
            WORKER_CONCURRENCY,
            format!(
                "Serving {WORKER_CONCURRENCY} request at a time per worker: `{}` is not one of the async servers {} (worker_concurrency not set; set it for threaded or async workers).",
                s.unwrap_or("?"),
                ASYNC_SERVERS.join("/")
            ),
        ),
    }
}

/// The control socket: `curfew.sock` in the private directory
/// [`control_dir`].
pub fn control_socket() -> PathBuf {
    control_dir().join("curfew.sock")
}

/// The default control socket's directory, created 0700 and checked before
/// use: `$XDG_RUNTIME_DIR/curfew`, else `/tmp/curfew-<uid>`.
pub fn control_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("curfew"),
        None => std::env::temp_dir().join(format!("curfew-{}", nix::unistd::getuid())),
    }
}

/// `dir` is the default control socket's directory (checked as private).
pub fn is_default_control_dir(dir: &std::path::Path) -> bool {
    dir == control_dir()
}

/// A duration as the docs write it: `30s`, `500ms`, `0`.
fn duration(d: Duration) -> String {
    if d.is_zero() {
        "`0`".to_owned()
    } else if d.subsec_millis() == 0 {
        format!("`{}s`", d.as_secs())
    } else {
        format!("`{}ms`", d.as_millis())
    }
}

/// The default of a top-level key, as the README's table writes it
/// (Markdown; `--help` shows it without the backticks). `None` for a key
/// this table does not know (a test keeps it complete).
pub fn shown(key: &str) -> Option<String> {
    let code = |s: &str| format!("`{s}`");
    Some(match key {
        "command" => "— (required)".to_owned(),
        "workers" => "2 × cores + 1".to_owned(),
        "bind" => code(BIND),
        "worker_socket" => {
            "`fd`, or `port` / `unix` when the command has `{port}` / `{socket}`".to_owned()
        }
        "worker_concurrency" => format!(
            "`{ASYNC_WORKER_CONCURRENCY}` for {}; else `{WORKER_CONCURRENCY}`",
            ASYNC_SERVERS.join(", ")
        ),
        "backlog" => code(&BACKLOG.to_string()),
        "ready_path" => "none".to_owned(),
        "boot_timeout" => duration(BOOT_TIMEOUT),
        "timeout" => duration(TIMEOUT),
        "keepalive_timeout" => duration(KEEPALIVE_TIMEOUT),
        "header_timeout" => duration(HEADER_TIMEOUT),
        "max_header_size" => "`32KiB`".to_owned(),
        "request_buffering" => "on when `worker_concurrency` is 1".to_owned(),
        "max_request_body" => "`100MiB`".to_owned(),
        "client_body_timeout" => duration(CLIENT_BODY_TIMEOUT),
        "response_buffering" => code(&RESPONSE_BUFFERING.to_string()),
        "send_timeout" => duration(SEND_TIMEOUT),
        "tunnel_idle_timeout" => duration(TUNNEL_IDLE_TIMEOUT),
        "max_connections" => code(&MAX_CONNECTIONS.to_string()),
        "proxy_threads" => "cores ÷ 4, at least 1".to_owned(),
        "retry_idempotent" => code(&RETRY_IDEMPOTENT.to_string()),
        "underscore_headers" => code(UNDERSCORE_HEADERS),
        "abort_timeout" => duration(ABORT_TIMEOUT),
        "faulthandler" => code(&FAULTHANDLER.to_string()),
        "drain_delay" => duration(DRAIN_DELAY),
        "graceful_timeout" => duration(GRACEFUL_TIMEOUT),
        "worker_stop_timeout" => duration(WORKER_STOP_TIMEOUT),
        "chdir" => "current directory".to_owned(),
        "forwarded_allow_ips" => FORWARDED_ALLOW_IPS
            .iter()
            .map(|ip| code(ip))
            .collect::<Vec<_>>()
            .join(", "),
        "max_requests" => "`0` (never)".to_owned(),
        "max_requests_jitter" => "`0`".to_owned(),
        "max_memory" => "`0` (no limit)".to_owned(),
        "reload_strategy" => code(RELOAD_STRATEGY),
        "reload_batch" => code(&RELOAD_BATCH.to_string()),
        "control_socket" => {
            "`$XDG_RUNTIME_DIR/curfew/curfew.sock`, else `/tmp/curfew-<uid>/curfew.sock` (a private 0700 directory)".to_owned()
        }
        "hooks" => "none".to_owned(),
        "hook_timeout" => duration(HOOK_TIMEOUT),
        "liveness_path" => "off".to_owned(),
        "liveness_interval" => duration(LIVENESS_INTERVAL),
        "liveness_timeout" => duration(LIVENESS_TIMEOUT),
        "liveness_failures" => code(&LIVENESS_FAILURES.to_string()),
        "admin_bind" => "off".to_owned(),
        "admin_token" => "none".to_owned(),
        "admin_token_file" => "none".to_owned(),
        "jobs" => "off".to_owned(),
        "log_format" => code(LOG_FORMAT),
        "log_level" => code(LOG_LEVEL),
        "worker_log_level" => code(WORKER_LOG_LEVEL),
        "access_log" => code(ACCESS_LOG),
        "access_log_format" => code(ACCESS_LOG_FORMAT),
        "access_log_query" => code(&ACCESS_LOG_QUERY.to_string()),
        _ => return None,
    })
}

/// Where a key can also come from in the environment, beside
/// `CURFEW_<KEY>`, as `--help` says it.
pub fn env_note(key: &str) -> &'static str {
    match key {
        "workers" => ", else WEB_CONCURRENCY",
        "bind" => ", or PORT → 0.0.0.0:$PORT",
        "hooks" => " as a TOML table",
        "jobs" => " as a TOML table, e.g. '{ store = \"postgres://...\" }'",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::RawConfig;

    #[test]
    fn every_key_has_a_default() {
        for key in RawConfig::KEYS {
            assert!(shown(key).is_some(), "no default shown for {key}");
        }
    }

    #[test]
    fn concurrency_follows_the_server() {
        let of = |c: &[&str]| {
            let c: Vec<String> = c.iter().map(|s| s.to_string()).collect();
            worker_concurrency(&c).0
        };
        assert_eq!(of(&["uvicorn", "app:app", "--fd", "3"]), 32);
        assert_eq!(of(&["/venv/bin/uvicorn", "app:app"]), 32);
        assert_eq!(of(&["python", "-m", "uvicorn", "app:app"]), 32);
        assert_eq!(of(&["python3", "-u", "-m", "hypercorn", "app:app"]), 32);
        assert_eq!(of(&["uv", "run", "granian", "--interface", "asgi"]), 32);
        assert_eq!(of(&["env", "A=1", "daphne", "app.asgi:application"]), 32);
        assert_eq!(of(&["node", "server.js"]), 32);
        assert_eq!(of(&["gunicorn", "app:app"]), 1);
        assert_eq!(of(&["python", "app.py"]), 1);
        assert_eq!(of(&["python", "-m", "gunicorn.app.wsgiapp"]), 1);
        assert_eq!(of(&["uv", "run"]), 1);
        let (_, why) = worker_concurrency(&["uvicorn".to_owned()]);
        assert!(why.contains("`uvicorn` is an async server"), "{why}");
        let (_, why) = worker_concurrency(&["gunicorn".to_owned()]);
        assert!(why.contains("`gunicorn` is not one of"), "{why}");
    }

    #[test]
    fn durations_read_like_the_docs() {
        assert_eq!(duration(Duration::ZERO), "`0`");
        assert_eq!(duration(Duration::from_secs(75)), "`75s`");
        assert_eq!(duration(Duration::from_millis(1500)), "`1500ms`");
    }

    /// The README's configuration table shows the same defaults.
    #[test]
    fn readme_table_agrees() {
        let readme = include_str!("../../README.md");
        for key in RawConfig::KEYS {
            let prefix = format!("| `{key}` |");
            let row = readme
                .lines()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("README has no row for {key}"));
            let cells: Vec<&str> = row.split(" | ").collect();
            let default = cells.get(3).map(|c| c.trim()).unwrap_or_default();
            assert_eq!(
                Some(default.to_owned()),
                shown(key),
                "README's default for {key}"
            );
        }
    }
}
