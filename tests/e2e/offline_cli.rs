//! `curfew jobs …` without a running curfew: directly in the store of a
//! stopped curfew (its config, or `--store`), with the same output as
//! through the running one.

use std::process::Command;
use std::time::Duration;

use curfew_store::JobState;
use nix::sys::signal::Signal;

use crate::support::jobs::*;
use crate::support::*;

const JOBS: &str = "[jobs.queues.default]\nconcurrency = 2\n[jobs.retention]\nsucceeded = \"1s\"\ninterval = \"1h\"\n[jobs.periodic.nightly]\ncron = \"0 3 * * *\"\ntimezone = \"Europe/Berlin\"\nkind = \"reindex\"\n";

/// `curfew <args>` with `extra` after them; (exit code, stdout, stderr).
fn curfew(args: &[&str], extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(CURFEW)
        .args(args)
        .args(extra)
        .output()
        .expect("run curfew");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn offline_cli(store: TestStore) {
    let (mut c, admin) = start_testworker(
        &store,
        "curfew.toml",
        "workers = 1\nworker_concurrency = 2\n",
        JOBS,
        &[],
    );
    let config = store.dir.path().join("curfew.toml");
    let ok = enqueue_many(admin, vec![job_body("quick", "{}")], 1)[0];
    let dead = enqueue_many(
        admin,
        vec![r#"{"kind": "bad", "payload": {"status": 500}, "max_attempts": 1}"#.to_owned()],
        1,
    )[0];
    let later = enqueue_many(
        admin,
        vec![r#"{"kind": "later", "delay_s": 3600}"#.to_owned()],
        1,
    )[0];
    wait_until("a job done and one dead", Duration::from_secs(10), || {
        let jobs = store.jobs();
        let state = |id| jobs.iter().find(|j| j.id == id).map(|j| j.state);
        state(ok) == Some(JobState::Succeeded) && state(dead) == Some(JobState::Dead)
    });
    let online_list = c.ctl(&["jobs"]);
    let online_show = c.ctl(&["jobs", "show", &dead.to_string()]);
    let online_periodic = c.ctl(&["jobs", "periodic"]);
    let online_missing = c.ctl(&["jobs", "show", "999999"]);
    assert_eq!(online_list.0, 0, "{}", online_list.2);
    let socket = c.control_socket.clone();
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0);

    // No curfew on the socket: the config's store, said once on stderr.
    let socket = socket.to_str().expect("utf-8 path").to_owned();
    let config = config.to_str().expect("utf-8 path").to_owned();
    let via_config = [
        "--control-socket",
        socket.as_str(),
        "--config",
        config.as_str(),
    ];
    let (code, out, err) = curfew(&["jobs"], &via_config);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, online_list.1, "the same table offline");
    assert!(
        err.contains("no curfew is listening on") && err.contains("directly"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, out, _) = curfew(&["jobs", "show", &dead.to_string()], &via_config);
    assert_eq!((code, out), (0, online_show.1.clone()));
    let (code, out, _) = curfew(&["jobs", "periodic"], &via_config);
    assert_eq!((code, &out), (0, &online_periodic.1));
    assert!(
        out.contains("nightly") && out.contains("Europe/Berlin"),
        "{out}"
    );
    let (code, _, err) = curfew(&["jobs", "show", "999999"], &via_config);
    assert_eq!(code, online_missing.0);
    assert_eq!(err.lines().last(), online_missing.2.lines().last());

    // `sqlite:PATH`, a form the store takes, names the same file (it was
    // looked for as a file named "sqlite:PATH").
    if let Some(path) = store.url.strip_prefix("sqlite://") {
        let short = format!("sqlite:{path}");
        let (code, out, err) = curfew(
            &["jobs", "show", &dead.to_string()],
            &["--store", short.as_str()],
        );
        assert_eq!((code, out), (0, online_show.1.clone()), "{err}");
    }

    // --store: that store, no note.
    let mut with_store = vec!["--store", store.url.as_str()];
    if let Some(s) = &store.schema {
        with_store.extend(["--pg-schema", s.as_str()]);
    }
    let (code, out, err) = curfew(&["jobs", "show", &dead.to_string()], &with_store);
    assert_eq!((code, out), (0, online_show.1), "{err}");
    assert!(err.is_empty(), "{err}");

    // Retry, cancel, delete, pause/resume, prune, in the store.
    let (code, out, err) = curfew(&["jobs", "retry", &dead.to_string()], &with_store);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("job {dead} queued again"));
    let (code, out, _) = curfew(&["jobs", "cancel", &later.to_string()], &with_store);
    assert_eq!(
        (code, out.trim()),
        (0, format!("job {later} cancelled").as_str())
    );
    let (code, _, err) = curfew(&["jobs", "cancel", &later.to_string()], &with_store);
    assert_eq!(code, 1);
    assert!(err.contains("cancelled"), "names the state: {err}");
    let (code, out, _) = curfew(&["jobs", "delete", &later.to_string()], &with_store);
    assert_eq!(
        (code, out.trim()),
        (0, format!("job {later} deleted").as_str())
    );
    let (code, out, _) = curfew(&["jobs", "pause", "default"], &with_store);
    assert_eq!(code, 0);
    assert!(out.contains("queue default paused"), "{out}");
    let (code, out, _) = curfew(&["jobs", "resume", "default"], &with_store);
    assert_eq!((code, out.trim()), (0, "queue default resumed"));
    // The succeeded job is past its 1 s retention by now.
    std::thread::sleep(Duration::from_millis(1_100));
    let (code, out, err) = curfew(&["jobs", "prune"], &via_config);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("pruned 1 finished jobs (succeeded 1, cancelled 0, dead 0) past retention: succeeded 1s, cancelled 1d, dead 14d"),
        "{out}"
    );
    let jobs = store.jobs();
    assert_eq!(
        jobs.iter().map(|j| (j.id, j.state)).collect::<Vec<_>>(),
        vec![(dead, JobState::Queued)],
        "pruned, deleted; the retried one queued"
    );

    // A store that is not there is not created.
    let missing = store.dir.path().join("nothing.db");
    let (code, _, err) = curfew(
        &["jobs"],
        &["--store", &format!("sqlite://{}", missing.display())],
    );
    assert_eq!(code, 1);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!missing.exists());
}

#[test]
fn offline_cli_on_a_stopped_curfews_sqlite_file() {
    offline_cli(TestStore::sqlite());
}

#[test]
fn offline_cli_on_a_postgres_schema() {
    offline_cli(TestStore::postgres());
}
