//! The status page (`/ui`) in a real headless browser (Debian's chromium)
//! against the real curfew with workers and a SQLite job store: the page
//! shows the workers and a dead job with its (hostile) error after its
//! script ran; its retry form works when posted as a browser posts it, and
//! not without the CSRF token or from another origin. Then the login with
//! an admin token.

use std::io::BufReader;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use curfew_store::JobState;

use crate::support::jobs::*;
use crate::support::*;

/// One request to the admin address as a browser at
/// `http://127.0.0.1:<port>` sends it (that `Host`).
fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    std::io::Write::write_all(&mut s, req.as_bytes()).expect("send");
    read_response(&mut BufReader::new(s)).expect("response")
}

/// `name=value` of the session cookie in a `Set-Cookie` answer.
fn session_cookie(resp: &Resp) -> String {
    let set = resp
        .header("set-cookie")
        .unwrap_or_else(|| panic!("no Set-Cookie: {resp:?}"));
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(set.contains(attr), "{set}");
    }
    set.split(';').next().expect("pair").to_owned()
}

/// The value of the hidden `csrf` input of the form posting to `action`.
fn form_csrf(html: &str, action: &str) -> String {
    let form = html
        .split("<form ")
        .find(|f| f.contains(&format!("action=\"{action}\"")))
        .unwrap_or_else(|| panic!("no form to {action} in {html}"));
    let after = form
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .expect("a csrf input");
    after[..after.find('"').expect("end quote")].to_owned()
}

/// A number attribute (`name="<n>"`) in the DOM.
fn attr_number(dom: &str, name: &str) -> Option<u64> {
    let start = dom.find(&format!("{name}=\""))? + name.len() + 2;
    dom[start..].split('"').next()?.parse().ok()
}

/// The target directory (for the screenshot artifact).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/tmp has a parent")
        .to_path_buf()
}

/// Chromium, headless: the DOM of `url` after `budget_ms` of virtual time
/// (timers and fetches run: the page's script polls), and a screenshot.
fn chromium(url: &str, screenshot: &Path, budget_ms: u32) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new("timeout")
        .arg("60")
        .arg("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("run chromium (apt-get install -y chromium; .ci/run installs it)");
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 DOM")
}

