//! The `curfew` binary: parse the command line, load the configuration, run.

use std::process::ExitCode;

use curfew::{config, exit, logging, serve};

mod cli;
mod jobs_cli;

fn main() -> ExitCode {
    // Worker exec shim (see shim.rs): must run before anything else.
    curfew::shim::run_if_requested();
    curfew::malloc::bound_retention();
    let cli = cli::Cli::parse_with_defaults();
    use curfew::control::Request;
    let code = match cli.command {
        cli::Command::Serve(args) => run_serve(*args),
        cli::Command::Status { json, target } => run_control(&target, Request::Status, json),
        cli::Command::Reload { target } => run_control(&target, Request::Reload, false),
        cli::Command::Stop { target } => run_control(&target, Request::Stop, false),
        cli::Command::Upgrade { target } => run_control(&target, Request::Upgrade, false),
        cli::Command::Scale { workers, target } => run_control(
            &target,
            Request::Scale {
                workers: workers.into(),
            },
            false,
        ),
        cli::Command::Enqueue(args) => run_enqueue(*args),
        cli::Command::Jobs {
            action,
            list,
            target,
            store,
        } => run_jobs(action, list, &target, &store),
        cli::Command::Check(args) => run_check(args),
        cli::Command::Gen(args) => run_gen(args),
        cli::Command::Completions { shell } => print_completions(shell),
        cli::Command::Man { command } => print_man(command),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// `curfew completions SHELL`: the script, from the same command
/// definition `--help` shows (so it cannot drift from the flags).
fn print_completions(shell: clap_complete::Shell) -> i32 {
    let mut cmd = cli::Cli::command_with_defaults();
    clap_complete::generate(shell, &mut cmd, "curfew", &mut std::io::stdout());
    exit::OK
}

/// `curfew man [COMMAND]`: the manual page of curfew (with its commands
/// listed) or of one command, as `curfew-COMMAND(1)`.
fn print_man(command: Option<String>) -> i32 {
    let cmd = cli::Cli::command_with_defaults();
    let page = match command {
        None => cmd,
        Some(name) => match cmd.find_subcommand(&name) {
            Some(sub) => {
                let title = format!("curfew-{name}");
                sub.clone()
                    .name(title)
                    .bin_name(format!("curfew {name}"))
                    .version(cli::VERSION)
            }
            None => {
                let known: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
                eprintln!(
                    "curfew: no command `{name}` (the commands are {})",
                    known.join(", ")
                );
                return exit::USAGE;
            }
        },
    };
    let mut out = Vec::new();
    let written = clap_mangen::Man::new(page)
        .render(&mut out)
        .and_then(|()| std::io::Write::write_all(&mut std::io::stdout(), &out));
    match written {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("curfew: cannot write the manual page: {e}");
            exit::FAILURE
        }
    }
}

/// Talk to a running curfew over its control socket.
fn run_control(target: &cli::ControlArgs, req: curfew::control::Request, json: bool) -> i32 {
    // A reload waits for the new generation to boot, an upgrade for the
    // new curfew (both bounded by curfew itself).
    match call(target, &req, std::time::Duration::from_secs(600)) {
        Err(code) => code,
        Ok(r) => {
            match (r.status, json) {
                (Some(s), true) => {
                    println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default())
                }
                (Some(s), false) => print!("{}", s.table()),
                (None, _) => println!("{}", r.message.unwrap_or_else(|| "ok".into())),
            }
            exit::OK
        }
    }
}

