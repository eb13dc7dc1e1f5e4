//! The supervisor with real worker processes (`sleep`) and a fake HTTP side:
//! what a slot does when its worker dies in each of its states (issue 15).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::reaper::{Reaper, TEST_CHILDREN};
use super::{Backends, BoxFuture, ReadyWorker, Supervisor, WorkerAddr, WorkerSpec};
use crate::config::WorkerSocket;
use crate::metrics::Metrics;

/// The HTTP side, played by the test: which workers are routed, which new
/// ones may become ready, whether drains end.
#[derive(Default)]
struct Fake {
    routed: Mutex<Vec<ReadyWorker>>,
    /// Addresses that answered the readiness probe once.
    ready: Mutex<HashSet<WorkerAddr>>,
    /// While set, new workers with this argument (any, if empty) do not
    /// become ready.
    hold_boots: Mutex<Option<&'static str>>,
    /// While set, drains do not end.
    hold_drains: AtomicBool,
}

impl Fake {
    fn routed(&self) -> Vec<ReadyWorker> {
        self.routed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn hold(&self, arg: Option<&'static str>) {
        *self.hold_boots.lock().unwrap_or_else(|e| e.into_inner()) = arg;
    }

    fn held(&self, addr: &WorkerAddr) -> bool {
        let hold = *self.hold_boots.lock().unwrap_or_else(|e| e.into_inner());
        match (hold, addr) {
            (None, _) => false,
            (Some(""), _) => true,
            (Some(arg), WorkerAddr::Tcp(a)) => pid_on_port(a.port()).is_some_and(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| c.split(|b| *b == 0).any(|x| x == arg.as_bytes()))
                    .unwrap_or(false)
            }),
            (Some(_), WorkerAddr::Unix(_)) => false,
        }
    }
}

impl Backends for Fake {
    fn probe(&self, addr: WorkerAddr) -> BoxFuture<'static, Result<(), String>> {
        let held = self.held(&addr);
        let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        let r = if ready.contains(&addr) || !held {
            ready.insert(addr);
            Ok(())
        } else {
            Err("held by the test".to_string())
        };
        Box::pin(async move { r })
    }

    fn liveness(
        &self,
        _addr: WorkerAddr,
        _path: String,
        _timeout: Duration,
    ) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn add(&self, worker: ReadyWorker) {
        self.routed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(worker);
    }

    fn remove(&self, uid: u64) {
        self.routed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|w| w.uid != uid);
    }

    fn requests_on(&self, _uid: u64) -> Vec<String> {
        Vec::new()
    }

    fn drained(&self, _uid: u64, timeout: Duration) -> BoxFuture<'static, bool> {
        let held = self.hold_drains.load(Ordering::SeqCst);
        Box::pin(async move {
            if held {
                tokio::time::sleep(timeout).await;
                false
            } else {
                true
            }
        })
    }
}

struct Setup {
    sup: Supervisor,
    fake: Arc<Fake>,
    metrics: Arc<Metrics>,
    /// worker_exit / worker_abort events: (name, pid, reason).
    events: Arc<Mutex<Vec<(String, i64, String)>>>,
    _dir: tempfile::TempDir,
}

/// Workers of the first generation run `sleep 600`; a reload's, `sleep 601`
/// (so the fake can hold one and not the other).
fn spec(dir: &std::path::Path) -> WorkerSpec {
    spec_of(dir, "600")
}

fn spec_of(dir: &std::path::Path, secs: &str) -> WorkerSpec {
    WorkerSpec {
        command: vec!["sleep".into(), secs.into()],
        // `sleep` binds nothing; the fake probe does not connect.
        socket: WorkerSocket::Port,
        chdir: None,
        boot_timeout: Duration::from_secs(10),
        stop_timeout: Duration::from_secs(2),
        graceful_timeout: Duration::from_secs(10),
        abort_timeout: Duration::from_secs(1),
        faulthandler: false,
        max_requests: None,
        max_requests_jitter: 0,
        max_memory: None,
        liveness: None,
        run_dir: dir.to_path_buf(),
        generation: 1,
        extra_env: Vec::new(),
        worker_log_level: Some(crate::logging::Level::Debug),
    }
}

