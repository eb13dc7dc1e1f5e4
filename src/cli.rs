//! Command-line interface (clap). Flags become the last configuration layer
//! ([`crate::config::raw::RawConfig`]); validation happens in `config`.

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::defaults;
use crate::config::raw::{OneOrMany, RawConfig, RawDuration, RawHook, RawJobs};

/// `curfew --version`: the crate's version and the commit it was built
/// from (see build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("BUILT_FROM_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "curfew",
    version = VERSION,
    about = "Run a web app as a supervised pool of workers behind a draining HTTP front, \
             and its background jobs from a durable queue (SQLite or PostgreSQL).",
    long_about = None,
    after_help = "Start with `curfew serve -- uvicorn app:app --fd 3` (or a curfew.toml); \
                  `curfew <command> --help` for each command's options. \
                  Jobs: `[jobs]` in curfew.toml, then `curfew enqueue` and `curfew jobs`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The command line as clap sees it, with each `serve` setting's
    /// default and environment variable appended to its help from
    /// [`defaults`] (the constants validation uses), so `--help` cannot
    /// drift from the code.
    pub fn command_with_defaults() -> clap::Command {
        Cli::command().mut_subcommand("serve", |serve| {
            RawConfig::KEYS
                .iter()
                // No flag: the command is the trailing arguments; a secret
                // on the command line would show in `ps`.
                .filter(|key| !["command", "admin_token"].contains(*key))
                .fold(serve, |cmd, key| {
                    let id = match *key {
                        "jobs" => "jobs_store",
                        k => k,
                    };
                    cmd.mut_arg(id, |arg| {
                        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                        let default = defaults::shown(key).unwrap_or_default().replace('`', "");
                        arg.help(format!(
                            "{help} [default: {default}; env: CURFEW_{}{}]",
                            key.to_uppercase(),
                            defaults::env_note(key)
                        ))
                    })
                })
        })
    }

    /// Parses `std::env::args` (exits with clap's message on bad usage).
    pub fn parse_with_defaults() -> Cli {
        let matches = Cli::command_with_defaults().get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker pool and the HTTP front until SIGTERM/SIGINT.
    ///
    /// Settings come from curfew.toml (or --config), then CURFEW_* environment
    /// variables (plus PORT and WEB_CONCURRENCY), then these flags; later
    /// layers win.
    Serve(Box<ServeArgs>),
    /// Print the status of a running curfew (phase, workers, requests).
    Status {
        /// Print the JSON report instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: ControlArgs,
    },
    /// Zero-downtime reload of a running curfew (like SIGHUP); waits for the
    /// result and exits non-zero if the new generation could not start.
    Reload {
        #[command(flatten)]
        target: ControlArgs,
    },
    /// Zero-downtime upgrade of curfew itself (like SIGUSR2): the running
    /// curfew starts the binary it was started as (a new file there is the
    /// new version) with the same arguments, hands it its listening sockets,
    /// and drains once the new one serves. Waits for the outcome; exits
    /// non-zero (with the reason) if the new curfew could not start, in
    /// which case the running one keeps serving.
    Upgrade {
        #[command(flatten)]
        target: ControlArgs,
    },
    /// Stop a running curfew gracefully (like SIGTERM).
    Stop {
        #[command(flatten)]
        target: ControlArgs,
    },
    /// Set the number of workers of a running curfew.
    Scale {
        /// The number of workers wanted (1-1024).
        #[arg(value_parser = clap::value_parser!(u16).range(1..=1024))]
        workers: u16,
        #[command(flatten)]
        target: ControlArgs,
    },
    /// Add a background job (or many, with --file) through a running curfew.
    Enqueue(Box<EnqueueArgs>),
    /// List, inspect, retry, cancel or delete jobs, pause or resume queues,
    /// show periodic schedules, prune: through the running curfew, or
    /// directly in the store (--store, or when no curfew is running).
    Jobs {
        #[command(subcommand)]
        action: Option<JobsAction>,
        #[command(flatten)]
        list: ListArgs,
        #[command(flatten)]
        target: ControlArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Check that curfew's stop fits the platform's: the stop budget
    /// (drain_delay + graceful_timeout + worker_stop_timeout + margin)
    /// against the platform's grace, the stop signal, systemd's KillMode, a
    /// shell as PID 1, the readiness probe, job timeouts. Exits 1 on a
    /// misfit.
    Check(CheckArgs),
    /// Write a platform file whose numbers agree with curfew's configuration
    /// (systemd, systemd-socket, kubernetes, compose, dockerfile, fly, nomad);
    /// `curfew check` passes on it.
    Gen(GenArgs),
    /// Print a shell completion script: `source <(curfew completions bash)`,
    /// or save it where the shell loads completions from (see README).
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
    /// Print a manual page (roff): `curfew man > curfew.1`, or one command's
    /// page: `curfew man serve > curfew-serve.1`; read it with `man ./curfew.1`.
    Man {
        /// The command whose page to print [default: curfew's own]
        command: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The platform's file: a systemd unit, a Kubernetes manifest, a compose
    /// file, a Dockerfile, fly.toml, render.yaml, a Procfile or a Nomad job
    /// [default: found here by its usual name]
    pub file: Option<PathBuf>,
    /// systemd, kubernetes, docker, compose, fly, heroku, render or nomad
    /// [default: from the file's name, else from the environment]
    #[arg(long, value_name = "PLATFORM", value_parser = parse_platform)]
    pub platform: Option<curfew::platform::Platform>,
    /// curfew's config file [default: ./curfew.toml if it exists; env: CURFEW_CONFIG]
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GenArgs {
    /// systemd, systemd-socket, kubernetes, compose, dockerfile, fly or nomad
    #[arg(value_parser = parse_gen_target)]
    pub target: curfew::platform::GenTarget,
    /// curfew's config file [default: ./curfew.toml if it exists; env: CURFEW_CONFIG]
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The app's name (unit description, Deployment, service, task)
    #[arg(long, default_value = "app")]
    pub name: String,
    /// The container image (kubernetes, compose)
    #[arg(long, default_value = "app:latest")]
    pub image: String,
    /// systemd ≥ 253: Type=notify-reload instead of Type=notify + ExecReload
    #[arg(long)]
    pub notify_reload: bool,
}

fn parse_platform(s: &str) -> Result<curfew::platform::Platform, String> {
    s.parse()
}

fn parse_gen_target(s: &str) -> Result<curfew::platform::GenTarget, String> {
    s.parse()
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The job's kind (the handler: delivered to the path template's {kind}).
    #[arg(required_unless_present = "file")]
    pub kind: Option<String>,
    /// Many jobs: NDJSON, one job per line as POST /jobs takes it
    /// ({"kind": …, "queue": …, "payload": …}), or - for stdin. Each 10,000
    /// lines are stored in one transaction, all or nothing
    #[arg(long, value_name = "PATH", conflicts_with_all = [
        "kind", "payload", "payload_file", "run_at", "delay", "priority",
        "max_attempts", "idempotency_key", "unique_key", "unique_scope",
    ])]
    pub file: Option<PathBuf>,
    /// Queue [default: default; with --file, for lines that name none]
    #[arg(long, short)]
    pub queue: Option<String>,
    /// The payload, as JSON [default: {}]
    #[arg(long, short, value_name = "JSON", conflicts_with = "payload_file")]
    pub payload: Option<String>,
    /// Read the payload (JSON) from this file, or - for stdin
    #[arg(long, value_name = "PATH")]
    pub payload_file: Option<PathBuf>,
    /// Run at this time: RFC 3339 (2026-11-21T10:00:00Z) or unix milliseconds
    #[arg(long, value_name = "TIME", conflicts_with = "delay")]
    pub run_at: Option<String>,
    /// Run after this many seconds
    #[arg(long, value_name = "SECONDS")]
    pub delay: Option<f64>,
    /// Lower runs first [default: 0]
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Attempts before the job is dead [default: the queue's max_attempts]
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<i32>,
    /// At most one job per key: enqueueing it again does nothing
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// At most one job per key within --unique-scope: enqueueing it again
    /// while a job holds the key returns that job
    #[arg(long, value_name = "KEY")]
    pub unique_key: Option<String>,
    /// How long a job holds its --unique-key: queued (until claimed),
    /// queued+running (until finished), or a window such as 10m (from its
    /// enqueue) [default: queued+running]
    #[arg(long, value_name = "SCOPE", requires = "unique_key")]
    pub unique_scope: Option<String>,
    /// Print the JSON answer
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: ControlArgs,
}