#[test]
fn status_page_in_a_browser_shows_workers_and_a_dead_job_and_retries_it() {
    let t0 = Instant::now();
    let store = TestStore::sqlite();
    let jobs =
        "[jobs.queues.default]\nconcurrency = 2\nmax_attempts = 2\nretry_backoff = \"100ms\"\n";
    let (c, admin) = start_testworker(&store, "curfew.toml", "workers = 2\n", jobs, &[]);
    // Worker output is untrusted: an error that would run a script, or
    // retitle the page, if it were not escaped.
    let hostile = r#"Traceback (most recent call last): ValueError: <script>document.title='pwned'</script><img src=x onerror="document.title='pwned'">"#;
    let body = serde_json::json!({"kind": "broken", "payload": {"status": 500, "body": hostile}});
    let id = enqueue_many(admin, vec![body.to_string()], 1)[0];
    wait_until("the job dead", Duration::from_secs(15), || {
        store
            .jobs()
            .iter()
            .any(|j| j.id == id && j.state == JobState::Dead)
    });
    // Traffic while the browser watches, for the chart (5 ms requests).
    let load = Load::start(c.port, &["/sleep?ms=5"], 2, 3000);
    load.wait_flowing();
    let status: serde_json::Value =
        serde_json::from_str(&get(admin, "/status").body).expect("status json");
    let pids: Vec<u64> = status["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| w["pid"].as_u64().expect("pid"))
        .collect();
    assert_eq!(pids.len(), 2);

    let shot = target_dir().join("ui-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    let dom = chromium(&format!("http://127.0.0.1:{admin}/ui"), &shot, 5000);
    // The script ran: it polled /ui/live and drew the chart.
    let polls = attr_number(&dom, "data-polls").unwrap_or(0);
    assert!(polls >= 2, "the script polled {polls} times: {dom}");
    assert!(dom.contains("<html lang=\"en\" class=\"js\">"), "{dom}");
    let points = attr_number(&dom, "data-points").unwrap_or(0);
    assert!(points >= 1, "no chart points: {dom}");
    // The workers, by pid, and the dead job with its error, escaped.
    for pid in &pids {
        assert!(
            dom.contains(&format!("<td class=\"pid\">{pid}</td>")),
            "worker {pid} not shown: {dom}"
        );
    }
    let row = dom
        .split(&format!("<tr id=\"job-{id}\""))
        .nth(1)
        .unwrap_or_else(|| panic!("job {id} not shown: {dom}"));
    let row = &row[..row.find("</tr>").expect("row end")];
    assert!(row.contains("dead") && row.contains("broken"), "{row}");
    assert!(
        row.contains("HTTP 500: Traceback (most recent call last): ValueError: &lt;script&gt;document.title='pwned'&lt;/script&gt;&lt;img src=x"),
        "{row}"
    );
    assert!(!dom.contains("<img src=\"x\""), "markup from a job error");
    assert!(dom.contains("<title>curfew · serving</title>"), "{dom}");
    assert!(!dom.contains("pwned</title>"));
    assert_eq!(load.finish().other_statuses("200"), 0);
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );

    // The retry form, posted as the browser would: the session cookie the
    // page set, the page's CSRF token, its own Origin.
    let page = request(admin, "GET", "/ui", &[], "");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-security-policy"),
        Some("default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
    );
    let cookie = session_cookie(&page);
    let action = format!("/ui/jobs/{id}/retry");
    let csrf = form_csrf(&page.body, &action);
    let origin = format!("http://127.0.0.1:{admin}");
    let form = "application/x-www-form-urlencoded";
    let post =
        |headers: &[(&str, &str)], body: &str| request(admin, "POST", &action, headers, body);
    let refused = [
        post(
            &[
                ("Cookie", &cookie),
                ("Origin", &origin),
                ("Content-Type", form),
            ],
            "",
        ),
        post(
            &[
                ("Cookie", &cookie),
                ("Origin", &origin),
                ("Content-Type", form),
            ],
            &format!("csrf={}", "0".repeat(64)),
        ),
        post(
            &[
                ("Cookie", &cookie),
                ("Origin", "http://evil.example"),
                ("Content-Type", form),
            ],
            &format!("csrf={csrf}"),
        ),
        post(
            &[("Origin", &origin), ("Content-Type", form)],
            &format!("csrf={csrf}"),
        ),
    ];
    for r in &refused {
        assert_eq!(r.status, 403, "{r:?}");
    }
    assert_eq!(starts(&store.log_path()).get(&id), Some(&2), "not retried");
    let done = post(
        &[
            ("Cookie", &cookie),
            ("Origin", &origin),
            ("Referer", &format!("{origin}/ui")),
            ("Content-Type", form),
        ],
        &format!("csrf={csrf}"),
    );
    assert_eq!(done.status, 303, "{done:?}");
    assert_eq!(
        done.header("location"),
        Some(format!("/ui?done=retry&job={id}").as_str())
    );
    // Queued again: it runs (and, as it always fails, ends dead again).
    wait_until("the job run again", Duration::from_secs(10), || {
        starts(&store.log_path()).get(&id) == Some(&4)
    });
    let after = request(
        admin,
        "GET",
        &format!("/ui?done=retry&job={id}"),
        &[("Cookie", &cookie)],
        "",
    );
    assert!(
        after.body.contains(&format!(
            "<p class=\"flash\" role=\"status\">Job {id} queued again.</p>"
        )),
        "{}",
        after.body
    );
    assert!(
        after.header("set-cookie").is_none(),
        "the session is kept, not renewed"
    );
    // Pause and resume the queue from its form.
    let paused = |admin| {
        let v: serde_json::Value =
            serde_json::from_str(&get(admin, "/status").body).expect("status json");
        v["jobs"]["queues"][0]["paused"].as_bool()
    };
    for (verb, expect) in [("pause", true), ("resume", false)] {
        let page = request(admin, "GET", "/ui", &[("Cookie", &cookie)], "");
        let action = format!("/ui/queues/default/{verb}");
        let csrf = form_csrf(&page.body, &action);
        let r = request(
            admin,
            "POST",
            &action,
            &[
                ("Cookie", &cookie),
                ("Origin", &origin),
                ("Content-Type", form),
            ],
            &format!("csrf={csrf}"),
        );
        assert_eq!(r.status, 303, "{r:?}");
        assert_eq!(paused(admin), Some(expect), "after {verb}");
    }
    // A page answering to another name (DNS rebinding) is refused.
    let mut s = TcpStream::connect(("127.0.0.1", admin)).expect("connect");
    std::io::Write::write_all(
        &mut s,
        b"GET /ui HTTP/1.1\r\nHost: rebound.example\r\nConnection: close\r\n\r\n",
    )
    .expect("send");
    assert_eq!(
        read_response(&mut BufReader::new(s))
            .expect("response")
            .status,
        403
    );
    // Nothing above INFO but the job's own failures.
    let job = format!("job_id={id} ");
    let faults: Vec<String> = c
        .faults()
        .into_iter()
        .filter(|l| !l.contains(&job))
        .collect();
    assert!(faults.is_empty(), "{faults:?}");
    // About 3 s on an idle machine; a generous bound for a loaded one.
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t0.elapsed()
    );
}

