//! What an operator asks of a running curfew: control signals (HUP, TTIN,
//! TTOU, USR1, USR2) and control-socket requests (reload, scale, upgrade,
//! stop), the
//! reload itself, and the operations that wait for a reload to end.

use super::report::log_status;
use super::*;
use crate::events::ReloadFinished;
use crate::protocol::jobs::JobsRequest;

/// SIGTTIN / SIGTTOU: one worker more or fewer (never fewer than one, nor
/// more than the 1024 that `workers` and `curfew scale` allow).
pub(super) fn scale_by_one(run: &mut Run, up: bool) {
    let from = run.sup.workers();
    let to = if up {
        (from + 1).min(crate::config::defaults::MAX_WORKERS)
    } else {
        from.saturating_sub(1).max(1)
    };
    if to == from {
        if up {
            tracing::info!(
                workers = from,
                "Already at the most workers allowed (1024); not scaling up."
            );
        } else {
            tracing::info!(workers = from, "Already at one worker; not scaling down.");
        }
        return;
    }
    tracing::info!(from, to, "Scaling workers.");
    scale_to(run, to);
}

/// Scales to `to` workers. `run.cfg.workers` stays the configured number,
/// so a later reload changes the count only when the file's does.
pub(super) fn scale_to(run: &mut Run, to: usize) {
    run.sup.scale(to);
    run.status
        .workers_wanted
        .store(to, std::sync::atomic::Ordering::Relaxed);
}

/// An operation asked of a running curfew, by a signal (HUP, TTIN, TTOU,
/// USR1) or over the control socket (reload, scale); both arrive in
/// the same [`Inputs`] stream. While a reload runs it holds the
/// supervisor until every slot of its batch has switched, so nothing else
/// may change the slots meanwhile; instead:
///
/// - a reload request is queued; one that arrives right after another
///   queued reload merges into it (a reload re-reads the configuration
///   when it runs, so one covers both);
/// - a scale request (SIGTTIN, SIGTTOU, `curfew scale`) is queued;
/// - a status request is answered at once; a stop abandons the reload.
///
/// Queued operations run in arrival order as soon as the reload is over,
/// each logged (INFO) when queued; a stop drops them (their callers are
/// told). Worker deaths need none of this: each slot handles its own at once.
pub(super) enum Op {
    Reload {
        replies: Vec<oneshot::Sender<control::Response>>,
    },
    Scale {
        up: bool,
    },
    ScaleTo {
        workers: usize,
        reply: oneshot::Sender<control::Response>,
    },
    /// SIGUSR1: the status report to the log.
    LogStatus,
    /// SIGUSR2 (`reply` = `None`) or `curfew upgrade`.
    Upgrade {
        reply: Option<oneshot::Sender<control::Response>>,
    },
}

#[derive(Default)]
pub(super) struct Deferred {
    queue: std::collections::VecDeque<Op>,
}

impl Deferred {
    /// Queue `op`; `true` if it merged into the reload queued last.
    pub(super) fn push(&mut self, op: Op) -> bool {
        if let Op::Reload { replies } = op {
            if let Some(Op::Reload { replies: queued }) = self.queue.back_mut() {
                queued.extend(replies);
                return true;
            }
            self.queue.push_back(Op::Reload { replies });
            return false;
        }
        self.queue.push_back(op);
        false
    }

    pub(super) fn next(&mut self) -> Option<Op> {
        self.queue.pop_front()
    }

    /// curfew is stopping: drop what is queued, telling any caller.
    pub(super) fn cancel(&mut self) {
        if self.queue.is_empty() {
            return;
        }
        tracing::info!(
            operations = self.queue.len(),
            "Operations queued behind a reload are dropped: curfew is stopping."
        );
        for op in self.queue.drain(..) {
            let replies = match op {
                Op::Reload { replies } => replies,
                Op::ScaleTo { reply, .. } => vec![reply],
                Op::Upgrade { reply } => reply.into_iter().collect(),
                Op::Scale { .. } | Op::LogStatus => vec![],
            };
            for r in replies {
                let _ = r.send(control::Response::err("refused: curfew is stopping"));
            }
        }
    }

