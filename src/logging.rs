//! Logging setup: `tracing` to stderr, text (default) or JSON.
//!
//! Level policy (see ARCHITECTURE.md): ordinary lifecycle events (a worker we
//! stopped, a drain, a restart we asked for) are INFO; only real faults are
//! WARN or ERROR, so a normal deploy logs no WARN/ERROR line at all.

use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// JSON output was chosen (text until [`init`] says otherwise).
static JSON: AtomicBool = AtomicBool::new(false);

/// Whether logs are text: a multi-line field must then be written escaped
/// (`field = ?value`), as JSON escapes it by itself.
pub fn is_text() -> bool {
    !JSON.load(Ordering::Relaxed)
}

/// Install the global subscriber. `level` was validated by the config.
pub fn init(format: LogFormat, level: &str) {
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
    let filter = EnvFilter::builder().parse_lossy(with_quiet_libraries(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(false).with_target(false).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

/// The job store's database driver logs its own reconnects and slow
/// statements at INFO/WARN; curfew reports store trouble itself (once per
/// outage). Unless the filter names `sqlx`, keep only its errors.
fn with_quiet_libraries(level: &str) -> String {
    if level.contains("sqlx") {
        level.to_owned()
    } else {
        format!("{level},sqlx=error")
    }
}

/// A level of the worker output curfew relays (`worker_log_level`), least
/// severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    /// A level name as loggers write it (`WARNING`, `err`, `fatal`, …).
    pub fn from_name(name: &str) -> Option<Level> {
        Some(match name.to_ascii_lowercase().as_str() {
            "trace" | "debug" | "verbose" => Level::Debug,
            "info" | "information" | "notice" | "log" => Level::Info,
            "warn" | "warning" => Level::Warn,
            "error" | "err" | "critical" | "crit" | "fatal" | "alert" | "emerg" | "emergency"
            | "panic" | "exception" => Level::Error,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlx_is_quiet_unless_named() {
        assert_eq!(with_quiet_libraries("info"), "info,sqlx=error");
        assert_eq!(with_quiet_libraries("debug,sqlx=debug"), "debug,sqlx=debug");
    }
}
