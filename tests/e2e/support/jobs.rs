//! Fixtures of the job tests: a store per test (a SQLite file or a fresh
//! PostgreSQL schema), enqueueing over the admin API, the test worker's
//! jobs log, and curfew started with a `[jobs]` section.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufReader;
use std::net::TcpStream;
use std::path::{Path, PathBuf};

use curfew_store::testing::{drop_schemas, fresh_schema};
use curfew_store::{Job, JobState, ListFilter, Store, StoreOptions};

use super::*;

pub use curfew_store::testing::pg_url;

/// A job store for one test: a SQLite file in a temporary directory, or a
/// fresh PostgreSQL schema (dropped at the end).
pub struct TestStore {
    pub url: String,
    pub schema: Option<String>,
    pub dir: tempfile::TempDir,
}

impl TestStore {
    pub fn sqlite() -> TestStore {
        let dir = tempfile::tempdir().expect("tempdir");
        TestStore {
            url: format!("sqlite://{}", dir.path().join("jobs.db").display()),
            schema: None,
            dir,
        }
    }

    pub fn postgres() -> TestStore {
        TestStore {
            url: pg_url(),
            schema: Some(fresh_schema("curfew_e2e_")),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The `[jobs]` store lines of curfew.toml.
    pub fn toml(&self) -> String {
        match &self.schema {
            None => format!("store = {:?}\n", self.url),
            Some(s) => format!("store = {:?}\npg_schema = {s:?}\n", self.url),
        }
    }

    /// Writes curfew.toml (`top` settings, then `[jobs]` with the store and
    /// `jobs`) and returns its path.
    pub fn config(&self, name: &str, top: &str, jobs: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let text = format!("{top}\n[jobs]\n{}{jobs}\n", self.toml());
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Reschedules a job (SQLite stores only): the test's hand on the clock.
    pub fn set_run_at(&self, id: i64, run_at: i64) {
        assert!(self.schema.is_none(), "set_run_at is for SQLite stores");
        self.exec(&format!(
            "UPDATE jobs SET run_at = {run_at} WHERE id = {id}"
        ));
    }

    /// Runs one statement on the store beside curfew, as an application or
    /// an operator would (`{s}`: the jobs table's schema prefix, empty on
    /// SQLite).
    pub fn exec(&self, template: &str) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        let sql = match &schema {
            None => template.replace("{s}", ""),
            Some(s) => template.replace("{s}", &format!("{s}.")),
        };
        run_async(async move {
            use sqlx::Connection;
            let statement = sqlx::AssertSqlSafe(sql);
            if schema.is_some() {
                let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
                sqlx::query(statement)
                    .execute(&mut conn)
                    .await
                    .expect("statement");
            } else {
                let mut conn = sqlx::SqliteConnection::connect(&url)
                    .await
                    .expect("connect");
                sqlx::query(statement)
                    .execute(&mut conn)
                    .await
                    .expect("statement");
            }
        });
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("jobs.log")
    }

    /// Every job in the store, by id.
    pub fn jobs(&self) -> Vec<Job> {
        let options = StoreOptions {
            pg_schema: self.schema.clone().unwrap_or_else(|| "curfew".to_owned()),
            ..StoreOptions::default()
        };
        let url = self.url.clone();
        run_async(async move {
            let store = Store::open_with(&url, options).await.expect("open store");
            let mut all = Vec::new();
            let mut after = None;
            loop {
                let page = store
                    .list(ListFilter {
                        limit: ListFilter::MAX_LIMIT,
                        after_id: after,
                        ..ListFilter::default()
                    })
                    .await
                    .expect("list");
                let Some(last) = page.last() else { break };
                after = Some(last.id);
                all.extend(page);
            }
            store.close().await;
            all
        })
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take() {
            // Best effort: a schema left behind harms no other test.
            let _ = drop_schemas(&self.url, vec![schema]);
        }
    }
}

/// Runs a future on a runtime of its own (on a thread of its own, so it also
/// works from inside another runtime's drop).
pub fn run_async<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    })
    .join()
    .expect("async helper")
}

