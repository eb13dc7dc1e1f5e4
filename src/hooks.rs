//! Lifecycle hooks: a command or a webhook run on a lifecycle event
//! (`on_starting`, `when_ready`, `worker_exit`, `worker_abort`, `on_reload`,
//! `on_exit`), each with a time budget.
//!
//! A hook never delays curfew past its budget or a caller's deadline and never
//! fails curfew: every outcome is logged and returned as a [`HookOutcome`].
//!
//! - A command hook is run by [`crate::supervisor::command`] (spawned under
//!   the reaper's table lock, as only the reaper waits for children, in its
//!   own process group), with the details JSON on stdin, `CURFEW_HOOK=<event>`
//!   and one `CURFEW_HOOK_<KEY>` variable per top-level scalar of the details.
//!   Its output is re-logged per line with `hook=<event>`. At its budget the
//!   whole process group is SIGKILLed.
//! - A webhook is an HTTP/1.1 `POST` of the details JSON (`http://` only).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::supervisor::output::{OneLine, at_level};
use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::supervisor::command::{
    self, AbortOnDrop, CommandOutcome, CommandSpec, LineLogger, REAP_GRACE,
};
use crate::supervisor::reaper::{ExitStatus, Reaper};

/// Longest details value put in a `CURFEW_HOOK_<KEY>` variable; longer ones
/// are only in the JSON (the kernel refuses an exec with any environment
/// string over 128 KiB, and the whole environment is bounded too).
const MAX_ENV_VALUE: usize = 8 * 1024;

pub use crate::config::hooks::{HookAction, HookEvent, HookSpec};

impl crate::events::HookSink for Hooks {
    fn fire(&self, event: HookEvent, details: serde_json::Value) {
        Hooks::fire(self, event, details);
    }
}

/// How a hook run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// No hook for that event.
    NotConfigured,
    Ok,
    Failed(String),
    /// Its budget (or the caller's deadline, or `shutdown`) ran out; a command
    /// hook's process group was killed.
    TimedOut,
}

/// The configured hooks and the runs fired in the background.
#[derive(Clone)]
pub struct Hooks {
    inner: Arc<Inner>,
}

struct Inner {
    reaper: Reaper,
    specs: HashMap<HookEvent, HookSpec>,
    tracker: TaskTracker,
    /// Set by `shutdown` when fired runs outlive its deadline: they stop.
    cancel: watch::Sender<bool>,
}

impl Hooks {
    pub fn new(reaper: Reaper, specs: HashMap<HookEvent, HookSpec>) -> Hooks {
        Hooks {
            inner: Arc::new(Inner {
                reaper,
                specs,
                tracker: TaskTracker::new(),
                cancel: watch::channel(false).0,
            }),
        }
    }

    /// Whether a hook is configured for `event`.
    pub fn is_configured(&self, event: HookEvent) -> bool {
        self.inner.specs.contains_key(&event)
    }

    /// Run the hook for `event` (if configured) with `details` (a JSON
    /// object), waiting at most min(its timeout, time left until `deadline`).
    /// Never panics, never returns an error: outcomes are logged.
    pub async fn run(
        &self,
        event: HookEvent,
        details: serde_json::Value,
        deadline: Option<Instant>,
    ) -> HookOutcome {
        self.inner.execute(event, details, deadline, None).await
    }

    /// Same as [`Hooks::run`] without waiting; [`Hooks::shutdown`] bounds it.
    pub fn fire(&self, event: HookEvent, details: serde_json::Value) {
        if !self.is_configured(event) {
            return;
        }
        if *self.inner.cancel.borrow() {
            tracing::warn!(hook = event.as_str(), "Hook not run: hooks were shut down.");
            return;
        }
        let inner = self.inner.clone();
        let cancel = self.inner.cancel.subscribe();
        self.inner.tracker.spawn(async move {
            inner.execute(event, details, None, Some(cancel)).await;
        });
    }

    /// Wait for fired hooks, at most until `deadline`; kill what is still
    /// running then. Later `fire` calls do nothing; `run` still works.
    pub async fn shutdown(&self, deadline: Instant) {
        let tracker = &self.inner.tracker;
        tracker.close();
        if tokio::time::timeout_at(deadline, tracker.wait())
            .await
            .is_ok()
        {
            return;
        }
        let _ = self.inner.cancel.send(true);
        let still = tracker.len();
        if still > 0 {
            tracing::warn!(hooks = still, "Stopping hooks still running at shutdown.");
        }
        // Each cancelled run kills its process group and awaits its reaping
        // for at most REAP_GRACE.
        let _ = tokio::time::timeout(REAP_GRACE * 3, tracker.wait()).await;
    }
}

