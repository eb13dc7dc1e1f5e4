//! `curfew jobs …` on either path: through the running curfew's control
//! socket, or — with `--store URL`, or when no curfew listens on the socket
//! — directly in the store, through the same code the running curfew
//! answers with (`processor::store_ops::operate`), so both paths give the
//! same answer and are printed by the same code.

use std::path::PathBuf;
use std::time::Duration;

use curfew::config::{self, periodic::PeriodicConfig};
use curfew::control::{ControlError, Request, Response};
use curfew::exit;
use curfew::processor::api::JobsRequest;
use curfew::processor::store_ops::{self, StoreContext};
use curfew::protocol::jobs::PeriodicReply;
use curfew_store::{Retention, Store, StoreOptions};

use crate::cli::{ControlArgs, StoreArgs};

/// Where an offline request goes, and what it needs besides the store.
struct Offline {
    url: String,
    options: StoreOptions,
    retention: Retention,
    periodic: Vec<PeriodicConfig>,
}

/// Sends `request` to the running curfew, or runs it in the store when
/// `--store` is given or no curfew is running. The answer as the control
/// socket gives it; errors are printed here.
pub fn call(
    target: &ControlArgs,
    store: &StoreArgs,
    request: JobsRequest,
) -> Result<Response, i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("curfew: cannot start the async runtime: {e}");
            exit::FAILURE
        })?;
    if let Some(url) = &store.store {
        let offline = from_flag(url, store, target)?;
        return rt.block_on(run_offline(offline, request));
    }
    let path = target.socket().map_err(|e| {
        eprintln!("curfew: {e}");
        exit::CONFIG
    })?;
    let req = Request::Jobs {
        request: request.clone(),
    };
    match rt.block_on(curfew::control::request(
        &path,
        &req,
        Duration::from_secs(60),
    )) {
        Ok(r) if r.ok => Ok(r),
        Ok(r) => {
            eprintln!(
                "curfew: {}",
                r.error.unwrap_or_else(|| "request failed".into())
            );
            Err(exit::FAILURE)
        }
        Err(ControlError::NotRunning { path }) => {
            let offline = from_config(target, store, &path)?;
            eprintln!(
                "curfew: no curfew is listening on {}; working on the store {} directly",
                path.display(),
                curfew_store::redact(&offline.url)
            );
            rt.block_on(run_offline(offline, request))
        }
        Err(e) => {
            eprintln!("curfew: {e}");
            Err(exit::FAILURE)
        }
    }
}

/// `--store URL`: the config (if one is given or found) supplies the
/// retention and the schedules; else the defaults.
fn from_flag(url: &str, store: &StoreArgs, target: &ControlArgs) -> Result<Offline, i32> {
    if let Err(e) = curfew_store::check_url(url) {
        eprintln!(
            "curfew: invalid --store {:?}: {e}",
            curfew_store::redact(url)
        );
        return Err(exit::USAGE);
    }
    no_schema_for_sqlite(store, url)?;
    let cfg = config_if_any(target)?;
    let jobs = cfg.as_ref().and_then(|c| c.jobs.as_ref());
    Ok(Offline {
        url: url.to_owned(),
        options: options(
            store
                .pg_schema
                .clone()
                .or_else(|| jobs.map(|j| j.pg_schema.clone())),
            jobs.map(|j| j.max_payload),
        ),
        retention: jobs.map_or(Retention::DEFAULT, |j| j.retention),
        periodic: cfg.map(|c| c.periodic).unwrap_or_default(),
    })
}

/// No curfew running: the store of the config (`--config`, CURFEW_CONFIG
/// or ./curfew.toml).
fn from_config(
    target: &ControlArgs,
    store: &StoreArgs,
    socket: &std::path::Path,
) -> Result<Offline, i32> {
    let Some(cfg) = config_if_any(target)? else {
        eprintln!(
            "curfew: no curfew is listening on {} and there is no curfew.toml here to find the job store in: give --store URL (or --config FILE)",
            socket.display()
        );
        return Err(exit::FAILURE);
    };
    let Some(jobs) = &cfg.jobs else {
        eprintln!(
            "curfew: no curfew is listening on {} and its configuration has no [jobs] section: give --store URL",
            socket.display()
        );
        return Err(exit::FAILURE);
    };
    no_schema_for_sqlite(store, &jobs.store)?;
    Ok(Offline {
        url: jobs.store.clone(),
        options: options(
            store
                .pg_schema
                .clone()
                .or_else(|| Some(jobs.pg_schema.clone())),
            Some(jobs.max_payload),
        ),
        retention: jobs.retention,
        periodic: cfg.periodic.clone(),
    })
}