    /// Queue `op`, arrived during a reload, and say so in the log.
    pub(super) fn defer(&mut self, op: Op) {
        let what = match &op {
            Op::Reload { .. } => "reload",
            Op::Scale { up: true } => "scale up (SIGTTIN)",
            Op::Scale { up: false } => "scale down (SIGTTOU)",
            Op::ScaleTo { .. } => "scale (control socket)",
            Op::LogStatus => "status",
            Op::Upgrade { .. } => "upgrade",
        };
        if self.push(op) {
            tracing::info!(
                operation = what,
                "Reload requested while a reload is running: merged into the reload already queued."
            );
        } else {
            tracing::info!(
                operation = what,
                queued = self.queue.len(),
                "Operation requested while a reload is running: queued; it runs when the reload ends."
            );
        }
    }
}

/// Run an operation while serving (also one a reload deferred).
pub(super) async fn run_op(run: &mut Run, op: Op) {
    match op {
        Op::Reload { replies } if run.upgrade.is_some() => {
            // The new curfew reads the configuration itself; a reload now
            // would only replace the workers that are about to stop.
            let why =
                "refused: an upgrade is under way (the new curfew reads the configuration itself)";
            tracing::info!(
                operation = "reload",
                "Reload requested during an upgrade: {why}."
            );
            for reply in replies {
                let _ = reply.send(control::Response::err(why));
            }
        }
        Op::Upgrade { reply } => super::upgrade::request(run, reply),
        Op::Reload { replies } => {
            let r = reload_and_tell(run).await;
            for reply in replies {
                let _ = reply.send(reload_response(&r));
            }
        }
        Op::Scale { up } => scale_by_one(run, up),
        Op::ScaleTo { workers, reply } => {
            let _ = reply.send(scale_op(run, workers));
        }
        Op::LogStatus => log_status(&run.status).await,
    }
}

/// A reload that happened.
pub(super) struct Reloaded {
    generation: u64,
    /// Changed settings that keep their old value until a restart.
    restart_only: Vec<&'static str>,
}