#[derive(Debug, Subcommand)]
pub enum JobsAction {
    /// Print one job (JSON).
    Show { id: i64 },
    /// Queue a dead, failed or cancelled job again, with a clean slate.
    Retry { id: i64 },
    /// Cancel a queued or failed job; a running one is stopped by the
    /// curfew running it (on any instance sharing the store) and ends
    /// cancelled, never retried.
    Cancel { id: i64 },
    /// Delete a job that is not running.
    Delete { id: i64 },
    /// Pause a queue on every curfew sharing the store (running jobs go on).
    Pause { queue: String },
    /// Resume a paused queue.
    Resume { queue: String },
    /// The periodic schedules ([jobs.periodic]): next run, last instant enqueued, its job.
    Periodic,
    /// Delete the finished jobs past [jobs.retention] now.
    Prune,
}

impl JobsAction {
    /// The subcommand as typed (`prune`), for messages.
    pub fn name(&self) -> &'static str {
        match self {
            JobsAction::Show { .. } => "show",
            JobsAction::Retry { .. } => "retry",
            JobsAction::Cancel { .. } => "cancel",
            JobsAction::Delete { .. } => "delete",
            JobsAction::Pause { .. } => "pause",
            JobsAction::Resume { .. } => "resume",
            JobsAction::Periodic => "periodic",
            JobsAction::Prune => "prune",
        }
    }
}

