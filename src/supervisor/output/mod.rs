//! Worker stdout/stderr relay: each line gets a level from what it is
//! ([`lines`]: Python tracebacks and Node stacks grouped into one event,
//! uvicorn/gunicorn/Django/`logging` prefixes, JSON lines), then is
//! relayed with the worker's id, pid and stream under the target
//! `curfew::worker`, at or above `worker_log_level`, within a per-worker
//! rate ([`bucket`]; the lines dropped are counted in one WARN when it
//! recovers). A multi-line payload goes into the `traceback` field, so an
//! event stays one line in text logs (newlines escaped there).
//!
//! The last stderr lines are kept ([`Tail`]) so a boot failure or a crash
//! can be reported with the worker's own words; the last traceback's
//! exception line is kept too, so curfew's own event names it in one line
//! instead of repeating the traceback. A traceback written while a worker
//! boots is logged once per distinct traceback ([`Relay`]'s memory, cleared
//! when a worker becomes ready): a worker that fails at import, restarted
//! with backoff, does not repeat it on every restart.

mod bucket;
pub mod lines;

use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

use bucket::Bucket;
pub use lines::Level;
use lines::{Event, Lines};

/// Longest line re-logged; the rest of a longer line is cut (and marked).
pub const MAX_LINE: usize = 16 * 1024;
/// Stderr lines kept per worker (a Python stack dump of a deep call chain is
/// 40-60 lines).
const TAIL_LINES: usize = 100;
/// A held line (a possible traceback header, an unfinished block) is
/// relayed after this long without a next line.
const IDLE_FLUSH: Duration = Duration::from_millis(100);
/// Events relayed per worker and second, sustained; and the burst allowed.
pub const RATE_PER_SEC: u32 = 1000;
pub const RATE_BURST: u32 = 2000;

/// The last lines a worker wrote to stderr.
#[derive(Clone, Default)]
pub struct Tail(Arc<Mutex<TailInner>>);

#[derive(Default)]
struct TailInner {
    lines: VecDeque<String>,
    /// Lines ever pushed (so a mark survives the ring buffer's rotation).
    total: u64,
    /// The exception line of the last traceback relayed (or said once for
    /// several boots), and `total` when it was noted.
    exception: Option<(String, u64)>,
}

impl Tail {
    pub(crate) fn push(&self, line: String) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if t.lines.len() == TAIL_LINES {
            t.lines.pop_front();
        }
        t.lines.push_back(line);
        t.total += 1;
    }

    fn note_exception(&self, exception: &str) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        t.exception = Some((exception.to_owned(), t.total));
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lines
            .iter()
            .cloned()
            .collect()
    }

    /// The last `n` lines joined by newlines (for messages read by people).
    pub fn last(&self, n: usize) -> String {
        self.last_joined(n, "\n")
    }

    /// The last `n` lines on one line, separated by " | " (for a log field:
    /// a newline inside a log event would split it for journald and friends).
    pub fn last_one_line(&self, n: usize) -> String {
        self.last_joined(n, " | ")
    }

    /// What the worker last said, on one line, for curfew's own event: the
    /// exception of its last traceback (which was relayed as its own ERROR
    /// event) when it is among its last `n` lines, else those lines.
    pub fn summary(&self, n: usize) -> String {
        let exception = {
            let t = self.0.lock().unwrap_or_else(|e| e.into_inner());
            t.exception
                .as_ref()
                .filter(|(_, at)| t.total - at <= n as u64)
                .map(|(e, _)| e.clone())
        };
        match exception {
            Some(e) => format!("{e} (its traceback is logged above)"),
            None => self.last_one_line(n),
        }
    }

    fn last_joined(&self, n: usize, sep: &str) -> String {
        let lines = self.lines();
        lines[lines.len().saturating_sub(n)..].join(sep)
    }

    /// A position: [`Tail::since`] returns what was written after it.
    pub fn mark(&self) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    /// Up to `max` lines written after `mark` (the first ones: a stack dump
    /// prints the innermost frame first), on one line separated by " | ".
    pub fn since(&self, mark: u64, max: usize) -> String {
        let t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let first_kept = t.total - t.lines.len() as u64;
        let skip = mark.saturating_sub(first_kept) as usize;
        t.lines
            .iter()
            .skip(skip)
            .take(max)
            .cloned()
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

#[derive(Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// What every worker's relay shares: the tracebacks already logged
/// during boots.
#[derive(Default)]
pub struct Relay {
    boot_tracebacks: Mutex<HashSet<u64>>,
}

impl Relay {
    /// A worker became ready: a traceback at a later boot is news again.
    pub fn worker_ready(&self) {
        self.boot_tracebacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Whether this boot-time traceback was logged before (and remember it).
    fn seen_at_boot(&self, block: &str) -> bool {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        block.hash(&mut h);
        !self
            .boot_tracebacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(h.finish())
    }
}

/// One worker's output, both streams.
#[derive(Clone)]
pub struct Worker {
    pub id: usize,
    pub pid: u32,
    /// Relay events at or above this (`worker_log_level`); `None`: none.
    pub min: Option<Level>,
    pub relay: Arc<Relay>,
    /// Set once the worker is ready (tracebacks before are boot crashes).
    pub ready: Arc<AtomicBool>,
    bucket: Arc<Mutex<Bucket>>,
}

impl Worker {
    pub fn new(id: usize, pid: u32, min: Option<Level>, relay: Arc<Relay>) -> Worker {
        Worker {
            id,
            pid,
            min,
            relay,
            ready: Arc::new(AtomicBool::new(false)),
            bucket: Arc::new(Mutex::new(Bucket::new(RATE_PER_SEC, RATE_BURST))),
        }
    }
}

/// Read `pipe` line by line until EOF, relaying each event (see the module
/// doc) and keeping stderr in `tail`.
pub fn capture(
    rx: pipe::Receiver,
    w: Worker,
    stream: Stream,
    tail: Option<Tail>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let kept = tail.clone();
        read_events(
            rx,
            |line| {
                if let Some(t) = &kept {
                    t.push(line.to_owned());
                }
            },
            |ev| relay(ev, &w, stream, tail.as_ref()),
            || dropped_unsaid(&w),
            || report_recovered(&w),
        )
        .await;
        report_dropped(&w);
    })
}