/// SIGHUP: re-read the configuration and replace every worker with one of the
/// new generation, without dropping a request. If the configuration is bad or
/// the new workers cannot boot, the current ones keep serving.
async fn try_reload(run: &mut Run) -> ReloadFinished {
    // systemd: RELOADING=1 now, READY=1 when it is over (`reload_and_tell`),
    // whatever its outcome.
    run.notifier.reloading();
    tracing::info!(
        generation = run.sup.generation(),
        "Reload requested: re-reading the configuration."
    );
    let new = match (run.reloader)() {
        Ok(c) => c,
        Err(e) => {
            return ReloadFinished::Failed {
                error: format!(
                    "the configuration is invalid; the current workers keep serving: {e}"
                ),
            };
        }
    };
    let mut plan = plan_reload(&run.cfg, &new);
    let mut new = after_reload(&run.cfg, &new);
    // Validated alone, the new file may not fit the parts a reload keeps
    // (the job processor): those values stay as they run, with a WARN.
    let unfit = crate::config::reload::fit_to_running(&run.cfg, &mut new, &mut plan);
    for (key, why) in &unfit {
        tracing::warn!(setting = key, "{why}");
    }
    let said = |key: &&str| unfit.iter().any(|(k, _)| k == key);
    for key in plan.restart_only.iter().filter(|k| !said(k)) {
        tracing::warn!(
            setting = key,
            "Reload: `{key}` changed, which needs a restart of curfew; keeping the current value."
        );
    }
    if !plan.applied.is_empty() {
        tracing::info!(
            settings = plan.applied.join(", "),
            "Reload: applying the changed settings."
        );
    }
    let spec = worker_spec(&new, run.run_dir.clone(), run.jobs.as_ref());
    let batch = match new.reload {
        ReloadStrategy::AllAtOnce => run.sup.workers(),
        ReloadStrategy::Rolling(n) => n,
    };
    let t0 = Instant::now();
    let outcome = {
        let reload = run.sup.reload(spec, batch);
        tokio::pin!(reload);
        loop {
            tokio::select! {
                r = &mut reload => break Ok(r),
                input = run.inputs.next() => match input {
                    Input::Stop(sig) => break Err(sig),
                    Input::Op(Op::LogStatus) => log_status(&run.status).await,
                    Input::Op(op) => run.deferred.defer(op),
                },
            }
        }
    };
    match outcome {
        Ok(Ok(generation)) => {
            // A count set by `curfew scale` stays unless the file's changed.
            if plan.applied.contains(&"workers") && new.workers != run.sup.workers() {
                tracing::info!(
                    from = run.sup.workers(),
                    to = new.workers,
                    "Reload: scaling workers."
                );
                run.sup.scale(new.workers);
            }
            if let Some(jobs) = &run.jobs
                && plan.applied.contains(&"jobs.periodic")
            {
                jobs.set_periodic(new.periodic.clone());
            }
            run.cfg = new;
            run.status
                .generation
                .store(generation, std::sync::atomic::Ordering::Relaxed);
            run.status
                .workers_wanted
                .store(run.sup.workers(), std::sync::atomic::Ordering::Relaxed);
            ReloadFinished::Done {
                generation,
                duration_ms: t0.elapsed().as_millis() as u64,
                restart_only: plan.restart_only,
            }
        }
        Ok(Err(e)) => ReloadFinished::Failed {
            error: e.to_string(),
        },
        Err(sig) => {
            // The event first: the stop's own lines follow it.
            let finished = ReloadFinished::Abandoned { signal: sig.name() };
            finished.emit(&run.sinks());
            run.on_signal(sig);
            finished
        }
    }
}

/// A reload, its event (log line, metric, `on_reload` hook), and its
/// result for `curfew reload`.
pub(super) async fn reload_and_tell(run: &mut Run) -> Result<Reloaded, String> {
    let finished = try_reload(run).await;
    if !matches!(finished, ReloadFinished::Abandoned { .. }) {
        finished.emit(&run.sinks());
        // Serving again, with the new generation or the old one.
        run.notifier.ready(&run.status.line());
    }
    match finished {
        ReloadFinished::Done {
            generation,
            restart_only,
            ..
        } => Ok(Reloaded {
            generation,
            restart_only,
        }),
        ReloadFinished::Failed { error } => Err(error),
        ReloadFinished::Abandoned { .. } => Err("reload abandoned: curfew is stopping".into()),
    }
}

pub(super) fn reload_response(r: &Result<Reloaded, String>) -> control::Response {
    match r {
        Ok(Reloaded {
            generation,
            restart_only,
        }) if !restart_only.is_empty() => control::Response::ok(format!(
            "reloaded: generation {generation} is serving; changed but kept until a restart of curfew: {}",
            restart_only.join(", ")
        )),
        Ok(r) => control::Response::ok(format!("reloaded: generation {} is serving", r.generation)),
        Err(e) => control::Response::err(e.clone()),
    }
}

/// `curfew scale N`.
pub(super) fn scale_op(run: &mut Run, workers: usize) -> control::Response {
    if workers == 0 || workers > 1024 {
        return control::Response::err(format!(
            "workers must be between 1 and 1024, not {workers}"
        ));
    }
    let from = run.sup.workers();
    tracing::info!(from, to = workers, "Scaling workers (control socket).");
    scale_to(run, workers);
    control::Response::ok(format!("scaling from {from} to {workers} workers"))
}

