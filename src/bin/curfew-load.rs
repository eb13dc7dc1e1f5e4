//! `curfew-load`: the HTTP/1.1 load generator used by curfew's integration
//! tests and benchmarks.
//!
//! Its job is to count, exactly, the requests that fail while a server is shut
//! down or reloaded. Two rules follow from that:
//!
//! - A failure is never hidden: a request whose bytes were handed to a live
//!   connection and that got no complete response is `failed`, never retried.
//! - A request that was never sent is never called failed: a kept-alive
//!   connection the server closed while idle is replaced silently, and a
//!   request hyper hands back unsent is resent on a new connection. Refused
//!   connects are counted under `refused`, apart from failures.
//!
//! The result is one JSON object on stdout; the exit code is 0 whatever the
//! numbers (the caller judges them), 2 on bad arguments.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::{ArgGroup, Parser};
use http::{Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a connection loop waits before retrying a failed connect.
const CONNECT_RETRY: Duration = Duration::from_millis(20);
/// How many times in a row a request may be handed back unsent by a fresh
/// connection before it is counted as failed (`not_sent_3x`).
const MAX_FRESH_GIVEBACKS: u32 = 3;
/// How many failures `first_errors` describes.
const FIRST_ERRORS: usize = 10;

/// HTTP/1.1 load generator: counts failed requests exactly.
#[derive(Debug, Parser)]
#[command(name = "curfew-load", version)]
#[command(group(ArgGroup::new("target").required(true).args(["url", "unix"])))]
#[command(group(ArgGroup::new("bound").required(true).args(["duration_ms", "requests"])))]
struct Cli {
    /// Base URL, `http://host:port` (an optional path prefix is prepended to
    /// every --path).
    #[arg(long, conflicts_with = "unix")]
    url: Option<String>,

    /// Connect to this Unix socket instead of TCP (Host header "localhost").
    #[arg(long, value_name = "PATH")]
    unix: Option<PathBuf>,

    /// Request path, optionally weighted: `/x` or `/sleep?ms=1500:3`.
    /// Repeatable; each request picks one at random by weight. Default `/`.
    #[arg(long = "path", value_name = "P[:WEIGHT]")]
    paths: Vec<String>,

    /// Number of concurrent client connections.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,

    /// Stop issuing requests after this many milliseconds (requests in flight
    /// are allowed to finish, bounded by --timeout-ms).
    #[arg(long, value_name = "MS")]
    duration_ms: Option<u64>,

    /// Total number of requests across all connections.
    #[arg(long, value_name = "N")]
    requests: Option<u64>,

    /// Cap on total requests per second (across all connections).
    #[arg(long, value_name = "R")]
    rate: Option<f64>,

    /// A request with no complete response within this time fails (`timeout`).
    #[arg(long, value_name = "MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,

    /// End a connection loop as soon as a connect fails (server gone) instead
    /// of retrying every 20 ms.
    #[arg(long)]
    stop_on_refused: bool,

    /// Create this file once the first request of the run has succeeded
    /// (or the first `--ready-after`).
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,

    /// Successful requests before `--ready-file` is created.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    ready_after: u64,

    /// Stop issuing requests once this file exists (requests in flight
    /// finish): a run that lasts as long as the test needs it.
    #[arg(long, value_name = "PATH")]
    stop_file: Option<PathBuf>,

    /// Write every request that did not end in a 2xx answer to this file,
    /// one JSON object a line: `start_ms`/`end_ms` (wall clock, Unix
    /// milliseconds), `path`, `status` (or null), `error` (the failure kind,
    /// or null), `body` (the start of a non-2xx answer's body) or `detail`.
    /// Lets a caller tell why each request failed and when.
    #[arg(long, value_name = "PATH")]
    record: Option<PathBuf>,

    /// Print the result as JSON (always the case; accepted for clarity).
    #[arg(long)]
    json: bool,
}

/// Where connections go.
#[derive(Debug, Clone)]
enum Target {
    Tcp(Vec<SocketAddr>),
    Unix(PathBuf),
}

/// One weighted request path.
#[derive(Debug, Clone)]
struct WeightedPath {
    /// As given on the command line (without the weight), for error reports.
    display: String,
    uri: Uri,
    weight: u64,
}

/// Everything the connection loops share.
struct Shared {
    target: Target,
    host: header::HeaderValue,
    paths: Vec<WeightedPath>,
    total_weight: u64,
    timeout: Duration,
    stop_on_refused: bool,
    start: Instant,
    deadline: Option<Instant>,
    max_requests: Option<u64>,
    next_slot: AtomicU64,
    /// Rate limiter: the earliest time the next request may start.
    rate: Option<(Mutex<Instant>, Duration)>,
    ready_file: Option<PathBuf>,
    ready_after: u64,
    succeeded: AtomicU64,
    ready_done: AtomicBool,
    stop_file: Option<PathBuf>,
    record: bool,
}

impl Shared {
    /// Claims the right to issue one more request, waiting for the rate
    /// limiter. Returns false when the run is over for this loop.
    async fn claim(&self) -> bool {
        if let Some(max) = self.max_requests
            && self.next_slot.fetch_add(1, Ordering::Relaxed) >= max
        {
            return false;
        }
        let now = Instant::now();
        if self.deadline.is_some_and(|d| now >= d) {
            return false;
        }
        if self.stopped() {
            return false;
        }
        if let Some((next, interval)) = &self.rate {
            let at = {
                let mut next = next.lock().unwrap_or_else(|e| e.into_inner());
                let at = (*next).max(now);
                *next = at + *interval;
                at
            };
            if self.deadline.is_some_and(|d| at >= d) {
                return false;
            }
            tokio::time::sleep_until(at).await;
        }
        true
    }

    fn pick(&self, rng: &mut XorShift) -> &WeightedPath {
        let mut r = rng.next() % self.total_weight;
        for p in &self.paths {
            if r < p.weight {
                return p;
            }
            r -= p.weight;
        }
        // Unreachable in practice: weights sum to total_weight.
        &self.paths[self.paths.len() - 1]
    }

    fn build_request(&self, path: &WeightedPath) -> Request<Empty<Bytes>> {
        let mut req = Request::new(Empty::new());
        *req.method_mut() = Method::GET;
        *req.uri_mut() = path.uri.clone();
        req.headers_mut().insert(header::HOST, self.host.clone());
        req.headers_mut().insert(
            header::USER_AGENT,
            header::HeaderValue::from_static("curfew-load"),
        );
        req
    }

    /// The stop file exists.
    fn stopped(&self) -> bool {
        self.stop_file.as_ref().is_some_and(|p| p.exists())
    }

    async fn mark_ready(&self) {
        if self.succeeded.fetch_add(1, Ordering::AcqRel) + 1 < self.ready_after {
            return;
        }
        if self.ready_done.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(path) = &self.ready_file
            && let Err(e) = tokio::fs::write(path, b"ready\n").await
        {
            eprintln!(
                "curfew-load: cannot create ready file {}: {e}",
                path.display()
            );
        }
    }
}

/// xorshift64* PRNG: enough to pick paths, no dependency.
struct XorShift(u64);

impl XorShift {
    fn seeded(seed: u64) -> Self {
        // splitmix64 of the seed, so that small consecutive seeds diverge.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Self(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// One request that did not end in a 2xx answer (`--record`).
#[derive(Debug, Serialize)]
struct Record {
    start_ms: f64,
    end_ms: f64,
    path: String,
    status: Option<u16>,
    error: Option<&'static str>,
    #[serde(skip_serializing_if = "String::is_empty")]
    body: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    detail: String,
}

/// Wall-clock time, Unix milliseconds.
fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Counters of one connection loop, merged at the end.
#[derive(Debug, Default)]
struct Stats {
    sent: u64,
    ok: u64,
    status: BTreeMap<u16, u64>,
    failed: u64,
    refused: u64,
    reconnects: u64,
    errors: BTreeMap<&'static str, u64>,
    /// (elapsed micros since start, description)
    first_errors: Vec<(u128, String)>,
    latencies_us: Vec<u32>,
    records: Vec<Record>,
    /// The last failure's kind and detail (for its record).
    last_failure: Option<(&'static str, String)>,
}

impl Stats {
    fn error(&mut self, kind: &'static str) {
        *self.errors.entry(kind).or_default() += 1;
    }

    fn fail(&mut self, start: Instant, path: &str, kind: &'static str, detail: &str) {
        self.failed += 1;
        self.error(kind);
        self.last_failure = Some((kind, detail.to_owned()));
        if self.first_errors.len() < FIRST_ERRORS {
            let elapsed = start.elapsed();
            self.first_errors.push((
                elapsed.as_micros(),
                format!("t={}ms GET {path}: {kind}: {detail}", elapsed.as_millis()),
            ));
        }
    }

    fn merge(&mut self, other: Stats) {
        self.sent += other.sent;
        self.ok += other.ok;
        for (k, v) in other.status {
            *self.status.entry(k).or_default() += v;
        }
        self.failed += other.failed;
        self.refused += other.refused;
        self.reconnects += other.reconnects;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.first_errors.extend(other.first_errors);
        self.latencies_us.extend(other.latencies_us);
        self.records.extend(other.records);
    }
}

/// A live client connection.
struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    task: JoinHandle<()>,
}

async fn handshake<T>(io: T) -> Result<Conn, hyper::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let task = tokio::spawn(async move {
        // Errors surface through the request futures; nothing to do here.
        let _ = conn.await;
    });
    Ok(Conn { sender, task })
}

/// Connects once, bounded by `timeout`. On failure returns the error kind for
/// `errors` and a description.
async fn connect(target: &Target, timeout: Duration) -> Result<Conn, (&'static str, String)> {
    let attempt = async {
        match target {
            Target::Tcp(addrs) => {
                let mut last = None;
                for addr in addrs {
                    match tokio::net::TcpStream::connect(addr).await {
                        Ok(stream) => {
                            let _ = stream.set_nodelay(true);
                            return handshake(stream)
                                .await
                                .map_err(|e| ("connect_other", err_chain(&e)));
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(match last {
                    Some(e) => io_connect_error(&e),
                    None => ("connect_other", "no address to connect to".to_owned()),
                })
            }
            Target::Unix(path) => match tokio::net::UnixStream::connect(path).await {
                Ok(stream) => handshake(stream)
                    .await
                    .map_err(|e| ("connect_other", err_chain(&e))),
                Err(e) => Err(io_connect_error(&e)),
            },
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(("connect_timeout", "connect timed out".to_owned())),
    }
}

fn io_connect_error(e: &std::io::Error) -> (&'static str, String) {
    let kind = match e.kind() {
        // NotFound: the Unix socket file is gone, which is the same thing.
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => "connect_refused",
        _ => "connect_other",
    };
    (kind, e.to_string())
}

/// What became of one attempt to send a request and read its response.
enum Outcome {
    /// The whole response was read (`body`: the start of a non-2xx one).
    Done {
        status: StatusCode,
        keep_alive: bool,
        body: Vec<u8>,
    },
    /// hyper handed the request back: it was never written.
    GivenBack(Box<Request<Empty<Bytes>>>, hyper::Error),
    /// The request was (possibly partly) written; no response head came.
    SendError(hyper::Error),
    /// The response head came but its body could not be read to the end.
    BodyError(StatusCode, hyper::Error),
}

async fn exchange(sender: &mut SendRequest<Empty<Bytes>>, req: Request<Empty<Bytes>>) -> Outcome {
    let resp = match sender.try_send_request(req).await {
        Ok(resp) => resp,
        Err(mut e) => {
            return match e.take_message() {
                Some(req) => Outcome::GivenBack(Box::new(req), e.into_error()),
                None => Outcome::SendError(e.into_error()),
            };
        }
    };
    let status = resp.status();
    let keep_alive = response_keeps_alive(&resp);
    let mut body = resp.into_body();
    let mut kept = Vec::new();
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                if !status.is_success()
                    && let Some(data) = frame.data_ref()
                {
                    let room = BODY_KEPT.saturating_sub(kept.len());
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Err(e)) => return Outcome::BodyError(status, e),
        }
    }
    Outcome::Done {
        status,
        keep_alive,
        body: kept,
    }
}

/// How much of a non-2xx answer's body `--record` keeps.
const BODY_KEPT: usize = 200;

fn has_token(resp: &Response<Incoming>, token: &str) -> bool {
    resp.headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether the server lets the connection be reused after this response.
fn response_keeps_alive(resp: &Response<Incoming>) -> bool {
    if has_token(resp, "close") {
        return false;
    }
    match resp.version() {
        Version::HTTP_10 => has_token(resp, "keep-alive"),
        _ => true,
    }
}

/// Classifies an error of a sent request.
fn classify(e: &hyper::Error) -> &'static str {
    if e.is_timeout() {
        return "timeout";
    }
    let mut source: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe => "reset",
                _ => "io",
            };
        }
        source = s.source();
    }
    if e.is_incomplete_message() {
        "incomplete"
    } else if e.is_canceled() {
        "canceled"
    } else if e.is_closed() {
        "closed"
    } else if e.is_parse() {
        "parse"
    } else {
        "other"
    }
}

/// An error and its sources, `: `-separated.
fn err_chain(e: &dyn StdError) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        let text = c.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = c.source();
    }
    s
}

