//! Hook settings: which lifecycle events a hook can be attached to and what
//! a configured hook does ([`HookSpec`]). Running them is [`crate::hooks`]'
//! job; these are only the validated settings.

use std::time::Duration;

/// A lifecycle event a hook can be attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookEvent {
    OnStarting,
    WhenReady,
    WorkerExit,
    WorkerAbort,
    OnReload,
    /// Jobs still running at the shutdown's cut-off were handed back.
    OnIncomplete,
    OnExit,
}

impl HookEvent {
    /// Every event, in lifecycle order.
    pub const ALL: [HookEvent; 7] = [
        HookEvent::OnStarting,
        HookEvent::WhenReady,
        HookEvent::WorkerExit,
        HookEvent::WorkerAbort,
        HookEvent::OnReload,
        HookEvent::OnIncomplete,
        HookEvent::OnExit,
    ];

    /// The configuration name (`on_starting`, …), also `CURFEW_HOOK`'s value.
    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::OnStarting => "on_starting",
            HookEvent::WhenReady => "when_ready",
            HookEvent::WorkerExit => "worker_exit",
            HookEvent::WorkerAbort => "worker_abort",
            HookEvent::OnReload => "on_reload",
            HookEvent::OnIncomplete => "on_incomplete",
            HookEvent::OnExit => "on_exit",
        }
    }

    /// The event named `name` (as in [`HookEvent::as_str`]).
    pub fn from_name(name: &str) -> Option<HookEvent> {
        HookEvent::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

impl std::fmt::Display for HookEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a hook does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookAction {
    /// A program and its arguments (no shell unless the command names one).
    Command(Vec<String>),
    /// An `http://` URL that gets a `POST` of the details JSON.
    Webhook(http::Uri),
}

impl HookAction {
    /// `http://…` is a webhook; anything else is a command split like a shell
    /// would split it (quotes, backslashes; no expansion).
    pub fn parse(text: &str) -> Result<HookAction, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err("a hook must be a command or an http:// URL, not empty".into());
        }
        let lower = trimmed.to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Err(format!(
                "webhook {trimmed:?}: https is not supported (curfew has no TLS client); \
                 use an http:// URL, e.g. a local relay"
            ));
        }
        if lower.starts_with("http://") {
            let uri: http::Uri = trimmed
                .parse()
                .map_err(|e| format!("webhook {trimmed:?}: not a valid URL: {e}"))?;
            if uri.host().is_none_or(str::is_empty) {
                return Err(format!("webhook {trimmed:?}: the URL has no host"));
            }
            return Ok(HookAction::Webhook(uri));
        }
        let argv = shlex::split(trimmed)
            .ok_or_else(|| format!("hook command {trimmed:?}: unbalanced quotes"))?;
        if argv.is_empty() {
            return Err("a hook must be a command or an http:// URL, not empty".into());
        }
        Ok(HookAction::Command(argv))
    }
}

/// One configured hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSpec {
    pub action: HookAction,
    pub timeout: Duration,
}
