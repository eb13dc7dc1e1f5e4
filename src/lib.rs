//! curfew: run a web app (any language) as a supervised pool of worker
//! processes behind a draining HTTP front, and get every lifecycle
//! transition right.
//!
//! The map of the crate is in `ARCHITECTURE.md`. In short:
//!
//! - [`lifecycle`]: the one state machine (`starting → serving → lame-duck →
//!   draining → stopping → stopped`) that every other part follows.
//! - [`config`]: raw layers (file, environment, flags) → one validated [`config::Config`].
//! - [`supervisor`]: spawning, socket hand-off, reaping, restart policy and
//!   exit classification of worker processes. Knows nothing of HTTP.
//! - [`proxy`]: the HTTP front: accept, route to the least-loaded worker,
//!   forward, drain. Knows nothing of processes.
//! - [`processor`]: the job runner: claims jobs from the store and delivers
//!   them through the proxy's router (or to a command).
//! - [`serve`]: the orchestrator that drives the lifecycle and wires the
//!   supervisor to the proxy.
//!
//! The durable job store (SQLite or PostgreSQL) is its own crate,
//! `curfew-store` (`crates/curfew-store`): it builds and tests without any
//! of the HTTP or process code.

pub mod admin;
pub mod config;
pub mod control;
pub mod exit;
pub mod hooks;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod processor;
pub mod proxy;
pub mod serve;
pub mod shim;
pub mod status;
pub mod supervisor;
