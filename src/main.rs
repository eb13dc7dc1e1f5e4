//! The `curfew` binary: parse the command line, load the configuration, run.

use std::process::ExitCode;

use clap::Parser;
use curfew::{config, exit, logging, serve};

mod cli;

fn main() -> ExitCode {
    // Worker exec shim (see shim.rs): must run before anything else.
    curfew::shim::run_if_requested();
    let cli = cli::Cli::parse();
    let code = match cli.command {
        cli::Command::Serve(args) => run_serve(args),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
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
