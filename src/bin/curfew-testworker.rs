//! `curfew-testworker`: a tiny HTTP/1.1 server that curfew's integration
//! tests run as a worker process.
//!
//! It behaves like a real app worker (uvicorn/gunicorn) in every way that
//! matters to a supervisor: it can take its listening socket from the
//! supervisor (`LISTEN_FDS`), boot slowly, fail to boot, drain on SIGTERM,
//! crash, wedge itself, leak memory, and so on. See `usage` below / `--help`.

// Needed only to adopt the inherited listening socket (fd 3) and to probe it.
#![allow(unsafe_code)]

use std::convert::Infallible;
use std::io::{self, Write as _};
use std::os::fd::{FromRawFd as _, OwnedFd, RawFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::header::{CONNECTION, CONTENT_TYPE, HeaderValue, UPGRADE};
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// Memory handed out by `/alloc`, kept alive until the process dies.
static HOARD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A test fixture that behaves like a web app worker.
///
/// Socket selection, in order: --unix PATH, --port N, LISTEN_FDS (fd 3,
/// systemd convention), PORT (127.0.0.1:$PORT).
#[derive(Debug, Parser)]
#[command(name = "curfew-testworker", version)]
struct Args {
    /// Bind a Unix stream socket at PATH (a stale file there is removed).
    #[arg(long, value_name = "PATH")]
    unix: Option<PathBuf>,

    /// Bind 127.0.0.1:N.
    #[arg(long, value_name = "N")]
    port: Option<u16>,

    /// Sleep N ms before accepting (simulates a slow app import).
    #[arg(long, value_name = "N", env = "TESTWORKER_BOOT_DELAY_MS")]
    boot_delay_ms: Option<u64>,

    /// Print a Python-like traceback to stderr and exit 3 (after the boot delay).
    #[arg(
        long,
        env = "TESTWORKER_FAIL_BOOT",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    fail_boot: bool,

    /// Ignore SIGTERM entirely (keep serving).
    #[arg(long)]
    ignore_sigterm: bool,

    /// Tag included in the `/` response and the ready line.
    #[arg(long, value_name = "STR", env = "TESTWORKER_TAG", default_value = "v1")]
    tag: String,

    /// On SIGTERM, wait N more ms after in-flight requests finish.
    #[arg(long, value_name = "N", default_value_t = 0)]
    drain_ms: u64,

    /// `POST /jobs/<kind>` appends "start <id> <attempt> <kind> <pid>" and,
    /// on success, "done <id> <attempt>" lines to this file.
    #[arg(long, value_name = "PATH", env = "TESTWORKER_JOBS_LOG")]
    jobs_log: Option<PathBuf>,

    /// Cap a job's `ms` sleep at N (a restarted app that is faster).
    #[arg(long, value_name = "N", env = "TESTWORKER_MAX_JOB_MS")]
    max_job_ms: Option<u64>,
}

/// Where the listening socket comes from.
#[derive(Debug)]
enum SocketSpec {
    Unix(PathBuf),
    Tcp(u16),
    /// An inherited listening socket, by descriptor number...
    Fd(RawFd),
    /// ...and once adopted (done before the runtime exists, so that no
    /// runtime-internal descriptor can be mistaken for the inherited one).
    Adopted(StdListener),
}

#[derive(Debug)]
enum StdListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Per-process facts every handler needs.
struct State {
    id: String,
    pid: u32,
    tag: String,
    /// `/close-listener`: stop accepting, keep running.
    close_listener: tokio::sync::Notify,
    jobs_log: Option<PathBuf>,
    max_job_ms: Option<u64>,
}

/// Write one line to stderr, ignoring errors (a closed log pipe must not
/// turn into a panic).
fn log(msg: &str) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "{msg}");
    let _ = err.flush();
}

