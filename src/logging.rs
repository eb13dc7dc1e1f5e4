//! Logging setup: `tracing` to stderr, text (default) or JSON.
//!
//! Level policy (see ARCHITECTURE.md): ordinary lifecycle events (a worker we
//! stopped, a drain, a restart we asked for) are INFO; only real faults are
//! WARN or ERROR, so a normal deploy logs no WARN/ERROR line at all.

use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

/// The level of a relayed output event (defined with the config, whose
/// `worker_log_level` names one).
pub use crate::config::OutputLevel as Level;
use crate::config::{LogFormat, log_filter};

/// JSON output was chosen (text until [`init`] says otherwise).
static JSON: AtomicBool = AtomicBool::new(false);

/// Whether logs are text: a multi-line field must then be written escaped
/// (`field = ?value`), as JSON escapes it by itself.
pub fn is_text() -> bool {
    !JSON.load(Ordering::Relaxed)
}

/// Install the global subscriber. `level` was validated by the config, as
/// [`log_filter`] makes it: the same string this installs.
pub fn init(format: LogFormat, level: &str) {
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
    let filter = EnvFilter::builder().parse_lossy(log_filter(level));
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