impl Inner {
    async fn execute(
        &self,
        event: HookEvent,
        details: serde_json::Value,
        deadline: Option<Instant>,
        cancel: Option<watch::Receiver<bool>>,
    ) -> HookOutcome {
        let Some(spec) = self.specs.get(&event) else {
            return HookOutcome::NotConfigured;
        };
        let budget = match deadline {
            Some(d) => spec
                .timeout
                .min(d.saturating_duration_since(Instant::now())),
            None => spec.timeout,
        };
        let details = complete_details(event, details);
        let started = Instant::now();
        if budget.is_zero() {
            tracing::warn!(
                hook = event.as_str(),
                "Hook not run: its deadline has already passed."
            );
            return HookOutcome::TimedOut;
        }
        let stop = Stop::new(budget, cancel);
        let outcome = match &spec.action {
            HookAction::Command(argv) => {
                run_command(&self.reaper, event, argv, &details, stop).await
            }
            HookAction::Webhook(uri) => run_webhook(event, uri, &details, stop).await,
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &outcome {
            HookOutcome::Ok => {
                tracing::debug!(hook = event.as_str(), duration_ms = elapsed_ms, "Hook ran.")
            }
            HookOutcome::Failed(error) => tracing::warn!(
                hook = event.as_str(),
                error = %error,
                duration_ms = elapsed_ms,
                "Hook failed."
            ),
            HookOutcome::TimedOut => tracing::warn!(
                hook = event.as_str(),
                budget_ms = budget.as_millis() as u64,
                duration_ms = elapsed_ms,
                "Hook timed out and was killed."
            ),
            HookOutcome::NotConfigured => {}
        }
        outcome
    }
}

/// The details as sent: an object with `event` and `curfew_pid` added when
/// absent (a non-object is kept under `details`).
fn complete_details(event: HookEvent, details: serde_json::Value) -> serde_json::Value {
    let mut map = match details {
        serde_json::Value::Object(m) => m,
        serde_json::Value::Null => serde_json::Map::new(),
        other => {
            let mut m = serde_json::Map::new();
            m.insert("details".into(), other);
            m
        }
    };
    map.entry("event")
        .or_insert_with(|| serde_json::Value::from(event.as_str()));
    map.entry("curfew_pid")
        .or_insert_with(|| serde_json::Value::from(std::process::id()));
    serde_json::Value::Object(map)
}

/// `CURFEW_HOOK_<KEY>` for a details key: uppercased, anything but ASCII
/// letters and digits replaced by `_`.
pub fn env_name(key: &str) -> String {
    let mut name = String::from("CURFEW_HOOK_");
    name.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    name
}

/// The hook's environment: `CURFEW_HOOK=<event>` and one variable per
/// top-level scalar field of the details (null, arrays and objects are left
/// out; so is a value with a NUL byte, which no environment can hold, and one
/// longer than 8 KiB: those are only in the JSON on stdin).
pub fn hook_env(event: HookEvent, details: &serde_json::Value) -> Vec<(String, String)> {
    let mut env = vec![("CURFEW_HOOK".to_string(), event.as_str().to_string())];
    if let serde_json::Value::Object(map) = details {
        for (key, value) in map {
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            if text.contains('\0') || key.is_empty() || text.len() > MAX_ENV_VALUE {
                continue;
            }
            env.push((env_name(key), text));
        }
    }
    env
}

/// When a run must stop: its budget, or `shutdown` cancelling fired runs.
struct Stop {
    at: Instant,
    cancel: Option<watch::Receiver<bool>>,
}

impl Stop {
    fn new(budget: Duration, cancel: Option<watch::Receiver<bool>>) -> Stop {
        Stop {
            at: Instant::now() + crate::config::duration::bounded(budget),
            cancel,
        }
    }

    /// Resolves when the run must stop.
    async fn reached(&mut self) {
        let at = self.at;
        match &mut self.cancel {
            Some(rx) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = rx.wait_for(|c| *c) => {}
                }
            }
            None => tokio::time::sleep_until(at).await,
        }
    }
}

/// Run a command hook: [`command::run`] with the details JSON (and a line
/// end) on stdin and the hook's environment, each output line re-logged at
/// INFO with `hook=<event>`.
async fn run_command(
    reaper: &Reaper,
    event: HookEvent,
    argv: &[String],
    details: &serde_json::Value,
    mut stop: Stop,
) -> HookOutcome {
    let mut json = serde_json::to_vec(details).unwrap_or_default();
    json.push(b'\n');
    let log: LineLogger = Arc::new(move |pid, stream, ev| {
        let traceback = ev
            .block
            .as_deref()
            .map(|b| tracing::field::display(OneLine(b)));
        let msg = &ev.message;
        at_level!(
            ev.level,
            hook = event.as_str(),
            pid,
            stream,
            traceback,
            "{msg}"
        );
    });
    let spec = CommandSpec {
        argv,
        env: hook_env(event, details),
        stdin: json,
        cwd: None,
        log,
    };
    match command::run(reaper, spec, stop.reached()).await {
        CommandOutcome::Exited {
            status: ExitStatus::Code(0),
            ..
        } => HookOutcome::Ok,
        CommandOutcome::Exited {
            status,
            last_stderr,
        } => HookOutcome::Failed(match last_stderr {
            Some(line) => format!("{status}: {line}"),
            None => status.to_string(),
        }),
        CommandOutcome::SpawnFailed(error) => HookOutcome::Failed(error),
        CommandOutcome::Lost => HookOutcome::Failed("its exit status was lost".into()),
        CommandOutcome::Stopped => HookOutcome::TimedOut,
    }
}