/// One client connection's loop: returns its counters when the run is over.
async fn connection_loop(shared: Arc<Shared>, index: u32) -> Stats {
    let mut stats = Stats::default();
    let mut rng = XorShift::seeded(u64::from(index) + 1);
    let mut conn: Option<Conn> = None;
    let mut connected_once = false;
    // Since when connects have been failing without a success in between.
    let mut failing_since: Option<Instant> = None;

    while shared.claim().await {
        let path = shared.pick(&mut rng);
        let mut req = shared.build_request(path);
        let started = Instant::now();
        let started_ms = unix_ms();
        let failures_before = stats.failed;
        let mut fresh_givebacks = 0u32;

        loop {
            // A usable connection: the kept-alive one if the server has not
            // closed it, else a new one. Replacing a connection the server
            // closed while idle counts nothing.
            let (mut c, fresh) = match conn.take() {
                Some(mut c) => {
                    let usable = !c.sender.is_closed()
                        && matches!(
                            tokio::time::timeout(shared.timeout, c.sender.ready()).await,
                            Ok(Ok(()))
                        );
                    if !usable {
                        c.task.abort();
                        continue;
                    }
                    (c, false)
                }
                None => match connect(&shared.target, shared.timeout).await {
                    Ok(c) => {
                        if connected_once {
                            stats.reconnects += 1;
                        }
                        connected_once = true;
                        failing_since = None;
                        (c, true)
                    }
                    Err((kind, _detail)) => {
                        stats.refused += 1;
                        stats.error(kind);
                        if shared.stop_on_refused {
                            return stats;
                        }
                        let now = Instant::now();
                        let since = *failing_since.get_or_insert(now);
                        if shared.deadline.is_some_and(|d| now >= d) || shared.stopped() {
                            return stats;
                        }
                        if shared.deadline.is_none() && now.duration_since(since) >= shared.timeout
                        {
                            // --requests mode with the server gone for good:
                            // give up rather than retry forever.
                            stats.error("connect_gave_up");
                            return stats;
                        }
                        tokio::time::sleep(CONNECT_RETRY).await;
                        continue;
                    }
                },
            };

            match tokio::time::timeout(shared.timeout, exchange(&mut c.sender, req)).await {
                Err(_elapsed) => {
                    // Dropping the request future makes hyper close the
                    // connection; abort its task to be sure.
                    c.task.abort();
                    stats.sent += 1;
                    let detail = format!("no complete response within {:?}", shared.timeout);
                    stats.fail(shared.start, &path.display, "timeout", &detail);
                }
                Ok(Outcome::GivenBack(back, e)) => {
                    // Never written: resend on a new connection, uncounted,
                    // unless fresh connections keep refusing it.
                    c.task.abort();
                    if fresh {
                        fresh_givebacks += 1;
                        if fresh_givebacks >= MAX_FRESH_GIVEBACKS {
                            let detail = format!(
                                "request handed back unsent by {MAX_FRESH_GIVEBACKS} fresh connections in a row: {}",
                                err_chain(&e)
                            );
                            stats.fail(shared.start, &path.display, "not_sent_3x", &detail);
                            break;
                        }
                    }
                    req = *back;
                    continue;
                }
                Ok(Outcome::SendError(e)) => {
                    stats.sent += 1;
                    stats.fail(shared.start, &path.display, classify(&e), &err_chain(&e));
                }
                Ok(Outcome::BodyError(status, e)) => {
                    stats.sent += 1;
                    let detail = format!("status {}: {}", status.as_u16(), err_chain(&e));
                    stats.fail(shared.start, &path.display, "body", &detail);
                }
                Ok(Outcome::Done {
                    status,
                    keep_alive,
                    body,
                }) => {
                    stats.sent += 1;
                    *stats.status.entry(status.as_u16()).or_default() += 1;
                    if shared.record && !status.is_success() {
                        stats.records.push(Record {
                            start_ms: started_ms,
                            end_ms: unix_ms(),
                            path: path.display.clone(),
                            status: Some(status.as_u16()),
                            error: None,
                            body: String::from_utf8_lossy(&body).into_owned(),
                            detail: String::new(),
                        });
                    }
                    if status.is_success() {
                        stats.ok += 1;
                        let micros = started.elapsed().as_micros();
                        stats
                            .latencies_us
                            .push(u32::try_from(micros).unwrap_or(u32::MAX));
                        shared.mark_ready().await;
                    }
                    if keep_alive {
                        conn = Some(c);
                    }
                }
            }
            break;
        }
        if shared.record && stats.failed > failures_before {
            let (error, detail) = stats
                .last_failure
                .take()
                .unwrap_or(("unknown", String::new()));
            stats.records.push(Record {
                start_ms: started_ms,
                end_ms: unix_ms(),
                path: path.display.clone(),
                status: None,
                error: Some(error),
                body: String::new(),
                detail,
            });
        }
    }
    if let Some(c) = conn {
        // Close our side; the server sees a clean EOF on an idle connection.
        drop(c.sender);
        let _ = tokio::time::timeout(Duration::from_millis(100), c.task).await;
    }
    stats
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    sent: u64,
    ok: u64,
    status: BTreeMap<String, u64>,
    failed: u64,
    refused: u64,
    reconnects: u64,
    errors: BTreeMap<String, u64>,
    first_errors: Vec<String>,
    latency_ms: Latency,
    duration_ms: u64,
    rps: f64,
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let n = sorted_us.len();
    // Nearest rank.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
    f64::from(sorted_us[rank - 1]) / 1000.0
}

