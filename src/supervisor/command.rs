//! Running a short-lived command to completion, the way curfew runs all of
//! its children (used by the lifecycle hooks and the background jobs).
//!
//! - The command is spawned with `std::process::Command` under the reaper's
//!   table lock (only [`Reaper`] waits for children; see
//!   [`super::reaper`]), in its own process group, so stopping it also stops
//!   whatever it started.
//! - The [`CommandSpec::stdin`] bytes are written to its stdin in the
//!   background (the command may never read them), then stdin is closed.
//! - Its stdout and stderr are read line by line (lines longer than
//!   [`MAX_LINE`] are cut) and grouped into events with a level like a
//!   worker's (a traceback is one event), each handed to [`CommandSpec::log`];
//!   the last non-empty stderr line is kept for the outcome.
//! - It runs until it exits (the reaper delivers its status) or the `stop`
//!   future resolves: then its whole process group is SIGKILLed
//!   ([`run`]), or SIGTERMed and SIGKILLed after a grace period
//!   ([`run_graceful`]), and its reaping is awaited briefly ([`REAP_GRACE`]).
//!
//! Nothing here panics or fails the caller: every end is a
//! [`CommandOutcome`].

use std::future::Future;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::reaper::{ExitStatus, Reaper};

/// How long a killed command's exit status is awaited (so no zombie lingers
/// when the reaper is quick, without delaying the caller when it is not).
pub const REAP_GRACE: Duration = Duration::from_millis(100);
/// How long the output readers of an exited command may take to reach EOF
/// (so its last stderr line is known for the outcome).
const OUTPUT_GRACE: Duration = Duration::from_millis(100);
/// Longest output line handed to the [`LineLogger`]; the rest is cut.
pub const MAX_LINE: usize = super::output::MAX_LINE;

/// How each output event of the command is logged: called with (pid,
/// stream ("stdout"|"stderr"), the event: a line or a traceback, with its
/// level; see [`super::output::lines`]). Log it with
/// [`super::output::at_level`] and the block as
/// [`super::output::OneLine`].
pub type LineLogger =
    std::sync::Arc<dyn Fn(u32, &'static str, &super::output::lines::Event) + Send + Sync>;

/// What to run, and how.
pub struct CommandSpec<'a> {
    /// The program and its arguments (no shell unless the program is one).
    pub argv: &'a [String],
    /// Variables added to curfew's own environment.
    pub env: Vec<(String, String)>,
    /// Written to the command's stdin, then stdin is closed.
    pub stdin: Vec<u8>,
    /// Working directory; None = curfew's.
    pub cwd: Option<&'a std::path::Path>,
    /// Called for every line the command writes (without the line end; a
    /// trailing `\r` is removed and invalid UTF-8 replaced).
    pub log: LineLogger,
}

/// How a [`run`] ended.
#[derive(Debug)]
pub enum CommandOutcome {
    /// It exited (any code or signal); with the last non-empty stderr line.
    Exited {
        status: crate::supervisor::reaper::ExitStatus,
        last_stderr: Option<String>,
    },
    /// `stop` resolved first: the process group was SIGKILLed.
    Stopped,
    /// It could not be started (message names the program and the OS error).
    SpawnFailed(String),
    /// The reaper lost its exit status.
    Lost,
}

