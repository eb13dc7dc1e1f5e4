//! End-to-end tests: the real `curfew` binary, real worker processes (the
//! Rust test worker, and uvicorn/gunicorn serving the Python examples), real
//! signals and sockets. One test binary (saves link time on 2 cores).

mod config_errors;
mod control;
mod deaths;
mod health;
mod hooks;
mod jobs;
mod metrics;
mod operate;
mod proxy;
mod python;
mod shutdown;
mod soak;
mod support;
mod workers;
