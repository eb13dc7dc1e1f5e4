//! What a reload (SIGHUP, `curfew reload`) does with each setting, decided
//! in one place: [`plan_reload`] compares the running configuration with
//! the one just read and sorts every changed key into applied (the new
//! generation of workers or the orchestrator takes it) or restart-only (it
//! is held by a part built once at start: the listeners, the front, the
//! router, the job processor, the logger, the hooks; its old value stays
//! until curfew restarts, and the reload says so).
//!
//! [`plan_reload`] and [`after_reload`] come from one list of fields that
//! destructures [`Config`] without `..`: a new setting does not compile
//! until it is listed and classified here.

use super::Config;

/// How a reload treats one setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnReload {
    /// The reload applies the new value.
    Applied,
    /// The old value stays until curfew restarts.
    RestartOnly,
}

/// Every top-level setting and how a reload treats it (the README's list of
/// restart-only settings is checked against this).
pub const SETTINGS: &[(&str, OnReload)] = &[
    ("command", OnReload::Applied),
    ("workers", OnReload::Applied),
    ("bind", OnReload::RestartOnly),
    ("worker_socket", OnReload::Applied),
    ("worker_concurrency", OnReload::RestartOnly),
    ("backlog", OnReload::RestartOnly),
    ("ready_path", OnReload::RestartOnly),
    ("boot_timeout", OnReload::Applied),
    ("drain_delay", OnReload::Applied),
    ("graceful_timeout", OnReload::Applied),
    ("timeout", OnReload::RestartOnly),
    ("abort_timeout", OnReload::Applied),
    ("keepalive_timeout", OnReload::RestartOnly),
    ("header_timeout", OnReload::RestartOnly),
    ("max_header_size", OnReload::RestartOnly),
    ("request_buffering", OnReload::RestartOnly),
    ("max_request_body", OnReload::RestartOnly),
    ("client_body_timeout", OnReload::RestartOnly),
    ("response_buffering", OnReload::RestartOnly),
    ("send_timeout", OnReload::RestartOnly),
    ("tunnel_idle_timeout", OnReload::RestartOnly),
    ("max_connections", OnReload::RestartOnly),
    ("proxy_threads", OnReload::RestartOnly),
    ("retry_idempotent", OnReload::RestartOnly),
    ("underscore_headers", OnReload::RestartOnly),
    ("faulthandler", OnReload::Applied),
    ("worker_stop_timeout", OnReload::Applied),
    ("chdir", OnReload::Applied),
    ("forwarded_allow_ips", OnReload::RestartOnly),
    ("admin_bind", OnReload::RestartOnly),
    ("admin_token", OnReload::RestartOnly),
    ("control_socket", OnReload::RestartOnly),
    ("liveness_path", OnReload::Applied),
    ("hooks", OnReload::RestartOnly),
    ("max_requests", OnReload::Applied),
    ("max_requests_jitter", OnReload::Applied),
    ("max_memory", OnReload::Applied),
    ("reload_strategy", OnReload::Applied),
    ("log_format", OnReload::RestartOnly),
    ("log_level", OnReload::RestartOnly),
    ("worker_log_level", OnReload::Applied),
    ("access_log", OnReload::RestartOnly),
    ("access_log_format", OnReload::RestartOnly),
    ("access_log_query", OnReload::RestartOnly),
    ("jobs", OnReload::RestartOnly),
    ("jobs.periodic", OnReload::Applied),
];

/// What a reload does with the keys that changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Changed keys the reload applies.
    pub applied: Vec<&'static str>,
    /// Changed keys that keep their old value until a restart.
    pub restart_only: Vec<&'static str>,
}

impl ReloadPlan {
    fn note(&mut self, key: &'static str, changed: bool) {
        if !changed {
            return;
        }
        let how = SETTINGS
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(OnReload::RestartOnly, |(_, how)| *how);
        match how {
            OnReload::Applied => self.applied.push(key),
            OnReload::RestartOnly => self.restart_only.push(key),
        }
    }
}

