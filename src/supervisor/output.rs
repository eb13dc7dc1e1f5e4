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
/// Stderr lines kept per worker.
const TAIL_LINES: usize = 30;

/// The last lines a worker wrote to stderr.
#[derive(Clone, Default)]
pub struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, line: String) {
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() == TAIL_LINES {
            q.pop_front();
        }
        q.push_back(line);
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The last `n` lines joined by newlines.
    pub fn last(&self, n: usize) -> String {
        let lines = self.lines();
        lines[lines.len().saturating_sub(n)..].join("\n")
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
