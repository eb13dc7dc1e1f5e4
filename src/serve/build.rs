//! Setting up a run: the reaper, the job store, the listeners (bound before
//! anything starts, closed again if setup fails), the front, the job
//! processor, the supervisor and their wiring, the control socket and the
//! admin endpoint.

use super::activation::Inherited;
use super::*;

/// The public listeners, bound and not yet serving. Dropped unused (setup
/// failed, or a stop came while starting), each one bound here is closed
/// after its kernel accept queue is drained; an inherited one is only
/// closed: its queue is its owner's (the service manager's, or the curfew
/// an upgrade started from, which serves it), never accepted and dropped.
pub(super) struct Bound(Vec<(Listener, bool)>);

impl Bound {
    /// Binds every `bind` address, or adopts the socket the service
    /// manager passed for it (socket activation).
    fn bind_all(cfg: &Config, inherited: &mut Inherited) -> Result<Bound, ServeError> {
        let mut bound = Bound(Vec::new());
        for b in &cfg.binds {
            // On an error, `bound` drops and closes what was bound before.
            let l = match inherited.public(b)? {
                Some(l) => (l, true),
                None => (Listener::bind(b)?, false),
            };
            bound.0.push(l);
        }
        Ok(bound)
    }

    /// The listeners, to serve (no longer closed on drop).
    pub(super) fn take(mut self) -> Vec<Listener> {
        std::mem::take(&mut self.0)
            .into_iter()
            .map(|(l, _)| l)
            .collect()
    }

    pub(super) fn names(&self) -> Vec<String> {
        self.0.iter().map(|(l, _)| l.describe()).collect()
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        for (l, inherited) in self.0.drain(..) {
            if !inherited {
                l.drain_and_close();
            }
        }
    }
}

impl Run {
    /// Everything a run needs, wired together; the workers are not started.
    pub(super) async fn build(
        cfg: Config,
        reloader: Reloader,
        inputs: Inputs,
    ) -> Result<(Run, Bound), ServeError> {
        // Become the subreaper of everything the workers start, so no grandchild
        // escapes to the host's init and every one is reaped here.
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(error = %e, "Could not become a child subreaper: processes the workers start and leave behind escape to the host's init, and are neither reaped nor killed at exit by curfew.");
        }
        crate::supervisor::nofile::raise();
        let reaper = Reaper::start().map_err(ServeError::Setup)?;
        let hooks = Hooks::new(reaper.clone(), cfg.hooks.clone());
        let store = match &cfg.jobs {
            Some(j) => Some(Processor::open_store(j).await.map_err(ServeError::Jobs)?),
            None => None,
        };

        // An upgrade's new curfew (the sockets below come from the old one).
        let successor = upgrade::child::Successor::from_env()?;
        // Closed again (after their accept queues) if anything below fails.
        let mut inherited = Inherited::from_env(successor.is_some())?;
        let listeners = Bound::bind_all(&cfg, &mut inherited)?;
        let admin_listener = match (inherited.admin(cfg.admin_bind.as_ref())?, &cfg.admin_bind) {
            (Some(l), _) => Some(l),
            (None, Some(a)) => Some(crate::admin::bind(a)?),
            (None, None) => None,
        };
        let control_listener = match inherited
            .control(&cfg.control_socket)
            .map_err(ServeError::UpgradeControl)?
        {
            Some(l) => l,
            None => control::bind(&cfg.control_socket).map_err(ServeError::Control)?,
        };
        let adopted = inherited.adopted();
        inherited.finish(&cfg.binds)?;
        // Copies an upgrade passes on. Cannot fail short of running out of
        // descriptors; then an upgrade is refused, serving is not.
        let mut sockets = upgrade::Sockets::default();
        let copied = listeners
            .0
            .iter()
            .try_for_each(|(l, _)| sockets.add(l, false))
            .and_then(|()| match &admin_listener {
                Some(l) => sockets.add(l, true),
                None => Ok(()),
            })
            .and_then(|()| sockets.add_control(&control_listener));
        if let Err(e) = copied {
            tracing::warn!(error = %e, "Cannot keep copies of the listening sockets: an upgrade (SIGUSR2) would pass none.");
            sockets = upgrade::Sockets::default();
        }
        let run_dir = if cfg.worker_socket.uses_run_dir() {
            make_run_dir().map_err(|(base, source)| ServeError::RunDir {
                base: base.display().to_string(),
                source,
            })?
        } else {
            std::env::temp_dir()
        };

