//! curfew's access log (`access_log`): one line per request answered on
//! the public addresses, written off the request path.
//!
//! The request task fills a small [`Record`] when its response has ended
//! (or was dropped: a client that went away is logged with the bytes it
//! got) and hands it to [`AccessLog::send`], which never blocks: a bounded
//! channel to one writer thread, and when that is full the record is
//! counted and dropped (said once per 10 s at WARN). The writer formats
//! ([`format`]: `combined` or `json`) into a buffered writer, flushed when
//! idle and at least every 100 ms; [`AccessLog::reopen`] (SIGUSR1, for
//! logrotate's `postrotate`) makes it open the path again, and
//! [`AccessLog::close`] flushes what is left at exit.
//!
//! Only requests of the public addresses are logged: curfew's readiness
//! and liveness probes go to the workers directly, the admin address
//! (`/healthz`, `/readyz`, `/metrics`) has its own server, and job
//! deliveries go through the dispatcher, not the front.

pub mod format;

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::header;

pub use format::Record;

use crate::config::{AccessLogFormat, AccessLogTarget, ForwardedAllow};

/// Records that may wait for the writer; beyond, they are dropped.
const CHANNEL: usize = 8192;
/// The writer flushes when idle this long, and at least this often.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Dropped records and write errors are said at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Longest User-Agent or Referer kept.
const MAX_HEADER: usize = 512;

#[derive(Debug, thiserror::Error)]
#[error("cannot open the access log {path}: {source}")]
pub struct OpenError {
    path: PathBuf,
    source: std::io::Error,
}

/// What the request path and the writer thread share.
struct Shared {
    dropped: AtomicU64,
    reopen: AtomicBool,
    closing: AtomicBool,
}

/// The access log: a sender to its writer thread.
pub struct AccessLog {
    tx: SyncSender<Record>,
    shared: Arc<Shared>,
    /// Log query strings.
    pub query: bool,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AccessLog {
    /// Open the target (a file is created 0640 and appended to) and start
    /// the writer thread.
    pub fn open(
        target: &AccessLogTarget,
        format: AccessLogFormat,
        query: bool,
    ) -> Result<Arc<AccessLog>, OpenError> {
        let sink = Sink::open(target)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL);
        let shared = Arc::new(Shared {
            dropped: AtomicU64::new(0),
            reopen: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        });
        let writer = Writer {
            rx,
            shared: shared.clone(),
            out: BufWriter::with_capacity(64 * 1024, sink),
            target: target.clone(),
            format,
            line: String::with_capacity(512),
            clock: format::Clock::default(),
            last_warn: None,
        };
        let handle = std::thread::Builder::new()
            .name("curfew-access-log".into())
            .spawn(move || writer.run())
            .map_err(|source| OpenError {
                path: PathBuf::from("(writer thread)"),
                source,
            })?;
        Ok(Arc::new(AccessLog {
            tx,
            shared,
            query,
            writer: Mutex::new(Some(handle)),
        }))
    }