/// Whether a reload applies `key` (see [`SETTINGS`]).
fn applies(key: &str) -> bool {
    SETTINGS
        .iter()
        .any(|(k, how)| *k == key && *how == OnReload::Applied)
}

/// `new`'s value where a reload applies the key, else `old`'s.
fn pick<T: Clone>(key: &str, old: &T, new: &T) -> T {
    if applies(key) {
        new.clone()
    } else {
        old.clone()
    }
}

/// Whether `[jobs]` changed as written. Its derived defaults (a queue's
/// concurrency from `workers × worker_concurrency`, `release_reserve` from
/// `graceful_timeout`) follow those settings, so comparing the validated
/// sections would report `jobs` as changed, and needing a restart, on a
/// reload that only changed `workers`.
fn jobs_changed(
    old: &Option<super::jobs::JobsConfig>,
    new: &Option<super::jobs::JobsConfig>,
) -> bool {
    match (old, new) {
        (Some(a), Some(b)) => a.given != b.given,
        (None, None) => false,
        _ => true,
    }
}

/// Makes the configuration a reload will run (`merged`, from
/// [`after_reload`]) one that validation would accept: its applied values
/// were checked against the new `[jobs]`, but the running processor keeps
/// the old one. Where they do not fit, the running value is kept instead
/// and the key moves to `plan.restart_only`; each returned key comes with
/// a line that says why (for a WARN):
/// - a periodic schedule whose queue the running processor does not have,
///   or whose payload exceeds its `max_payload`: the running schedules are
///   kept (its jobs would wait in a queue nobody claims, or be refused);
/// - a `graceful_timeout` not above the running `jobs.release_reserve`:
///   the running `graceful_timeout` is kept (every job would be cut at once
///   at the stop).
pub fn fit_to_running(
    old: &Config,
    merged: &mut Config,
    plan: &mut ReloadPlan,
) -> Vec<(&'static str, String)> {
    let mut why = Vec::new();
    let mut keep = |key: &'static str, plan: &mut ReloadPlan, reason: String| {
        plan.applied.retain(|k| *k != key);
        if !plan.restart_only.contains(&key) {
            plan.restart_only.push(key);
        }
        why.push((key, reason));
    };
    if let Some(jobs) = &merged.jobs {
        if !merged.graceful_timeout.is_zero() && jobs.release_reserve >= merged.graceful_timeout {
            keep(
                "graceful_timeout",
                plan,
                format!(
                    "Reload: graceful_timeout = {:?} is not above the running jobs.release_reserve ({:?}, which changes only at a restart); keeping graceful_timeout = {:?} until curfew restarts.",
                    merged.graceful_timeout, jobs.release_reserve, old.graceful_timeout
                ),
            );
            merged.graceful_timeout = old.graceful_timeout;
        }
        let unfit = merged.periodic.iter().find_map(|p| {
            if jobs.queue(&p.queue).is_none() {
                return Some(format!(
                    "[jobs.periodic.{}] enqueues into queue {:?}, which the running processor does not have ([jobs] changes only at a restart)",
                    p.name, p.queue
                ));
            }
            let size = serde_json::to_string(&p.payload).map_or(0, |s| s.len());
            (size > jobs.max_payload).then(|| {
                format!(
                    "[jobs.periodic.{}]'s payload ({size} bytes) is larger than the running jobs.max_payload ({} bytes, which changes only at a restart)",
                    p.name, jobs.max_payload
                )
            })
        });
        if let Some(reason) = unfit
            && merged.periodic != old.periodic
        {
            keep(
                "jobs.periodic",
                plan,
                format!(
                    "Reload: {reason}; keeping the running periodic schedules until curfew restarts."
                ),
            );
            merged.periodic = old.periodic.clone();
        }
    } else if !merged.periodic.is_empty() && merged.periodic != old.periodic {
        keep(
            "jobs.periodic",
            plan,
            "Reload: [jobs.periodic] needs the job processor, which starts with [jobs] at a restart; no schedule runs until then.".to_owned(),
        );
        merged.periodic = old.periodic.clone();
    }
    why
}