/// `curfew jobs` straight in the store, without a running curfew.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Work directly in this job store (sqlite:///path/jobs.db or postgres://…) instead of through a running curfew [default: through the control socket; when no curfew is running there, the store of --config / ./curfew.toml]
    #[arg(long, value_name = "URL", global = true)]
    pub store: Option<String>,
    /// The PostgreSQL schema of --store [default: the config's jobs.pg_schema, else curfew]
    #[arg(long, value_name = "NAME", global = true)]
    pub pg_schema: Option<String>,
}

/// Filters of `curfew jobs` (listing).
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this queue
    #[arg(long, short)]
    pub queue: Option<String>,
    /// Only this state: queued, running, succeeded, failed, dead, cancelled
    #[arg(long, short)]
    pub state: Option<String>,
    /// At most this many jobs [default: 100]
    #[arg(long)]
    pub limit: Option<u32>,
    /// Only jobs with an id above this (paging)
    #[arg(long, value_name = "ID")]
    pub after: Option<i64>,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

impl ListArgs {
    /// The first listing filter given (`--queue`, `--state`, `--limit`,
    /// `--after`), which only a listing uses.
    pub fn filter_flag(&self) -> Option<&'static str> {
        [
            (self.queue.is_some(), "--queue"),
            (self.state.is_some(), "--state"),
            (self.limit.is_some(), "--limit"),
            (self.after.is_some(), "--after"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag))
    }
}

/// Which running curfew to talk to.
#[derive(Debug, Args)]
pub struct ControlArgs {
    /// Its control socket [default: from --config / curfew.toml `control_socket`, else $XDG_RUNTIME_DIR/curfew/curfew.sock or /tmp/curfew-<uid>/curfew.sock; env: CURFEW_CONTROL_SOCKET]
    #[arg(long, value_name = "PATH", global = true)]
    pub control_socket: Option<PathBuf>,
    /// Its config file, to read `control_socket` from [default: ./curfew.toml if it exists; env: CURFEW_CONFIG]
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
}

impl ControlArgs {
    /// The control socket path: flag, then CURFEW_CONTROL_SOCKET, then the
    /// config file's `control_socket`, then the default.
    pub fn socket(&self) -> Result<PathBuf, String> {
        if let Some(p) = &self.control_socket {
            return Ok(p.clone());
        }
        if let Some(p) = std::env::var_os("CURFEW_CONTROL_SOCKET").filter(|v| !v.is_empty()) {
            return Ok(p.into());
        }
        let file = self
            .config
            .clone()
            .or_else(|| {
                std::env::var_os("CURFEW_CONFIG")
                    .filter(|v| !v.is_empty())
                    .map(Into::into)
            })
            .or_else(|| Some(PathBuf::from("curfew.toml")).filter(|p| p.is_file()));
        if let Some(file) = file {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let raw: RawConfig =
                toml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            if let Some(p) = raw.control_socket {
                return Ok(p.into());
            }
        }
        Ok(curfew::config::defaults::control_socket())
    }
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  curfew serve -b 127.0.0.1:8000 -w 4 -- uvicorn app:app --fd 3\n\nSignals: SIGTERM/SIGINT = graceful stop; a second SIGINT or SIGQUIT = stop now; SIGHUP = zero-downtime reload; SIGTTIN/SIGTTOU = one worker more/less; SIGUSR1 = status report in the log.\nExit codes: 0 clean, 1 failure, 2 usage, 3 forced shutdown, 4 immediate stop, 78 bad config."
)]
pub struct ServeArgs {
    /// Config file [default: ./curfew.toml if it exists; env: CURFEW_CONFIG]
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Public address, host:port or unix:/path; repeat for several
    #[arg(short, long, value_name = "ADDR")]
    pub bind: Vec<String>,

