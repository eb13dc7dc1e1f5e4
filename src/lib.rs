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
pub mod events;
pub mod exit;
pub mod hooks;
pub mod lifecycle;
pub mod logging;
pub mod malloc;
pub mod metrics;
pub mod notify;
pub mod platform;
pub mod processor;
pub mod protocol;
pub mod proxy;
pub mod serve;
pub mod shim;
pub mod supervisor;

/// The modules' layering, checked against their `crate::` paths: each
/// module may use only the modules listed for it (all of them below it), so
/// the import graph has no cycles. A new dependency is a decision: add it
/// here, in a lower layer, or not at all.
#[cfg(test)]
mod layering {
    use std::collections::BTreeSet;
    use std::path::Path;

    const ALLOWED: &[(&str, &[&str])] = &[
        ("exit", &[]),
        ("shim", &[]),
        ("malloc", &[]),
        ("notify", &[]),
        ("platform", &["config"]),
        ("protocol", &[]),
        ("config", &[]),
        ("lifecycle", &["exit"]),
        ("logging", &["config"]),
        ("metrics", &["lifecycle", "protocol"]),
        (
            "supervisor",
            &[
                "config",
                "events",
                "lifecycle",
                "logging",
                "metrics",
                "shim",
            ],
        ),
        ("hooks", &["config", "events", "supervisor"]),
        ("proxy", &["config", "metrics", "supervisor"]),
        ("processor", &["config", "protocol", "proxy", "supervisor"]),
        ("control", &["config", "protocol"]),
        ("events", &["config", "exit", "metrics", "protocol"]),
        (
            "admin",
            &[
                "config",
                "lifecycle",
                "metrics",
                "processor",
                "protocol",
                "proxy",
            ],
        ),
        (
            "serve",
            &[
                "admin",
                "config",
                "control",
                "events",
                "exit",
                "hooks",
                "lifecycle",
                "metrics",
                "notify",
                "platform",
                "processor",
                "protocol",
                "proxy",
                "shim",
                "supervisor",
            ],
        ),
    ];

    /// The `crate::<module>` names used in code (not comments) under `path`.
    fn uses(path: &Path, found: &mut BTreeSet<String>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).expect("read src dir") {
                uses(&entry.expect("dir entry").path(), found);
            }
            return;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            return;
        }
        let text = std::fs::read_to_string(path).expect("read source");
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        }
    }

    #[test]
    fn modules_use_only_the_layers_below_them() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let listed: BTreeSet<&str> = ALLOWED.iter().map(|(m, _)| *m).collect();
        for entry in std::fs::read_dir(&src).expect("read src") {
            let path = entry.expect("entry").path();
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            // The binary's own modules (`main`, `cli`, `jobs_cli`) sit above all.
            if ["lib", "main", "cli", "jobs_cli", "bin"].contains(&name.as_str()) {
                continue;
            }
            assert!(
                listed.contains(name.as_str()),
                "module {name} is not in the layering table"
            );
        }
        for (module, allowed) in ALLOWED {
            let file = src.join(format!("{module}.rs"));
            let dir = src.join(module);
            let mut found = BTreeSet::new();
            for p in [file, dir] {
                if p.exists() {
                    uses(&p, &mut found);
                }
            }
            for dep in found {
                assert!(
                    dep == *module || allowed.contains(&dep.as_str()),
                    "{module} uses crate::{dep}, which is not below it in the layering"
                );
            }
        }
    }
}