/// Defines [`plan_reload`] and [`after_reload`] from one list of `Config`
/// fields and their setting names. Both destructure `Config` without `..`,
/// so a new field does not compile until it is listed here.
macro_rules! reload_by_field {
    ($($field:ident => $key:literal),* $(,)?) => {
        /// Sorts the settings that differ between `old` (running) and `new`
        /// (just read). `workers` counts as changed only when the configured
        /// number changed, so a `curfew scale` survives a reload that leaves
        /// it alone.
        pub fn plan_reload(old: &Config, new: &Config) -> ReloadPlan {
            // `config_file` says where the settings came from, and
            // `worker_concurrency_default` why a default was chosen; neither
            // is a setting.
            let Config { $($field,)* config_file: _, worker_concurrency_default: _ } = new;
            let mut plan = ReloadPlan::default();
            // `jobs` is compared as written: see `jobs_changed`.
            $( plan.note($key, $key != "jobs" && old.$field != *$field); )*
            plan.note("jobs", jobs_changed(&old.jobs, &new.jobs));
            plan
        }

        /// The configuration curfew runs with after a reload from `old` to
        /// `new`: the new values of the applied settings, the old values of
        /// the restart-only ones (as [`SETTINGS`] says).
        pub fn after_reload(old: &Config, new: &Config) -> Config {
            let Config { $($field,)* config_file, worker_concurrency_default: _ } = new;
            Config {
                $($field: pick($key, &old.$field, $field),)*
                config_file: config_file.clone(),
                worker_concurrency_default: old.worker_concurrency_default.clone(),
            }
        }
    };
}

