//! The phase handlers: starting (boot the workers, then serve), serving
//! (signals, control requests, operations deferred by a reload), lame-duck
//! (serve, not ready, for `drain_delay`), stopping (hand back jobs, stop the
//! workers) and the teardown after `stopped`. Draining is in `drain`.

use super::build::Bound;
use super::*;
use crate::events::ShutdownComplete;

/// Boots the workers; serves the listeners once every worker is ready (or
/// closes them when the boot failed or a stop came first).
pub(super) async fn starting(run: &mut Run, listeners: Bound) {
    run.hooks
        .run(
            HookEvent::OnStarting,
            serde_json::json!({ "workers": run.cfg.workers, "command": run.cfg.command.join(" ") }),
            None,
        )
        .await;
    let started = Instant::now();
    tracing::info!(
        workers = run.cfg.workers,
        command = %run.cfg.command.join(" "),
        worker_socket = run.cfg.worker_socket.as_str(),
        "Starting workers."
    );
    let mut boots = run.sup.start(run.cfg.workers);
    let mut ready = 0;
    while run.machine.phase() == Phase::Starting {
        tokio::select! {
            r = boots.recv() => match r {
                Some(Ok(_)) => {
                    ready += 1;
                    if ready == run.cfg.workers {
                        run.apply(Event::WorkersReady);
                    }
                }
                Some(Err(e)) => {
                    tracing::error!("{e}");
                    run.apply(Event::BootFailed);
                }
                None => {
                    tracing::error!("A worker slot ended without reporting its first boot (its task failed; see the ERROR above): stopping.");
                    run.apply(Event::BootFailed);
                }
            },
            sig = run.inputs.next_stop() => run.on_signal(sig),
        }
    }

    if run.machine.phase() == Phase::Serving {
        let names = listeners.names();
        run.front.serve(listeners.take());
        crate::events::Serving {
            listen: names.join(", "),
            workers: run.cfg.workers,
            boot_ms: started.elapsed().as_millis() as u64,
        }
        .emit(&run.sinks());
        run.notifier.ready(&run.status.line());
        if let Some(jobs) = &run.jobs {
            jobs.begin();
        }
        if let Some(successor) = run.successor.take() {
            take_over(run, successor);
        }
    }
    // Otherwise `listeners` drops here: closed after their accept queues
    // (and the copies kept for an upgrade with them).
    if run.machine.phase() != Phase::Serving {
        run.sockets = upgrade::Sockets::default();
    }
}

/// An upgrade's new curfew serves: report ready to the old one and, once
/// it answers, be the service (admin endpoint and control socket, stderr,
/// systemd's READY=1).
fn take_over(run: &mut Run, successor: upgrade::child::Successor) {
    let adopted = std::mem::take(&mut run.adopted);
    let (notifier, status, took_over, owns_files) = (
        run.notifier.clone(),
        run.status.clone(),
        run.took_over.clone(),
        run.owns_files.clone(),
    );
    tokio::spawn(async move {
        let from_pid = successor.from_pid;
        let acked = successor.take_over(adopted).await;
        // Only an acknowledged hand-over makes the socket files ours: a
        // channel closed unanswered may be the old curfew failing this one
        // while it serves on (then its files stay; a stale file left after
        // a predecessor that died is replaced at the next bind).
        if acked {
            crate::proxy::listener::own_adopted_files();
            owns_files.cancel();
        }
        took_over.cancel();
        notifier.set_muted(false);
        notifier.ready(&status.line());
        crate::events::Upgrade::TookOver { from_pid, acked }.emit();
    });
}

/// One input while serving: a stop signal, an operation (signal or control
/// request), an operation a reload deferred, or news of an upgrade.
pub(super) async fn serving(run: &mut Run) {
    if let Some(op) = run.deferred.next() {
        run_op(run, op).await;
        return;
    }
    tokio::select! {
        input = run.inputs.next() => match input {
            Input::Stop(sig) => run.on_signal(sig),
            Input::Op(op) => run_op(run, op).await,
        },
        p = upgrade::progress(&mut run.upgrade) => upgrade::on_progress(run, p),
    }
}