fn run_serve(args: cli::ServeArgs) -> i32 {
    // The binary and arguments an upgrade starts again, read now, before
    // anything could change the working directory (only `serve` needs it).
    curfew::serve::remember_invocation();
    if let Some(message) = args.duplicate_hook() {
        eprintln!("curfew: {message}");
        return exit::CONFIG;
    }
    let env = match config::env::utf8_vars(std::env::vars_os()) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("curfew: {e}");
            return exit::CONFIG;
        }
    };
    let config_file = args.config.clone().or_else(|| {
        std::env::var_os("CURFEW_CONFIG")
            .filter(|v| !v.is_empty())
            .map(Into::into)
    });
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let flags = args.to_raw();
    // A reload reads the same file, environment and flags again (the file's
    // contents may have changed; the environment and flags cannot).
    let sources = move || config::Sources {
        config_file: config_file.clone(),
        env: env.clone(),
        flags: flags.clone(),
        cwd: cwd.clone(),
    };
    let cfg = match config::load(sources()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("curfew: {e}");
            return exit::CONFIG;
        }
    };
    logging::init(cfg.log_format, &cfg.log_level);
    if let Some(f) = &cfg.config_file {
        tracing::info!(file = %f.display(), "Read configuration.");
    }
    cfg.log_defaults();
    log_platform_fit(&cfg);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "Cannot start the async runtime.");
            return exit::FAILURE;
        }
    };
    let reloader: serve::Reloader = Box::new(move || config::load(sources()));
    match rt.block_on(serve::run(cfg, reloader)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e}");
            // A run that could not start (a port in use, a store that does
            // not open) still ends with the summary line every run ends with.
            curfew::events::ShutdownComplete {
                signal: None,
                duration_ms: None,
                requests_finished: 0,
                requests_aborted: 0,
                exit_code: exit::FAILURE,
            }
            .emit();
            exit::FAILURE
        }
    }
}

/// Send one request to a running curfew; its answer when it says ok,
/// else the exit code after printing why not.
fn call(
    target: &cli::ControlArgs,
    req: &curfew::control::Request,
    timeout: std::time::Duration,
) -> Result<curfew::control::Response, i32> {
    let path = target.socket().map_err(|e| {
        eprintln!("curfew: {e}");
        exit::CONFIG
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("curfew: cannot start the async runtime: {e}");
            exit::FAILURE
        })?;
    match rt.block_on(curfew::control::request(&path, req, timeout)) {
        Err(e) => {
            eprintln!("curfew: {e}");
            Err(exit::FAILURE)
        }
        Ok(r) if !r.ok => {
            eprintln!(
                "curfew: {}",
                r.error.unwrap_or_else(|| "request failed".into())
            );
            Err(exit::FAILURE)
        }
        Ok(r) => Ok(r),
    }
}

/// A jobs request (`curfew enqueue`, `curfew jobs`).
fn jobs_call(
    target: &cli::ControlArgs,
    request: curfew::processor::api::JobsRequest,
) -> Result<curfew::control::Response, i32> {
    let req = curfew::control::Request::Jobs { request };
    call(target, &req, std::time::Duration::from_secs(60))
}

fn run_enqueue(args: cli::EnqueueArgs) -> i32 {
    use curfew::processor::api::{EnqueueRequest, JobsRequest, RunAt};
    if let Some(path) = &args.file {
        return run_enqueue_file(path, &args);
    }
    let Some(kind) = args.kind else {
        eprintln!("curfew: give the job's kind, or --file with jobs");
        return exit::USAGE;
    };
    let text = match (&args.payload, &args.payload_file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(path)) => {
            let read = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(path)
            };
            match read {
                Ok(t) => Some(t),
                Err(e) => {
                    eprintln!("curfew: cannot read --payload-file {}: {e}", path.display());
                    return exit::USAGE;
                }
            }
        }
        (None, None) => None,
    };
    let payload = match text.map(|t| serde_json::from_str::<serde_json::Value>(&t)) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            eprintln!(
                "curfew: invalid --payload: {e}; give JSON, e.g. --payload '{{\"to\": \"a@b.c\"}}'"
            );
            return exit::USAGE;
        }
    };
    let job = EnqueueRequest {
        queue: args.queue,
        kind,
        payload,
        priority: args.priority,
        run_at: args.run_at.map(RunAt::Text),
        delay_s: args.delay,
        max_attempts: args.max_attempts,
        idempotency_key: args.idempotency_key,
        unique_key: args.unique_key,
        unique_scope: args.unique_scope,
    };
    match jobs_call(&args.target, JobsRequest::Enqueue { job }) {
        Err(code) => code,
        Ok(r) => {
            if args.json {
                let data = r
                    .data
                    .map(|d| serde_json::to_string(&d).unwrap_or_default());
                println!("{}", data.unwrap_or_default());
            } else {
                println!("{}", r.message.unwrap_or_default());
            }
            exit::OK
        }
    }
}

