//! Cancelling a running job (issue 13, item 5) and unique jobs through the
//! API and the CLI (item 3), with the real binary, the test worker and real
//! commands: the run stops within a second or two, the worker is not
//! blamed (same pid, nothing at WARN/ERROR), the job ends `cancelled` and
//! is never retried.

use std::time::{Duration, Instant};

use curfew_store::{CancelOutcome, JobState, Store, StoreOptions};
use nix::sys::signal::Signal;

use crate::support::jobs::*;
use crate::support::*;

/// The store of `store` opened by the test, as another curfew instance
/// sharing it would.
async fn open(url: String, schema: Option<String>) -> Store {
    let options = StoreOptions {
        pg_schema: schema.unwrap_or_else(|| "curfew".to_owned()),
        ..StoreOptions::default()
    };
    Store::open_with(&url, options).await.expect("open store")
}

/// Cancels `id` straight in the store (another instance's request).
fn cancel_in_store(store: &TestStore, id: i64) -> CancelOutcome {
    let (url, schema) = (store.url.clone(), store.schema.clone());
    run_async(async move {
        let s = open(url, schema).await;
        let outcome = s.cancel(id).await.expect("cancel");
        s.close().await;
        outcome
    })
}

/// Waits until job `id` is `cancelled` and returns how long after `since`
/// the test saw it (polled every 10 ms).
fn wait_cancelled(store: &TestStore, id: i64, since: Instant) -> Duration {
    let (url, schema) = (store.url.clone(), store.schema.clone());
    run_async(async move {
        let s = open(url, schema).await;
        let deadline = since + Duration::from_secs(10);
        let seen = loop {
            let job = s.get(id).await.expect("get").expect("job exists");
            if job.state == JobState::Cancelled {
                break since.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "job {id} still {} 10 s after the cancel",
                job.state
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        s.close().await;
        seen
    })
}

fn job(store: &TestStore, id: i64) -> curfew_store::Job {
    store
        .jobs()
        .into_iter()
        .find(|j| j.id == id)
        .expect("job exists")
}

/// A job that never ran again after its cancel: still cancelled with the
/// one attempt it had, one start in the worker's log.
fn assert_not_retried(store: &TestStore, id: i64, log_starts: Option<usize>) {
    let j = job(store, id);
    assert_eq!(
        (j.state, j.attempt),
        (JobState::Cancelled, 1),
        "job {id}: {j:?}"
    );
    assert!(j.cancel_requested_at.is_some() && j.finished_at.is_some());
    if let Some(n) = log_starts {
        assert_eq!(
            starts(&store.log_path()).get(&id),
            Some(&n),
            "job {id} started once"
        );
    }
}

#[test]
fn cancelling_running_http_and_command_jobs() {
    let store = TestStore::sqlite();
    let out = store.dir.path().join("cmd.out");
    // A command that notes SIGTERM (so the test sees it was asked, not
    // killed) and would otherwise run for a minute.
    let jobs = format!(
        "[jobs.queues.default]\nconcurrency = 2\n[jobs.queues.shell]\nconcurrency = 1\ncommand = [\"sh\", \"-c\", 'trap \"echo term $CURFEW_JOB_ID >> {out}; exit 143\" TERM; echo start $CURFEW_JOB_ID >> {out}; sleep 60 & wait']\n",
        out = out.display()
    );
    let (mut c, admin) = start_testworker(&store, "curfew.toml", "workers = 1\n", &jobs, &[]);
    let worker = c.worker_pids();
    assert_eq!(worker.len(), 1, "one worker");
    let log = store.log_path();

    // An HTTP job, cancelled through the CLI (this curfew runs it: it is
    // recorded cancelled at once). The worker is a sync one: its handler
    // cannot be stopped, so the delivery keeps the worker's slot until it
    // answers (4 s) — the next job then runs on the same, unblamed worker.
    let http = enqueue_many(admin, vec![job_body("slow", r#"{"ms": 4000}"#)], 1)[0];
    wait_until("the HTTP job started", Duration::from_secs(10), || {
        starts(&log).contains_key(&http)
    });
    let t = Instant::now();
    let (code, out_text, err) = c.ctl(&["jobs", "cancel", &http.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(out_text.contains("cancel requested"), "{out_text}");
    let http_latency = wait_cancelled(&store, http, t);
    assert!(
        http_latency < Duration::from_secs(2),
        "HTTP job cancelled after {http_latency:?}"
    );
    c.wait_log("Job cancelled while running", Duration::from_secs(2));

    // A command job, cancelled in the store as another instance would:
    // this curfew's poll finds it; the command gets SIGTERM.
    let cmd = enqueue_many(
        admin,
        vec![r#"{"queue": "shell", "kind": "long"}"#.to_owned()],
        1,
    )[0];
    wait_until("the command started", Duration::from_secs(10), || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains(&format!("start {cmd}"))
    });
    let t = Instant::now();
    assert_eq!(cancel_in_store(&store, cmd), CancelOutcome::Requested);
    // The request shows while it is pending (and stays as history).
    let shown = get(admin, &format!("/jobs/{cmd}"));
    let shown: serde_json::Value = serde_json::from_str(&shown.body).expect("job json");
    assert!(shown["cancel_requested_at"].is_i64(), "{shown}");
    let cmd_latency = wait_cancelled(&store, cmd, t);
    assert!(
        cmd_latency < Duration::from_secs(2),
        "command job cancelled after {cmd_latency:?}"
    );
    let text = std::fs::read_to_string(&out).expect("command output");
    assert!(
        text.contains(&format!("term {cmd}")),
        "SIGTERM first: {text}"
    );
    eprintln!(
        "cancel latency: HTTP job {http_latency:?} (CLI, same instance), command job {cmd_latency:?} (store request, polled)"
    );

    // Neither runs again; the worker was not blamed and still serves.
    std::thread::sleep(Duration::from_millis(1500));
    assert_not_retried(&store, http, Some(1));
    assert_not_retried(&store, cmd, None);
    let quick = enqueue_many(admin, vec![job_body("quick", "{}")], 1)[0];
    wait_until("a job after the cancel", Duration::from_secs(10), || {
        dones(&log).contains(&quick)
    });
    let ran_on: Vec<String> = log_lines(&log)
        .into_iter()
        .filter(|f| f[0] == "start" && f[1] == quick.to_string())
        .map(|f| f[4].clone())
        .collect();
    assert_eq!(ran_on, vec![worker[0].to_string()], "same worker process");
    assert!(alive(worker[0]), "the worker was not aborted");
    assert_eq!(c.worker_pids(), worker, "no replacement worker");
    assert!(c.faults().is_empty(), "{:#?}", c.faults());
    let metrics = get(admin, "/metrics").body;
    assert!(
        metrics.contains(r#"curfew_jobs_processed_total{queue="default",outcome="cancelled"} 1"#)
            && metrics
                .contains(r#"curfew_jobs_processed_total{queue="shell",outcome="cancelled"} 1"#),
        "{metrics}"
    );

    // A finished job cannot be cancelled; a queued one is at once.
    let (code, _, err) = c.ctl(&["jobs", "cancel", &http.to_string()]);
    assert_ne!(code, 0);
    assert!(err.contains("only queued, failed or running"), "{err}");
    let later = enqueue_many(
        admin,
        vec![r#"{"kind": "quick", "delay_s": 3600}"#.to_owned()],
        1,
    )[0];
    let resp = http_post(admin, &format!("/jobs/{later}/cancel"));
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(
        resp.body.contains(r#""outcome":"cancelled""#),
        "{}",
        resp.body
    );
    assert_eq!(job(&store, later).state, JobState::Cancelled);
    assert_eq!(http_post(admin, "/jobs/999999/cancel").status, 404);

    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0);
}

fn http_post(port: u16, path: &str) -> Resp {
    http(port, "POST", path, &[], b"").unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// Two curfews on one PostgreSQL store: a cancel asked of A stops the job
/// B runs.
#[test]
fn a_cancel_on_one_instance_stops_the_job_on_another() {
    let store = TestStore::postgres();
    let top = "workers = 1\nworker_concurrency = 4\n";
    let jobs_a = "node = \"host-a\"\n[jobs.queues.default]\nconcurrency = 2\n";
    let jobs_b = "node = \"host-b\"\n[jobs.queues.default]\nconcurrency = 2\n[jobs.queues.b]\nconcurrency = 2\n";
    let (mut a, admin_a) = start_testworker(&store, "a.toml", top, jobs_a, &[]);
    let (mut b, admin_b) = start_testworker(&store, "b.toml", top, jobs_b, &[]);
    let worker_b = b.worker_pids();
    // Only B processes queue b.
    let id = enqueue_many(
        admin_b,
        vec![r#"{"queue": "b", "kind": "slow", "payload": {"ms": 60000}}"#.to_owned()],
        1,
    )[0];
    let log = store.log_path();
    wait_until("B runs the job", Duration::from_secs(10), || {
        starts(&log).contains_key(&id)
    });
    let t = Instant::now();
    let resp = http_post(admin_a, &format!("/jobs/{id}/cancel"));
    assert_eq!(resp.status, 202, "{}", resp.body);
    assert!(
        resp.body.contains(r#""outcome":"cancel_requested""#),
        "{}",
        resp.body
    );
    let latency = wait_cancelled(&store, id, t);
    eprintln!("cancel latency across instances (PostgreSQL): {latency:?}");
    assert!(
        latency < Duration::from_secs(2),
        "cancelled after {latency:?}"
    );
    b.wait_log("Stopping a running job", Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(1500));
    assert_not_retried(&store, id, Some(1));
    assert_eq!(b.worker_pids(), worker_b, "B's worker not replaced");
    assert!(alive(worker_b[0]));
    assert!(a.faults().is_empty(), "{:#?}", a.faults());
    assert!(b.faults().is_empty(), "{:#?}", b.faults());
    for c in [&mut a, &mut b] {
        c.signal(Signal::SIGTERM);
        assert_eq!(c.wait_exit(Duration::from_secs(10)), 0);
    }
}

/// Unique keys through `POST /jobs` (one job and a batch) and `curfew
/// enqueue`: a duplicate answers the existing job with `created: false`.
#[test]
fn unique_jobs_through_the_api_and_the_cli() {
    let store = TestStore::sqlite();
    let jobs = "[jobs.queues.default]\nconcurrency = 1\n";
    let (mut c, admin) = start_testworker(&store, "curfew.toml", "workers = 1\n", jobs, &[]);
    let post = |body: &str| {
        let r = http(admin, "POST", "/jobs", &[], body.as_bytes()).expect("POST /jobs");
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
        (r.status, v, r.body)
    };
    // Held while queued or running (the default scope): a slow first job.
    let (status, first, _) =
        post(r#"{"kind": "slow", "payload": {"ms": 1500}, "unique_key": "reindex"}"#);
    assert_eq!((status, first["created"].as_bool()), (201, Some(true)));
    let (status, dup, _) = post(r#"{"kind": "slow", "unique_key": "reindex"}"#);
    assert_eq!(status, 200);
    assert_eq!(
        (dup["id"].as_i64(), dup["created"].as_bool()),
        (first["id"].as_i64(), Some(false))
    );
    let (code, out, err) = c.ctl(&[
        "enqueue",
        "slow",
        "--unique-key",
        "reindex",
        "--unique-scope",
        "queued+running",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["id"], first["id"], "{out}");
    assert_eq!(v["created"], false);
    let shown = get(admin, &format!("/jobs/{}", first["id"]));
    assert!(
        shown.body.contains(r#""unique_key":"reindex""#)
            && shown.body.contains(r#""unique_scope":"queued+running""#),
        "{}",
        shown.body
    );
    // Once it finished (in the store: the worker logs "done" before it
    // answers), the key makes a new job.
    let first_id = first["id"].as_i64().expect("id");
    wait_until("the first job succeeded", Duration::from_secs(10), || {
        job(&store, first_id).state == JobState::Succeeded
    });
    let (status, next, _) = post(r#"{"kind": "quick", "unique_key": "reindex"}"#);
    assert_eq!(status, 201);
    assert_ne!(next["id"], first["id"]);

    // A batch: a repeated key gets the first's id.
    let (status, batch, body) = post(
        r#"[{"kind": "quick", "delay_s": 60, "unique_key": "w", "unique_scope": "10m"},
            {"kind": "quick", "unique_key": "w", "unique_scope": "10m"}]"#,
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(batch["jobs"][0]["id"], batch["jobs"][1]["id"], "{body}");
    assert_eq!(batch["created"], 1, "{body}");

    // Bad input names the field.
    let (status, _, body) = post(r#"{"kind": "k", "unique_key": "x", "unique_scope": "soon"}"#);
    assert_eq!(status, 400);
    assert!(body.contains("unique_scope"), "{body}");
    let long = "k".repeat(201);
    let (status, _, body) = post(&format!(r#"{{"kind": "k", "unique_key": "{long}"}}"#));
    assert_eq!(status, 400);
    assert!(body.contains("unique_key"), "{body}");
    let (code, _, err) = c.ctl(&["enqueue", "k", "--unique-scope", "queued"]);
    assert_ne!(code, 0);
    assert!(err.contains("unique-key"), "{err}");

    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0);
}

/// A command job is stopped like a cancelled one (SIGTERM, SIGKILL 2 s
/// later) when its lease is lost or the shutdown's cut-off comes, and its
/// run lasts until it is gone: it never keeps running beside the run that
/// replaces it. The command here ignores SIGTERM.
#[test]
fn a_command_job_is_stopped_when_its_lease_is_lost_or_at_the_cut_off() {
    let store = TestStore::sqlite();
    let out = store.dir.path().join("cmd.out");
    let jobs = format!(
        "lease = \"1s\"\nrelease_reserve = \"3s\"\n[jobs.queues.shell]\nconcurrency = 2\ncommand = [\"sh\", \"-c\", 'trap \"echo term $CURFEW_JOB_ID >> {out}\" TERM; echo start $CURFEW_JOB_ID $$ >> {out}; while :; do sleep 0.05; done']\n",
        out = out.display()
    );
    let (mut c, admin) = start_testworker(
        &store,
        "curfew.toml",
        "workers = 1\ngraceful_timeout = \"4s\"\n",
        &jobs,
        &[],
    );
    let started = |id: i64| -> Option<i32> {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() == 3 && f[0] == "start" && f[1] == id.to_string())
                .then(|| f[2].parse().expect("pid"))
        })
    };
    let termed = |id: i64| {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains(&format!("term {id}\n"))
    };

    // Another instance took the job over (its token is not ours any more):
    // the next heartbeat finds the lease lost; the command is stopped.
    let first = enqueue_many(
        admin,
        vec![r#"{"queue": "shell", "kind": "long"}"#.to_owned()],
        1,
    )[0];
    wait_until("the command started", Duration::from_secs(10), || {
        started(first).is_some()
    });
    let pid = started(first).expect("pid");
    store.exec(&format!(
        "UPDATE {{s}}jobs SET lease_token = 'another', lease_owner = 'other/boot' WHERE id = {first}"
    ));
    let t = Instant::now();
    c.wait_log("Job abandoned: its lease was lost", Duration::from_secs(5));
    wait_until(
        "the command of the lost job gone",
        Duration::from_secs(6),
        || !alive(pid),
    );
    let gone = t.elapsed();
    assert!(termed(first), "SIGTERM first");
    assert!(
        gone >= Duration::from_millis(1500),
        "killed after its grace: {gone:?}"
    );
    eprintln!("a command whose lease was lost was gone {gone:?} after the takeover");

    // The cut-off: SIGTERM, then SIGKILL 2 s later, then the hand-back (the
    // first job runs again meanwhile: the takeover above was only a test's,
    // so its lease ran out and it was rescued).
    let second = enqueue_many(
        admin,
        vec![r#"{"queue": "shell", "kind": "long"}"#.to_owned()],
        1,
    )[0];
    wait_until(
        "the second command started",
        Duration::from_secs(10),
        || started(second).is_some(),
    );
    let pid = started(second).expect("pid");
    c.signal(Signal::SIGTERM);
    c.wait_log("handed back", Duration::from_secs(10));
    assert!(!alive(pid), "handed back while its command still ran");
    assert!(termed(second), "SIGTERM at the cut-off");
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0);
    assert_eq!(job(&store, second).state, JobState::Queued, "handed back");
}