    /// Hand a record to the writer; never waits (a full channel drops it,
    /// counted).
    pub fn send(&self, r: Record) {
        match self.tx.try_send(r) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Open the file again (after logrotate moved it away).
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Relaxed);
    }

    /// Write out what is queued and stop the writer (at exit; waits up to
    /// a second).
    pub fn close(&self) {
        self.shared.closing.store(true, Ordering::Relaxed);
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let deadline = Instant::now() + Duration::from_secs(1);
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

enum Sink {
    Stdout(std::io::Stdout),
    File(File),
}

impl Sink {
    fn open(target: &AccessLogTarget) -> Result<Sink, OpenError> {
        match target {
            AccessLogTarget::Stdout => Ok(Sink::Stdout(std::io::stdout())),
            AccessLogTarget::File(path) => OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(path)
                .map(Sink::File)
                .map_err(|source| OpenError {
                    path: path.clone(),
                    source,
                }),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Stdout(s) => s.write(buf),
            Sink::File(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(s) => s.flush(),
            Sink::File(f) => f.flush(),
        }
    }
}

struct Writer {
    rx: Receiver<Record>,
    shared: Arc<Shared>,
    out: BufWriter<Sink>,
    target: AccessLogTarget,
    format: AccessLogFormat,
    line: String,
    clock: format::Clock,
    last_warn: Option<Instant>,
}

impl Writer {
    fn run(mut self) {
        let mut flushed = Instant::now();
        loop {
            match self.rx.recv_timeout(FLUSH_EVERY) {
                Ok(r) => {
                    self.write(&r);
                    if flushed.elapsed() >= FLUSH_EVERY {
                        self.flush();
                        flushed = Instant::now();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.flush();
                    flushed = Instant::now();
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.shared.reopen.swap(false, Ordering::Relaxed) {
                self.reopen();
            }
            self.report_dropped();
            if self.shared.closing.load(Ordering::Relaxed) {
                while let Ok(r) = self.rx.try_recv() {
                    self.write(&r);
                }
                break;
            }
        }
        self.flush();
    }

    fn write(&mut self, r: &Record) {
        self.line.clear();
        match self.format {
            AccessLogFormat::Combined => format::combined(r, &mut self.clock, &mut self.line),
            AccessLogFormat::Json => format::json(r, &mut self.clock, &mut self.line),
        }
        if let Err(e) = self.out.write_all(self.line.as_bytes()) {
            self.warn_write(&e);
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            self.warn_write(&e);
        }
    }

    fn reopen(&mut self) {
        self.flush();
        if self.target == AccessLogTarget::Stdout {
            return;
        }
        match Sink::open(&self.target) {
            Ok(sink) => {
                self.out = BufWriter::with_capacity(64 * 1024, sink);
                tracing::info!("Access log reopened.");
            }
            Err(e) => {
                tracing::warn!(error = %e, "Could not reopen the access log; still writing to the file it had open.")
            }
        }
    }

    fn warn_write(&mut self, e: &std::io::Error) {
        if self.last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            self.last_warn = Some(Instant::now());
            tracing::warn!(error = %e, "Could not write to the access log.");
        }
    }

    fn report_dropped(&mut self) {
        if self.last_warn.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return;
        }
        let dropped = self.shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            self.last_warn = Some(Instant::now());
            tracing::warn!(
                dropped,
                "Access log writer fell behind: {dropped} lines dropped (requests were not slowed)."
            );
        }
    }
}

/// What a request's access log line needs besides its response, taken
/// from the request before it is rewritten for the worker; the rest is
/// filled in as the request goes.
pub struct Note {
    at: SystemTime,
    started: Instant,
    client: String,
    method: http::Method,
    path: String,
    version: http::Version,
    referer: Option<String>,
    user_agent: Option<String>,
    pub queued: Option<Duration>,
    pub upstream: Option<Duration>,
    pub worker: Option<usize>,
}

impl Note {
    pub fn of<B>(
        req: &http::Request<B>,
        started: Instant,
        peer: Option<&str>,
        trusted: bool,
        allow: &ForwardedAllow,
        query: bool,
    ) -> Note {
        let h = req.headers();
        let text = |name: header::HeaderName| {
            h.get(name).map(|v| {
                let s = String::from_utf8_lossy(v.as_bytes());
                cut(&s, MAX_HEADER)
            })
        };
        let uri = req.uri();
        let path = match (query, uri.path_and_query()) {
            (true, Some(pq)) => pq.as_str(),
            _ => uri.path(),
        };
        Note {
            at: SystemTime::now(),
            started,
            client: client(h, peer, trusted, allow),
            method: req.method().clone(),
            path: cut(if path.is_empty() { "/" } else { path }, 2048),
            version: req.version(),
            referer: text(header::REFERER),
            user_agent: text(header::USER_AGENT),
            queued: None,
            upstream: None,
            worker: None,
        }
    }

    /// The record, once the response of `status` has sent `bytes`
    /// (`broken`: its body failed, cut off).
    pub fn finish(self, status: u16, bytes: u64, broken: bool) -> Record {
        Record {
            at: self.at,
            client: self.client,
            method: self.method,
            path: self.path,
            version: self.version,
            status,
            bytes,
            broken,
            total: self.started.elapsed(),
            queued: self.queued,
            upstream: self.upstream,
            worker: self.worker,
            referer: self.referer,
            user_agent: self.user_agent,
        }
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The client as trusted: the `X-Forwarded-For` chain a trusted peer sent,
/// then the peer itself, read from the right past every address
/// `forwarded_allow` trusts (the proxies); the first one it does not trust
/// is the client (or the leftmost, when all are trusted). The same trust
/// decides which `X-Forwarded-For` the worker gets
/// ([`super::headers::set_forwarded`]). `peer`: the TCP client's address
/// as text, made once per connection (`ConnState::peer_value`). `-` for a
/// Unix-socket client without forwarding headers.
pub fn client(
    h: &http::HeaderMap,
    peer: Option<&str>,
    trusted: bool,
    allow: &ForwardedAllow,
) -> String {
    let mut chain: Vec<&str> = Vec::new();
    if trusted {
        for v in h.get_all(&super::headers::X_FORWARDED_FOR).iter() {
            if let Ok(s) = v.to_str() {
                chain.extend(s.split(',').map(str::trim).filter(|s| !s.is_empty()));
            }
        }
    }
    if let Some(p) = peer {
        chain.push(p);
    }
    // Every hop trusted: the leftmost is the client as far as anyone can tell.
    let at = super::headers::client_hop(&chain, allow).unwrap_or(0);
    chain
        .get(at)
        .map_or_else(|| "-".to_owned(), |hop| cut(hop, 64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(nets: &[&str]) -> ForwardedAllow {
        ForwardedAllow::Nets(nets.iter().map(|n| n.parse().expect("net")).collect())
    }

    fn xff(v: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().expect("value"));
        h
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let lb = allow(&["10.0.0.0/8", "127.0.0.1/32"]);
        let ip = |s: &'static str| Some(s);
        // A trusted balancer in front: the address it saw.
        assert_eq!(
            client(&xff("203.0.113.7"), ip("10.0.0.2"), true, &lb),
            "203.0.113.7"
        );
        // A client that forged a hop before the balancer: not believed.
        assert_eq!(
            client(
                &xff("1.2.3.4, 203.0.113.7, 10.0.0.3"),
                ip("10.0.0.2"),
                true,
                &lb
            ),
            "203.0.113.7"
        );
        // An untrusted peer's header is ignored.
        assert_eq!(
            client(&xff("1.2.3.4"), ip("198.51.100.9"), false, &lb),
            "198.51.100.9"
        );
        // All trusted (a local client): the leftmost.
        assert_eq!(
            client(&http::HeaderMap::new(), ip("127.0.0.1"), true, &lb),
            "127.0.0.1"
        );
        // A Unix-socket client with and without the header.
        assert_eq!(client(&xff("203.0.113.7"), None, true, &lb), "203.0.113.7");
        assert_eq!(client(&http::HeaderMap::new(), None, true, &lb), "-");
        // A trusted hop written with its port is still trusted (the worker
        // gets the chain from the same client: headers::client_hop).
        assert_eq!(
            client(&xff("203.0.113.7, 10.0.0.3:443"), ip("10.0.0.2"), true, &lb),
            "203.0.113.7"
        );
        // Garbage in the header is where trust stops.
        assert_eq!(
            client(&xff("unknown"), ip("10.0.0.2"), true, &lb),
            "unknown"
        );
    }

    #[test]
    fn records_are_written_flushed_reopened_and_dropped_when_full() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("access.log");
        let log = AccessLog::open(
            &AccessLogTarget::File(path.clone()),
            AccessLogFormat::Json,
            false,
        )
        .expect("open");
        let req = http::Request::get("/a?token=secret")
            .header("user-agent", "t")
            .body(())
            .expect("request");
        let note = Note::of(&req, Instant::now(), None, true, &allow(&[]), false);
        log.send(note.finish(200, 3, false));
        let read = || std::fs::read_to_string(&path).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(5);
        while read().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let v: serde_json::Value = serde_json::from_str(read().trim()).expect("json line");
        assert_eq!(v["path"], "/a", "query left out");
        assert_eq!(v["bytes"], 3);
        // Moved away, then reopened: the next line goes to a new file.
        let moved = dir.path().join("access.log.1");
        std::fs::rename(&path, &moved).expect("rename");
        log.reopen();
        std::thread::sleep(Duration::from_millis(250));
        let note = Note::of(&req, Instant::now(), None, true, &allow(&[]), true);
        log.send(note.finish(404, 0, false));
        log.close();
        assert!(read().contains("/a?token=secret"), "{}", read());
        assert_eq!(
            std::fs::read_to_string(&moved)
                .expect("moved")
                .lines()
                .count(),
            1
        );
        // The writer is gone: sending counts, never blocks.
        for _ in 0..(CHANNEL + 10) {
            log.send(
                Note::of(&req, Instant::now(), None, true, &allow(&[]), false)
                    .finish(200, 0, false),
            );
        }
        assert!(log.shared.dropped.load(Ordering::Relaxed) >= 10);
    }
}