    /// Number of worker processes
    #[arg(short, long, value_name = "N", allow_negative_numbers = true)]
    pub workers: Option<i64>,

    /// How each worker gets its socket: fd (an inherited Unix socket on fd 3, LISTEN_FDS=1), fd-tcp (the same on loopback TCP), port ($PORT and {port}) or unix ({socket})
    #[arg(long, value_name = "MODE")]
    pub worker_socket: Option<String>,

    /// Requests one worker serves at once; 1 for sync (WSGI) workers
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub worker_concurrency: Option<i64>,

    /// Requests that may wait for a free worker; beyond it curfew answers 503 with Retry-After
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub backlog: Option<i64>,

    /// Path a worker must answer with 2xx/3xx to be ready (without it, any answer to / counts)
    #[arg(long, value_name = "PATH")]
    pub ready_path: Option<String>,

    /// Time a worker has to become ready
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub boot_timeout: Option<String>,

    /// A request with no response after this long gets 504; a sync worker (concurrency 1) serving it is aborted as hung; 0 disables
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub timeout: Option<String>,

    /// Close client keep-alive connections idle this long; keep it above your load balancer's idle timeout; 0 = never
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub keepalive_timeout: Option<String>,

    /// Time a client has to send a request's head; then the connection is closed; 0 = no limit
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub header_timeout: Option<String>,

    /// Largest request head (request line and headers) accepted, 8KiB to 1MiB; larger gets 431
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub max_header_size: Option<String>,

    /// Read the whole request body before the request takes a worker (slow uploads then cost no worker); false streams it through
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub request_buffering: Option<bool>,

    /// Largest request body accepted, e.g. 100MiB; larger gets 413; 0 = no limit
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub max_request_body: Option<String>,

    /// A client that sends nothing of its request body for this long gets 408; 0 = no limit
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub client_body_timeout: Option<String>,

    /// Read a worker's response as fast as it writes it (memory, then a temporary file), so a slow client does not hold the worker; false sends at the client's pace
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub response_buffering: Option<bool>,

    /// Disconnect a client that reads nothing of its response for this long; 0 = no limit
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub send_timeout: Option<String>,

    /// Close an upgraded connection (WebSocket) that carries nothing either way for this long; 0 = no limit
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub tunnel_idle_timeout: Option<String>,

    /// Retry a bodiless GET/HEAD/OPTIONS once on another worker when its worker died before answering (a request that kills that one too is not retried again)
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub retry_idempotent: Option<bool>,

    /// Request header fields with a `_` in their names: drop (nginx's default; gunicorn reads SCRIPT_NAME from such a header) or keep
    #[arg(long, value_name = "drop|keep")]
    pub underscore_headers: Option<String>,

    /// Client connections open at once on the public addresses; more wait in the kernel's accept queue
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_connections: Option<i64>,

    /// Threads serving client connections, each its own event loop (default: one per four cores, at least one)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub proxy_threads: Option<i64>,

    /// Time a hung worker gets between SIGABRT (so it can dump its stack) and SIGKILL
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub abort_timeout: Option<String>,

    /// Set PYTHONFAULTHANDLER=1 for workers so Python prints its traceback on SIGABRT
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub faulthandler: Option<bool>,

    /// After SIGTERM, keep serving (while not ready) this long so load balancers deregister
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub drain_delay: Option<String>,

    /// Time in-flight requests get to finish once draining
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub graceful_timeout: Option<String>,

    /// Time a worker gets between SIGTERM and SIGKILL
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub worker_stop_timeout: Option<String>,

    /// Directory the workers run in
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<String>,

    /// Peers whose X-Forwarded-* headers are trusted: IPs, CIDRs or *
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub forwarded_allow_ips: Vec<String>,

    /// Recycle a worker (drained first) after this many requests; 0 = never
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_requests: Option<i64>,

    /// Add a random 0..=N to max_requests per worker
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_requests_jitter: Option<i64>,

    /// Recycle a worker whose RSS (with its children) exceeds this, e.g. 512MiB; 0 = no limit
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub max_memory: Option<String>,

    /// Reload strategy: all (boot the whole new generation, then switch) or rolling
    #[arg(long, value_name = "STRATEGY")]
    pub reload_strategy: Option<String>,

