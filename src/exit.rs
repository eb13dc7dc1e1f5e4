//! Exit codes of `curfew`, in one place. Documented in README.md ("Exit codes").

/// Clean shutdown: every request finished, every worker stopped when asked.
pub const OK: i32 = 0;
/// A runtime failure: workers could not boot, the address could not be bound, ...
pub const FAILURE: i32 = 1;
/// Bad command line (clap's own code for usage errors).
pub const USAGE: i32 = 2;
/// The graceful shutdown was forced: requests were still in flight at
/// `graceful_timeout`, or a worker had to be SIGKILLed after `worker_stop_timeout`.
pub const FORCED: i32 = 3;
/// Stopped at once on request (a second SIGINT, or SIGQUIT).
pub const IMMEDIATE: i32 = 4;
/// Invalid configuration (sysexits `EX_CONFIG`).
pub const CONFIG: i32 = 78;