/// `curfew enqueue --file`: NDJSON jobs, sent in batches of
/// `curfew_store::MAX_BATCH` (each one transaction). A bad line stops it
/// before anything is sent; a batch the store refuses stops it there
/// (the batches before it are stored), naming the lines.
fn run_enqueue_file(path: &std::path::Path, args: &cli::EnqueueArgs) -> i32 {
    use curfew::processor::api::{EnqueueRequest, JobsRequest};
    use curfew::protocol::jobs::JobsReply;
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            eprintln!("curfew: cannot read --file {}: {e}", path.display());
            return exit::USAGE;
        }
    };
    // (line number, job)
    let mut jobs: Vec<(usize, EnqueueRequest)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<EnqueueRequest>(line) {
            Ok(mut job) => {
                if job.queue.is_none() {
                    job.queue = args.queue.clone();
                }
                jobs.push((n + 1, job));
            }
            Err(e) => {
                eprintln!(
                    "curfew: {}:{}: invalid job: {e}; give one JSON object per line, e.g. {{\"kind\": \"send_email\", \"payload\": {{\"to\": \"a@b.c\"}}}}",
                    path.display(),
                    n + 1
                );
                return exit::USAGE;
            }
        }
    }
    let (mut total, mut created) = (0usize, 0usize);
    let mut replies = Vec::new();
    for chunk in jobs.chunks(curfew_store::MAX_BATCH) {
        let lines: Vec<usize> = chunk.iter().map(|(n, _)| *n).collect();
        let request = JobsRequest::EnqueueMany {
            jobs: chunk.iter().map(|(_, j)| j.clone()).collect(),
        };
        match jobs_call(&args.target, request) {
            Err(code) => {
                eprintln!(
                    "curfew: lines {}-{} were not stored (\"job i\" above is the i-th job of those, from 0); {total} jobs before them were",
                    lines.first().copied().unwrap_or(0),
                    lines.last().copied().unwrap_or(0),
                );
                return code;
            }
            Ok(r) => {
                if let Some(JobsReply::EnqueuedMany(reply)) = r.data {
                    total += reply.jobs.len();
                    created += reply.created;
                    replies.extend(reply.jobs);
                }
            }
        }
    }
    if args.json {
        let reply = curfew::protocol::jobs::EnqueueManyReply {
            jobs: replies,
            created,
        };
        println!("{}", serde_json::to_string(&reply).unwrap_or_default());
    } else {
        println!(
            "enqueued {total} jobs ({created} new, {} known by idempotency key)",
            total - created
        );
    }
    exit::OK
}