fn report(mut stats: Stats, elapsed: Duration) -> Report {
    stats.latencies_us.sort_unstable();
    stats.first_errors.sort_by_key(|(t, _)| *t);
    let responses: u64 = stats.status.values().sum();
    let secs = elapsed.as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rps = if secs > 0.0 {
        responses as f64 / secs
    } else {
        0.0
    };
    Report {
        sent: stats.sent,
        ok: stats.ok,
        status: stats
            .status
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        failed: stats.failed,
        refused: stats.refused,
        reconnects: stats.reconnects,
        errors: stats
            .errors
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        first_errors: stats
            .first_errors
            .into_iter()
            .take(FIRST_ERRORS)
            .map(|(_, s)| s)
            .collect(),
        latency_ms: Latency {
            p50: percentile_ms(&stats.latencies_us, 0.50),
            p90: percentile_ms(&stats.latencies_us, 0.90),
            p99: percentile_ms(&stats.latencies_us, 0.99),
            max: stats
                .latencies_us
                .last()
                .map_or(0.0, |&us| f64::from(us) / 1000.0),
        },
        duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        rps: (rps * 100.0).round() / 100.0,
    }
}

/// Parses `P[:WEIGHT]`: the weight is what follows the last `:` if it is an
/// integer; otherwise the whole argument is the path, weight 1.
fn parse_path(arg: &str, prefix: &str) -> Result<WeightedPath, String> {
    let (path, weight) = match arg.rsplit_once(':') {
        Some((p, w)) => match w.parse::<u64>() {
            Ok(w) => (p, w),
            Err(_) => (arg, 1),
        },
        None => (arg, 1),
    };
    if !path.starts_with('/') {
        return Err(format!("--path {arg:?}: the path must start with '/'"));
    }
    let full = format!("{prefix}{path}");
    let uri: Uri = full
        .parse()
        .map_err(|e| format!("--path {arg:?}: invalid path: {e}"))?;
    Ok(WeightedPath {
        display: path.to_owned(),
        uri,
        weight,
    })
}

