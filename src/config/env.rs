//! The environment layer: `CURFEW_<KEY>` for every key, plus the platform
//! conventions `PORT` (→ `bind = "0.0.0.0:$PORT"`) and `WEB_CONCURRENCY`
//! (→ `workers`), which lose to an explicit `CURFEW_BIND` / `CURFEW_WORKERS`.

use super::raw::RawConfig;
use super::{ConfigError, Origin, Origins};

/// Variables with the `CURFEW_` prefix that are not settings.
const NOT_SETTINGS: &[&str] = &[
    "CURFEW_CONFIG",          // the config file path
    "CURFEW_WORKER_ID",       // set by curfew in its workers' environment
    "CURFEW_SOCKET",          // set by curfew for workers in unix socket mode
    "CURFEW_JOB_TOKEN",       // set by curfew in its workers' environment ([jobs])
    "CURFEW_ADMIN_URL",       // set by curfew in its workers' environment (admin_bind)
    "CURFEW_UPGRADE",         // set by curfew for the new curfew an upgrade starts
    "CURFEW_VENV",            // scripts/python-env.sh: where the Python venv lives
    "CURFEW_BUILD_COMMIT",    // build.rs: the commit `--version` names (packagers)
    "CURFEW_TEST_PG_URL",     // the test suite's PostgreSQL
    "CURFEW_TEST_ECHO",       // the test suite: echo curfew's logs
    "CURFEW_SOAK_SECS",       // the test suite: how long the soak runs
    "CURFEW_SOAK_SEED",       // the test suite: the soak's random seed
    "CURFEW_SOAK_WORKER",     // the test suite: the soak's worker (uvicorn)
    "CURFEW_BIN",             // python/tests, scripts/run-example.sh: the curfew binary to run
    "CURFEW_TEST_REQUIRE_PG", // python/tests: fail (not skip) without PostgreSQL
    "CURFEW_HOOK",            // set by curfew for a hook: the event
];

/// Prefixes of variables curfew sets for its own children, so that a hook
/// or a command job can run `curfew check` or `curfew jobs`: the hook's
/// details (`CURFEW_HOOK_<KEY>`, only beside `CURFEW_HOOK`) and a command
/// job's `CURFEW_JOB_ID`, `_ATTEMPT`, `_MAX_ATTEMPTS`, `_KIND`, `_QUEUE`
/// (only beside `CURFEW_JOB_ID`). A setting's own name always wins
/// (`CURFEW_HOOK_TIMEOUT`), and without the marker variable such a name is
/// as unknown as any other.
const CHILD_PREFIXES: &[(&str, &str)] = &[
    ("CURFEW_HOOK_", "CURFEW_HOOK"),
    ("CURFEW_JOB_", "CURFEW_JOB_ID"),
];

/// Build the environment layer from `vars` (normally `std::env::vars()`).
pub fn layer(
    vars: impl IntoIterator<Item = (String, String)>,
    origins: &mut Origins,
) -> Result<RawConfig, ConfigError> {
    let mut layer = RawConfig::default();
    let mut conventional = RawConfig::default();
    let mut conv_origins = Origins::new();
    let mut vars: Vec<(String, String)> = vars.into_iter().collect();
    vars.sort();
    let present: Vec<String> = vars.iter().map(|(k, _)| k.clone()).collect();
    let set_by_curfew = |name: &str| {
        CHILD_PREFIXES
            .iter()
            .any(|(prefix, marker)| name.starts_with(prefix) && present.iter().any(|k| k == marker))
    };
    for (name, value) in vars {
        if name == "PORT" {
            let port = value
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| ConfigError::Invalid {
                    key: "bind".into(),
                    origin: Origin::Env("PORT".into()),
                    value: value.clone(),
                    message: "PORT must be a port number (1-65535)".into(),
                })?;
            conventional.merge(
                one(
                    "bind",
                    toml::Value::String(format!("0.0.0.0:{port}")),
                    "PORT",
                )?,
                &Origin::Env("PORT".into()),
                &mut conv_origins,
            );
            continue;
        }
        if name == "WEB_CONCURRENCY" {
            conventional.merge(
                one("workers", value_of(&value), "WEB_CONCURRENCY")?,
                &Origin::Env(name.clone()),
                &mut conv_origins,
            );
            continue;
        }
        let Some(suffix) = name.strip_prefix("CURFEW_") else {
            continue;
        };
        if NOT_SETTINGS.contains(&name.as_str()) {
            continue;
        }
        let key = suffix.to_ascii_lowercase();
        if !RawConfig::KEYS.contains(&key.as_str()) && set_by_curfew(&name) {
            continue;
        }
        if !RawConfig::KEYS.contains(&key.as_str()) {
            let known: Vec<String> = RawConfig::KEYS
                .iter()
                .map(|k| format!("CURFEW_{}", k.to_uppercase()))
                .collect();
            // A name that is the start of settings' names (`CURFEW_LOG`)
            // means one of them; else the closest name.
            let extended: Vec<&str> = known
                .iter()
                .map(String::as_str)
                .filter(|k| k.starts_with(&format!("{name}_")))
                .collect();
            let suggestion = if extended.is_empty() {
                super::suggest::closest(&name, known.iter().map(String::as_str)).map(str::to_string)
            } else {
                Some(extended.join(" or "))
            };
            return Err(ConfigError::UnknownEnv {
                name,
                suggestion,
                known,
            });
        }
        // A value such as `4`, `true` or `["a", "b"]` is taken as TOML; if the
        // setting wants a string, the raw text is used instead.
        let parsed = one(&key, value_of(&value), &name).or_else(|first| {
            one(&key, toml::Value::String(value.clone()), &name).map_err(|_| first)
        })?;
        layer.merge(parsed, &Origin::Env(name.clone()), origins);
    }
    // CURFEW_BIND / CURFEW_WORKERS win over PORT / WEB_CONCURRENCY, which
    // win over the file: the origin is the layer whose value is used.
    let mut merged = conventional;
    for (k, o) in conv_origins {
        if !matches!(origins.get(k), Some(Origin::Env(_))) {
            origins.insert(k, o);
        }
    }
    let mut scratch = Origins::new();
    merged.merge(layer, &Origin::Env(String::new()), &mut scratch);
    Ok(merged)
}