/// Aborts a background task when dropped (also when the owning future is).
pub(crate) struct AbortOnDrop<T>(pub(crate) JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the command until it exits or `stop` resolves (then kills its process group).
///
/// On `stop`, the group is SIGKILLed at once and the command's reaping is
/// awaited for at most [`REAP_GRACE`] (the reaper reaps it later otherwise).
/// After an exit, its output readers get a moment to reach EOF; they keep
/// running in the background (until EOF) if a child it left behind still
/// holds the pipes.
pub async fn run(
    reaper: &Reaper,
    spec: CommandSpec<'_>,
    stop: impl std::future::Future<Output = ()>,
) -> CommandOutcome {
    run_with(reaper, spec, stop, None).await
}

/// Same as [`run`], but on `stop` the process group gets SIGTERM first and
/// SIGKILL only after `grace` if the command has not exited by then (its
/// group is SIGKILLed anyway once it has exited, so nothing it started is
/// left behind). Either way the outcome is [`CommandOutcome::Stopped`].
pub async fn run_graceful(
    reaper: &Reaper,
    spec: CommandSpec<'_>,
    stop: impl std::future::Future<Output = ()>,
    grace: Duration,
) -> CommandOutcome {
    run_with(reaper, spec, stop, Some(grace)).await
}

/// A started command: its pid (= its process group id), its exit status to
/// come, and its pipes.
struct Started {
    pid: u32,
    exit: oneshot::Receiver<ExitStatus>,
    stdin: Option<std::process::ChildStdin>,
    stdout: Option<std::process::ChildStdout>,
    stderr: Option<std::process::ChildStderr>,
}

/// Spawn `spec`'s command under the reaper's lock, registered with it. Not
/// async: the lock (not `Send`) can never be held across an await.
fn start(reaper: &Reaper, spec: &CommandSpec<'_>) -> Result<Started, String> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err("empty command".into());
    };
    let mut cmd = Command::new(program);
    cmd.args(args);
    // systemd's notify socket, watchdog and passed sockets are curfew's alone.
    cmd.env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID");
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = spec.cwd {
        cmd.current_dir(dir);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Its own process group, so a stop kills the command and its children.
    cmd.process_group(0);
    // No `pre_exec` (PDEATHSIG, the original open-file limit, as workers
    // get): it makes std fork the whole process instead of using
    // posix_spawn, which measured 2.5x the CPU per command job (jobs_bench,
    // `command true` per job: 1.39 → 3.46 CPU s per 1,000 jobs). A SIGKILLed
    // curfew's commands are left to the cgroup (systemd, a container).

    let registration = reaper.lock();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {program:?}: {e}"))?;
    let pid = child.id();
    let exit = registration.register(pid);
    let started = Started {
        pid,
        exit,
        stdin: child.stdin.take(),
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
    };
    // `child` is dropped without waiting: the reaper owns its exit status.
    drop(child);
    Ok(started)
}

async fn run_with(
    reaper: &Reaper,
    spec: CommandSpec<'_>,
    stop: impl Future<Output = ()>,
    grace: Option<Duration>,
) -> CommandOutcome {
    let Started {
        pid,
        mut exit,
        stdin,
        stdout,
        stderr,
    } = match start(reaper, &spec) {
        Ok(s) => s,
        Err(e) => return CommandOutcome::SpawnFailed(e),
    };
    let CommandSpec {
        stdin: input, log, ..
    } = spec;

    // The command may never read stdin: the write runs on its own and is
    // abandoned (closing the pipe) when the run ends. With nothing to write,
    // stdin is closed at once.
    let _writer = match stdin {
        Some(s) if !input.is_empty() => {
            pipe::Sender::from_owned_fd(OwnedFd::from(s))
                .ok()
                .map(|mut tx| {
                    AbortOnDrop(tokio::spawn(async move {
                        let _ = tx.write_all(&input).await;
                    }))
                })
        }
        _ => None,
    };
    let last_stderr: Arc<Mutex<Option<String>>> = Arc::default();
    let out_reader = stdout
        .and_then(|s| pipe::Receiver::from_owned_fd(OwnedFd::from(s)).ok())
        .map(|rx| relog(rx, pid, "stdout", log.clone(), None));
    let err_reader = stderr
        .and_then(|s| pipe::Receiver::from_owned_fd(OwnedFd::from(s)).ok())
        .map(|rx| relog(rx, pid, "stderr", log, Some(last_stderr.clone())));

    // Until the command is known to be gone, dropping this run (its owner
    // gave up on it: a runtime shutting down, a select that moved on) kills
    // the whole group: no command outlives the run that started it.
    let mut orphan_guard = KillOnDrop(Some(pid));
    let status = tokio::select! {
        status = &mut exit => Some(status),
        () = stop => None,
    };
    match status {
        Some(Ok(status)) => {
            // The leader was reaped: its pid (the group's id) may be reused.
            orphan_guard.0 = None;
            finish_output(out_reader, err_reader).await;
            let last_stderr = last_stderr.lock().unwrap_or_else(|e| e.into_inner()).take();
            CommandOutcome::Exited {
                status,
                last_stderr,
            }
        }
        Some(Err(_)) => {
            orphan_guard.0 = None;
            CommandOutcome::Lost
        }
        None => {
            stop_group(pid, exit, grace).await;
            orphan_guard.0 = None;
            CommandOutcome::Stopped
        }
    }
}

/// SIGKILLs the process group of a command whose run was dropped before
/// the command was known to be gone (`None`: nothing to do).
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // A pid fits in an i32 (pid_max is at most 2^22). The reaper
            // reaps the leader; whatever else is in its group dies with it.
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Stop the process group led by `pid`: SIGTERM and up to `grace` for the
/// leader to exit first if there is a grace period, then SIGKILL, then up to
/// [`REAP_GRACE`] for the leader's reaping.
async fn stop_group(pid: u32, mut exit: oneshot::Receiver<ExitStatus>, grace: Option<Duration>) {
    // The command leads its own process group (`process_group(0)`); a pid
    // fits in an i32 (pid_max is at most 2^22).
    let group = Pid::from_raw(pid as i32);
    if let Some(grace) = grace {
        let _ = killpg(group, Signal::SIGTERM);
        if tokio::time::timeout(grace, &mut exit).await.is_ok() {
            // The leader is gone; kill whatever it left in its group.
            let _ = killpg(group, Signal::SIGKILL);
            return;
        }
    }
    let _ = killpg(group, Signal::SIGKILL);
    if tokio::time::timeout(REAP_GRACE, exit).await.is_err() {
        tracing::debug!(pid, "Killed command not reaped yet; the reaper will.");
    }
}

/// Give the output readers a moment to reach EOF; they keep running (until
/// EOF) if a background child of the command still holds the pipes.
async fn finish_output(out: Option<JoinHandle<()>>, err: Option<JoinHandle<()>>) {
    let _ = tokio::time::timeout(OUTPUT_GRACE, async {
        if let Some(h) = out {
            let _ = h.await;
        }
        if let Some(h) = err {
            let _ = h.await;
        }
    })
    .await;
}

/// Hand each event read from `rx` (its lines grouped and given a level by
/// [`super::output::lines`], cut at [`MAX_LINE`]) to `log`, keeping the
/// last non-empty line in `last`.
fn relog(
    rx: pipe::Receiver,
    pid: u32,
    stream: &'static str,
    log: LineLogger,
    last: Option<Arc<Mutex<Option<String>>>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        super::output::read_events(
            rx,
            |line| {
                if let Some(last) = &last
                    && !line.trim().is_empty()
                {
                    *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(line.to_owned());
                }
            },
            |ev| log(pid, stream, &ev),
            || false,
            || {},
        )
        .await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type Lines = Arc<Mutex<Vec<(u32, &'static str, String)>>>;

    fn collector() -> (LineLogger, Lines) {
        let lines: Lines = Arc::default();
        let l = lines.clone();
        let log: LineLogger = Arc::new(move |pid, stream, ev| {
            l.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((pid, stream, ev.message.clone()));
        });
        (log, lines)
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    fn spec<'a>(argv: &'a [String], log: LineLogger) -> CommandSpec<'a> {
        CommandSpec {
            argv,
            env: Vec::new(),
            stdin: Vec::new(),
            cwd: None,
            log,
        }
    }

    /// Whether process group `pgid` has a live member (zombies don't count).
    fn group_alive(pgid: i32) -> bool {
        crate::supervisor::procfs::all()
            .iter()
            .any(|p| p.pgrp == pgid && p.state != 'Z')
    }

    async fn read_pid(path: &std::path::Path) -> i32 {
        for _ in 0..200 {
            if let Ok(s) = std::fs::read_to_string(path)
                && let Ok(pid) = s.trim().parse()
            {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no pid written to {}", path.display());
    }

    async fn group_gone(pgid: i32) -> bool {
        for _ in 0..200 {
            if !group_alive(pgid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[test]
    fn run_future_is_send() {
        fn assert_send<T: Send>(_: T) {}
        let reaper = Reaper::default();
        let argv = vec!["true".to_string()];
        let (log, _) = collector();
        // Built, never polled: this only has to compile.
        assert_send(run(
            &reaper,
            spec(&argv, log.clone()),
            std::future::pending(),
        ));
        assert_send(run_graceful(
            &reaper,
            spec(&argv, log),
            std::future::pending(),
            Duration::from_secs(1),
        ));
    }

    #[tokio::test]
    async fn lines_are_split_cut_and_the_last_stderr_kept() {
        let (tx, rx) = pipe::pipe().expect("a pipe");
        let (log, lines) = collector();
        let last: Arc<Mutex<Option<String>>> = Arc::default();
        let reader = relog(rx, 7, "stderr", log, Some(last.clone()));
        let mut tx = tx;
        let long = "x".repeat(MAX_LINE + 10);
        let text = format!("one\r\n\n{long}\nlast words\n  \ntail");
        tx.write_all(text.as_bytes()).await.expect("written");
        drop(tx);
        reader.await.expect("reader ends at EOF");
        let got = lines.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let texts: Vec<&str> = got.iter().map(|(_, _, t)| t.as_str()).collect();
        let cut = format!("{} [line truncated]", &long[..MAX_LINE]);
        // Blank lines carry nothing and are not logged.
        assert_eq!(texts, ["one", &cut, "last words", "tail"]);
        assert!(got.iter().all(|(pid, s, _)| *pid == 7 && *s == "stderr"));
        assert_eq!(
            last.lock().unwrap_or_else(|e| e.into_inner()).as_deref(),
            Some("tail")
        );
    }

    #[tokio::test]
    async fn exit_with_output_stdin_env_and_cwd() {
        let _serial = crate::supervisor::reaper::TEST_CHILDREN.lock().await;
        let reaper = Reaper::start().expect("reaper");
        let dir = tempfile::tempdir().expect("tempdir");
        let argv = sh("read line; echo \"got $line in $(pwd) with $FOO\"; \
                       echo oops >&2; echo '  ' >&2; exit 3");
        let (log, lines) = collector();
        let mut s = spec(&argv, log);
        s.stdin = b"input\n".to_vec();
        s.env = vec![("FOO".into(), "bar".into())];
        s.cwd = Some(dir.path());
        let outcome = run(&reaper, s, std::future::pending()).await;
        match outcome {
            CommandOutcome::Exited {
                status: ExitStatus::Code(3),
                last_stderr: Some(line),
            } => assert_eq!(line, "oops"),
            other => panic!("{other:?}"),
        }
        let got = lines.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let cwd = dir.path().canonicalize().expect("canonical tempdir");
        assert!(
            got.iter().any(|(_, s, t)| *s == "stdout"
                && *t == format!("got input in {} with bar", cwd.display())),
            "{got:?}"
        );
    }

    /// A command job's Python traceback is one ERROR event, like a worker's.
    #[tokio::test]
    async fn a_traceback_is_one_event_with_its_level() {
        let _serial = crate::supervisor::reaper::TEST_CHILDREN.lock().await;
        let reaper = Reaper::start().expect("reaper");
        let argv = vec![
            "python3".to_owned(),
            "-c".to_owned(),
            "import sys; print('WARNING:root:retrying', file=sys.stderr); print('giving up', file=sys.stderr, flush=True); raise KeyError('x')"
                .to_owned(),
        ];
        let events: Arc<Mutex<Vec<super::super::output::lines::Event>>> = Arc::default();
        let e = events.clone();
        let log: LineLogger = Arc::new(move |_, _, ev| {
            e.lock().unwrap_or_else(|p| p.into_inner()).push(ev.clone());
        });
        let outcome = run(&reaper, spec(&argv, log), std::future::pending()).await;
        match outcome {
            CommandOutcome::Exited {
                status: ExitStatus::Code(1),
                last_stderr: Some(line),
            } => assert_eq!(line, "KeyError: 'x'"),
            other => panic!("{other:?}"),
        }
        let got = events.lock().unwrap_or_else(|p| p.into_inner()).clone();
        use super::super::output::Level;
        let levels: Vec<(Level, &str)> =
            got.iter().map(|e| (e.level, e.message.as_str())).collect();
        assert_eq!(
            levels,
            [
                (Level::Warn, "WARNING:root:retrying"),
                // The line before a traceback is its header.
                (Level::Error, "giving up (KeyError: 'x')")
            ],
            "{got:?}"
        );
        assert!(
            got[1]
                .block
                .as_deref()
                .is_some_and(|b| b.contains("File \"<string>\""))
        );
    }

    #[tokio::test]
    async fn spawn_failures_and_empty_commands() {
        let _serial = crate::supervisor::reaper::TEST_CHILDREN.lock().await;
        let reaper = Reaper::start().expect("reaper");
        let (log, _) = collector();
        let argv = vec!["/nonexistent/curfew-no-such-program".to_string()];
        match run(&reaper, spec(&argv, log.clone()), std::future::pending()).await {
            CommandOutcome::SpawnFailed(e) => {
                assert!(e.contains("curfew-no-such-program"), "{e}");
                assert!(e.contains("No such file"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        match run(&reaper, spec(&[], log), std::future::pending()).await {
            CommandOutcome::SpawnFailed(e) => assert_eq!(e, "empty command"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn stop_kills_the_whole_group() {
        let _serial = crate::supervisor::reaper::TEST_CHILDREN.lock().await;
        let reaper = Reaper::start().expect("reaper");
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pid");
        let argv = sh(&format!(
            "trap '' TERM; echo $$ > '{}'; sleep 60 & sleep 60",
            pidfile.display()
        ));
        let (log, _) = collector();
        let started = std::time::Instant::now();
        let outcome = run(
            &reaper,
            spec(&argv, log),
            tokio::time::sleep(Duration::from_millis(300)),
        )
        .await;
        assert!(matches!(outcome, CommandOutcome::Stopped), "{outcome:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let pgid = read_pid(&pidfile).await;
        assert!(group_gone(pgid).await, "group {pgid} still alive");
    }

    #[tokio::test]
    async fn graceful_stop_terms_then_kills() {
        let _serial = crate::supervisor::reaper::TEST_CHILDREN.lock().await;
        let reaper = Reaper::start().expect("reaper");
        let dir = tempfile::tempdir().expect("tempdir");

        // Exits on SIGTERM, leaving a child (which ignores it) behind.
        let pidfile = dir.path().join("pid1");
        let argv = sh(&format!(
            "echo $$ > '{}'; (trap '' TERM; sleep 60) & trap 'echo bye; exit 0' TERM; \
             while :; do sleep 0.05; done",
            pidfile.display()
        ));
        let (log, lines) = collector();
        let started = std::time::Instant::now();
        let outcome = run_graceful(
            &reaper,
            spec(&argv, log),
            tokio::time::sleep(Duration::from_millis(300)),
            Duration::from_secs(10),
        )
        .await;
        assert!(matches!(outcome, CommandOutcome::Stopped), "{outcome:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "waited the grace"
        );
        let pgid = read_pid(&pidfile).await;
        assert!(group_gone(pgid).await, "group {pgid} still alive");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = lines.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert!(got.iter().any(|(_, _, t)| t == "bye"), "{got:?}");

        // Ignores SIGTERM: killed after the grace period.
        let pidfile = dir.path().join("pid2");
        let argv = sh(&format!(
            "trap '' TERM; echo $$ > '{}'; sleep 60",
            pidfile.display()
        ));
        let (log, _) = collector();
        let started = std::time::Instant::now();
        let outcome = run_graceful(
            &reaper,
            spec(&argv, log),
            tokio::time::sleep(Duration::from_millis(300)),
            Duration::from_millis(300),
        )
        .await;
        assert!(matches!(outcome, CommandOutcome::Stopped), "{outcome:?}");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(550), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        let pgid = read_pid(&pidfile).await;
        assert!(group_gone(pgid).await, "group {pgid} still alive");
    }

    #[tokio::test]
    async fn a_dropped_run_kills_its_group() {
        let _serial = crate::supervisor::reaper::TEST_CHILDREN.lock().await;
        let reaper = Reaper::start().expect("reaper");
        let dir = tempfile::tempdir().expect("tempdir");

        // Dropped while the command runs (a select that moved on).
        let pidfile = dir.path().join("pid1");
        let argv = sh(&format!(
            "echo $$ > '{}'; sleep 60 & sleep 60",
            pidfile.display()
        ));
        let (log, _) = collector();
        let mut run = Box::pin(run_graceful(
            &reaper,
            spec(&argv, log),
            std::future::pending(),
            Duration::from_secs(10),
        ));
        tokio::select! {
            outcome = &mut run => panic!("the command ended by itself: {outcome:?}"),
            pgid = read_pid(&pidfile) => {
                assert!(group_alive(pgid), "group {pgid} runs");
            }
        }
        drop(run);
        let pgid = read_pid(&pidfile).await;
        assert!(group_gone(pgid).await, "group {pgid} outlived its run");

        // Dropped during the grace after its SIGTERM (which it ignores).
        let pidfile = dir.path().join("pid2");
        let argv = sh(&format!(
            "trap '' TERM; echo $$ > '{}'; sleep 60",
            pidfile.display()
        ));
        let (log, _) = collector();
        let run = run_graceful(
            &reaper,
            spec(&argv, log),
            tokio::time::sleep(Duration::from_millis(300)),
            Duration::from_secs(30),
        );
        let outcome = tokio::time::timeout(Duration::from_millis(1500), run).await;
        assert!(outcome.is_err(), "still in its grace: {outcome:?}");
        let pgid = read_pid(&pidfile).await;
        assert!(group_gone(pgid).await, "group {pgid} outlived its run");
    }
}