fn run_jobs(
    action: Option<cli::JobsAction>,
    list: cli::ListArgs,
    target: &cli::ControlArgs,
    store: &cli::StoreArgs,
) -> i32 {
    use cli::JobsAction;
    use curfew::processor::api::JobsRequest;
    if let Some(a) = &action
        && let Some(flag) = list.filter_flag()
    {
        eprintln!(
            "curfew: {flag} filters the job list (`curfew jobs` without a subcommand); `curfew jobs {}` takes none",
            a.name()
        );
        return exit::USAGE;
    }
    let (request, listing) = match action {
        None => (
            JobsRequest::List {
                queue: list.queue,
                state: list.state,
                limit: list.limit,
                after: list.after,
                // Only the JSON output shows them.
                payload: list.json,
            },
            true,
        ),
        Some(JobsAction::Show { id }) => (JobsRequest::Show { id }, false),
        Some(JobsAction::Retry { id }) => (JobsRequest::Retry { id }, false),
        Some(JobsAction::Cancel { id }) => (JobsRequest::Cancel { id }, false),
        Some(JobsAction::Delete { id }) => (JobsRequest::Delete { id }, false),
        Some(JobsAction::Pause { queue }) => (JobsRequest::Pause { queue }, false),
        Some(JobsAction::Resume { queue }) => (JobsRequest::Resume { queue }, false),
        Some(JobsAction::Periodic) => (JobsRequest::Periodic, true),
        Some(JobsAction::Prune) => (JobsRequest::Prune, false),
    };
    let r = match jobs_cli::call(target, store, request) {
        Ok(r) => r,
        Err(code) => return code,
    };
    use curfew::protocol::jobs::JobsReply;
    match r.data {
        Some(JobsReply::Jobs(jobs)) if listing && !list.json => print!("{}", jobs_table(&jobs)),
        Some(JobsReply::Periodic(p)) if !list.json => print!("{}", jobs_cli::periodic_table(&p)),
        Some(JobsReply::Pruned(_)) if !list.json => {
            println!("{}", r.message.unwrap_or_default())
        }
        Some(data) => println!(
            "{}",
            serde_json::to_string_pretty(&data).unwrap_or_default()
        ),
        None => println!("{}", r.message.unwrap_or_default()),
    }
    exit::OK
}

/// A table of jobs (`curfew jobs`).
fn jobs_table(jobs: &[curfew_store::Job]) -> String {
    let mut out = format!(
        "{:>8} {:<16} {:<20} {:<10} {:>7} {:<24} {}\n",
        "ID", "QUEUE", "KIND", "STATE", "ATTEMPT", "RUN AT", "LAST ERROR"
    );
    for job in jobs {
        let run_at = jiff::Timestamp::from_millisecond(job.run_at)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let mut error = job.last_error.as_deref().unwrap_or("").replace('\n', " ");
        if error.chars().count() > 60 {
            error = error.chars().take(59).collect::<String>() + "…";
        }
        out.push_str(&format!(
            "{:>8} {:<16} {:<20} {:<10} {:>3}/{:<3} {:<24} {}\n",
            job.id,
            job.queue,
            job.kind,
            job.state.as_str(),
            job.attempt,
            job.max_attempts,
            run_at,
            error
        ));
    }
    out
}

/// On a platform recognised from the environment, the stop budget against
/// that platform's default grace (`curfew check` reads the real one).
fn log_platform_fit(cfg: &config::Config) {
    let env = env_pairs();
    let Some((platform, findings)) = curfew::platform::startup(cfg, &env) else {
        return;
    };
    tracing::info!(platform = %platform, "Platform recognised from the environment.");
    for f in findings
        .iter()
        .filter(|f| f.level > curfew::platform::Level::Ok)
    {
        tracing::warn!(
            platform = %platform,
            check = f.check,
            "{} (unless the platform's setting was changed: `curfew check --platform {platform} FILE` reads it)",
            f.message
        );
    }
}