    /// Workers replaced per step in a rolling reload
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub reload_batch: Option<i64>,

    /// Control socket for `curfew status/reload/stop/scale` (mode 0600)
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<String>,

    /// A lifecycle hook, EVENT=COMMAND or EVENT=http://URL; repeatable; events: on_starting, when_ready, worker_exit, worker_abort, on_reload, on_incomplete, on_exit
    #[arg(long = "hook", value_name = "EVENT=RUN")]
    pub hooks: Vec<String>,

    /// Default time budget of a hook (it is killed after it)
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub hook_timeout: Option<String>,

    /// Liveness probe path for workers with --worker-concurrency > 1: failing it liveness_failures times in a row gets the worker aborted as hung
    #[arg(long, value_name = "PATH")]
    pub liveness_path: Option<String>,

    /// Time between liveness probes
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub liveness_interval: Option<String>,

    /// Time a liveness probe may take
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub liveness_timeout: Option<String>,

    /// Failed liveness probes in a row before the worker is aborted
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub liveness_failures: Option<i64>,

    /// Admin address (HTTP) for the probes /healthz and /readyz, /status, /metrics (Prometheus), the job API /jobs and the status page /ui, e.g. 127.0.0.1:9000
    #[arg(long, value_name = "ADDR")]
    pub admin_bind: Option<String>,

    /// Read the admin token from this file (the token itself only by CURFEW_ADMIN_TOKEN or the config file, not on the command line)
    #[arg(long, value_name = "PATH")]
    pub admin_token_file: Option<String>,

    /// Job store URL (enables the job processor): sqlite:///path/jobs.db, a file path, or postgres://user@host/db; the rest of [jobs] comes from curfew.toml
    #[arg(long, value_name = "URL")]
    pub jobs_store: Option<String>,

    /// Log format: text or json
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// Log filter, e.g. info, debug, curfew=debug,info
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Worker output relayed at or above: debug, info, warn, error or off
    #[arg(long, value_name = "LEVEL")]
    pub worker_log_level: Option<String>,

    /// Access log: - (stdout), a file path, or off
    #[arg(long, value_name = "PATH")]
    pub access_log: Option<String>,

    /// Access log format: combined or json
    #[arg(long, value_name = "FORMAT")]
    pub access_log_format: Option<String>,

    /// Log query strings in the access log (true or false)
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub access_log_query: Option<bool>,

