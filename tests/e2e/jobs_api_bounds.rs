//! The job API cannot be turned against curfew: listings of large payloads
//! are bounded in bytes, and a flood of API calls takes no more than its
//! share of the store.

use std::time::Duration;

use crate::support::jobs::*;
use crate::support::*;

/// 20 jobs of 1 MB payloads, listed with `payload=1&limit=500` by four
/// clients at once: every page holds 4 jobs (4 MiB), the
/// pages chain to all 20, and curfew's RSS stays under 64 MB throughout.
#[test]
fn payload_listings_keep_curfews_memory_bounded() {
    let store = TestStore::sqlite();
    let (c, admin) = start_testworker(&store, "curfew.toml", "workers = 1", "", &[]);
    let blob = "x".repeat(1_000_000);
    let bodies: Vec<String> = (0..20)
        .map(|i| {
            format!(
                r#"{{"kind": "noop", "delay_s": 3600, "payload": {{"n": {i}, "blob": "{blob}"}}}}"#
            )
        })
        .collect();
    assert_eq!(enqueue_many(admin, bodies, 2).len(), 20);

    let pid = c.pid();
    eprintln!(
        "curfew's RSS after the enqueues: {} MiB",
        rss_kib(pid) / 1024
    );
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..1 {
                    let mut after = 0i64;
                    let mut seen = 0;
                    loop {
                        let r = get(admin, &format!("/jobs?payload=1&limit=500&after={after}"));
                        if r.status == 503 {
                            // Busy: the documented answer; send again.
                            assert_eq!(r.header("retry-after"), Some("1"));
                            continue;
                        }
                        assert_eq!(r.status, 200, "{}", &r.body[..r.body.len().min(300)]);
                        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
                        let jobs = v["jobs"].as_array().expect("jobs").clone();
                        if jobs.is_empty() {
                            break;
                        }
                        assert!(jobs.len() <= 4, "a page of {} 1 MB payloads", jobs.len());
                        assert!(jobs.iter().all(
                            |j| j["payload"]["blob"].as_str().map(str::len) == Some(1_000_000)
                        ));
                        seen += jobs.len();
                        after = jobs.last().and_then(|j| j["id"].as_i64()).expect("id");
                    }
                    assert_eq!(seen, 20, "the pages chain to every job");
                }
            })
        })
        .collect();
    for h in clients {
        h.join().expect("client");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak_kib = sampler.join().expect("sampler");
    eprintln!("curfew's peak RSS while listing: {} MiB", peak_kib / 1024);
    assert!(
        peak_kib > 0 && peak_kib < 64 * 1024,
        "curfew's RSS peaked at {} MiB",
        peak_kib / 1024
    );
    // Without payloads a page is still up to 500 jobs.
    let r = get(admin, "/jobs?limit=500");
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(v["jobs"].as_array().map(Vec::len), Some(20));

    // The same bounds over the control socket (`curfew jobs`, which any
    // worker can reach too): the table needs no payloads and lists them
    // all; `--json` shows payloads, a page bounded in bytes at a time.
    let (code, table, err) = c.ctl(&["jobs", "--limit", "100"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        table.lines().filter(|l| l.contains("noop")).count(),
        20,
        "{table}"
    );
    let before = rss_kib(pid);
    let (code, out, err) = c.ctl(&["jobs", "--json", "--limit", "10000"]);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).expect("json");
    let jobs = listed.as_array().expect("a list of jobs");
    assert_eq!(jobs.len(), 4, "one page of 1 MB payloads");
    assert!(
        jobs.iter()
            .all(|j| j["payload"]["blob"].as_str().map(str::len) == Some(1_000_000))
    );
    let grew = rss_kib(pid).saturating_sub(before) / 1024;
    assert!(grew < 32, "curfew's RSS grew {grew} MiB for one listing");
    assert!(c.faults().is_empty(), "{:?}", c.faults());
}

/// 200 API calls from 50 clients at once while jobs run: every call is
/// answered (200, or 503 + Retry-After when it waited its turn too long —
/// never an error of the store), and every job still succeeds: the API
/// never starved the processor of store connections.
#[test]
fn an_api_flood_does_not_starve_the_processor() {
    let store = TestStore::sqlite();
    let (c, admin) = start_testworker(
        &store,
        "curfew.toml",
        "workers = 2",
        "[jobs.queues.default]\nconcurrency = 4\n",
        &[],
    );
    let bodies: Vec<String> = (0..40)
        .map(|i| job_body("noop", &format!(r#"{{"n": {i}}}"#)))
        .collect();
    let ids = enqueue_many(admin, bodies, 2);
    let flood: Vec<_> = (0..50)
        .map(|i| {
            let id = ids[i % ids.len()];
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                for _ in 0..4 {
                    let r = get(admin, &format!("/jobs/{id}"));
                    if r.status == 503 {
                        assert_eq!(r.header("retry-after"), Some("1"));
                    }
                    statuses.push(r.status);
                }
                statuses
            })
        })
        .collect();
    let statuses: Vec<u16> = flood
        .into_iter()
        .flat_map(|h| h.join().expect("client"))
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 200).count() > 100,
        "{statuses:?}"
    );
    wait_until("every job succeeded", Duration::from_secs(30), || {
        store
            .jobs()
            .iter()
            .filter(|j| j.state == curfew_store::JobState::Succeeded)
            .count()
            == 40
    });
    assert!(c.faults().is_empty(), "{:?}", c.faults());
}
