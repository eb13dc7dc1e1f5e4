//! Periodic jobs (`[jobs.periodic]`): each instant enqueued exactly once by
//! any number of curfews sharing a store, through a SIGKILL and a deploy
//! that spans instants; the schedule seen in `curfew jobs periodic`; a
//! reload that changes schedules.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use curfew_store::{Job, now_ms};
use nix::sys::signal::Signal;

use crate::support::jobs::*;
use crate::support::*;

const TOP: &str = "workers = 1\nworker_concurrency = 4\ngraceful_timeout = 5\n";

fn jobs_toml(node: &str) -> String {
    format!(
        "node = \"{node}\"\nlease = \"2s\"\n[jobs.queues.default]\nconcurrency = 4\n[jobs.periodic.tick]\nevery = \"1s\"\nkind = \"quick\"\n"
    )
}

fn start(store: &TestStore, node: &str) -> (Curfew, u16) {
    start_testworker(store, &format!("{node}.toml"), TOP, &jobs_toml(node), &[])
}

/// The periodic jobs of schedule `tick` (kind `quick`), by instant: how
/// many jobs each instant got.
fn per_instant(jobs: &[Job]) -> BTreeMap<i64, usize> {
    let mut m = BTreeMap::new();
    for j in jobs.iter().filter(|j| j.kind == "quick") {
        *m.entry(j.run_at).or_insert(0) += 1;
    }
    m
}

/// Every instant from `from` to `to` (inclusive, whole seconds) is there.
fn assert_contiguous(m: &BTreeMap<i64, usize>, from: i64, to: i64, what: &str) {
    let missing: Vec<i64> = (0..=(to - from) / 1000)
        .map(|k| from + k * 1000)
        .filter(|i| !m.contains_key(i))
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: instants without a job: {missing:?}"
    );
}

/// The instant named by a `periodic_enqueued` line with `result`.
fn instant_logged(c: &Curfew, result: &str) -> i64 {
    let line = c.wait_log(&event("periodic_enqueued", result), Duration::from_secs(5));
    field(&line, "instant_ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no instant_ms in {line}"))
}

/// Three curfews on one PostgreSQL schema, `every = "1s"`: one is killed
/// (SIGKILL) and restarted, then all stop, and one starts again after
/// instants fell while none ran. Each instant gets exactly one job; none is
/// missing while one instance was up; after the deploy only the latest
/// missed instant is caught up.
#[test]
fn every_second_exactly_once_across_three_instances_on_postgres() {
    let store = TestStore::postgres();
    let t0 = Instant::now();
    let (mut a, _) = start(&store, "host-a");
    let (mut b, _) = start(&store, "host-b");
    let (mut c, _) = start(&store, "host-c");
    // Whichever instance wins an instant's race enqueues it.
    wait_until("a first periodic job", Duration::from_secs(5), || {
        !per_instant(&store.jobs()).is_empty()
    });
    let first = *per_instant(&store.jobs()).keys().next().expect("a job");
    std::thread::sleep(Duration::from_secs(5).saturating_sub(t0.elapsed()));
    b.signal(Signal::SIGKILL);
    let _ = b.child.wait();
    std::thread::sleep(Duration::from_millis(2_000));
    let (mut b, _) = start(&store, "host-b");
    std::thread::sleep(Duration::from_secs(12).saturating_sub(t0.elapsed()));
    // A deploy: all stop…
    for x in [&a, &b, &c] {
        x.signal(Signal::SIGTERM);
    }
    let stop_requested = now_ms();
    for x in [&mut a, &mut b, &mut c] {
        assert_eq!(x.wait_exit(Duration::from_secs(10)), 0, "{}", x.log_text());
    }
    let before = per_instant(&store.jobs());
    let last_before = *before.keys().last().expect("jobs before the deploy");
    assert!(
        last_before <= stop_requested,
        "nothing enqueued after the stop request ({last_before} > {stop_requested})"
    );
    // …instants fall while none runs, then one starts again.
    std::thread::sleep(Duration::from_millis(2_300));
    let restart = now_ms();
    let (mut a2, _) = start(&store, "host-a");
    let caught_up = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        instant_logged(&a2, "caught_up")
    }))
    .unwrap_or_else(|_| {
        panic!(
            "no catch-up: stop requested {stop_requested}, last before {last_before}, restart {restart}; now {:?}; before {before:?}; logs:\n{}\n--- a:\n{}",
            per_instant(&store.jobs()),
            a2.log_text(),
            a.log_text()
        )
    });
    assert!(
        caught_up > last_before + 1_000 && caught_up <= now_ms(),
        "the latest missed instant is caught up: {caught_up} (last before {last_before}, restart {restart})"
    );
    // Two more instants on time after the catch-up.
    wait_until(
        "two instants after the catch-up",
        Duration::from_secs(5),
        || per_instant(&store.jobs()).range(caught_up + 1..).count() >= 2,
    );
    a2.signal(Signal::SIGTERM);
    assert_eq!(a2.wait_exit(Duration::from_secs(10)), 0);

    let m = per_instant(&store.jobs());
    let twice: Vec<(&i64, &usize)> = m.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "instants with more than one job: {twice:?}"
    );
    assert!(
        m.keys().all(|i| i % 1000 == 0),
        "instants are whole seconds"
    );
    assert_contiguous(&m, first, last_before, "while at least one instance ran");
    let after: Vec<i64> = m.range(last_before + 1..).map(|(i, _)| *i).collect();
    assert_eq!(
        after.first(),
        Some(&caught_up),
        "only the latest missed instant is caught up: {after:?}"
    );
    let last = *m.keys().last().expect("jobs");
    assert_contiguous(&m, caught_up, last, "after the restart");
    assert!(
        m.len() >= 12,
        "about 16 s of instants: {} ({first}..{last})",
        m.len()
    );
    // `curfew jobs periodic` on the stopped store shows the last job.
    let (code, out, err) = jobs_cli(&store, &["jobs", "periodic"]);
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("tick "))
        .unwrap_or_else(|| panic!("{out}"));
    let last_job = store
        .jobs()
        .into_iter()
        .find(|j| j.run_at == last)
        .expect("the last instant's job");
    assert!(row.ends_with(&last_job.id.to_string()), "{row}");
    assert!(row.contains("every 1s"), "{row}");
}