fn die(code: u8, msg: &str) -> ExitCode {
    log(&format!("curfew-testworker: {msg}"));
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let args = Args::parse();

    let spec = match choose_socket(&args) {
        Ok(SocketSpec::Fd(fd)) => match adopt_fd(fd) {
            Ok(listener) => SocketSpec::Adopted(listener),
            Err(e) => return die(2, &format!("cannot use inherited socket: {e}")),
        },
        Ok(spec) => spec,
        Err(msg) => return die(2, &msg),
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return die(1, &format!("cannot start tokio runtime: {e}")),
    };
    runtime.block_on(run(args, spec))
}

/// Pick the socket source (without opening anything yet).
fn choose_socket(args: &Args) -> Result<SocketSpec, String> {
    if let Some(path) = &args.unix {
        return Ok(SocketSpec::Unix(path.clone()));
    }
    if let Some(port) = args.port {
        return Ok(SocketSpec::Tcp(port));
    }
    if let Ok(raw) = std::env::var("LISTEN_FDS") {
        let n: u32 = raw
            .trim()
            .parse()
            .map_err(|_| format!("invalid LISTEN_FDS={raw:?}"))?;
        if n > 0 {
            let me = std::process::id();
            if let Ok(listen_pid) = std::env::var("LISTEN_PID")
                && listen_pid.trim() != me.to_string()
            {
                // Exact wording is part of the contract with the tests.
                return Err(format!(
                    "LISTEN_PID mismatch: got {listen_pid}, we are {me}"
                ));
            }
            let fd: RawFd = match std::env::var("LISTEN_FDS_FIRST_FD") {
                Ok(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid LISTEN_FDS_FIRST_FD={v:?}"))?,
                Err(_) => 3,
            };
            return Ok(SocketSpec::Fd(fd));
        }
    }
    if let Ok(raw) = std::env::var("PORT") {
        let port: u16 = raw
            .trim()
            .parse()
            .map_err(|_| format!("invalid PORT={raw:?}"))?;
        return Ok(SocketSpec::Tcp(port));
    }
    Err("no socket: pass --unix PATH or --port N, or set LISTEN_FDS or PORT".to_owned())
}

/// Open (or adopt) the listening socket. Must run inside the runtime.
fn open_listener(spec: SocketSpec) -> io::Result<Listener> {
    match spec {
        SocketSpec::Unix(path) => {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            Ok(Listener::Unix(UnixListener::bind(&path)?))
        }
        SocketSpec::Tcp(port) => {
            let std_listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
            std_listener.set_nonblocking(true)?;
            Ok(Listener::Tcp(TcpListener::from_std(std_listener)?))
        }
        SocketSpec::Fd(fd) => Listener::from_std(adopt_fd(fd)?),
        SocketSpec::Adopted(std_listener) => Listener::from_std(std_listener),
    }
}

impl Listener {
    /// Must run inside the runtime; `listener` must be non-blocking.
    fn from_std(listener: StdListener) -> io::Result<Self> {
        Ok(match listener {
            StdListener::Tcp(l) => Listener::Tcp(TcpListener::from_std(l)?),
            StdListener::Unix(l) => Listener::Unix(UnixListener::from_std(l)?),
        })
    }
}

/// Take ownership of an inherited listening socket (non-blocking, ready for
/// tokio). Call before anything else opens descriptors.
fn adopt_fd(fd: RawFd) -> io::Result<StdListener> {
    // Check the descriptor is open before claiming ownership of it: dropping
    // an `OwnedFd` that was never open is an IO-safety violation.
    // SAFETY: F_GETFD only reads the descriptor flags; it is valid to call on
    // any integer and reports EBADF if it is not an open descriptor.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("LISTEN_FDS: fd {fd}: {e}"),
        ));
    }
    // SAFETY: the fd is open (checked above), was passed to us by our parent
    // under the LISTEN_FDS convention, and nothing else in this process uses
    // or owns it, so we may take exclusive ownership.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let sock = socket2::Socket::from(owned);
    let addr = sock.local_addr()?;
    if sock.r#type()? != socket2::Type::STREAM {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("LISTEN_FDS: fd {fd} is not a stream socket"),
        ));
    }
    // Normally already listening; listen() on an unlistened bound socket
    // makes it usable, and we avoid touching the backlog otherwise.
    if !sock.is_listener()? {
        sock.listen(1024)?;
    }
    sock.set_nonblocking(true)?;
    if addr.is_unix() {
        Ok(StdListener::Unix(OwnedFd::from(sock).into()))
    } else if addr.as_socket().is_some() {
        Ok(StdListener::Tcp(OwnedFd::from(sock).into()))
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("LISTEN_FDS: fd {fd} is neither a TCP nor a Unix socket"),
        ))
    }
}

