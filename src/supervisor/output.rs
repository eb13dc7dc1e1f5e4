//! Worker stdout/stderr capture: each line is re-logged with the worker's id
//! and pid, and the last stderr lines are kept so a boot failure or a crash
//! can be reported with the worker's own words (a Python traceback).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

/// Longest line re-logged; the rest of a longer line is cut (and marked).
const MAX_LINE: usize = 16 * 1024;
/// Stderr lines kept per worker (a Python stack dump of a deep call chain is
/// 40-60 lines).
const TAIL_LINES: usize = 100;

/// The last lines a worker wrote to stderr.
#[derive(Clone, Default)]
pub struct Tail(Arc<Mutex<TailInner>>);

#[derive(Default)]
struct TailInner {
    lines: VecDeque<String>,
    /// Lines ever pushed (so a mark survives the ring buffer's rotation).
    total: u64,
}

impl Tail {
    fn push(&self, line: String) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if t.lines.len() == TAIL_LINES {
            t.lines.pop_front();
        }
        t.lines.push_back(line);
        t.total += 1;
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

/// Read `pipe` line by line until EOF, logging each line at INFO (a worker's
/// own log lines are not curfew's faults) and keeping stderr in `tail`.
pub fn capture(
    rx: pipe::Receiver,
    worker: usize,
    pid: u32,
    stream: Stream,
    tail: Option<Tail>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(8192, rx);
        let mut line: Vec<u8> = Vec::new();
        let mut truncated = false;
        while let Ok(buf) = reader.fill_buf().await {
            if buf.is_empty() {
                if !line.is_empty() {
                    emit(&line, truncated, worker, pid, stream, tail.as_ref());
                }
                break;
            }
            let (chunk, found) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], Some(i + 1)),
                None => (buf, None),
            };
            let room = MAX_LINE.saturating_sub(line.len());
            if chunk.len() > room {
                truncated = true;
            }
            line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            let used = found.unwrap_or(buf.len());
            reader.consume(used);
            if found.is_some() {
                emit(&line, truncated, worker, pid, stream, tail.as_ref());
                line.clear();
                truncated = false;
            }
        }
    })
}

fn emit(raw: &[u8], truncated: bool, worker: usize, pid: u32, stream: Stream, tail: Option<&Tail>) {
    let mut text = String::from_utf8_lossy(raw)
        .trim_end_matches('\r')
        .to_string();
    if truncated {
        text.push_str(" [line truncated]");
    }
    tracing::info!(target: "curfew::worker", worker, pid, stream = stream.as_str(), "{text}");
    if let Some(t) = tail {
        t.push(text);
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
    }
}