/// `POST /jobs` bodies sent on `connections` keep-alive connections; returns
/// the ids, in no particular order. Panics on any answer but 201.
pub fn enqueue_many(admin: u16, bodies: Vec<String>, connections: usize) -> Vec<i64> {
    let chunk = bodies.len().div_ceil(connections.max(1)).max(1);
    let handles: Vec<_> = bodies
        .chunks(chunk)
        .map(|part| {
            let part = part.to_vec();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", admin)).expect("connect admin");
                s.set_nodelay(true).expect("nodelay");
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let mut ids = Vec::new();
                for body in part {
                    send_request(&mut s, "POST", "/jobs", &[], body.as_bytes(), false)
                        .expect("send");
                    let resp = read_response(&mut r).expect("response");
                    assert_eq!(resp.status, 201, "{}", resp.body);
                    let v: serde_json::Value = serde_json::from_str(&resp.body).expect("json");
                    ids.push(v["id"].as_i64().expect("id"));
                }
                ids
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("enqueue thread"))
        .collect()
}

pub fn job_body(kind: &str, payload: &str) -> String {
    format!(r#"{{"kind": "{kind}", "payload": {payload}}}"#)
}

/// Lines of a jobs log, split in fields.
pub fn log_lines(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// How many times each job id appears in the test worker's "start" lines.
pub fn starts(path: &Path) -> BTreeMap<i64, usize> {
    let mut m = BTreeMap::new();
    for f in log_lines(path) {
        if f.first().map(String::as_str) == Some("start")
            && let Some(id) = f.get(1).and_then(|s| s.parse().ok())
        {
            *m.entry(id).or_insert(0) += 1;
        }
    }
    m
}

/// Ids in the test worker's "done" lines.
pub fn dones(path: &Path) -> BTreeSet<i64> {
    log_lines(path)
        .into_iter()
        .filter(|f| f.first().map(String::as_str) == Some("done"))
        .filter_map(|f| f.get(1).and_then(|s| s.parse().ok()))
        .collect()
}

pub fn count_state(jobs: &[Job], state: JobState) -> usize {
    jobs.iter().filter(|j| j.state == state).count()
}

/// curfew with the test worker, a jobs config and an admin port.
pub fn start_testworker(
    store: &TestStore,
    name: &str,
    top: &str,
    jobs: &str,
    env: &[(&str, &str)],
) -> (Curfew, u16) {
    let admin = free_port();
    let config = store.config(
        name,
        &format!("admin_bind = \"127.0.0.1:{admin}\"\n{top}"),
        jobs,
    );
    let mut opts = Opts::testworker(
        &["--config", config.to_str().expect("utf-8 path")],
        &["--jobs-log", store.log_path().to_str().expect("utf-8 path")],
    );
    opts.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (Curfew::start(opts), admin)
}

/// A Python app as workers, with the jobs log in `JOBS_LOG`.
pub fn start_python(
    store: &TestStore,
    top: &str,
    jobs: &str,
    command: &[String],
    app: &str,
) -> (Curfew, u16) {
    let admin = free_port();
    let config = store.config(
        "curfew.toml",
        &format!("admin_bind = \"127.0.0.1:{admin}\"\nready_path = \"/health\"\n{top}"),
        jobs,
    );
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let mut opts = Opts::command(
        &["--config", config.to_str().expect("utf-8 path")],
        &command,
    );
    opts.cwd = Some(examples_dir(app));
    opts.env = vec![(
        "JOBS_LOG".to_owned(),
        store.log_path().to_str().expect("utf-8 path").to_owned(),
    )];
    (Curfew::start(opts), admin)
}

/// A number field of the admin endpoint's `/status`.
pub fn status_field(admin: u16, key: &str) -> u64 {
    let resp = get(admin, "/status");
    let v: serde_json::Value = serde_json::from_str(&resp.body).expect("status json");
    v[key].as_u64().unwrap_or(u64::MAX)
}