async fn run(args: Args, spec: SocketSpec) -> ExitCode {
    let id = std::env::var("CURFEW_WORKER_ID").unwrap_or_else(|_| "-".to_owned());
    let pid = std::process::id();

    // Install handlers first so that signals arriving during boot are
    // handled too (a supervisor may stop us while we are still "importing").
    let mut sigterm = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => return die(1, &format!("cannot install SIGTERM handler: {e}")),
    };
    let mut sigint = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(e) => return die(1, &format!("cannot install SIGINT handler: {e}")),
    };
    let sigint_id = id.clone();
    tokio::spawn(async move {
        if sigint.recv().await.is_some() {
            log(&format!("testworker interrupted id={sigint_id} pid={pid}"));
            std::process::exit(0);
        }
    });

    if let Some(ms) = args.boot_delay_ms.filter(|ms| *ms > 0) {
        let delay = tokio::time::sleep(Duration::from_millis(ms));
        tokio::pin!(delay);
        loop {
            tokio::select! {
                () = &mut delay => break,
                Some(()) = sigterm.recv() => {
                    if !args.ignore_sigterm {
                        log(&format!("testworker shutting down id={id} pid={pid} (during boot)"));
                        return ExitCode::SUCCESS;
                    }
                    log(&format!("testworker ignoring SIGTERM id={id} pid={pid}"));
                }
            }
        }
    }

    if args.fail_boot {
        log("Traceback (most recent call last):");
        log("  File \"app.py\", line 1");
        log("ImportError: testworker told to fail boot");
        return ExitCode::from(3);
    }

    let what = format!("{spec:?}");
    let listener = match open_listener(spec) {
        Ok(l) => l,
        Err(e) => return die(2, &format!("cannot open socket {what}: {e}")),
    };

    let state = Arc::new(State {
        id: id.clone(),
        pid,
        tag: args.tag.clone(),
        close_listener: tokio::sync::Notify::new(),
        jobs_log: args.jobs_log.clone(),
        max_job_ms: args.max_job_ms,
    });

    {
        let mut out = io::stdout().lock();
        let _ = writeln!(
            out,
            "testworker ready id={id} pid={pid} tag={tag}",
            tag = args.tag
        );
        let _ = out.flush();
    }

    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().keep_alive(true);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();

    let mut listener = Some(listener);
    loop {
        tokio::select! {
            _ = state.close_listener.notified(), if listener.is_some() => {
                // Stop accepting but keep running and serving open connections:
                // connects to this worker are refused from now on.
                listener = None;
                log(&format!("testworker closed its listener id={id} pid={pid}"));
            }
            accepted = accept_some(&listener) => match accepted {
                Ok(Accepted::Tcp(stream)) => {
                    let _ = stream.set_nodelay(true);
                    spawn_conn(stream, &builder, graceful.watcher(), &state);
                }
                Ok(Accepted::Unix(stream)) => {
                    spawn_conn(stream, &builder, graceful.watcher(), &state);
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    log(&format!("testworker accept error: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(()) = sigterm.recv() => {
                if args.ignore_sigterm {
                    log(&format!("testworker ignoring SIGTERM id={id} pid={pid}"));
                    continue;
                }
                break;
            }
        }
    }

    // Stop accepting: close our copy of the listening socket.
    drop(listener);
    log(&format!("testworker shutting down id={id} pid={pid}"));

    // Further SIGTERMs while draining are ignored: our handler stays
    // installed and we simply never act on them again.
    tokio::spawn(async move { while sigterm.recv().await.is_some() {} });

    // Idle keep-alive connections are closed now; in-flight requests finish.
    graceful.shutdown().await;
    if args.drain_ms > 0 {
        tokio::time::sleep(Duration::from_millis(args.drain_ms)).await;
    }
    log(&format!("testworker stopped id={id} pid={pid}"));
    ExitCode::SUCCESS
}

enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept_some(listener: &Option<Listener>) -> io::Result<Accepted> {
    match listener {
        Some(l) => accept(l).await,
        None => std::future::pending().await,
    }
}

async fn accept(listener: &Listener) -> io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, _)| Accepted::Tcp(s)),
        Listener::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