async fn run_webhook(
    event: HookEvent,
    uri: &http::Uri,
    details: &serde_json::Value,
    mut stop: Stop,
) -> HookOutcome {
    tokio::select! {
        result = post(event, uri, details) => match result {
            Ok(()) => HookOutcome::Ok,
            Err(e) => HookOutcome::Failed(e),
        },
        _ = stop.reached() => HookOutcome::TimedOut,
    }
}

async fn post(
    event: HookEvent,
    uri: &http::Uri,
    details: &serde_json::Value,
) -> Result<(), String> {
    let host = uri.host().ok_or("the URL has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let target = format!("{host}:{port}");
    let addrs = tokio::net::lookup_host(&target)
        .await
        .map_err(|e| format!("resolve {target}: {e}"))?;
    let mut last_error = format!("resolve {target}: no address");
    let mut stream = None;
    for addr in addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = format!("connect to {addr}: {e}"),
        }
    }
    let stream = stream.ok_or(last_error)?;
    let _ = stream.set_nodelay(true);
    let (mut tx, conn) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake with {target}: {e}"))?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let body = serde_json::to_vec(details).map_err(|e| e.to_string())?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let host_header = match uri.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let req = http::Request::post(path)
        .header(http::header::HOST, host_header)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::USER_AGENT, "curfew-hook")
        .header(http::header::CONNECTION, "close")
        .header("x-curfew-hook", event.as_str())
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let res = tx
        .send_request(req)
        .await
        .map_err(|e| format!("POST {uri}: {e}"))?;
    let status = res.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", status.as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_webhook_and_commands() {
        match HookAction::parse("http://localhost:8080/hook?x=1") {
            Ok(HookAction::Webhook(u)) => {
                assert_eq!(u.host(), Some("localhost"));
                assert_eq!(u.port_u16(), Some(8080));
            }
            other => panic!("{other:?}"),
        }
        let err = HookAction::parse("https://example.com/")
            .err()
            .unwrap_or_default();
        assert!(err.contains("TLS"), "{err}");
        assert!(HookAction::parse("http://").is_err());
        assert_eq!(
            HookAction::parse(r#"notify-send "worker died" --urgency='low'"#),
            Ok(HookAction::Command(vec![
                "notify-send".into(),
                "worker died".into(),
                "--urgency=low".into()
            ]))
        );
        assert!(HookAction::parse("").is_err());
        assert!(HookAction::parse("   ").is_err());
        assert!(HookAction::parse("echo 'unbalanced").is_err());
    }

    #[test]
    fn event_names_round_trip() {
        for e in HookEvent::ALL {
            assert_eq!(HookEvent::from_name(e.as_str()), Some(e));
        }
        assert_eq!(HookEvent::from_name("nope"), None);
        assert_eq!(HookEvent::WorkerAbort.to_string(), "worker_abort");
    }

    #[test]
    fn env_names_and_values() {
        assert_eq!(env_name("worker"), "CURFEW_HOOK_WORKER");
        assert_eq!(env_name("curfew_pid"), "CURFEW_HOOK_CURFEW_PID");
        assert_eq!(env_name("exit-code.x"), "CURFEW_HOOK_EXIT_CODE_X");
        let details = complete_details(
            HookEvent::WorkerExit,
            serde_json::json!({"worker": 1, "reason": "crashed", "ok": false,
                               "nested": {"a": 1}, "list": [1], "none": null,
                               "big": "x".repeat(MAX_ENV_VALUE + 1)}),
        );
        let env: HashMap<String, String> = hook_env(HookEvent::WorkerExit, &details)
            .into_iter()
            .collect();
        assert_eq!(env["CURFEW_HOOK"], "worker_exit");
        assert_eq!(env["CURFEW_HOOK_EVENT"], "worker_exit");
        assert_eq!(env["CURFEW_HOOK_WORKER"], "1");
        assert_eq!(env["CURFEW_HOOK_REASON"], "crashed");
        assert_eq!(env["CURFEW_HOOK_OK"], "false");
        assert_eq!(
            env["CURFEW_HOOK_CURFEW_PID"],
            std::process::id().to_string()
        );
        assert!(!env.contains_key("CURFEW_HOOK_NESTED"));
        assert!(!env.contains_key("CURFEW_HOOK_LIST"));
        assert!(!env.contains_key("CURFEW_HOOK_NONE"));
        assert!(!env.contains_key("CURFEW_HOOK_BIG"));
    }

    #[test]
    fn details_keep_a_given_event() {
        let d = complete_details(HookEvent::OnExit, serde_json::json!({"event": "custom"}));
        assert_eq!(d["event"], "custom");
        let d = complete_details(HookEvent::OnExit, serde_json::json!(5));
        assert_eq!(d["details"], 5);
        assert_eq!(d["event"], "on_exit");
    }
}
