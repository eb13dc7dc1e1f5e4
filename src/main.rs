//! The `curfew` binary: parse the command line, load the configuration, run.

use std::process::ExitCode;

use clap::Parser;
use curfew::{config, exit, logging, serve};

mod cli;

fn main() -> ExitCode {
    // Worker exec shim (see shim.rs): must run before anything else.
    curfew::shim::run_if_requested();
    let cli = cli::Cli::parse();
    use curfew::control::Request;
    let code = match cli.command {
        cli::Command::Serve(args) => run_serve(*args),
        cli::Command::Status { json, target } => run_control(&target, Request::Status, json),
        cli::Command::Reload { target } => run_control(&target, Request::Reload, false),
        cli::Command::Stop { target } => run_control(&target, Request::Stop, false),
        cli::Command::Scale { workers, target } => run_control(
            &target,
            Request::Scale {
                workers: workers.into(),
            },
            false,
        ),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// Talk to a running curfew over its control socket.
fn run_control(target: &cli::ControlArgs, req: curfew::control::Request, json: bool) -> i32 {
    let path = match target.socket() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("curfew: {e}");
            return exit::CONFIG;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("curfew: cannot start the async runtime: {e}");
            return exit::FAILURE;
        }
    };
    // A reload waits for the new generation to boot.
    let timeout = std::time::Duration::from_secs(600);
    match rt.block_on(curfew::control::request(&path, &req, timeout)) {
        Err(e) => {
            eprintln!("curfew: {e}");
            exit::FAILURE
        }
        Ok(r) if !r.ok => {
            eprintln!(
                "curfew: {}",
                r.error.unwrap_or_else(|| "request failed".into())
            );
            exit::FAILURE
        }
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
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
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
            exit::FAILURE
        }
    }
}