fn spawn_conn<IO>(
    io: IO,
    builder: &Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    state: &Arc<State>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let builder = Arc::clone(builder);
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let svc = service_fn(move |req| handle(req, Arc::clone(&state)));
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
        // Connection errors (client resets etc.) are routine; ignore them.
        let _ = watcher.watch(conn).await;
    });
}

// ---------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn ok(body: impl Into<Bytes>) -> Response<Body> {
    text(StatusCode::OK, body)
}

/// An early-out answer from `route` (kept small; turned into a response by
/// `handle`).
struct Reject(StatusCode, String);

fn reject(msg: &str) -> Reject {
    Reject(StatusCode::BAD_REQUEST, format!("bad request: {msg}\n"))
}

fn bad_request(msg: &str) -> Response<Body> {
    text(StatusCode::BAD_REQUEST, format!("bad request: {msg}\n"))
}

/// Decode `%XX` escapes and `+` (as space) in a query component.
fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The raw value of query parameter `name`, decoded; the first one wins.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

/// Parse a numeric query parameter; missing → `default`, malformed → Err.
fn num_param<T: std::str::FromStr>(
    query: Option<&str>,
    name: &str,
    default: T,
) -> Result<T, Reject> {
    match query_param(query, name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| reject(&format!("{name}={v:?} is not a valid number"))),
    }
}

async fn handle(req: Request<Incoming>, state: Arc<State>) -> Result<Response<Body>, Infallible> {
    Ok(route(req, &state)
        .await
        .unwrap_or_else(|Reject(status, msg)| text(status, msg)))
}

