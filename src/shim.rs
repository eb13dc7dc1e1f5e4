//! The exec shim that makes the systemd socket-passing convention complete.
//!
//! `sd_listen_fds()` (libsystemd, go-systemd, ...) ignores inherited sockets
//! unless `LISTEN_PID` equals the process's own pid, which is only known after
//! `fork`. Setting an environment variable between `fork` and `exec` is not
//! async-signal-safe, so a worker in fd mode is started as
//! `curfew __exec-worker <program> <args...>`: this tiny mode runs before any
//! thread or runtime exists, adds `LISTEN_PID=<own pid>` and `exec`s the real
//! program (the pid is kept across `exec`).

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStringExt;

/// The first argument that selects the shim.
pub const ARG: &str = "__exec-worker";

/// If this process was started as the shim, exec the worker (never returns);
/// otherwise return.
pub fn run_if_requested() {
    let mut args = std::env::args_os();
    let _self = args.next();
    if args.next().as_deref() != Some(std::ffi::OsStr::new(ARG)) {
        return;
    }
    let rest: Vec<OsString> = args.collect();
    let code = exec(rest);
    std::process::exit(code);
}

fn exec(argv: Vec<OsString>) -> i32 {
    let Some(program) = argv.first().cloned() else {
        eprintln!("curfew {ARG}: no command given");
        return 127;
    };
    let to_c = |s: OsString| CString::new(s.into_vec());
    let Ok(args) = argv.into_iter().map(to_c).collect::<Result<Vec<_>, _>>() else {
        eprintln!("curfew {ARG}: an argument contains a NUL byte");
        return 127;
    };
    let pid = std::process::id();
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != "LISTEN_PID")
        .filter_map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            CString::new(kv).ok()
        })
        .collect();
    env.extend(CString::new(format!("LISTEN_PID={pid}")));
    let Err(err) = nix::unistd::execvpe(&args[0], &args, &env);
    eprintln!("curfew: cannot run {}: {err}", program.to_string_lossy());
    if err == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    }
}
