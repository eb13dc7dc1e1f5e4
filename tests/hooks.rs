//! Lifecycle hooks against real processes and a local HTTP server.

use std::collections::HashMap;
use std::time::Duration;

use curfew::hooks::{HookAction, HookEvent, HookOutcome, HookSpec, Hooks};
use curfew::supervisor::reaper::Reaper;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// One reaper per test runtime calls `waitpid(-1)`: two tests running at once
/// would reap each other's children. The tests that spawn run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn hooks(reaper: &Reaper, event: HookEvent, action: HookAction, timeout: Duration) -> Hooks {
    let mut specs = HashMap::new();
    specs.insert(event, HookSpec { action, timeout });
    Hooks::new(reaper.clone(), specs)
}

fn sh(script: &str) -> HookAction {
    HookAction::Command(vec!["sh".into(), "-c".into(), script.into()])
}

/// Live (non-zombie) processes of process group `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    curfew::supervisor::procfs::all()
        .into_iter()
        .filter(|p| p.pgrp == pgid && p.state != 'Z')
        .map(|p| p.pid)
        .collect()
}

/// Wait until process group `pgid` has no live member (at most `within`).
async fn group_gone(pgid: i32, within: Duration) -> bool {
    let until = Instant::now() + within;
    loop {
        if group_members(pgid).is_empty() {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn read_pid(path: &std::path::Path) -> i32 {
    for _ in 0..200 {
        if let Ok(s) = std::fs::read_to_string(path)
            && let Ok(pid) = s.trim().parse()
        {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("no pid written to {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_gets_env_and_stdin_json() {
    let _serial = SERIAL.lock().await;
    let reaper = Reaper::start().expect("reaper");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let script = format!(
        "cat > '{o}'; env | grep CURFEW_HOOK > '{o}.env'",
        o = out.display()
    );
    let h = hooks(
        &reaper,
        HookEvent::WorkerExit,
        sh(&script),
        Duration::from_secs(5),
    );
    let details = serde_json::json!({"worker": 1, "pid": 123, "reason": "crashed",
                                     "exit": "signal SIGABRT", "nested": {"a": 1}});
    let t = Instant::now();
    let outcome = h.run(HookEvent::WorkerExit, details, None).await;
    assert_eq!(outcome, HookOutcome::Ok);
    assert!(t.elapsed() < Duration::from_secs(2));

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("stdin copy")).expect("json");
    assert_eq!(json["event"], "worker_exit");
    assert_eq!(json["worker"], 1);
    assert_eq!(json["pid"], 123);
    assert_eq!(json["reason"], "crashed");
    assert_eq!(json["nested"]["a"], 1);
    assert_eq!(json["curfew_pid"], std::process::id());

    let env = std::fs::read_to_string(dir.path().join("out.env")).expect("env copy");
    let lines: Vec<&str> = env.lines().collect();
    for want in [
        "CURFEW_HOOK=worker_exit".to_string(),
        "CURFEW_HOOK_EVENT=worker_exit".to_string(),
        "CURFEW_HOOK_WORKER=1".to_string(),
        "CURFEW_HOOK_PID=123".to_string(),
        "CURFEW_HOOK_REASON=crashed".to_string(),
        "CURFEW_HOOK_EXIT=signal SIGABRT".to_string(),
        format!("CURFEW_HOOK_CURFEW_PID={}", std::process::id()),
    ] {
        assert!(lines.contains(&want.as_str()), "{want} missing in {env}");
    }
    assert!(!env.contains("CURFEW_HOOK_NESTED"), "{env}");

    // Another event is not configured.
    let outcome = h.run(HookEvent::OnExit, serde_json::json!({}), None).await;
    assert_eq!(outcome, HookOutcome::NotConfigured);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonzero_exit_fails_with_code_and_stderr() {
    let _serial = SERIAL.lock().await;
    let reaper = Reaper::start().expect("reaper");
    let h = hooks(
        &reaper,
        HookEvent::OnReload,
        sh("echo starting; echo 'it broke' >&2; exit 3"),
        Duration::from_secs(5),
    );
    match h
        .run(HookEvent::OnReload, serde_json::json!({}), None)
        .await
    {
        HookOutcome::Failed(msg) => {
            assert!(msg.contains("exit code 3"), "{msg}");
            assert!(msg.contains("it broke"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    // A program that does not exist fails; curfew carries on.
    let h = hooks(
        &reaper,
        HookEvent::OnReload,
        HookAction::Command(vec!["/nonexistent/curfew-hook".into()]),
        Duration::from_secs(5),
    );
    assert!(matches!(
        h.run(HookEvent::OnReload, serde_json::json!({}), None)
            .await,
        HookOutcome::Failed(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_whole_group() {
    let _serial = SERIAL.lock().await;
    let reaper = Reaper::start().expect("reaper");
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("pid");
    // The hook, a background grandchild and a foreground child.
    let script = format!("echo $$ > '{}'; sleep 60 & sleep 60", pidfile.display());
    let h = hooks(
        &reaper,
        HookEvent::OnStarting,
        sh(&script),
        Duration::from_millis(300),
    );
    let t = Instant::now();
    let outcome = h
        .run(HookEvent::OnStarting, serde_json::json!({}), None)
        .await;
    let took = t.elapsed();
    assert_eq!(outcome, HookOutcome::TimedOut);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let pgid = read_pid(&pidfile).await;
    assert!(
        group_gone(pgid, Duration::from_secs(1)).await,
        "still alive: {:?}",
        group_members(pgid)
    );
    // The hook itself was reaped, not left a zombie.
    assert!(!std::path::Path::new(&format!("/proc/{pgid}")).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_shorter_than_timeout_wins() {
    let _serial = SERIAL.lock().await;
    let reaper = Reaper::start().expect("reaper");
    let h = hooks(
        &reaper,
        HookEvent::OnExit,
        sh("sleep 60"),
        Duration::from_secs(10),
    );
    let t = Instant::now();
    let outcome = h
        .run(
            HookEvent::OnExit,
            serde_json::json!({}),
            Some(Instant::now() + Duration::from_millis(200)),
        )
        .await;
    assert_eq!(outcome, HookOutcome::TimedOut);
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );

    // A deadline already passed: nothing runs.
    let t = Instant::now();
    let outcome = h
        .run(
            HookEvent::OnExit,
            serde_json::json!({}),
            Some(Instant::now()),
        )
        .await;
    assert_eq!(outcome, HookOutcome::TimedOut);
    assert!(t.elapsed() < Duration::from_millis(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_large_stdin_does_not_block() {
    let _serial = SERIAL.lock().await;
    let reaper = Reaper::start().expect("reaper");
    let big = "x".repeat(1024 * 1024);
    // Exits at once without reading.
    let h = hooks(
        &reaper,
        HookEvent::WhenReady,
        sh("exit 0"),
        Duration::from_secs(5),
    );
    let t = Instant::now();
    let outcome = h
        .run(
            HookEvent::WhenReady,
            serde_json::json!({ "blob": big }),
            None,
        )
        .await;
    assert_eq!(outcome, HookOutcome::Ok);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());

    // Never reads and never exits.
    let h = hooks(
        &reaper,
        HookEvent::WhenReady,
        sh("sleep 60"),
        Duration::from_millis(300),
    );
    let t = Instant::now();
    let outcome = h
        .run(
            HookEvent::WhenReady,
            serde_json::json!({ "blob": big }),
            None,
        )
        .await;
    assert_eq!(outcome, HookOutcome::TimedOut);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_and_shutdown_bound_slow_hooks() {
    let _serial = SERIAL.lock().await;
    let reaper = Reaper::start().expect("reaper");
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("pid");
    let script = format!("echo $$ > '{}'; exec sleep 60", pidfile.display());
    let h = hooks(
        &reaper,
        HookEvent::WorkerExit,
        sh(&script),
        Duration::from_secs(30),
    );
    let t = Instant::now();
    h.fire(HookEvent::WorkerExit, serde_json::json!({"worker": 2}));
    // Fire does not wait.
    assert!(t.elapsed() < Duration::from_millis(100));
    let pgid = read_pid(&pidfile).await;
    h.shutdown(Instant::now() + Duration::from_millis(300))
        .await;
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(
        group_gone(pgid, Duration::from_millis(500)).await,
        "still alive: {:?}",
        group_members(pgid)
    );
    // After shutdown, fired hooks are dropped; run still works.
    h.fire(HookEvent::WorkerExit, serde_json::json!({}));
    assert_eq!(
        h.run(
            HookEvent::WorkerExit,
            serde_json::json!({}),
            Some(Instant::now() + Duration::from_millis(100))
        )
        .await,
        HookOutcome::TimedOut
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_quick_fired_hooks() {
    let _serial = SERIAL.lock().await;
    let reaper = Reaper::start().expect("reaper");
    let dir = tempfile::tempdir().expect("tempdir");
    let done = dir.path().join("done");
    let script = format!("sleep 0.2; touch '{}'", done.display());
    let h = hooks(
        &reaper,
        HookEvent::OnExit,
        sh(&script),
        Duration::from_secs(5),
    );
    h.fire(HookEvent::OnExit, serde_json::json!({}));
    h.shutdown(Instant::now() + Duration::from_secs(5)).await;
    assert!(done.exists());
}

/// A one-request HTTP server answering `status_line`; returns its URL and
/// the raw request it received.
async fn one_shot_server(status_line: &'static str) -> (String, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // Read headers, then the body by content-length.
        loop {
            let n = s.read(&mut chunk).await.expect("read");
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break;
                }
            }
        }
        let _ = s
            .write_all(format!("{status_line}\r\ncontent-length: 0\r\n\r\n").as_bytes())
            .await;
        String::from_utf8_lossy(&buf).to_string()
    });
    (format!("http://{addr}/hooks/curfew?x=1"), task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_posts_json() {
    let _serial = SERIAL.lock().await;
    let reaper = Reaper::start().expect("reaper");
    let (url, server) = one_shot_server("HTTP/1.1 204 No Content").await;
    let action = HookAction::parse(&url).expect("url");
    let h = hooks(
        &reaper,
        HookEvent::WorkerAbort,
        action,
        Duration::from_secs(5),
    );
    let outcome = h
        .run(
            HookEvent::WorkerAbort,
            serde_json::json!({"worker": 3, "reason": "hung"}),
            None,
        )
        .await;
    assert_eq!(outcome, HookOutcome::Ok);
    let request = server.await.expect("server");
    assert!(
        request.starts_with("POST /hooks/curfew?x=1 HTTP/1.1\r\n"),
        "{request}"
    );
    let lower = request.to_ascii_lowercase();
    assert!(
        lower.contains("\r\nx-curfew-hook: worker_abort\r\n"),
        "{request}"
    );
    assert!(
        lower.contains("\r\ncontent-type: application/json\r\n"),
        "{request}"
    );
    let body = &request[request.find("\r\n\r\n").expect("end of headers") + 4..];
    let json: serde_json::Value = serde_json::from_str(body).expect("json body");
    assert_eq!(json["worker"], 3);
    assert_eq!(json["reason"], "hung");
    assert_eq!(json["event"], "worker_abort");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_error_status_fails() {
    let _serial = SERIAL.lock().await;
    let reaper = Reaper::start().expect("reaper");
    let (url, server) = one_shot_server("HTTP/1.1 500 Internal Server Error").await;
    let action = HookAction::parse(&url).expect("url");
    let h = hooks(&reaper, HookEvent::OnReload, action, Duration::from_secs(5));
    let outcome = h
        .run(HookEvent::OnReload, serde_json::json!({}), None)
        .await;
    assert_eq!(outcome, HookOutcome::Failed("HTTP 500".into()));
    let _ = server.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_that_never_answers_times_out() {
    let _serial = SERIAL.lock().await;
    let reaper = Reaper::start().expect("reaper");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s); // accept and never answer
        }
    });
    let action = HookAction::parse(&format!("http://{addr}/")).expect("url");
    let h = hooks(
        &reaper,
        HookEvent::OnExit,
        action,
        Duration::from_millis(300),
    );
    let t = Instant::now();
    let outcome = h.run(HookEvent::OnExit, serde_json::json!({}), None).await;
    assert_eq!(outcome, HookOutcome::TimedOut);
    assert!(
        t.elapsed() < Duration::from_millis(800),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_connection_refused_fails() {
    let _serial = SERIAL.lock().await;
    let reaper = Reaper::start().expect("reaper");
    // A port that was free a moment ago.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let action = HookAction::parse(&format!("http://127.0.0.1:{port}/")).expect("url");
    let h = hooks(&reaper, HookEvent::OnExit, action, Duration::from_secs(5));
    let t = Instant::now();
    match h.run(HookEvent::OnExit, serde_json::json!({}), None).await {
        HookOutcome::Failed(msg) => assert!(msg.contains("connect"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn parse_actions() {
    match HookAction::parse("http://127.0.0.1:9000/hook") {
        Ok(HookAction::Webhook(uri)) => assert_eq!(uri.path(), "/hook"),
        other => panic!("{other:?}"),
    }
    let err = HookAction::parse("https://hooks.example.com/x").expect_err("https");
    assert!(err.contains("TLS"), "{err}");
    assert_eq!(
        HookAction::parse(r#"/usr/local/bin/page --msg "curfew stopped" 'a b'"#),
        Ok(HookAction::Command(vec![
            "/usr/local/bin/page".into(),
            "--msg".into(),
            "curfew stopped".into(),
            "a b".into()
        ]))
    );
    assert!(HookAction::parse("").is_err());
}