/// Validates the arguments and resolves the target. Errors are reported by
/// the caller with exit code 2.
async fn setup(cli: Cli) -> Result<Shared, String> {
    let (target, host, prefix) = match (&cli.url, &cli.unix) {
        (Some(url), _) => {
            let uri: Uri = url
                .parse()
                .map_err(|e| format!("--url {url:?}: invalid URL: {e}"))?;
            if uri.scheme_str() != Some("http") {
                return Err(format!("--url {url:?}: only http:// URLs are supported"));
            }
            let authority = uri
                .authority()
                .ok_or_else(|| format!("--url {url:?}: missing host"))?;
            if uri.query().is_some() {
                return Err(format!("--url {url:?}: the base URL cannot have a query"));
            }
            let host = authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let port = authority.port_u16().unwrap_or(80);
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| format!("--url {url:?}: cannot resolve {host}: {e}"))?
                .collect();
            if addrs.is_empty() {
                return Err(format!("--url {url:?}: {host} resolves to no address"));
            }
            let host_header = header::HeaderValue::from_str(authority.as_str())
                .map_err(|e| format!("--url {url:?}: invalid host: {e}"))?;
            let prefix = uri.path().trim_end_matches('/').to_owned();
            (Target::Tcp(addrs), host_header, prefix)
        }
        (None, Some(path)) => (
            Target::Unix(path.clone()),
            header::HeaderValue::from_static("localhost"),
            String::new(),
        ),
        (None, None) => return Err("one of --url or --unix is required".to_owned()),
    };

    let args = if cli.paths.is_empty() {
        vec!["/".to_owned()]
    } else {
        cli.paths.clone()
    };
    let paths = args
        .iter()
        .map(|a| parse_path(a, &prefix))
        .collect::<Result<Vec<_>, _>>()?;
    let total_weight = paths
        .iter()
        .try_fold(0u64, |acc, p| acc.checked_add(p.weight))
        .ok_or("--path: weights overflow")?;
    if total_weight == 0 {
        return Err("--path: the weights sum to 0".to_owned());
    }

    let rate = match cli.rate {
        None => None,
        // try_: 1e-300 passes `r > 0` but its period is beyond a Duration.
        Some(r) if r.is_finite() && r > 0.0 => match Duration::try_from_secs_f64(1.0 / r) {
            Ok(period) if !period.is_zero() => Some(period),
            _ => {
                return Err(format!(
                    "--rate {r}: out of range; give requests per second, e.g. 0.5 or 200"
                ));
            }
        },
        Some(r) => return Err(format!("--rate {r}: must be a positive number")),
    };

    let start = Instant::now();
    Ok(Shared {
        target,
        host,
        paths,
        total_weight,
        timeout: Duration::from_millis(cli.timeout_ms),
        stop_on_refused: cli.stop_on_refused,
        start,
        deadline: cli.duration_ms.map(|ms| start + Duration::from_millis(ms)),
        max_requests: cli.requests,
        next_slot: AtomicU64::new(0),
        rate: rate.map(|interval| (Mutex::new(start), interval)),
        ready_file: cli.ready_file.clone(),
        ready_after: cli.ready_after,
        succeeded: AtomicU64::new(0),
        ready_done: AtomicBool::new(false),
        stop_file: cli.stop_file.clone(),
        record: cli.record.is_some(),
    })
}