    /// The worker command, after `--` (or `command` in curfew.toml)
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl ServeArgs {
    /// An event given twice in `--hook` (the last one would silently win),
    /// as the message of a configuration error.
    pub fn duplicate_hook(&self) -> Option<String> {
        let mut seen = std::collections::BTreeSet::new();
        self.hooks
            .iter()
            .filter_map(|h| h.split_once('=').map(|(event, _)| event.trim()))
            .find(|event| !seen.insert(*event))
            .map(|event| {
                format!(
                    "invalid `hooks` = {event:?} on the command line: --hook {event}=… is given more than once; give each event once"
                )
            })
    }

    /// The flags as a configuration layer (only what was given).
    pub fn to_raw(&self) -> RawConfig {
        let dur = |s: &Option<String>| s.clone().map(RawDuration::Text);
        let many = |v: &Vec<String>| (!v.is_empty()).then(|| OneOrMany::Many(v.clone()));
        RawConfig {
            command: many(&self.command),
            workers: self.workers,
            bind: many(&self.bind),
            worker_socket: self.worker_socket.clone(),
            worker_concurrency: self.worker_concurrency,
            backlog: self.backlog,
            ready_path: self.ready_path.clone(),
            boot_timeout: dur(&self.boot_timeout),
            drain_delay: dur(&self.drain_delay),
            timeout: dur(&self.timeout),
            abort_timeout: dur(&self.abort_timeout),
            keepalive_timeout: dur(&self.keepalive_timeout),
            header_timeout: dur(&self.header_timeout),
            max_header_size: self
                .max_header_size
                .clone()
                .map(crate::config::raw::RawSize::Text),
            request_buffering: self.request_buffering,
            max_request_body: self
                .max_request_body
                .clone()
                .map(crate::config::raw::RawSize::Text),
            client_body_timeout: dur(&self.client_body_timeout),
            response_buffering: self.response_buffering,
            send_timeout: dur(&self.send_timeout),
            tunnel_idle_timeout: dur(&self.tunnel_idle_timeout),
            max_connections: self.max_connections,
            proxy_threads: self.proxy_threads,
            retry_idempotent: self.retry_idempotent,
            underscore_headers: self.underscore_headers.clone(),
            faulthandler: self.faulthandler,
            graceful_timeout: dur(&self.graceful_timeout),
            worker_stop_timeout: dur(&self.worker_stop_timeout),
            chdir: self.chdir.clone(),
            forwarded_allow_ips: many(&self.forwarded_allow_ips),
            admin_bind: self.admin_bind.clone(),
            admin_token: None,
            admin_token_file: self.admin_token_file.clone(),
            control_socket: self.control_socket.clone(),
            hooks: (!self.hooks.is_empty()).then(|| {
                self.hooks
                    .iter()
                    .map(|h| match h.split_once('=') {
                        Some((event, run)) => {
                            (event.trim().to_string(), RawHook::Run(run.to_string()))
                        }
                        // No `=`: an empty command, which validation refuses
                        // ("a hook must be a command or an http:// URL"), or an
                        // unknown hook name if the word is not an event.
                        None => (h.clone(), RawHook::Run(String::new())),
                    })
                    .collect()
            }),
            hook_timeout: dur(&self.hook_timeout),
            liveness_path: self.liveness_path.clone(),
            liveness_interval: dur(&self.liveness_interval),
            liveness_timeout: dur(&self.liveness_timeout),
            liveness_failures: self.liveness_failures,
            max_requests: self.max_requests,
            max_requests_jitter: self.max_requests_jitter,
            max_memory: self
                .max_memory
                .clone()
                .map(crate::config::raw::RawSize::Text),
            reload_strategy: self.reload_strategy.clone(),
            reload_batch: self.reload_batch,
            log_format: self.log_format.clone(),
            jobs: self.jobs_store.clone().map(|store| RawJobs {
                store: Some(store),
                ..RawJobs::default()
            }),
            log_level: self.log_level.clone(),
            worker_log_level: self.worker_log_level.clone(),
            access_log: self.access_log.clone(),
            access_log_format: self.access_log_format.clone(),
            access_log_query: self.access_log_query,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn a_hook_event_given_twice_is_named() {
        let parse = |hooks: &[&str]| {
            let mut argv = vec!["curfew", "serve"];
            for h in hooks {
                argv.extend(["--hook", h]);
            }
            let Command::Serve(s) = Cli::try_parse_from(argv).expect("parses").command else {
                panic!("parsed as serve")
            };
            s.duplicate_hook()
        };
        assert_eq!(parse(&["on_exit=a", "when_ready=b"]), None);
        let m = parse(&["on_exit=a", "when_ready=b", "on_exit=c"]).expect("twice");
        assert!(m.contains("on_exit") && m.contains("more than once"), "{m}");
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
        Cli::command_with_defaults().debug_assert();
    }

    #[test]
    fn every_setting_has_a_flag() {
        let args = Cli::try_parse_from([
            "curfew",
            "serve",
            "-w",
            "3",
            "-b",
            "127.0.0.1:1",
            "--graceful-timeout",
            "-5s",
            "--",
            "uvicorn",
            "app:app",
        ])
        .expect("parses");
        let Command::Serve(s) = args.command else {
            panic!("parsed as serve")
        };
        let raw = s.to_raw();
        assert_eq!(raw.workers, Some(3));
        assert_eq!(raw.graceful_timeout, Some(RawDuration::Text("-5s".into())));
        assert_eq!(
            raw.command,
            Some(OneOrMany::Many(vec!["uvicorn".into(), "app:app".into()]))
        );
        // Every key of the raw layer is documented as a flag.
        let help = Cli::command_with_defaults()
            .find_subcommand_mut("serve")
            .expect("serve")
            .render_long_help()
            .to_string();
        // Wrapped lines joined again.
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        for key in RawConfig::KEYS {
            if *key == "command" {
                continue;
            }
            let flag = match *key {
                "hooks" => "--hook".to_string(),
                "jobs" => "--jobs-store".to_string(),
                k => format!("--{}", k.replace('_', "-")),
            };
            assert!(help.contains(&flag), "{flag} missing from --help");
            assert!(
                help.contains(&format!("CURFEW_{}", key.to_uppercase())),
                "env var for {key} missing"
            );
            let default = defaults::shown(key).expect("a default").replace('`', "");
            assert!(
                help.contains(&format!("[default: {default};")),
                "default of {key} ({default}) missing from --help"
            );
        }
    }
}
