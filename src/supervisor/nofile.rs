//! The open-file limit: curfew holds two descriptors per proxied request
//! (the client's and the worker's) plus its listeners, so it raises its own
//! soft `RLIMIT_NOFILE` to the hard limit at start (as nginx's
//! `worker_rlimit_nofile` and Go's runtime do). Workers get the original
//! soft limit back before exec: a program that still uses `select()` breaks
//! with descriptors above 1024, which is why systemd keeps the soft limit
//! low by default. So does the new curfew of an upgrade: it raises its own
//! again, and remembers the original for its workers.

use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The soft limit curfew started with (`u64::MAX`: not changed).
static ORIGINAL_SOFT: AtomicU64 = AtomicU64::new(u64::MAX);

/// Raise the soft limit to the hard one; logs what it did once.
pub fn raise() {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::debug!(error = %e, "Could not read the open-file limit.");
            return;
        }
    };
    if soft >= hard {
        return;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            ORIGINAL_SOFT.store(soft, Ordering::Relaxed);
            tracing::debug!(
                from = soft,
                to = hard,
                "Raised the open-file limit (workers keep the original)."
            );
        }
        Err(e) => {
            tracing::info!(soft, hard, error = %e, "Could not raise the open-file limit; curfew keeps the soft limit.")
        }
    }
}

/// The soft limit curfew started with, if it raised its own: what its
/// children (workers, the new curfew of an upgrade) get back.
pub(crate) fn original_soft_limit() -> Option<u64> {
    Some(ORIGINAL_SOFT.load(Ordering::Relaxed)).filter(|s| *s != u64::MAX)
}

/// In a child between fork and exec: set the soft open-file limit to
/// `soft`, the hard limit left alone. nix's `getrlimit`/`setrlimit` are the
/// plain system calls (async-signal-safe): nothing allocated, no lock taken.
pub(crate) fn restore_in_child(soft: u64) {
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, soft.min(hard), hard);
    }
}