reload_by_field! {
    command => "command",
    workers => "workers",
    binds => "bind",
    worker_socket => "worker_socket",
    worker_concurrency => "worker_concurrency",
    backlog => "backlog",
    ready_path => "ready_path",
    boot_timeout => "boot_timeout",
    drain_delay => "drain_delay",
    graceful_timeout => "graceful_timeout",
    timeout => "timeout",
    abort_timeout => "abort_timeout",
    keepalive_timeout => "keepalive_timeout",
    header_timeout => "header_timeout",
    max_header_size => "max_header_size",
    request_buffering => "request_buffering",
    max_request_body => "max_request_body",
    client_body_timeout => "client_body_timeout",
    response_buffering => "response_buffering",
    send_timeout => "send_timeout",
    tunnel_idle_timeout => "tunnel_idle_timeout",
    max_connections => "max_connections",
    proxy_threads => "proxy_threads",
    retry_idempotent => "retry_idempotent",
    keep_underscore_headers => "underscore_headers",
    faulthandler => "faulthandler",
    worker_stop_timeout => "worker_stop_timeout",
    chdir => "chdir",
    forwarded_allow => "forwarded_allow_ips",
    admin_bind => "admin_bind",
    admin_token => "admin_token",
    control_socket => "control_socket",
    liveness => "liveness_path",
    hooks => "hooks",
    max_requests => "max_requests",
    max_requests_jitter => "max_requests_jitter",
    max_memory => "max_memory",
    reload => "reload_strategy",
    log_format => "log_format",
    log_level => "log_level",
    worker_log_level => "worker_log_level",
    access_log => "access_log",
    access_log_format => "access_log_format",
    access_log_query => "access_log_query",
    jobs => "jobs",
    periodic => "jobs.periodic",
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Origins, raw::RawConfig, validate};

    fn cfg(extra: &str) -> Config {
        let text = if extra.contains("command =") {
            extra.to_owned()
        } else {
            format!("command = \"sh -c true\"\n{extra}")
        };
        let raw: RawConfig = toml::from_str(&text).expect("toml");
        validate(raw, &Origins::new()).expect("valid config")
    }

    /// Changing only `workers` or `graceful_timeout` changes derived
    /// `[jobs]` defaults, not `[jobs]`: no restart-only `jobs`.
    #[test]
    fn derived_jobs_defaults_are_not_a_jobs_change() {
        let plan = plan_reload(
            &cfg("workers = 2\ngraceful_timeout = 20\n[jobs]"),
            &cfg("workers = 6\ngraceful_timeout = 24\n[jobs]"),
        );
        assert_eq!(plan.restart_only, Vec::<&str>::new(), "{plan:?}");
        assert_eq!(plan.applied, ["workers", "graceful_timeout"]);
        let plan = plan_reload(
            &cfg("workers = 2\n[jobs]"),
            &cfg("workers = 2\n[jobs]\nlease = 60"),
        );
        assert_eq!(plan.restart_only, ["jobs"]);
    }

    /// What a reload would run is made to fit the running processor: a
    /// schedule into a queue it does not have, or a graceful_timeout not
    /// above its release_reserve, keeps the running value, and says so.
    #[test]
    fn a_reload_keeps_what_does_not_fit_the_running_jobs() {
        let old = cfg("workers = 2\ngraceful_timeout = 60\n[jobs]\nrelease_reserve = \"20s\"");
        let new = cfg(
            "workers = 2\ngraceful_timeout = 15\n[jobs]\nrelease_reserve = \"5s\"\n[jobs.queues.default]\n[jobs.queues.reports]\n[jobs.periodic.r]\nevery = \"1m\"\nkind = \"k\"\nqueue = \"reports\"",
        );
        let mut plan = plan_reload(&old, &new);
        assert_eq!(plan.applied, ["graceful_timeout", "jobs.periodic"]);
        let mut merged = after_reload(&old, &new);
        let why = fit_to_running(&old, &mut merged, &mut plan);
        assert_eq!(why.len(), 2, "{why:?}");
        assert_eq!(why[0].0, "graceful_timeout");
        assert!(why[0].1.contains("release_reserve"), "{why:?}");
        assert_eq!(why[1].0, "jobs.periodic");
        assert!(why[1].1.contains("\"reports\""), "{why:?}");
        assert_eq!(merged.graceful_timeout, old.graceful_timeout);
        assert_eq!(merged.periodic, old.periodic);
        assert!(plan.applied.is_empty(), "{plan:?}");
        assert_eq!(
            plan.restart_only,
            ["jobs", "graceful_timeout", "jobs.periodic"]
        );
        // What fits is applied.
        let fits = cfg(
            "workers = 2\ngraceful_timeout = 30\n[jobs]\nrelease_reserve = \"20s\"\n[jobs.periodic.d]\nevery = \"1m\"\nkind = \"k\"",
        );
        let mut plan = plan_reload(&old, &fits);
        let mut merged = after_reload(&old, &fits);
        assert!(fit_to_running(&old, &mut merged, &mut plan).is_empty());
        assert_eq!(merged.graceful_timeout, std::time::Duration::from_secs(30));
        assert_eq!(merged.periodic.len(), 1);
    }

    /// One changed value per key: the key lands where SETTINGS says.
    #[test]
    fn every_key_is_classified_as_the_table_says() {
        let base = cfg("workers = 2");
        let cases: &[(&str, &str)] = &[
            ("command", "workers = 2\ncommand = \"sh -c false\""),
            ("workers", "workers = 3"),
            ("bind", "workers = 2\nbind = \"127.0.0.1:9\""),
            (
                "worker_socket",
                "workers = 2\nworker_socket = \"port\"\ncommand = \"sh -c true {port}\"",
            ),
            // request_buffering's default follows worker_concurrency: kept.
            (
                "worker_concurrency",
                "workers = 2\nworker_concurrency = 4\nrequest_buffering = true",
            ),
            ("backlog", "workers = 2\nbacklog = 5"),
            ("ready_path", "workers = 2\nready_path = \"/up\""),
            ("boot_timeout", "workers = 2\nboot_timeout = 3"),
            ("drain_delay", "workers = 2\ndrain_delay = 3"),
            ("graceful_timeout", "workers = 2\ngraceful_timeout = 3"),
            ("timeout", "workers = 2\ntimeout = 3"),
            ("abort_timeout", "workers = 2\nabort_timeout = 3"),
            ("keepalive_timeout", "workers = 2\nkeepalive_timeout = 3"),
            ("header_timeout", "workers = 2\nheader_timeout = 3"),
            (
                "max_header_size",
                "workers = 2\nmax_header_size = \"16KiB\"",
            ),
            (
                "request_buffering",
                "workers = 2\nrequest_buffering = false",
            ),
            (
                "max_request_body",
                "workers = 2\nmax_request_body = \"1MiB\"",
            ),
            (
                "client_body_timeout",
                "workers = 2\nclient_body_timeout = 3",
            ),
            (
                "response_buffering",
                "workers = 2\nresponse_buffering = false",
            ),
            ("send_timeout", "workers = 2\nsend_timeout = 3"),
            (
                "tunnel_idle_timeout",
                "workers = 2\ntunnel_idle_timeout = 3",
            ),
            ("max_connections", "workers = 2\nmax_connections = 3"),
            ("proxy_threads", "workers = 2\nproxy_threads = 3"),
            ("retry_idempotent", "workers = 2\nretry_idempotent = true"),
            (
                "underscore_headers",
                "workers = 2\nunderscore_headers = \"keep\"",
            ),
            ("faulthandler", "workers = 2\nfaulthandler = false"),
            (
                "worker_stop_timeout",
                "workers = 2\nworker_stop_timeout = 3",
            ),
            ("chdir", "workers = 2\nchdir = \"/\""),
            (
                "forwarded_allow_ips",
                "workers = 2\nforwarded_allow_ips = \"*\"",
            ),
            ("admin_bind", "workers = 2\nadmin_bind = \"127.0.0.1:9\""),
            (
                "admin_token",
                "workers = 2\nadmin_token = \"0123456789abcdef0\"",
            ),
            (
                "control_socket",
                "workers = 2\ncontrol_socket = \"/tmp/x.sock\"",
            ),
            ("hooks", "workers = 2\n[hooks]\non_exit = \"true\""),
            ("max_requests", "workers = 2\nmax_requests = 3"),
            (
                "max_requests_jitter",
                "workers = 2\nmax_requests_jitter = 3",
            ),
            ("max_memory", "workers = 2\nmax_memory = \"2MiB\""),
            (
                "reload_strategy",
                "workers = 2\nreload_strategy = \"rolling\"",
            ),
            ("log_format", "workers = 2\nlog_format = \"json\""),
            ("log_level", "workers = 2\nlog_level = \"debug\""),
            (
                "worker_log_level",
                "workers = 2\nworker_log_level = \"warn\"",
            ),
            ("access_log", "workers = 2\naccess_log = \"-\""),
            (
                "access_log_format",
                "workers = 2\naccess_log_format = \"json\"",
            ),
            ("access_log_query", "workers = 2\naccess_log_query = true"),
            ("jobs", "workers = 2\n[jobs]"),
        ];
        // `jobs.periodic` needs a `[jobs]` in both: its own base.
        let with_jobs = cfg("workers = 2\n[jobs]");
        let plan = plan_reload(
            &with_jobs,
            &cfg("workers = 2\n[jobs.periodic.p]\nevery = \"1m\"\nkind = \"k\""),
        );
        assert_eq!(plan.applied, ["jobs.periodic"]);
        assert!(plan.restart_only.is_empty(), "{plan:?}");
        // `liveness_path` needs worker_concurrency > 1 in both: its own base.
        let plan = plan_reload(
            &cfg("workers = 2\nworker_concurrency = 4"),
            &cfg("workers = 2\nworker_concurrency = 4\nliveness_path = \"/alive\""),
        );
        assert_eq!(plan.applied, ["liveness_path"]);
        assert!(plan.restart_only.is_empty(), "{plan:?}");
        for (key, text) in cases {
            let plan = plan_reload(&base, &cfg(text));
            let how = SETTINGS
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, h)| *h)
                .unwrap_or_else(|| panic!("{key} not in SETTINGS"));
            let expected = match how {
                OnReload::Applied => ReloadPlan {
                    applied: vec![key],
                    restart_only: vec![],
                },
                OnReload::RestartOnly => ReloadPlan {
                    applied: vec![],
                    restart_only: vec![key],
                },
            };
            let mut got = plan.clone();
            // worker_socket needs a {port} placeholder: the command changes too.
            got.applied.retain(|k| *k == *key || *k != "command");
            assert_eq!(got, expected, "{key}");
        }
        // Every key of SETTINGS has a case, and every case a key.
        let keys: Vec<&str> = SETTINGS.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            cases.len() + 2,
            keys.len(),
            "every key has a case (jobs.periodic's and liveness_path's are above)"
        );
        for key in keys
            .into_iter()
            .filter(|k| !["jobs.periodic", "liveness_path"].contains(k))
        {
            assert!(cases.iter().any(|(k, _)| *k == key), "no case for {key}");
        }
    }

    /// After a reload, applied keys have the new value, restart-only keys
    /// the old one: planning again from there finds only the restart-only
    /// differences.
    #[test]
    fn after_reload_keeps_what_needs_a_restart() {
        let old = cfg("workers = 2");
        let new = cfg("workers = 3\ngraceful_timeout = 7\nbind = \"127.0.0.1:9\"\nbacklog = 5");
        let running = after_reload(&old, &new);
        assert_eq!(running.workers, 3);
        assert_eq!(running.graceful_timeout, std::time::Duration::from_secs(7));
        assert_eq!(running.binds, old.binds);
        assert_eq!(running.backlog, old.backlog);
        let again = plan_reload(&running, &new);
        assert!(again.applied.is_empty(), "{again:?}");
        assert_eq!(again.restart_only, ["bind", "backlog"]);
    }

    #[test]
    fn nothing_changed_nothing_planned() {
        assert_eq!(
            plan_reload(&cfg("workers = 2"), &cfg("workers = 2")),
            ReloadPlan::default()
        );
    }

    /// SETTINGS covers every key a layer can set (`liveness_*` as one,
    /// `reload_batch` with `reload_strategy`, `hook_timeout` with `hooks`).
    #[test]
    fn every_raw_key_is_covered() {
        for key in RawConfig::KEYS {
            let covered_by = match *key {
                "liveness_interval" | "liveness_timeout" | "liveness_failures" => "liveness_path",
                "reload_batch" => "reload_strategy",
                "admin_token_file" => "admin_token",
                // Folded into each hook's own timeout.
                "hook_timeout" => "hooks",
                k => k,
            };
            assert!(
                SETTINGS.iter().any(|(k, _)| *k == covered_by),
                "{key} is not classified for reloads"
            );
        }
    }

    /// The README names every restart-only setting in the SIGHUP row.
    #[test]
    fn readme_lists_the_restart_only_settings() {
        let readme = include_str!("../../README.md");
        let row = readme
            .lines()
            .find(|l| l.starts_with("| SIGHUP |"))
            .expect("README's signals table has a SIGHUP row");
        for (key, how) in SETTINGS {
            if *how == OnReload::RestartOnly {
                assert!(
                    row.contains(&format!("`{key}`")),
                    "README's SIGHUP row omits `{key}`"
                );
            }
        }
    }
}