/// The process environment as text (normally from `std::env::vars_os()`):
/// a variable curfew reads (`CURFEW_*`, `PORT`, `WEB_CONCURRENCY`) whose
/// value is not UTF-8 is an error naming it, not dropped (a dropped
/// `CURFEW_CHDIR` would run the workers elsewhere); any other variable that
/// is not UTF-8 is none of curfew's business and left out.
pub fn utf8_vars(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    for (name, value) in vars {
        let read = |n: &[u8]| n.starts_with(b"CURFEW_") || n == b"PORT" || n == b"WEB_CONCURRENCY";
        match (name.to_str(), value.to_str()) {
            (Some(n), Some(v)) => out.push((n.to_owned(), v.to_owned())),
            _ if read(name.as_bytes()) => {
                let n = name.to_string_lossy().into_owned();
                let key = match n.as_str() {
                    "PORT" => "bind".to_owned(),
                    "WEB_CONCURRENCY" => "workers".to_owned(),
                    other => other["CURFEW_".len()..].to_ascii_lowercase(),
                };
                return Err(ConfigError::Invalid {
                    key,
                    origin: Origin::Env(n),
                    value: format!("{:?}", value.to_string_lossy()),
                    message: "is not valid UTF-8; curfew reads its settings as UTF-8 text".into(),
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

fn value_of(text: &str) -> toml::Value {
    match format!("v = {text}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(text.to_string())),
        Err(_) => toml::Value::String(text.to_string()),
    }
}

fn one(key: &str, value: toml::Value, var: &str) -> Result<RawConfig, ConfigError> {
    let mut table = toml::Table::new();
    table.insert(key.to_string(), value.clone());
    RawConfig::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Invalid {
        key: key.to_string(),
        origin: Origin::Env(var.to_string()),
        value: value.to_string(),
        message: e.message().to_string(),
    })
}

use serde::Deserialize;

#[cfg(test)]
mod tests {
    use super::super::raw::{OneOrMany, RawDuration};
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<RawConfig, ConfigError> {
        let mut o = Origins::new();
        layer(
            pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())),
            &mut o,
        )
    }

    #[test]
    fn reads_curfew_vars_with_types() {
        let raw = env(&[
            ("CURFEW_WORKERS", "3"),
            ("CURFEW_GRACEFUL_TIMEOUT", "10s"),
            ("CURFEW_READY_PATH", "/health"),
            ("CURFEW_BIND", "127.0.0.1:9000"),
            ("HOME", "/root"),
        ])
        .expect("valid");
        assert_eq!(raw.workers, Some(3));
        assert_eq!(raw.graceful_timeout, Some(RawDuration::Text("10s".into())));
        assert_eq!(raw.ready_path.as_deref(), Some("/health"));
        assert_eq!(raw.bind, Some(OneOrMany::One("127.0.0.1:9000".into())));
    }

    #[test]
    fn port_and_web_concurrency_are_conventions_that_lose_to_curfew_vars() {
        let raw = env(&[("PORT", "5000"), ("WEB_CONCURRENCY", "7")]).expect("valid");
        assert_eq!(raw.bind, Some(OneOrMany::One("0.0.0.0:5000".into())));
        assert_eq!(raw.workers, Some(7));
        let raw = env(&[
            ("PORT", "5000"),
            ("CURFEW_BIND", "unix:/x"),
            ("WEB_CONCURRENCY", "7"),
            ("CURFEW_WORKERS", "2"),
        ])
        .expect("valid");
        assert_eq!(raw.bind, Some(OneOrMany::One("unix:/x".into())));
        assert_eq!(raw.workers, Some(2));
    }

    #[test]
    fn unknown_curfew_var_is_an_error_naming_it() {
        let err = env(&[("CURFEW_WOKERS", "3")]).expect_err("unknown");
        let msg = err.to_string();
        assert!(
            msg.contains("CURFEW_WOKERS") && msg.contains("did you mean CURFEW_WORKERS?"),
            "{msg}"
        );
    }

    #[test]
    fn bad_value_names_the_variable() {
        let err = env(&[("CURFEW_WORKERS", "many")]).expect_err("bad");
        assert!(err.to_string().contains("CURFEW_WORKERS"), "{err}");
        let err = env(&[("PORT", "http")]).expect_err("bad");
        assert!(err.to_string().contains("PORT"), "{err}");
    }

    #[test]
    fn reserved_vars_are_not_settings() {
        assert!(env(&[("CURFEW_WORKER_ID", "0"), ("CURFEW_CONFIG", "x.toml")]).is_ok());
    }

    /// `CURFEW_LOG=debug` (by analogy with `RUST_LOG`) does nothing, so it
    /// is unknown like any other name, with the setting it probably meant.
    #[test]
    fn curfew_log_is_unknown() {
        let err = env(&[("CURFEW_LOG", "debug")]).expect_err("unknown");
        assert!(err.to_string().contains("CURFEW_LOG_LEVEL"), "{err}");
    }

    /// A hook or a command job that runs `curfew check` or `curfew jobs`
    /// carries the variables curfew set for it.
    #[test]
    fn what_curfew_sets_for_hooks_and_command_jobs_is_not_a_setting() {
        let raw = env(&[
            ("CURFEW_HOOK", "on_exit"),
            ("CURFEW_HOOK_EVENT", "on_exit"),
            ("CURFEW_HOOK_EXIT_CODE", "0"),
            ("CURFEW_HOOK_TIMEOUT", "3s"),
        ])
        .expect("a hook's environment");
        assert_eq!(
            raw.hook_timeout,
            Some(RawDuration::Text("3s".into())),
            "a setting's name stays a setting"
        );
        assert!(
            env(&[
                ("CURFEW_JOB_ID", "7"),
                ("CURFEW_JOB_ATTEMPT", "1"),
                ("CURFEW_JOB_MAX_ATTEMPTS", "20"),
                ("CURFEW_JOB_KIND", "k"),
                ("CURFEW_JOB_QUEUE", "q"),
                ("CURFEW_JOB_TOKEN", "t"),
            ])
            .is_ok()
        );
        // Without the marker they are unknown: a misspelt setting is not
        // taken for one of them.
        assert!(env(&[("CURFEW_HOOK_TIMOUT", "3s")]).is_err());
        assert!(env(&[("CURFEW_JOB_KIND", "k")]).is_err());
    }

    /// A variable curfew reads whose value is not UTF-8 is an error naming
    /// it; anyone else's is left out.
    #[test]
    fn a_setting_that_is_not_utf8_is_an_error() {
        use std::ffi::OsString;
        use std::os::unix::ffi::OsStringExt;
        let bad = || OsString::from_vec(b"/srv/caf\xe9".to_vec());
        let e = utf8_vars([(OsString::from("CURFEW_CHDIR"), bad())]).expect_err("not UTF-8");
        let m = e.to_string();
        assert!(
            m.contains("`chdir`") && m.contains("CURFEW_CHDIR") && m.contains("UTF-8"),
            "{m}"
        );
        assert!(utf8_vars([(OsString::from("PORT"), bad())]).is_err());
        let vars = utf8_vars([
            (OsString::from("LANG_X"), bad()),
            (OsString::from("CURFEW_WORKERS"), OsString::from("2")),
        ])
        .expect("others are left out");
        assert_eq!(vars, [("CURFEW_WORKERS".to_owned(), "2".to_owned())]);
    }

    /// WEB_CONCURRENCY's value wins over the file's, so an error about it
    /// names WEB_CONCURRENCY, not the file (which may say 4).
    #[test]
    fn a_convention_is_blamed_over_the_file_but_not_over_curfew_vars() {
        let file = Origin::File("/app/curfew.toml".into());
        let mut o = Origins::from([("workers", file.clone()), ("bind", file)]);
        layer(
            [
                ("WEB_CONCURRENCY".to_owned(), "0".to_owned()),
                ("PORT".to_owned(), "5000".to_owned()),
                ("CURFEW_BIND".to_owned(), "127.0.0.1:1".to_owned()),
            ],
            &mut o,
        )
        .expect("valid");
        assert_eq!(o["workers"], Origin::Env("WEB_CONCURRENCY".into()));
        assert_eq!(o["bind"], Origin::Env("CURFEW_BIND".into()));
    }

    #[test]
    fn port_zero_is_refused() {
        let err = env(&[("PORT", "0")]).expect_err("port 0");
        assert!(err.to_string().contains("1-65535"), "{err}");
    }
}
