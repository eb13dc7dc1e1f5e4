//! A job row curfew cannot read (a payload number beyond a 64-bit float,
//! written into the store by hand or before the store refused such values)
//! in a running processor's queue: the processor marks it dead with one
//! WARN naming it, the queue's other jobs run, and `curfew jobs` still
//! lists and shows it. It used to fail every claim that took it, leave the
//! jobs of that claim `running` until their lease ran out, and blame a
//! dead processor at each rescue.

use std::time::Duration;

use curfew_store::JobState;
use nix::sys::signal::Signal;

use crate::support::jobs::*;
use crate::support::*;

const NEEDLE: &str = "A claimed job cannot be read";

fn a_row_curfew_cannot_read_is_buried_and_its_queue_runs_on(store: TestStore) {
    let (mut c, admin) = start_testworker(
        &store,
        "curfew.toml",
        "workers = 1\nworker_concurrency = 4\n",
        "lease = \"5s\"\n[jobs.queues.default]\nconcurrency = 4\n",
        &[],
    );
    if store.schema.is_some() {
        // As a row stored before migration 0009's check existed.
        store.exec("ALTER TABLE {s}jobs DISABLE TRIGGER jobs_payload_numbers");
    }
    // Paused while the queue fills, so that one claim takes the odd row
    // (first in claim order) together with good jobs.
    let (code, out, err) = c.ctl(&["jobs", "pause", "default"]);
    assert_eq!(code, 0, "{out}{err}");
    store.exec(
        "INSERT INTO {s}jobs (queue, kind, payload, run_at, created_at, updated_at)
         VALUES ('default', 'noop', '{\"n\": 1e400}', 0, 0, 0)",
    );
    let good = enqueue_many(admin, (0..20).map(|_| job_body("noop", "{}")).collect(), 2);
    let (code, out, err) = c.ctl(&["jobs", "resume", "default"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_until("the good jobs done", Duration::from_secs(15), || {
        let jobs = store.jobs();
        good.iter().all(|id| {
            jobs.iter()
                .any(|j| j.id == *id && j.state == JobState::Succeeded)
        })
    });
    let odd = store
        .jobs()
        .into_iter()
        .find(|j| !good.contains(&j.id))
        .expect("the odd row");
    assert_eq!(odd.state, JobState::Dead, "{odd:?}");
    assert!(
        odd.last_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot read this job's stored row")),
        "{odd:?}"
    );
    // One WARN naming it, and nothing else at WARN/ERROR: no failed claim,
    // no rescue of a "dead processor".
    c.wait_log(NEEDLE, Duration::from_secs(5));
    let faults = c.faults();
    assert_eq!(faults.len(), 1, "{faults:#?}");
    assert!(
        faults[0].contains(NEEDLE) && faults[0].contains(&format!("job_id={}", odd.id)),
        "{faults:#?}"
    );
    // The operator's view: the list (with payloads) and the job itself.
    let (code, out, err) = c.ctl(&["jobs"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dead"), "{out}");
    let (code, out, err) = c.ctl(&["jobs", "show", &odd.id.to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"payload_error\""), "{out}");
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0);
}

#[test]
fn a_row_curfew_cannot_read_is_buried_and_its_queue_runs_on_sqlite() {
    a_row_curfew_cannot_read_is_buried_and_its_queue_runs_on(TestStore::sqlite());
}

#[test]
fn a_row_curfew_cannot_read_is_buried_and_its_queue_runs_on_postgres() {
    a_row_curfew_cannot_read_is_buried_and_its_queue_runs_on(TestStore::postgres());
}