async fn route(req: Request<Incoming>, state: &State) -> Result<Response<Body>, Reject> {
    let path = req.uri().path().to_owned();
    let query_owned = req.uri().query().map(str::to_owned);
    let query = query_owned.as_deref();

    let resp = match path.as_str() {
        "/" => ok(format!(
            "ok worker={} pid={} tag={}\n",
            state.id, state.pid, state.tag
        )),

        "/health" => ok("ok"),
        "/close-listener" => {
            state.close_listener.notify_one();
            ok("closing listener")
        }

        "/sleep" => {
            let ms: u64 = num_param(query, "ms", 0)?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ok(format!("slept {ms}\n"))
        }

        "/stream" => {
            let chunks: u64 = num_param(query, "chunks", 3)?;
            let ms: u64 = num_param(query, "ms", 100)?;
            // size > 0: chunks of that many bytes ('x'…'\n') instead of text.
            let size: usize = num_param(query, "size", 0)?;
            let (tx, rx) = mpsc::channel::<Bytes>(1);
            tokio::spawn(async move {
                for i in 0..chunks {
                    if i > 0 && ms > 0 {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    let chunk = if size > 0 {
                        let mut c = vec![b'x'; size];
                        c[size - 1] = b'\n';
                        Bytes::from(c)
                    } else {
                        Bytes::from(format!("chunk {i}\n"))
                    };
                    if tx.send(chunk).await.is_err() {
                        break; // client went away
                    }
                }
            });
            let mut resp = Response::new(ChannelBody { rx }.boxed());
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            resp
        }

        "/hang" => {
            std::future::pending::<()>().await;
            text(StatusCode::INTERNAL_SERVER_ERROR, "unreachable\n")
        }

        "/spin" => loop {
            std::hint::spin_loop();
        },

        "/crash" => {
            log("testworker crashing");
            std::process::abort();
        }

        // Crashes only the first worker to get it (the marker file says
        // who did), then answers: a request whose first worker died.
        "/crash-once" => {
            let marker = query_param(query, "marker").ok_or_else(|| reject("missing marker"))?;
            let first = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&marker)
                .is_ok();
            if first {
                log("testworker crashing once");
                std::process::abort();
            }
            ok("survived\n")
        }

        "/exit" => {
            let code: i32 = num_param(query, "code", 0)?;
            log(&format!("testworker exiting code={code}"));
            std::process::exit(code);
        }

        "/alloc" => {
            let mb: usize = num_param(query, "mb", 1)?;
            let len = mb
                .checked_mul(1024 * 1024)
                .ok_or_else(|| reject("mb too large"))?;
            let mut buf: Vec<u8> = Vec::new();
            if buf.try_reserve_exact(len).is_err() {
                return Err(Reject(
                    StatusCode::INSUFFICIENT_STORAGE,
                    format!("cannot allocate {mb} MiB\n"),
                ));
            }
            // Writing every byte touches every page, so it all counts in RSS.
            buf.resize(len, 0xA5);
            HOARD
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(buf);
            ok(format!("allocated {mb} MiB\n"))
        }

        "/echo" => {
            let method = req.method().as_str().to_owned();
            let content_type = req.headers().get(CONTENT_TYPE).cloned();
            // Stream the request body straight back, frame by frame.
            let body = req.into_body().map_err(BoxError::from).boxed();
            let mut resp = Response::new(body);
            if let Ok(v) = HeaderValue::from_str(&method) {
                resp.headers_mut().insert("x-echo-method", v);
            }
            if let Some(ct) = content_type {
                resp.headers_mut().insert(CONTENT_TYPE, ct);
            }
            resp
        }

        "/headers" => {
            let mut headers = serde_json::Map::new();
            for name in req.headers().keys() {
                let values: Vec<serde_json::Value> = req
                    .headers()
                    .get_all(name)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned().into())
                    .collect();
                headers.insert(name.as_str().to_owned(), values.into());
            }
            let doc = serde_json::json!({
                "method": req.method().as_str(),
                "uri": req.uri().to_string(),
                "version": format!("{:?}", req.version()),
                "headers": headers,
            });
            let mut resp = Response::new(full(doc.to_string()));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }

        "/env" => {
            let name = query_param(query, "name").ok_or_else(|| reject("missing name"))?;
            match std::env::var_os(&name) {
                Some(v) => ok(v.into_encoded_bytes()),
                None => text(StatusCode::NOT_FOUND, format!("{name} is not set\n")),
            }
        }

        "/stderr" => {
            let lines: u64 = num_param(query, "lines", 1)?;
            let msg = query_param(query, "text").unwrap_or_else(|| "line".to_owned());
            {
                let mut err = io::stderr().lock();
                for i in 0..lines {
                    let _ = writeln!(err, "{msg} {i}");
                }
                let _ = err.flush();
            }
            ok("ok")
        }

        "/status" => {
            let code: u16 = num_param(query, "code", 200)?;
            let status = StatusCode::from_u16(code)
                .map_err(|_| reject(&format!("invalid status code {code}")))?;
            text(status, format!("status {code}"))
        }

        "/upgrade" => upgrade_echo(req),

        // Read the whole body, then answer with its length (like a WSGI
        // app that reads request.body before answering).
        "/upload" => {
            let body = req
                .into_body()
                .collect()
                .await
                .map_err(|e| reject(&format!("body: {e}")))?;
            ok(format!("{} bytes\n", body.to_bytes().len()))
        }

        p if p.starts_with("/jobs/") && req.method() == hyper::Method::POST => {
            job(req, state).await?
        }

        _ => text(StatusCode::NOT_FOUND, "not found"),
    };
    Ok(resp)
}