/// The configuration when a file is named or ./curfew.toml exists; a file
/// that does not load is an error (its message printed).
fn config_if_any(target: &ControlArgs) -> Result<Option<config::Config>, i32> {
    let named = target.config.clone().or_else(|| {
        std::env::var_os("CURFEW_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if named.is_none() && !std::path::Path::new("curfew.toml").is_file() {
        return Ok(None);
    }
    crate::load_for_platform(named).map(Some)
}

fn options(pg_schema: Option<String>, max_payload: Option<usize>) -> StoreOptions {
    let d = StoreOptions::default();
    StoreOptions {
        pg_schema: pg_schema.unwrap_or(d.pg_schema),
        max_payload_bytes: max_payload.unwrap_or(d.max_payload_bytes),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(5),
    }
}

async fn run_offline(offline: Offline, request: JobsRequest) -> Result<Response, i32> {
    if let Some(path) = sqlite_path(&offline.url)
        && !path.exists()
    {
        eprintln!(
            "curfew: no job store at {}: the file does not exist (is the path relative to another directory?)",
            path.display()
        );
        return Err(exit::FAILURE);
    }
    let store = Store::open_with(&offline.url, offline.options)
        .await
        .map_err(|e| {
            eprintln!("curfew: {e}");
            exit::FAILURE
        })?;
    let cx = StoreContext {
        retention: &offline.retention,
        periodic: &offline.periodic,
    };
    let answer = store_ops::operate(&store, &cx, request).await;
    store.close().await;
    match answer {
        Ok((message, data)) => Ok(Response {
            ok: true,
            message: Some(message),
            data,
            ..Default::default()
        }),
        Err(e) => {
            eprintln!("curfew: {}", e.message);
            Err(exit::FAILURE)
        }
    }
}

/// `--pg-schema` names a PostgreSQL schema: with a SQLite store it would be
/// ignored, so it is a usage error.
fn no_schema_for_sqlite(store: &StoreArgs, url: &str) -> Result<(), i32> {
    if store.pg_schema.is_some() && sqlite_path(url).is_some() {
        eprintln!(
            "curfew: --pg-schema is for a PostgreSQL store, and {} is SQLite; remove --pg-schema",
            curfew_store::redact(url)
        );
        return Err(exit::USAGE);
    }
    Ok(())
}

/// The file of a SQLite store URL, read by the store's own parser (every
/// form it takes: `sqlite:///abs.db`, `sqlite://rel.db`, `sqlite:rel.db`, a
/// plain path). `None` for PostgreSQL, and for a URL the store refuses (it
/// then says why itself).
fn sqlite_path(url: &str) -> Option<PathBuf> {
    match curfew_store::target::parse(url) {
        Ok(curfew_store::target::Target::Sqlite(path)) => Some(path),
        _ => None,
    }
}

/// A table of schedules (`curfew jobs periodic`).
pub fn periodic_table(reply: &PeriodicReply) -> String {
    let time = |ms: Option<i64>| {
        ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
            .map(|t| t.to_string())
            .unwrap_or_else(|| "-".to_owned())
    };
    let mut out = format!(
        "{:<20} {:<34} {:<16} {:<20} {:<24} {:<24} {}\n",
        "NAME", "SCHEDULE", "QUEUE", "KIND", "NEXT RUN", "LAST INSTANT", "LAST JOB"
    );
    for s in &reply.schedules {
        out.push_str(&format!(
            "{:<20} {:<34} {:<16} {:<20} {:<24} {:<24} {}\n",
            s.name,
            s.schedule.as_deref().unwrap_or("(not configured)"),
            s.queue.as_deref().unwrap_or("-"),
            s.kind.as_deref().unwrap_or("-"),
            time(s.next_run),
            time(s.last_instant),
            s.last_job_id
                .map_or_else(|| "-".to_owned(), |id| id.to_string()),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every SQLite form the store takes names its file, `sqlite:jobs.db`
    /// included (it used to be looked for as a file named "sqlite:jobs.db").
    #[test]
    fn sqlite_path_takes_every_form_the_store_does() {
        for url in ["sqlite:jobs.db", "sqlite://jobs.db", "jobs.db"] {
            assert_eq!(sqlite_path(url), Some(PathBuf::from("jobs.db")), "{url}");
        }
        assert_eq!(
            sqlite_path("sqlite:///tmp/jobs.db"),
            Some(PathBuf::from("/tmp/jobs.db"))
        );
        assert_eq!(sqlite_path("postgres://u@h/db"), None);
    }
}
