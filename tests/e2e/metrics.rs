//! `/metrics` on the admin endpoint, parsed by the real Python
//! `prometheus_client` OpenMetrics parser (what Prometheus-compatible tooling
//! accepts).

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::support::*;

/// Reads OpenMetrics text on stdin; prints
/// `{family: {"type": t, "samples": [[sample_name, labels, value], ...]}}`.
const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = {"type": f.type, "samples": [[s.name, s.labels, s.value] for s in f.samples]}
print(json.dumps(out))
"#;

struct Scraped {
    families: HashMap<String, Value>,
    text: String,
}

impl Scraped {
    fn family(&self, name: &str) -> &Value {
        self.families
            .get(name)
            .unwrap_or_else(|| panic!("no family {name} in\n{}", self.text))
    }

    fn typ(&self, name: &str) -> &str {
        self.family(name)["type"].as_str().unwrap_or_default()
    }

    /// Value of `sample` in family `name` whose labels include `labels`
    /// (0 when there is none: a labelled family with no sample yet is not
    /// emitted at all).
    fn value(&self, name: &str, sample: &str, labels: &[(&str, &str)]) -> f64 {
        let Some(family) = self.families.get(name) else {
            return 0.0;
        };
        let samples = family["samples"].as_array().cloned().unwrap_or_default();
        samples
            .iter()
            .filter(|s| s[0] == sample)
            .filter(|s| labels.iter().all(|(k, v)| s[1][*k] == *v))
            .map(|s| s[2].as_f64().unwrap_or(f64::NAN))
            .sum()
    }
}

fn scrape(admin: u16) -> Scraped {
    let r = get(admin, "/metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        r.headers
    );
    let mut py = Command::new(venv_bin("python"))
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    py.stdin
        .take()
        .expect("stdin")
        .write_all(r.body.as_bytes())
        .expect("write to python");
    let out = py.wait_with_output().expect("python output");
    assert!(
        out.status.success(),
        "the OpenMetrics parser rejected /metrics: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        r.body
    );
    let families: HashMap<String, Value> =
        serde_json::from_slice(&out.stdout).expect("parser output is JSON");
    Scraped {
        families,
        text: r.body,
    }
}

/// Proxied 200s and 503s, curfew's own 502 after a crash, the crash counted
/// as a worker exit, the gauges, a reload, all parsed by the real parser.
#[test]
fn metrics_parse_and_count() {
    let admin = free_port();
    let admin_addr = format!("127.0.0.1:{admin}");
    let mut c = Curfew::start(Opts::testworker(
        &["-w", "2", "--admin-bind", &admin_addr],
        &[],
    ));
    const N: usize = 20;
    for _ in 0..N {
        assert_eq!(get(c.port, "/").status, 200);
    }
    assert_eq!(get(c.port, "/status?code=503").status, 503);
    assert_eq!(get(c.port, "/crash").status, 502);

    // The crash is counted once the supervisor has classified the exit.
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = scrape(admin);
        let crashed = m.value(
            "curfew_worker_exits",
            "curfew_worker_exits_total",
            &[("reason", "crashed")],
        );
        if crashed >= 1.0 || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let req = |class: &str| {
        m.value(
            "curfew_http_requests",
            "curfew_http_requests_total",
            &[("code_class", class)],
        )
    };
    assert_eq!(m.typ("curfew_http_requests"), "counter");
    assert!(req("2xx") >= N as f64, "{}", m.text);
    assert!(req("5xx") >= 2.0, "{}", m.text);
    let total: f64 = ["1xx", "2xx", "3xx", "4xx", "5xx"]
        .iter()
        .map(|c| req(c))
        .sum();
    assert_eq!(total, (N + 2) as f64, "{}", m.text);

    assert_eq!(m.typ("curfew_http_request_duration_seconds"), "histogram");
    let count = m.value(
        "curfew_http_request_duration_seconds",
        "curfew_http_request_duration_seconds_count",
        &[],
    );
    assert_eq!(count, total, "{}", m.text);
    let inf = m.value(
        "curfew_http_request_duration_seconds",
        "curfew_http_request_duration_seconds_bucket",
        &[("le", "+Inf")],
    );
    assert_eq!(inf, total, "{}", m.text);

    assert_eq!(
        m.value(
            "curfew_worker_exits",
            "curfew_worker_exits_total",
            &[("reason", "crashed")]
        ),
        1.0,
        "{}",
        m.text
    );
    assert_eq!(m.typ("curfew_http_requests_in_flight"), "gauge");
    assert_eq!(
        m.value(
            "curfew_http_requests_in_flight",
            "curfew_http_requests_in_flight",
            &[]
        ),
        0.0
    );
    assert_eq!(
        m.value("curfew_http_queue_length", "curfew_http_queue_length", &[]),
        0.0
    );
    assert_eq!(
        m.value("curfew_workers_wanted", "curfew_workers_wanted", &[]),
        2.0
    );
    assert_eq!(
        m.value("curfew_phase", "curfew_phase", &[("phase", "serving")]),
        1.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.value("curfew_phase", "curfew_phase", &[]),
        1.0,
        "exactly one phase is current: {}",
        m.text
    );
    assert_eq!(m.typ("curfew_drain_duration_seconds"), "histogram");

    // A reload: counted, and the replaced workers' exits count as `reload`.
    c.wait_log_count(WORKER_READY, 3, Duration::from_secs(10));
    c.signal(Signal::SIGHUP);
    c.wait_log(&event("reload_finished", "ok"), Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = scrape(admin);
        let reloaded = m.value(
            "curfew_worker_exits",
            "curfew_worker_exits_total",
            &[("reason", "reload")],
        );
        if reloaded >= 2.0 || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        m.value(
            "curfew_worker_exits",
            "curfew_worker_exits_total",
            &[("reason", "reload")]
        ),
        2.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.value(
            "curfew_reloads",
            "curfew_reloads_total",
            &[("result", "ok")]
        ),
        1.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.value("curfew_workers", "curfew_workers", &[]),
        2.0,
        "{}",
        m.text
    );

    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0, "{}", c.log_text());
    assert_no_survivors(&c);
}