/// Read `rx` until EOF: every line (cut at [`MAX_LINE`], marked so) to
/// `line`, and the events they make ([`lines`]) to `event` — a held line
/// or unfinished block once nothing more came for [`IDLE_FLUSH`], and what
/// is left at EOF. While `waiting()` says so, `idle()` is called after
/// each [`IDLE_FLUSH`] without output.
pub async fn read_events(
    rx: pipe::Receiver,
    mut line: impl FnMut(&str),
    mut event: impl FnMut(Event),
    waiting: impl Fn() -> bool,
    mut idle: impl FnMut(),
) {
    let mut reader = BufReader::with_capacity(8192, rx);
    let mut buf_line: Vec<u8> = Vec::new();
    let mut truncated = false;
    let mut lines = Lines::default();
    let mut events = Vec::new();
    loop {
        let filled = if (lines.holding() || waiting()) && buf_line.is_empty() {
            match tokio::time::timeout(IDLE_FLUSH, reader.fill_buf()).await {
                Ok(r) => r,
                Err(_) => {
                    lines.flush(&mut events);
                    events.drain(..).for_each(&mut event);
                    idle();
                    continue;
                }
            }
        } else {
            reader.fill_buf().await
        };
        let Ok(buf) = filled else { break };
        if buf.is_empty() {
            if !buf_line.is_empty() {
                let text = text_of(&buf_line, truncated);
                line(&text);
                lines.push(&text, &mut events);
            }
            break;
        }
        let (chunk, found) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        let room = MAX_LINE.saturating_sub(buf_line.len());
        if chunk.len() > room {
            truncated = true;
        }
        buf_line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = found.unwrap_or(buf.len());
        reader.consume(used);
        if found.is_some() {
            let text = text_of(&buf_line, truncated);
            line(&text);
            lines.push(&text, &mut events);
            events.drain(..).for_each(&mut event);
            buf_line.clear();
            truncated = false;
        }
    }
    lines.flush(&mut events);
    events.drain(..).for_each(&mut event);
}

fn text_of(raw: &[u8], truncated: bool) -> String {
    let mut text = String::from_utf8_lossy(raw)
        .trim_end_matches('\r')
        .to_string();
    if truncated {
        text.push_str(" [line truncated]");
    }
    text
}

