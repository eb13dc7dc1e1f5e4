//! What a worker's output line is: its level, and whether it belongs with
//! the lines around it. Pure (no I/O, no clock): lines go in with
//! [`Lines::push`], events come out; [`Lines::flush`] ends whatever is held
//! (the relay calls it after a short idle time and at EOF).
//!
//! - A Python `Traceback (most recent call last):` block is one event at
//!   ERROR: its frames (indented), the exception line, and chained
//!   exceptions ("During handling of the above exception…", "The above
//!   exception was the direct cause…") up to the last exception line. The
//!   line just before it (uvicorn's `ERROR: Exception in ASGI
//!   application`, gunicorn's `[ERROR] Error handling request`, Django's
//!   `Internal Server Error: /x`) is its header and gives the level when
//!   it has one (`WARNING:root:…` + traceback stays a WARN).
//! - A Node error line (`TypeError: …`) followed by `    at …` frames is one
//!   event at ERROR, with the crash preamble Node prints before an uncaught
//!   one (`/app/server.js:5`, the source line, the caret) and its trailing
//!   `Node.js v20…` line.
//! - Other lines get a level from their prefix: uvicorn and Python
//!   `logging`'s default format (`ERROR:`, `WARNING:root:…`,
//!   `ERROR:django.request:…`), gunicorn's `[…] [pid] [ERROR]`, logfmt's
//!   `level=warn`; a JSON object (structlog, python-json-logger, pino)
//!   from its `level`/`levelname`/`severity`, its message from
//!   `msg`/`message`/`event` and the rest kept as fields. Anything else is
//!   INFO. A server's "running on http://127.0.0.1:PORT" names curfew's
//!   private worker socket and is DEBUG.
//!
//! Every line is held until the next one arrives (or the flush), since only
//! the next line tells whether it was the header of a traceback.

pub use crate::logging::Level;

/// What kind of event it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Line,
    /// A Python traceback (with its header line, if any).
    Traceback,
    /// A Node error with its stack.
    NodeStack,
    /// A JSON object line.
    Json,
}

/// One event to relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub level: Level,
    pub kind: Kind,
    /// One line: the line itself, or for a block its header and last
    /// exception line.
    pub message: String,
    /// A block's lines (newline-separated), for a field.
    pub block: Option<String>,
    /// A JSON line's other keys (compact JSON), for a field.
    pub fields: Option<String>,
}

impl Event {
    fn line(level: Level, text: String) -> Event {
        Event {
            level,
            kind: Kind::Line,
            message: text,
            block: None,
            fields: None,
        }
    }

    /// The exception line of a traceback or Node stack (its last line that
    /// is not a frame), for a one-line summary.
    pub fn exception(&self) -> Option<&str> {
        let block = self.block.as_deref()?;
        match self.kind {
            Kind::Traceback => block
                .lines()
                .rev()
                .find(|l| !l.is_empty() && !l.starts_with(char::is_whitespace)),
            Kind::NodeStack => block.lines().find(|l| is_node_error(l)),
            _ => None,
        }
    }
}

const TRACEBACK: &str = "Traceback (most recent call last):";
const CHAINED: [&str; 2] = [
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
];
/// Lines of one block at most; the rest are dropped (counted in the block).
const MAX_BLOCK_LINES: usize = 400;