async fn setup(workers: usize) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(Fake::default());
    let metrics = Arc::new(Metrics::new());
    let sup = Supervisor::new(
        Reaper::start().expect("reaper"),
        spec(dir.path()),
        fake.clone(),
        metrics.clone(),
    );
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    sup.set_hooks(Box::new(
        move |event: crate::config::hooks::HookEvent, details: serde_json::Value| {
            e.lock().unwrap_or_else(|e| e.into_inner()).push((
                event.as_str().to_string(),
                details["pid"].as_i64().unwrap_or(0),
                details["reason"].as_str().unwrap_or("").to_string(),
            ));
        },
    ));
    let mut s = Setup {
        sup,
        fake,
        metrics,
        events,
        _dir: dir,
    };
    let mut boots = s.sup.start(workers);
    for _ in 0..workers {
        boots.recv().await.expect("a boot").expect("booted");
    }
    s
}

impl Setup {
    fn exits(&self, reason: &str) -> f64 {
        let text = self.metrics.encode(&Default::default());
        let prefix = format!("curfew_worker_exits_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    fn events(&self) -> Vec<(String, i64, String)> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn stop(mut self) {
        let outcome = self.sup.stop_all().await;
        assert!(!outcome.forced);
    }
}

/// Poll `f` every 5 ms for up to 5 s.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

fn sigkill(pid: u32) {
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill");
}

/// The child of this process (a worker) with `PORT` = `port`.
fn pid_on_port(port: u16) -> Option<u32> {
    let me = std::process::id() as i32;
    super::procfs::all()
        .into_iter()
        .filter(|p| p.ppid == me && p.state != 'Z')
        .find(|p| {
            std::fs::read(format!("/proc/{}/environ", p.pid))
                .map(|env| {
                    env.split(|b| *b == 0)
                        .any(|kv| kv == format!("PORT={port}").as_bytes())
                })
                .unwrap_or(false)
        })
        .map(|p| p.pid as u32)
}

/// The only worker dies while a reload's new one boots: it leaves routing at
/// once, the slot restarts its own generation at once (the new one is not
/// routed before `go`), and on `go` the new generation takes over. The death
/// is one `worker_exit` (an external kill), nothing "stopped by curfew".
#[tokio::test]
async fn death_while_a_reload_prepares_restarts_the_old_generation_meanwhile() {
    let _children = TEST_CHILDREN.lock().await;
    let mut s = setup(1).await;
    let first = s.fake.routed()[0].clone();
    s.fake.hold(Some("601"));
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = s.fake.clone();
    let (reloaded, ()) = tokio::join!(s.sup.reload(spec_of(dir.path(), "601"), 1), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sigkill(first.pid);
        until("the dead worker to leave routing", || {
            fake.routed().iter().all(|w| w.uid != first.uid)
        })
        .await;
        until("a restarted worker of generation 1", || {
            fake.routed().iter().any(|w| w.generation == 1)
        })
        .await;
        // ... routed while the reload's worker still boots.
        assert!(fake.routed().iter().all(|w| w.generation == 1));
        fake.hold(None);
    });
    assert_eq!(reloaded.expect("reload"), 2);
    let routed = s.fake.routed();
    assert_eq!(routed.len(), 1);
    assert_eq!(routed[0].generation, 2);
    assert_eq!(routed[0].restarts, 1);
    until("the restarted worker to be stopped", || {
        s.exits("reload") == 1.0
    })
    .await;
    assert_eq!(
        s.events(),
        vec![(
            "worker_exit".to_string(),
            i64::from(first.pid),
            "oom_or_external_kill".to_string()
        )]
    );
    assert_eq!(s.exits("oom_or_external_kill"), 1.0);
    assert_eq!(s.exits("stopped"), 0.0);
    s.stop().await;
}

/// A reload's new worker dies after it reported ready, before `go`: the slot
/// boots another of the same generation, and the reload still switches to
/// it (done only once it is routed).
#[tokio::test]
async fn a_prepared_worker_that_dies_before_go_is_booted_again() {
    let _children = TEST_CHILDREN.lock().await;
    let mut s = setup(2).await;
    let old: Vec<u64> = s.fake.routed().iter().map(|w| w.uid).collect();
    let known: HashSet<WorkerAddr> = s
        .fake
        .ready
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // Slot 0's new worker becomes ready; slot 1's is held, so the batch
    // waits for `go` with slot 0's new worker prepared.
    s.fake.hold(Some("601"));
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = s.fake.clone();
    let (reloaded, ()) = tokio::join!(s.sup.reload(spec_of(dir.path(), "601"), 2), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Let exactly one new worker through, then kill it.
        let new_addr = {
            let mut ready = fake.ready.lock().unwrap_or_else(|e| e.into_inner());
            let Some(addr) = pending_addr(&known) else {
                panic!("no new worker started");
            };
            ready.insert(addr.clone());
            addr
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let WorkerAddr::Tcp(a) = &new_addr else {
            panic!("port mode")
        };
        let pid = pid_on_port(a.port()).expect("the prepared worker");
        sigkill(pid);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            fake.routed().iter().all(|w| w.generation == 1),
            "nothing of the reload is routed before go"
        );
        fake.hold(None);
    });
    assert_eq!(reloaded.expect("reload"), 2);
    let routed = s.fake.routed();
    assert_eq!(routed.len(), 2, "{routed:?}");
    assert!(
        routed
            .iter()
            .all(|w| w.generation == 2 && !old.contains(&w.uid))
    );
    let events = s.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].2, "oom_or_external_kill");
    s.stop().await;
}