#[test]
fn status_page_login_with_the_admin_token() {
    let admin = free_port();
    let token = "0123456789abcdef-ui-test";
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("curfew.toml");
    std::fs::write(
        &config,
        format!("admin_bind = \"127.0.0.1:{admin}\"\nworkers = 1\nadmin_token = \"{token}\"\n"),
    )
    .expect("config");
    let c = Curfew::start(Opts::testworker(
        &["--config", config.to_str().expect("utf-8")],
        &[],
    ));
    let origin = format!("http://127.0.0.1:{admin}");
    let form = ("Content-Type", "application/x-www-form-urlencoded");

    let r = request(admin, "GET", "/ui", &[], "");
    assert_eq!((r.status, r.header("location")), (303, Some("/ui/login")));
    assert_eq!(request(admin, "GET", "/ui/live", &[], "").status, 401);
    let login = request(admin, "GET", "/ui/login", &[], "");
    assert!(login.body.contains("name=\"token\" type=\"password\""));
    // The assets need nothing.
    assert_eq!(
        request(admin, "GET", "/ui/static/ui.js", &[], "").status,
        200
    );

    let wrong = request(
        admin,
        "POST",
        "/ui/login",
        &[("Origin", &origin), form],
        "token=not-the-token-at-all",
    );
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());
    let foreign = request(
        admin,
        "POST",
        "/ui/login",
        &[("Origin", "http://evil.example"), form],
        &format!("token={token}"),
    );
    assert_eq!(foreign.status, 403);
    let ok = request(
        admin,
        "POST",
        "/ui/login",
        &[("Origin", &origin), form],
        &format!("token={token}"),
    );
    assert_eq!((ok.status, ok.header("location")), (303, Some("/ui")));
    let cookie = session_cookie(&ok);
    assert!(!cookie.contains(token), "the cookie is not the token");

    let page = request(admin, "GET", "/ui", &[("Cookie", &cookie)], "");
    assert_eq!(page.status, 200);
    let pid = c.worker_pids()[0];
    assert!(page.body.contains(&format!("<td class=\"pid\">{pid}</td>")));
    assert_eq!(
        request(admin, "GET", "/ui/live", &[("Cookie", &cookie)], "").status,
        200
    );
    // The cookie opens /ui only: the API still wants the Bearer header.
    assert_eq!(
        request(admin, "GET", "/status", &[("Cookie", &cookie)], "").status,
        401
    );
    // The Bearer header opens the page too.
    let bearer = format!("Bearer {token}");
    assert_eq!(
        request(admin, "GET", "/ui", &[("Authorization", &bearer)], "").status,
        200
    );
    // Logging out takes the CSRF token and clears the cookie.
    let csrf = form_csrf(&page.body, "/ui/logout");
    let no_csrf = request(
        admin,
        "POST",
        "/ui/logout",
        &[("Cookie", &cookie), ("Origin", &origin), form],
        "",
    );
    assert_eq!(no_csrf.status, 403);
    let out = request(
        admin,
        "POST",
        "/ui/logout",
        &[("Cookie", &cookie), ("Origin", &origin), form],
        &format!("csrf={csrf}"),
    );
    assert_eq!(
        (out.status, out.header("location")),
        (303, Some("/ui/login"))
    );
    assert!(
        out.header("set-cookie")
            .is_some_and(|s| s.contains("Max-Age=0")),
        "{out:?}"
    );
    assert!(c.faults().is_empty(), "{:?}", c.faults());
}