/// `POST /jobs/<kind>`: a job delivered by curfew. The JSON payload steers
/// it: `ms` (sleep first), `status` (answer with it), `retry_after` (header),
/// `fail_until_attempt` (500 while X-Job-Attempt is below it), `crash`
/// (exit at once, mid-job), `body` (the answer's text, in place of the
/// default line).
async fn job(req: Request<Incoming>, state: &State) -> Result<Response<Body>, Reject> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (id, attempt) = (header("x-job-id"), header("x-job-attempt"));
    // Like an app should: only curfew's deliveries carry the token.
    let token = std::env::var("CURFEW_JOB_TOKEN").unwrap_or_default();
    if token.is_empty() || header("x-curfew-job-token") != token {
        return Ok(text(
            StatusCode::FORBIDDEN,
            "not a job delivery from curfew\n",
        ));
    }
    let kind = req.uri().path().trim_start_matches("/jobs/").to_owned();
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|e| reject(&format!("cannot read the body: {e}")))?
        .to_bytes();
    let payload: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| reject(&format!("payload is not JSON: {e}")))?;
    let record = |line: String| {
        if let Some(path) = &state.jobs_log {
            // One write per line with O_APPEND: lines from several workers
            // never interleave.
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = f.write_all(line.as_bytes());
            }
        }
    };
    record(format!("start {id} {attempt} {kind} {}\n", state.pid));
    if payload.get("crash").and_then(|v| v.as_bool()) == Some(true) {
        log("job asked to crash the worker");
        std::process::exit(70);
    }
    if let Some(ms) = payload.get("ms").and_then(|v| v.as_u64()) {
        let ms = state.max_job_ms.map_or(ms, |max| ms.min(max));
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let attempt_n: i64 = attempt.parse().unwrap_or(0);
    if let Some(n) = payload.get("fail_until_attempt").and_then(|v| v.as_i64())
        && attempt_n < n
    {
        return Ok(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failing attempt {attempt_n} on purpose"),
        ));
    }
    let code = payload
        .get("status")
        .and_then(|v| v.as_u64())
        .unwrap_or(200) as u16;
    let status = StatusCode::from_u16(code).map_err(|_| reject("invalid status"))?;
    let answer = match payload.get("body").and_then(|v| v.as_str()) {
        Some(body) => body.to_owned(),
        None => format!("job {id} attempt {attempt} kind {kind}: {code}\n"),
    };
    let mut resp = text(status, answer);
    if let Some(ra) = payload.get("retry_after").and_then(|v| v.as_str())
        && let Ok(v) = HeaderValue::from_str(ra)
    {
        resp.headers_mut().insert(hyper::header::RETRY_AFTER, v);
    }
    if status.is_success() {
        record(format!("done {id} {attempt}\n"));
    }
    Ok(resp)
}

/// `/upgrade` with `upgrade: echo`: switch protocols, then echo every byte.
fn upgrade_echo(mut req: Request<Incoming>) -> Response<Body> {
    let wants_echo = req
        .headers()
        .get_all(UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("echo"));
    if !wants_echo {
        return bad_request("expected `upgrade: echo`");
    }

    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                log(&format!("testworker upgrade failed: {e}"));
                return;
            }
        };
        let mut io = TokioIo::new(upgraded);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if io.write_all(&buf[..n]).await.is_err() || io.flush().await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = io.shutdown().await;
    });

    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    resp.headers_mut()
        .insert(UPGRADE, HeaderValue::from_static("echo"));
    resp
}

/// A response body fed chunk by chunk through a channel; ends when the
/// sender is dropped. (Equivalent to `StreamBody` over a receiver stream,
/// without needing a `Stream` implementation crate.)
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|data| Ok(Frame::data(data))))
    }
}