/// Addresses of workers started but never probed ready: the ones a test
/// holds. (Only the probe knows addresses; the fake records ready ones.)
fn pending_addr(known: &HashSet<WorkerAddr>) -> Option<WorkerAddr> {
    let me = std::process::id() as i32;
    super::procfs::all()
        .into_iter()
        .filter(|p| p.ppid == me && p.state != 'Z')
        .filter_map(|p| {
            let env = std::fs::read(format!("/proc/{}/environ", p.pid)).ok()?;
            let port = env
                .split(|b| *b == 0)
                .find_map(|kv| kv.strip_prefix(b"PORT="))
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u16>().ok())?;
            Some(WorkerAddr::Tcp(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                port,
            ))))
        })
        .find(|a| !known.contains(a))
}

/// Workers killed while they drain (after a reload, after a scale-down)
/// are reported as the external kills they are, once; never as stopped.
#[tokio::test]
async fn deaths_while_draining_are_not_stops() {
    let _children = TEST_CHILDREN.lock().await;
    let mut s = setup(2).await;
    let before = s.fake.routed();
    s.fake.hold_drains.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(s.sup.reload(spec(dir.path()), 2).await.expect("reload"), 2);
    for w in &before {
        sigkill(w.pid);
    }
    until("both deaths reported", || s.events().len() == 2).await;
    // Scale down: the leaving worker drains (held) and is killed.
    let leaving = s
        .fake
        .routed()
        .into_iter()
        .max_by_key(|w| w.id)
        .expect("a worker");
    s.sup.scale(1);
    until("the leaving worker to leave routing", || {
        s.fake.routed().len() == 1
    })
    .await;
    sigkill(leaving.pid);
    until("the third death reported", || s.events().len() == 3).await;
    let mut pids: Vec<i64> = s.events().iter().map(|e| e.1).collect();
    pids.sort_unstable();
    let mut want: Vec<i64> = before
        .iter()
        .chain([&leaving])
        .map(|w| i64::from(w.pid))
        .collect();
    want.sort_unstable();
    assert_eq!(pids, want);
    assert!(s.events().iter().all(|e| e.2 == "oom_or_external_kill"));
    assert_eq!(s.exits("reload"), 0.0);
    assert_eq!(s.exits("stopped"), 0.0);
    s.fake.hold_drains.store(false, Ordering::SeqCst);
    s.stop().await;
}

/// A recycle asked for while a reload prepares is merged into it (the
/// reload replaces the worker anyway); a reload supersedes a recycle.
#[tokio::test]
async fn a_recycle_during_a_reload_is_merged() {
    let _children = TEST_CHILDREN.lock().await;
    let mut s = setup(1).await;
    let first = s.fake.routed()[0].clone();
    s.fake.hold(Some(""));
    // A recycle under way (held), then a reload supersedes it.
    s.sup.handle().recycle(first.uid, "test".into());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let handle = s.sup.handle();
    let fake = s.fake.clone();
    let (reloaded, ()) = tokio::join!(s.sup.reload(spec(dir.path()), 1), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        handle.recycle(first.uid, "again".into());
        tokio::time::sleep(Duration::from_millis(100)).await;
        fake.hold(None);
    });
    assert_eq!(reloaded.expect("reload"), 2);
    let routed = s.fake.routed();
    assert_eq!(routed.len(), 1);
    assert_eq!(routed[0].generation, 2);
    until("the old worker and the cancelled boot to stop", || {
        s.exits("reload") == 1.0 && s.exits("stopped") == 1.0
    })
    .await;
    assert!(s.events().is_empty(), "{:?}", s.events());
    s.stop().await;
}
