//! The proxy threads: client connections are served on a few dedicated
//! threads, each running its own single-threaded tokio runtime with a copy
//! of every public listener (one kernel accept queue, several descriptors).
//!
//! Why not the main (work-stealing) runtime: a proxied request is a chain
//! of small steps — read the client, hand the request to the upstream
//! connection's task, write the worker, read it, hand the answer back,
//! write the client. On a work-stealing runtime those hand-offs wake the
//! other runtime threads (a futex wake and a context switch each), and
//! the request's steps wander between cores. On a proxy thread the client
//! connection, its request and the upstream connection it uses all live on
//! one thread: hand-offs are plain task wake-ups in the same run queue, and
//! one `epoll_wait` returns many connections' events at once. Measured on
//! the proxy hop (bench/RESULTS.md, issue 12): fewer context switches per
//! request and less CPU per request than the main runtime.
//!
//! Everything else (the supervisor, the job processor, the admin address)
//! stays on the main runtime; the shared state between them (router,
//! pools, metrics, cancellation tokens) is runtime-agnostic.
//!
//! Upstream connections are pooled per thread ([`tag`]): a connection
//! opened on a thread is reused only by work on the same thread, so its
//! hyper task never needs waking from another one.

use std::cell::Cell;
use std::sync::mpsc as std_mpsc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::listener::Detached;

thread_local! {
    /// 0 on the main runtime's threads; `i + 1` on proxy thread `i`.
    static TAG: Cell<usize> = const { Cell::new(0) };
}

/// Which runtime the calling thread belongs to (for the upstream pools).
pub fn tag() -> usize {
    TAG.with(Cell::get)
}

/// Listeners to serve on a thread, and where to send the accept loops'
/// handles (or why they could not start).
type Job = (
    Vec<Detached>,
    std_mpsc::Sender<std::io::Result<Vec<JoinHandle<()>>>>,
);

/// One proxy thread, as seen from the main runtime.
pub struct ProxyThread {
    jobs: mpsc::UnboundedSender<Job>,
}

/// Start `n` proxy threads. Each waits for listeners to serve; `serve`
/// spawns one accept loop per listener on that thread's runtime.
pub fn start<F>(n: usize, serve: F) -> std::io::Result<Vec<ProxyThread>>
where
    F: Fn(super::listener::Listener) -> JoinHandle<()> + Send + Sync + Clone + 'static,
{
    let mut threads = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let serve = serve.clone();
        std::thread::Builder::new()
            .name(format!("curfew-proxy-{i}"))
            .spawn(move || {
                TAG.with(|t| t.set(i + 1));
                // Runs until the front is gone (every sender dropped): by
                // then no connection is left; what the runtime drops with
                // it is idle pooled worker connections.
                rt.block_on(async move {
                    while let Some((listeners, reply)) = rx.recv().await {
                        let handles = listeners
                            .into_iter()
                            .map(|d| d.attach().map(&serve))
                            .collect();
                        let _ = reply.send(handles);
                    }
                });
            })?;
        threads.push(ProxyThread { jobs: tx });
    }
    Ok(threads)
}

impl ProxyThread {
    /// Serve `listeners` on this thread; the accept loops' handles once
    /// they run. A thread that has stopped gives the listeners back.
    pub fn serve(&self, listeners: Vec<Detached>) -> Result<Vec<JoinHandle<()>>, Refused> {
        let gone = || std::io::Error::other("the proxy thread has stopped");
        let (reply, answer) = std_mpsc::channel();
        if let Err(mpsc::error::SendError((back, _))) = self.jobs.send((listeners, reply)) {
            return Err(Refused {
                error: gone(),
                back,
            });
        }
        match answer.recv() {
            Ok(Ok(h)) => Ok(h),
            Ok(Err(error)) => Err(Refused {
                error,
                back: Vec::new(),
            }),
            Err(_) => Err(Refused {
                error: gone(),
                back: Vec::new(),
            }),
        }
    }
}

/// Why a proxy thread did not take listeners, and those it gave back.
pub struct Refused {
    pub error: std::io::Error,
    pub back: Vec<Detached>,
}