/// Not ready any more, still serving, until `drain_delay` after the first
/// stop request (a stop signal meanwhile may escalate; a repeated SIGTERM,
/// ignored, does not start the delay again: the deadline is computed once).
pub(super) async fn lame_duck(run: &mut Run) {
    let since = run
        .stop_requested_at
        .map_or_else(tokio::time::Instant::now, tokio::time::Instant::from_std);
    // A delay too long for the clock never ends (only a signal does).
    let until = since.checked_add(run.cfg.drain_delay);
    let elapsed = async move {
        match until {
            Some(t) => tokio::time::sleep_until(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = elapsed => { run.apply(Event::DrainDelayElapsed); }
        sig = run.next_stop() => run.on_signal(sig),
    }
}

/// Hands back what jobs still run, stops every worker (SIGTERM, SIGKILL
/// after `worker_stop_timeout`; at once after an escalation), then
/// `stopped`.
pub(super) async fn stopping(run: &mut Run) {
    // Closed already after a drain; after an immediate stop, the accept
    // loops close their listeners without accepting (waited for here).
    run.front.stop_accepting().await;
    // Whatever is still running (an immediate stop, a stop while
    // starting) is handed back before the workers go. The hand-back runs
    // once: after a drain that reported it, this gets the same report;
    // after an escalation cut the drain short, this reports it.
    if let Some(jobs) = run.jobs.clone() {
        let report = jobs
            // A command job's SIGKILL comes 2 s after its SIGTERM: time
            // for it to be gone before it is handed back.
            .finish(tokio::time::Instant::now() + std::time::Duration::from_secs(4))
            .await;
        if !run.jobs_reported {
            report_incomplete(run, &report);
            run.jobs_reported = true;
        }
    }
    let stop = run.sup.stop_all();
    tokio::pin!(stop);
    let outcome = loop {
        tokio::select! {
            o = &mut stop => break o,
            sig = run.next_stop() => {
                // Only an escalation matters now; apply() kills at once.
                if let Outcome::StopNow = run.machine.clone().handle(Event::Signal(sig)) {
                    run.apply(Event::Signal(sig));
                }
            }
        }
    };
    if outcome.forced {
        run.machine.mark_forced();
    }
    run.front.abort_all().await;
    run.apply(Event::WorkersStopped);
}

/// How long the teardown waits for the job store to close.
const STORE_CLOSE_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// What the hooks at the teardown get past the stop's own budget: the
/// platform's margin (`platform::MARGIN`), less the store's close after them.
const HOOK_MARGIN: std::time::Duration = crate::platform::MARGIN.saturating_sub(STORE_CLOSE_WITHIN);

/// After `stopped`: control socket and admin endpoint closed, `on_exit` run
/// within the shutdown's deadline, leftovers killed, the summary logged.
/// Returns the exit code.
pub(super) async fn teardown(mut run: Run) -> i32 {
    run.background.cancel();
    // Operations that raced the end are answered, not dropped at exit.
    while let Some(op) = run.inputs.pending_op() {
        run.answer_while_stopping(op).await;
    }
    // The admin endpoint closes its listener and removes its socket file
    // (unless an upgrade's new curfew has it) as it ends.
    if let Some(task) = run.admin_task.take() {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), task).await;
    }
    // Removed here, not (only) by the control task: the runtime may end
    // before that task runs again. Only by its owner: not after an upgrade
    // handed it over (`control_release`), and not by an upgrade's new
    // curfew the old one never acknowledged (it still serves the file).
    if run.owns_files.is_cancelled() && !run.control_release.is_cancelled() {
        let _ = std::fs::remove_file(&run.cfg.control_socket);
    }
    // on_exit, and any hook still running, end by the shutdown's deadline
    // (drain_delay + graceful_timeout + worker_stop_timeout after the stop
    // request, plus HOOK_MARGIN), never later: a hook cannot hold the
    // platform's stop timeout.
    let code = run.machine.exit_code();
    // A forced shutdown (drain expired, a worker SIGKILLed) reaches here
    // only after that, so the hooks also get the platform budget's margin,
    // less the store's close after them: an alert's on_exit still runs.
    let hook_deadline = run.stop_requested_at.map(|t| {
        use crate::config::duration::bounded;
        tokio::time::Instant::from_std(t)
            + bounded(run.cfg.drain_delay)
            + bounded(run.cfg.graceful_timeout)
            + bounded(run.cfg.worker_stop_timeout)
            + HOOK_MARGIN
    });
    let mut done = ShutdownComplete {
        signal: run.machine.stop_signal().map(|s| s.name()),
        duration_ms: None,
        requests_finished: 0,
        requests_aborted: run.aborted,
        exit_code: code,
    };
    run.hooks
        .run(HookEvent::OnExit, done.hook(), hook_deadline)
        .await;
    run.hooks
        .shutdown(
            hook_deadline
                .unwrap_or_else(|| tokio::time::Instant::now() + std::time::Duration::from_secs(1)),
        )
        .await;
    // An abandoned upgrade's new curfew (SIGTERMed with our stop request)
    // stops by itself first, by the hooks' deadline.
    upgrade::wait_abandoned(run.abandoned, hook_deadline).await;
    // Leftovers first: nothing below may keep them alive.
    let leftovers = run.reaper.kill_all_children().await;
    if leftovers > 0 {
        tracing::warn!(
            processes = leftovers,
            "Killed leftover child processes (started by workers and left behind)."
        );
    }
    if run.cfg.worker_socket.uses_run_dir() {
        let _ = std::fs::remove_dir_all(&run.run_dir);
    }
    // Every job write is done; the close only folds SQLite's WAL back and
    // ends the connections, which a reader of the file, a request still
    // holding a connection or an unreachable PostgreSQL can hold: bounded.
    if let Some(jobs) = &run.jobs
        && tokio::time::timeout(STORE_CLOSE_WITHIN, jobs.close())
            .await
            .is_err()
    {
        tracing::warn!(
            within_ms = STORE_CLOSE_WITHIN.as_millis() as u64,
            "The job store did not close in time (a connection still busy); exiting without waiting for it."
        );
    }

    if let Some(log) = run.front.access_log() {
        log.close();
    }
    // The summary counts up to here (hooks and leftovers included).
    done.duration_ms = run
        .stop_requested_at
        .map(|t| t.elapsed().as_millis() as u64);
    // A request cut off at graceful_timeout gives back its slot too: it is
    // counted as aborted, not as finished.
    done.requests_finished = run
        .front
        .router
        .completed()
        .saturating_sub(run.completed_at_stop)
        .saturating_sub(run.aborted as u64);
    done.emit();
    code
}