async fn run(cli: Cli) -> Result<Report, String> {
    let connections = cli.connections;
    let record = cli.record.clone();
    let shared = Arc::new(setup(cli).await?);
    let tasks: Vec<_> = (0..connections)
        .map(|i| tokio::spawn(connection_loop(Arc::clone(&shared), i)))
        .collect();
    let mut total = Stats::default();
    for task in tasks {
        match task.await {
            Ok(stats) => total.merge(stats),
            Err(e) => eprintln!("curfew-load: a connection loop died: {e}"),
        }
    }
    if let Some(path) = record {
        let mut records = std::mem::take(&mut total.records);
        records.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
        let mut text = String::new();
        for r in &records {
            text.push_str(&serde_json::to_string(r).map_err(|e| e.to_string())?);
            text.push('\n');
        }
        std::fs::write(&path, text)
            .map_err(|e| format!("--record {}: cannot write: {e}", path.display()))?;
    }
    Ok(report(total, shared.start.elapsed()))
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("curfew-load: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(report) => {
            let json = serde_json::to_string(&report)
                .unwrap_or_else(|e| format!("{{\"error\":\"cannot serialize report: {e}\"}}"));
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{json}");
            let _ = out.flush();
        }
        Err(msg) => {
            eprintln!("curfew-load: {msg}");
            std::process::exit(2);
        }
    }
}