        let metrics = Arc::new(Metrics::new());
        let front = Front::new(FrontConfig::from(&cfg), metrics.clone());
        front
            .start_threads(cfg.proxy_threads)
            .map_err(ServeError::ProxyThreads)?;
        if let Some(target) = &cfg.access_log {
            front.set_access_log(crate::proxy::access_log::AccessLog::open(
                target,
                cfg.access_log_format,
                cfg.access_log_query,
            )?);
        }
        let jobs = match (store, &cfg.jobs) {
            (Some(store), Some(j)) => {
                let processor = Processor::new(
                    j.clone(),
                    store,
                    front.dispatcher.clone(),
                    reaper.clone(),
                    cfg.chdir.clone(),
                );
                processor.set_periodic(cfg.periodic.clone());
                if let Some(s) = &successor {
                    processor.set_live_predecessors(s.live.clone());
                }
                Some(processor)
            }
            _ => None,
        };
        let spec = worker_spec(&cfg, run_dir.clone(), jobs.as_ref());
        let sup = Supervisor::new(reaper.clone(), spec, front.clone(), metrics.clone());
        sup.set_hooks(Box::new(hooks.clone()));
        let handle = sup.handle();
        front
            .dispatcher
            .on_hung(Box::new(move |uid, reason, request| {
                handle.abort(uid, reason, request)
            }));
        let handle = sup.handle();
        front
            .router
            .on_recycle(Box::new(move |uid, reason| handle.recycle(uid, reason)));
        let (phase_tx, _) = watch::channel(Phase::Starting);
        let status = StatusSource {
            front: front.clone(),
            phase: phase_tx.subscribe(),
            generation: Arc::new(std::sync::atomic::AtomicU64::new(1)),
            workers_wanted: Arc::new(std::sync::atomic::AtomicUsize::new(cfg.workers)),
            started: Instant::now(),
            jobs: jobs.clone(),
            drain: Arc::default(),
            jobs_queued: Arc::default(),
        };
        let background = tokio_util::sync::CancellationToken::new();
        let control_release = tokio_util::sync::CancellationToken::new();
        // An upgrade's new curfew answers on the shared control and admin
        // sockets only once the old one handed over.
        let took_over = tokio_util::sync::CancellationToken::new();
        let owns_files = tokio_util::sync::CancellationToken::new();
        if successor.is_none() {
            took_over.cancel();
            owns_files.cancel();
        }
        {
            let (ctl_tx, ctl_rx) = mpsc::channel(16);
            let serve = control::serve(
                control_listener,
                ctl_tx,
                background.clone(),
                control_release.clone(),
            );
            tokio::spawn(gated(took_over.clone(), background.clone(), serve));
            tokio::spawn(route_control(ctl_rx, inputs.sender(), status.clone()));
        }
        let notifier = Arc::new(crate::notify::Notifier::from_env());
        if successor.is_some() {
            // Quiet until the old curfew has named this one MAINPID.
            notifier.set_muted(true);
        }
        let mut inputs = inputs;
        if notifier.enabled() {
            tracing::info!(
                watchdog_ms = notifier.watchdog().map(|w| w.as_millis() as u64),
                "systemd notify socket found: READY/RELOADING/STOPPING and STATUS will be sent."
            );
            inputs.set_beat(
                notifier.beat_every(),
                beat(notifier.clone(), status.clone()),
            );
        }
        let mut run = Run {
            notifier,
            cfg,
            machine: Machine::new(),
            phase_tx,
            front,
            sup,
            reaper,
            inputs,
            status,
            metrics,
            reloader,
            hooks: hooks.clone(),
            jobs,
            run_dir: run_dir.clone(),
            stop_requested_at: None,
            completed_at_stop: 0,
            aborted: 0,
            deferred: Deferred::default(),
            background,
            sockets,
            upgrade: None,
            abandoned: None,
            jobs_reported: false,
            admin_release: tokio_util::sync::CancellationToken::new(),
            control_release,
            admin_task: None,
            successor,
            adopted,
            took_over,
            owns_files,
        };

        if let Some(l) = admin_listener {
            tracing::info!(admin = %l.describe(), "Admin endpoint: /healthz, /readyz, /status, /metrics, /ui.");
            let state = crate::admin::AdminState {
                status: Arc::new(run.status.clone()),
                auth: Arc::new(crate::admin::auth::AdminAuth::new(
                    run.cfg.admin_token.clone(),
                    run.cfg.admin_bind.as_ref(),
                )),
                metrics: run.metrics.clone(),
                jobs: run.jobs.clone(),
            };
            let serve = crate::admin::serve_until(
                l,
                state,
                run.admin_release.clone(),
                run.background.clone(),
            );
            run.admin_task = Some(tokio::spawn(gated(
                run.took_over.clone(),
                run.background.clone(),
                serve,
            )));
        }
        Ok((run, listeners))
    }
}

/// Runs `serve` once `gate` is cancelled (at once, or when an upgrade's
/// new curfew has taken over), unless `stop` comes first.
async fn gated(
    gate: tokio_util::sync::CancellationToken,
    stop: tokio_util::sync::CancellationToken,
    serve: impl std::future::Future<Output = ()>,
) {
    tokio::select! {
        _ = gate.cancelled() => serve.await,
        _ = stop.cancelled() => {}
    }
}

/// The orchestrator's periodic beat under systemd: the status line, the
/// watchdog ping, the stop's timeout extension (`Notifier::beat`); and, with
/// a job processor, a count of the queued jobs for the next line (in the
/// background, one at a time, every 10 s at most: it asks the store).
fn beat(notifier: Arc<crate::notify::Notifier>, status: StatusSource) -> Box<dyn FnMut() + Send> {
    const COUNT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
    let counting = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut counted: Option<Instant> = None;
    Box::new(move || {
        notifier.beat(&status.line());
        if status.jobs.is_some()
            && counted.is_none_or(|t| t.elapsed() >= COUNT_EVERY)
            && !counting.swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            counted = Some(Instant::now());
            let (status, counting) = (status.clone(), counting.clone());
            tokio::spawn(async move {
                status.count_jobs_queued().await;
                counting.store(false, std::sync::atomic::Ordering::Release);
            });
        }
    })
}