/// `curfew <args> --store <the store>` (offline), with the config given
/// for the schedules.
fn jobs_cli(store: &TestStore, args: &[&str]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(CURFEW);
    cmd.args(args).arg("--store").arg(&store.url);
    if let Some(s) = &store.schema {
        cmd.arg("--pg-schema").arg(s);
    }
    cmd.arg("--config")
        .arg(store.dir.path().join("host-a.toml"));
    let out = cmd.output().expect("run curfew jobs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// SQLite, one curfew: killed (SIGKILL) and started again after an
/// instant fell, it catches that instant up; `curfew jobs periodic` shows
/// the schedule with its next run; a reload adding a schedule takes
/// effect without a restart.
#[test]
fn sqlite_catch_up_after_a_kill_and_a_reload_adds_a_schedule() {
    let store = TestStore::sqlite();
    let (mut a, _) = start(&store, "host-a");
    let first = instant_logged(&a, "on_time");
    wait_until("two instants", Duration::from_secs(5), || {
        per_instant(&store.jobs()).len() >= 2
    });
    a.signal(Signal::SIGKILL);
    let _ = a.child.wait();
    let killed = now_ms();
    std::thread::sleep(Duration::from_millis(1_500));
    let (mut a, _) = start(&store, "host-a");
    let caught_up = instant_logged(&a, "caught_up");
    assert!(
        caught_up > killed - 1_000,
        "{caught_up} vs kill at {killed}"
    );

    let (code, out, err) = a.ctl(&["jobs", "periodic"]);
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("tick "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("every 1s") && row.contains("default"), "{row}");

    // A reload adds a schedule: it runs without a restart.
    let config = store.dir.path().join("host-a.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!(
            "{text}[jobs.periodic.tock]\nevery = \"1s\"\nkind = \"other\"\npayload = {{ n = 1 }}\n"
        ),
    )
    .expect("write config");
    a.signal(Signal::SIGHUP);
    a.wait_log(&event("reload_finished", "ok"), Duration::from_secs(10));
    wait_until("a job of the new schedule", Duration::from_secs(5), || {
        store
            .jobs()
            .iter()
            .any(|j| j.kind == "other" && j.payload == serde_json::json!({"n": 1}))
    });
    a.signal(Signal::SIGTERM);
    assert_eq!(a.wait_exit(Duration::from_secs(10)), 0);

    let m = per_instant(&store.jobs());
    assert!(m.values().all(|n| *n == 1), "{m:?}");
    let last = *m.keys().last().expect("jobs");
    assert_contiguous(&m, caught_up, last, "after the restart");
    assert!(m.contains_key(&first));
    assert!(
        !a.log_text().contains("restart of curfew"),
        "jobs.periodic is applied by a reload: {}",
        a.log_text()
    );
}
