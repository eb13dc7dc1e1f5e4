//! End-to-end tests: the real `curfew` binary, real worker processes (the
//! Rust test worker, and uvicorn/gunicorn serving the Python examples), real
//! signals and sockets. One test binary (saves link time on 2 cores).

// The test helper binaries (curfew-testworker, curfew-load) are built only
// with the dev-tools feature; without it CARGO_BIN_EXE_* would name a
// missing or stale file.
#[cfg(not(feature = "dev-tools"))]
compile_error!(
    "these tests run the test helper binaries: `cargo nextest run --workspace --features dev-tools` (or `bash .ci/run`)"
);

mod abuse;
mod cli;
mod config_errors;
mod control;
mod deaths;
mod health;
mod hooks;
mod jobs;
mod jobs_api_bounds;
mod jobs_cancel;
mod jobs_unreadable;
mod local_security;
mod logs;
mod metrics;
mod offline_cli;
mod operate;
mod periodic;
mod pg_tls;
mod pid1;
mod platform;
mod proxy;
mod python;
mod shutdown;
mod soak;
mod support;
mod systemd;
mod ui;
mod under_attack;
mod upgrade;
mod workers;