fn env_pairs() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// The configuration for `check`, `gen` and offline `curfew jobs`: the file
/// (or CURFEW_CONFIG, or ./curfew.toml) and the CURFEW_* environment, as
/// `serve` reads them, checked for its values only ([`config::Checks::Static`]).
/// The worker command does not matter here: without one, a placeholder
/// stands in.
fn load_for_platform(file: Option<std::path::PathBuf>) -> Result<config::Config, i32> {
    let config_file = file.or_else(|| {
        std::env::var_os("CURFEW_CONFIG")
            .filter(|v| !v.is_empty())
            .map(Into::into)
    });
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let env = config::env::utf8_vars(std::env::vars_os()).map_err(|e| {
        eprintln!("curfew: {e}");
        exit::CONFIG
    })?;
    let sources = |flags: config::raw::RawConfig| config::Sources {
        config_file: config_file.clone(),
        env: env.clone(),
        flags,
        cwd: cwd.clone(),
    };
    // The values only: the command, chdir, token file, access log's
    // directory and command queues exist where the app runs, not
    // necessarily here (CI, an admin shell).
    let static_checks = config::Checks::Static;
    let loaded = match config::load_with(sources(Default::default()), static_checks) {
        Err(config::ConfigError::NoCommand) => config::load_with(
            sources(config::raw::RawConfig {
                command: Some(config::raw::OneOrMany::Many(vec!["sh".to_owned()])),
                ..Default::default()
            }),
            static_checks,
        ),
        other => other,
    };
    loaded.map_err(|e| {
        eprintln!("curfew: {e}");
        exit::CONFIG
    })
}

fn run_check(args: cli::CheckArgs) -> i32 {
    use curfew::platform::{Platform, check};
    let cfg = match load_for_platform(args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let found = match (args.platform, args.file) {
        (Some(p), file) => Some((p, file)),
        (None, Some(file)) => match Platform::from_path(&file) {
            Some(p) => Some((p, Some(file))),
            None => {
                eprintln!(
                    "curfew: cannot tell the platform of {} from its name: give --platform",
                    file.display()
                );
                return exit::USAGE;
            }
        },
        (None, None) => Platform::find_file(&cwd)
            .map(|(p, f)| (p, Some(f)))
            .or_else(|| Platform::from_env(&env_pairs()).map(|p| (p, None))),
    };
    let Some((platform, file)) = found else {
        eprintln!("curfew: {}", curfew::platform::PlatformError::Unknown);
        return exit::USAGE;
    };
    match check(&cfg, platform, file.as_deref()) {
        Err(e) => {
            eprintln!("curfew: {e}");
            exit::CONFIG
        }
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", report.text());
            }
            if report.fits() {
                exit::OK
            } else {
                exit::FAILURE
            }
        }
    }
}

fn run_gen(args: cli::GenArgs) -> i32 {
    let config_path = args.config.clone().or_else(|| {
        std::env::var_os("CURFEW_CONFIG")
            .filter(|v| !v.is_empty())
            .map(Into::into)
    });
    let cfg = match load_for_platform(args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let cwd = std::env::current_dir().ok();
    let absolute = |p: std::path::PathBuf| match &cwd {
        Some(cwd) if p.is_relative() => cwd.join(p),
        _ => p,
    };
    let config = config_path
        .or_else(|| cfg.config_file.clone())
        .map(absolute);
    // In an image built from this directory (`COPY . .` into its WORKDIR)
    // the config is at its path from here; curfew reads ./curfew.toml
    // without being told.
    let config_in_image = config
        .as_ref()
        .map(
            |abs| match cwd.as_ref().and_then(|c| abs.strip_prefix(c).ok()) {
                Some(rel) => rel.to_path_buf(),
                None => abs.file_name().map_or_else(|| abs.clone(), Into::into),
            },
        )
        .filter(|rel| rel != std::path::Path::new("curfew.toml"))
        .map(|rel| rel.display().to_string());
    let options = curfew::platform::generate::GenOptions {
        name: args.name,
        exe: std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "/usr/local/bin/curfew".to_owned()),
        config: config.map(|p| p.display().to_string()),
        config_in_image,
        workdir: cwd.map(|c| c.display().to_string()),
        image: args.image,
        notify_reload: args.notify_reload,
    };
    match curfew::platform::generate(&cfg, args.target, &options) {
        Ok(text) => {
            print!("{text}");
            exit::OK
        }
        Err(e) => {
            eprintln!("curfew: {e}");
            exit::CONFIG
        }
    }
}
