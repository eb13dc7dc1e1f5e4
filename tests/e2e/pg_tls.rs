//! The job store over TLS: `sslmode=require` in the PostgreSQL URL is
//! honoured (the connections are encrypted, as the server's `pg_stat_ssl`
//! says), and `verify-full` against a certificate it cannot verify fails
//! at start with the store's error instead of falling back to plaintext.

use std::process::Command;
use std::time::Duration;

use crate::support::jobs::*;
use crate::support::*;
use curfew_store::JobState;

/// `url` with query parameters added.
fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

/// How many of `app`'s connections the server sees, and how many use TLS.
fn tls_connections(app: &str) -> (u32, u32) {
    let sql = format!(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = '{app}'"
    );
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-tA",
            "-F",
            " ",
            "-c",
            &sql,
        ])
        .output()
        .expect("psql");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut n = text.split_whitespace().map(|x| x.parse().unwrap_or(0));
    (n.next().unwrap_or(0), n.next().unwrap_or(0))
}

#[test]
fn jobs_run_over_tls_with_sslmode_require() {
    let ssl_on = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-tAc",
            "SHOW ssl",
        ])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "on");
    if !ssl_on {
        panic!("the test PostgreSQL has ssl = off; .ci/run turns it on");
    }
    let mut store = TestStore::postgres();
    let app = format!("curfew_tls_{}", std::process::id());
    store.url = with_params(
        &store.url,
        &format!("sslmode=require&application_name={app}"),
    );
    let (mut c, admin) = start_testworker(&store, "curfew.toml", "workers = 1", "", &[]);
    let ids = enqueue_many(admin, (0..20).map(|_| job_body("ok", "{}")).collect(), 2);
    wait_until("jobs done", Duration::from_secs(20), || {
        let jobs = store.jobs();
        ids.iter().all(|id| {
            jobs.iter()
                .any(|j| j.id == *id && j.state == JobState::Succeeded)
        })
    });
    let (all, tls) = tls_connections(&app);
    assert!(all > 0, "curfew's store connections are visible");
    assert_eq!(all, tls, "every store connection uses TLS");
    c.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0);
}

#[test]
fn verify_full_against_an_unverifiable_certificate_fails_at_start() {
    let mut store = TestStore::postgres();
    // The server's certificate (Debian's snakeoil) is self-signed: not in
    // the web PKI roots curfew verifies against.
    store.url = with_params(&store.url, "sslmode=verify-full");
    let config = store.config("curfew.toml", "workers = 1", "");
    let out = Command::new(CURFEW)
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--bind")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--control-socket")
        .arg(store.dir.path().join("c.sock"))
        .arg("--")
        .arg(TESTWORKER)
        .output()
        .expect("run curfew");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.to_lowercase().contains("certificate") || err.to_lowercase().contains("tls"),
        "{err}"
    );
}