#[derive(Debug)]
enum State {
    Idle,
    /// One line held: it may be the header of a traceback.
    Held(String),
    Python {
        header: Option<String>,
        lines: Vec<String>,
        at: PyAt,
    },
    /// Node's crash preamble (`/app/x.js:5`, source, caret) before the error.
    NodePreamble(Vec<String>),
    Node {
        lines: Vec<String>,
        /// A blank line came after the frames (`Node.js v…` may follow).
        blank: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PyAt {
    /// In the frames (indented lines).
    Frames,
    /// Just after the exception line: a chained exception may follow.
    Exception,
    /// After a chain marker: the next traceback is coming.
    Chain,
}

/// The grouping state of one output stream.
#[derive(Debug)]
pub struct Lines {
    state: State,
}

impl Default for Lines {
    fn default() -> Self {
        Lines { state: State::Idle }
    }
}

impl Lines {
    /// Something is held, waiting for the next line or a flush.
    pub fn holding(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// One line (without its line end) in; finished events out.
    pub fn push(&mut self, line: &str, out: &mut Vec<Event>) {
        let state = std::mem::replace(&mut self.state, State::Idle);
        self.state = match state {
            State::Idle => self.start(line, out),
            State::Held(prev) => {
                if line == TRACEBACK {
                    State::Python {
                        header: Some(prev),
                        lines: vec![line.to_owned()],
                        at: PyAt::Frames,
                    }
                } else if is_node_frame(line) && is_node_error(&prev) {
                    State::Node {
                        lines: vec![prev, line.to_owned()],
                        blank: false,
                    }
                } else {
                    out.push(classify_line(prev));
                    self.start(line, out)
                }
            }
            State::Python {
                header,
                mut lines,
                at,
            } => {
                let indented = line.starts_with(char::is_whitespace) && !line.trim().is_empty();
                let next = match at {
                    PyAt::Frames if indented => Some(PyAt::Frames),
                    // The exception line (or a message's next line).
                    PyAt::Frames if !line.trim().is_empty() => Some(PyAt::Exception),
                    PyAt::Frames => Some(PyAt::Frames),
                    PyAt::Exception if line.trim().is_empty() => Some(PyAt::Exception),
                    PyAt::Exception if CHAINED.contains(&line) => Some(PyAt::Chain),
                    PyAt::Chain if line.trim().is_empty() => Some(PyAt::Chain),
                    PyAt::Chain if line == TRACEBACK => Some(PyAt::Frames),
                    _ => None,
                };
                match next {
                    Some(at) => {
                        if lines.len() < MAX_BLOCK_LINES {
                            lines.push(line.to_owned());
                        }
                        State::Python { header, lines, at }
                    }
                    None => {
                        out.push(python_event(header, lines));
                        self.start(line, out)
                    }
                }
            }
            State::NodePreamble(mut lines) => {
                if is_node_error(line) {
                    lines.push(line.to_owned());
                    State::Node {
                        lines,
                        blank: false,
                    }
                } else if lines.len() < 4 {
                    lines.push(line.to_owned());
                    State::NodePreamble(lines)
                } else {
                    // Not Node's preamble after all.
                    for l in lines {
                        if !l.trim().is_empty() {
                            out.push(classify_line(l));
                        }
                    }
                    self.start(line, out)
                }
            }
            State::Node { mut lines, blank } => {
                let trimmed = line.trim();
                if !blank && (line.starts_with(char::is_whitespace) || trimmed == "}") {
                    if !trimmed.is_empty() && lines.len() < MAX_BLOCK_LINES {
                        lines.push(line.to_owned());
                    }
                    State::Node {
                        lines,
                        blank: trimmed.is_empty(),
                    }
                } else if trimmed.is_empty() {
                    State::Node { lines, blank: true }
                } else if blank && line.starts_with("Node.js v") {
                    lines.push(line.to_owned());
                    out.push(node_event(lines));
                    State::Idle
                } else {
                    out.push(node_event(lines));
                    self.start(line, out)
                }
            }
        };
    }

    /// End whatever is held (idle time passed, or the stream ended).
    pub fn flush(&mut self, out: &mut Vec<Event>) {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => {}
            State::Held(line) => out.push(classify_line(line)),
            State::Python { header, lines, .. } => out.push(python_event(header, lines)),
            State::NodePreamble(lines) => {
                for l in lines {
                    if !l.trim().is_empty() {
                        out.push(classify_line(l));
                    }
                }
            }
            State::Node { lines, .. } => out.push(node_event(lines)),
        }
    }

    /// The state after `line` when nothing is held.
    fn start(&mut self, line: &str, out: &mut Vec<Event>) -> State {
        if line.trim().is_empty() {
            return State::Idle;
        }
        if line == TRACEBACK {
            return State::Python {
                header: None,
                lines: vec![line.to_owned()],
                at: PyAt::Frames,
            };
        }
        if is_node_preamble(line) {
            return State::NodePreamble(vec![line.to_owned()]);
        }
        if line.starts_with('{')
            && let Some(e) = json_event(line)
        {
            out.push(e);
            return State::Idle;
        }
        State::Held(line.to_owned())
    }
}

fn python_event(header: Option<String>, lines: Vec<String>) -> Event {
    // Trailing blank lines (a chain that never came) are not part of it.
    let end = lines
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .map_or(0, |i| i + 1);
    let lines = &lines[..end];
    let exception = lines
        .iter()
        .rev()
        .find(|l| !l.starts_with(char::is_whitespace) && l.as_str() != TRACEBACK)
        .cloned()
        .unwrap_or_else(|| TRACEBACK.to_owned());
    let (level, message) = match header {
        Some(h) => {
            let level = level_of(&h).unwrap_or(Level::Error);
            (level, format!("{h} ({exception})"))
        }
        None => (Level::Error, exception),
    };
    Event {
        level,
        kind: Kind::Traceback,
        message,
        block: Some(lines.join("\n")),
        fields: None,
    }
}

fn node_event(lines: Vec<String>) -> Event {
    let message = lines
        .iter()
        .find(|l| is_node_error(l))
        .cloned()
        .unwrap_or_else(|| lines[0].clone());
    Event {
        level: Level::Error,
        kind: Kind::NodeStack,
        message,
        block: Some(lines.join("\n")),
        fields: None,
    }
}

/// `    at handler (/app/x.js:1:28)`.
fn is_node_frame(line: &str) -> bool {
    line.starts_with(char::is_whitespace) && line.trim_start().starts_with("at ")
}

/// `TypeError: …`, `Error: …`, `Error [ERR_X]: …`, `Uncaught Error: …`.
fn is_node_error(line: &str) -> bool {
    let Some((name, _)) = line.split_once(':') else {
        return false;
    };
    let name = name.trim_start_matches("Uncaught ");
    let name = name.split(" [").next().unwrap_or(name);
    !name.is_empty()
        && !name.contains(char::is_whitespace)
        && (name.ends_with("Error") || name.ends_with("Exception"))
}

/// `/app/server.js:5` or `file:///app/x.mjs:5`: where an uncaught Node
/// error was thrown.
fn is_node_preamble(line: &str) -> bool {
    let Some((path, num)) = line.rsplit_once(':') else {
        return false;
    };
    (path.starts_with('/') || path.starts_with("file://") || path.starts_with("node:"))
        && !path.contains(char::is_whitespace)
        && (path.ends_with(".js")
            || path.ends_with(".mjs")
            || path.ends_with(".cjs")
            || path.ends_with(".ts"))
        && !num.is_empty()
        && num.bytes().all(|b| b.is_ascii_digit())
}

/// A lone line's event.
fn classify_line(line: String) -> Event {
    let level = if names_private_socket(&line) {
        Level::Debug
    } else {
        level_of(&line).unwrap_or(Level::Info)
    };
    Event::line(level, line)
}

/// uvicorn's "Uvicorn running on http://127.0.0.1:PORT" (or "on socket
/// (…)") and gunicorn's "Listening at: http://…": the private worker
/// socket curfew made, which nobody should use.
fn names_private_socket(line: &str) -> bool {
    line.contains("Uvicorn running on ")
        || (line.contains("] [INFO] Listening at: ") && line.starts_with('['))
        || line.contains("Running on http://127.0.0.1:")
}

/// The level a line's prefix states, if it states one.
pub fn level_of(line: &str) -> Option<Level> {
    // uvicorn (`ERROR:    …`) and logging's default (`ERROR:name:msg`).
    if let Some((name, _)) = line.split_once(':')
        && name.len() <= 8
        && name.bytes().all(|b| b.is_ascii_uppercase())
        && let Some(l) = Level::from_name(name)
    {
        return Some(l);
    }
    // gunicorn: `[2024-01-01 00:00:00 +0000] [123] [ERROR] …`.
    if line.starts_with('[') {
        for part in line.split("] [").take(3) {
            let part = part.trim_start_matches('[');
            if let Some(name) = part.split(']').next()
                && name.len() <= 8
                && name.bytes().all(|b| b.is_ascii_uppercase())
                && let Some(l) = Level::from_name(name)
            {
                return Some(l);
            }
        }
    }
    // logfmt (`level=warn`, Go's slog and logrus).
    if let Some(i) = line.find("level=")
        && (i == 0 || line.as_bytes()[i - 1] == b' ')
    {
        let v = line[i + 6..].trim_start_matches('"');
        let end = v
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(v.len());
        return Level::from_name(&v[..end]);
    }
    None
}

/// A JSON object line: level and message from the usual keys, the rest as
/// fields. `None` when it is not a JSON object.
fn json_event(line: &str) -> Option<Event> {
    let serde_json::Value::Object(mut map) = serde_json::from_str(line).ok()? else {
        return None;
    };
    let mut level = None;
    for key in ["level", "levelname", "severity", "log.level"] {
        if let Some(v) = map.remove(key) {
            level = match v {
                serde_json::Value::String(s) => Level::from_name(&s),
                serde_json::Value::Number(n) => n.as_f64().map(level_from_number),
                _ => None,
            };
            break;
        }
    }
    let mut message = String::new();
    for key in ["msg", "message", "event"] {
        if let Some(serde_json::Value::String(s)) = map.remove(key) {
            message = s;
            break;
        }
    }
    let level = level.unwrap_or(Level::Info);
    Some(Event {
        level,
        kind: Kind::Json,
        message,
        block: None,
        fields: (!map.is_empty()).then(|| serde_json::Value::Object(map).to_string()),
    })
}

/// pino/bunyan's numeric levels (30 info, 40 warn, 50 error, 60 fatal).
fn level_from_number(n: f64) -> Level {
    match n {
        n if n >= 50.0 => Level::Error,
        n if n >= 40.0 => Level::Warn,
        n if n >= 30.0 => Level::Info,
        _ => Level::Debug,
    }
}

#[cfg(test)]
mod tests;