/// Relay one event of worker `w`.
fn relay(mut ev: Event, w: &Worker, stream: Stream, tail: Option<&Tail>) {
    if let (Some(t), Some(e)) = (tail, ev.exception()) {
        t.note_exception(e);
    }
    if ev.block.is_some()
        && !w.ready.load(Ordering::Relaxed)
        && w.relay
            .seen_at_boot(ev.block.as_deref().unwrap_or_default())
    {
        // The same crash as an earlier boot's: said once.
        ev.level = Level::Debug;
    }
    match w.min {
        Some(min) if ev.level >= min => {}
        _ => return,
    }
    let allowed = w.bucket.lock().unwrap_or_else(|e| e.into_inner()).take();
    if !allowed {
        return;
    }
    report_dropped(w);
    emit(&ev, w, stream);
}

/// Some events were dropped and not reported yet.
fn dropped_unsaid(w: &Worker) -> bool {
    w.bucket.lock().unwrap_or_else(|e| e.into_inner()).dropped() > 0
}

/// The count of dropped events, once the rate is back under the limit.
fn report_recovered(w: &Worker) {
    if w.bucket
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .has_token()
    {
        report_dropped(w);
    }
}

/// One WARN with the number of lines dropped since the last one, if any.
fn report_dropped(w: &Worker) {
    let dropped = w
        .bucket
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take_dropped();
    if dropped > 0 {
        tracing::warn!(
            target: "curfew::worker",
            worker = w.id,
            pid = w.pid,
            dropped,
            "Worker output over {RATE_PER_SEC} events per second: {dropped} were not relayed."
        );
    }
}

/// Log `$($rest)*` at a [`Level`] chosen at run time.
macro_rules! at_level {
    ($level:expr, $($rest:tt)*) => {
        match $level {
            $crate::logging::Level::Debug => tracing::debug!($($rest)*),
            $crate::logging::Level::Info => tracing::info!($($rest)*),
            $crate::logging::Level::Warn => tracing::warn!($($rest)*),
            $crate::logging::Level::Error => tracing::error!($($rest)*),
        }
    };
}
pub(crate) use at_level;

/// A multi-line text as a log field value: newlines escaped (`\n`) in
/// text logs, so the event stays one line; as it is in JSON (which escapes
/// it itself).
pub struct OneLine<'a>(pub &'a str);

impl std::fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if crate::logging::is_text() {
            write!(f, "{:?}", self.0)
        } else {
            f.write_str(self.0)
        }
    }
}

fn emit(ev: &Event, w: &Worker, stream: Stream) {
    let (worker, pid, stream, msg) = (w.id, w.pid, stream.as_str(), &ev.message);
    match (&ev.block, &ev.fields) {
        (Some(block), _) => {
            at_level!(ev.level, target: "curfew::worker", worker, pid, stream, traceback = %OneLine(block), "{msg}")
        }
        (None, Some(fields)) => {
            at_level!(ev.level, target: "curfew::worker", worker, pid, stream, fields = %fields, "{msg}")
        }
        (None, None) => at_level!(ev.level, target: "curfew::worker", worker, pid, stream, "{msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_a_mark_survives_rotation() {
        let t = Tail::default();
        for i in 0..(TAIL_LINES + 10) {
            t.push(format!("old {i}"));
        }
        let m = t.mark();
        t.push("dump 1".into());
        t.push("dump 2".into());
        assert_eq!(t.since(m, 10), "dump 1 | dump 2");
        assert_eq!(t.since(m, 1), "dump 1");
        assert_eq!(t.last(1), "dump 2");
        assert_eq!(t.last_one_line(2), "dump 1 | dump 2");
        assert_eq!(t.lines().len(), TAIL_LINES);
        assert_eq!(t.summary(1), "dump 2");
        t.note_exception("ValueError: x");
        assert_eq!(
            t.summary(1),
            "ValueError: x (its traceback is logged above)"
        );
        // Long after it, the last lines say more.
        t.push("later 1".into());
        t.push("later 2".into());
        assert_eq!(t.summary(1), "later 2");
        assert!(t.summary(2).starts_with("ValueError: x"));
    }

    #[test]
    fn a_boot_traceback_is_news_once_until_a_worker_is_ready() {
        let r = Relay::default();
        assert!(!r.seen_at_boot("Traceback\nImportError: x"));
        assert!(r.seen_at_boot("Traceback\nImportError: x"));
        assert!(!r.seen_at_boot("Traceback\nImportError: y"));
        r.worker_ready();
        assert!(!r.seen_at_boot("Traceback\nImportError: x"));
    }
}