/// Answer control requests: status and jobs at once in any phase; reload,
/// scale and stop become operations in the orchestrator's inputs while
/// serving, and are refused once a stop is under way.
pub(super) async fn route_control(
    mut rx: mpsc::Receiver<control::Incoming>,
    inputs: InputSender,
    status: StatusSource,
) {
    while let Some((req, reply)) = rx.recv().await {
        let phase = *status.phase.borrow();
        match req {
            control::Request::Status => {
                let _ = reply.send(control::Response {
                    ok: true,
                    status: Some(status.full().await),
                    ..Default::default()
                });
            }
            // Jobs live in the store: answered in any phase, beside the
            // orchestrator (a slow store does not hold up other requests).
            control::Request::Jobs { request } => {
                let jobs = status.jobs.clone();
                tokio::spawn(async move {
                    let response = match jobs {
                        None => control::Response::err(
                            "this curfew has no job processor: add a [jobs] section to curfew.toml",
                        ),
                        // The SDK enqueues here when there is no admin
                        // address: app traffic, held to the API's store turns.
                        Some(j) => match async {
                            let listing =
                                matches!(request, JobsRequest::List { payload: true, .. });
                            let _turn = j.api_turn(listing).await?;
                            j.operate(request).await
                        }
                        .await
                        {
                            Ok((message, data)) => control::Response {
                                ok: true,
                                message: Some(message),
                                data,
                                ..Default::default()
                            },
                            Err(e) => control::Response {
                                http_status: Some(e.status),
                                retry_after: (e.status == 503).then_some(1),
                                ..control::Response::err(e.message)
                            },
                        },
                    };
                    let _ = reply.send(response);
                });
            }
            _ if phase != Phase::Serving => {
                let msg = match (&req, phase) {
                    (control::Request::Stop, p) if p > Phase::Serving => {
                        "already stopping".to_string()
                    }
                    (_, p) => format!("refused: curfew is {p}"),
                };
                let _ = reply.send(
                    if matches!(req, control::Request::Stop) && phase > Phase::Serving {
                        control::Response::ok(msg)
                    } else {
                        control::Response::err(msg)
                    },
                );
            }
            control::Request::Reload => inputs.op(Op::Reload {
                replies: vec![reply],
            }),
            control::Request::Scale { workers } => inputs.op(Op::ScaleTo { workers, reply }),
            control::Request::Upgrade => inputs.op(Op::Upgrade { reply: Some(reply) }),
            // A stop is a SIGTERM: it goes to the lifecycle machine like one
            // (and abandons a reload in progress the same way).
            control::Request::Stop => {
                let _ = reply.send(control::Response::ok("stopping gracefully"));
                tracing::info!("Stop requested on the control socket.");
                inputs.stop(StopSignal::Term);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Operations arriving during a reload: queued in order; a reload right
    /// after a queued reload merges into it (with its caller's reply);
    /// one after a queued scale does not (it must see the scale).
    #[test]
    fn operations_during_a_reload_queue_and_merge() {
        let mut d = Deferred::default();
        assert!(!d.push(Op::Reload { replies: vec![] }));
        let (tx, mut rx) = oneshot::channel();
        assert!(d.push(Op::Reload { replies: vec![tx] }));
        assert!(!d.push(Op::Scale { up: true }));
        assert!(!d.push(Op::Reload { replies: vec![] }));
        assert!(!d.push(Op::Scale { up: false }));
        let kinds: Vec<String> = d
            .queue
            .iter()
            .map(|op| match op {
                Op::Reload { replies } => format!("reload/{}", replies.len()),
                Op::Scale { up } => format!("scale/{up}"),
                Op::ScaleTo { workers, .. } => format!("to/{workers}"),
                Op::LogStatus => "status".to_owned(),
                Op::Upgrade { .. } => "upgrade".to_owned(),
            })
            .collect();
        assert_eq!(kinds, ["reload/1", "scale/true", "reload/0", "scale/false"]);
        // A stop drops them all and answers the callers.
        d.cancel();
        assert!(d.next().is_none());
        let answer = rx.try_recv().expect("answered");
        assert!(!answer.ok);
    }
}
