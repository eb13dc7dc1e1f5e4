//! Parsers of single values: listen addresses, trusted networks, and the
//! worker program's path.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::{BindAddr, ForwardedAllow};

pub fn parse_bind(s: &str) -> Result<Vec<BindAddr>, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("a unix address needs a path: \"unix:/run/app.sock\"".into());
        }
        return Ok(vec![BindAddr::Unix(PathBuf::from(path))]);
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(vec![BindAddr::Tcp(a)]);
    }
    if !s.contains(':') {
        return Err("must be host:port (e.g. \"0.0.0.0:8000\") or unix:/path".into());
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| {
            format!("cannot resolve: {e}; use host:port (e.g. \"0.0.0.0:8000\") or unix:/path")
        })?
        .collect();
    if addrs.is_empty() {
        return Err("resolves to no address".into());
    }
    Ok(addrs.into_iter().map(BindAddr::Tcp).collect())
}

pub fn parse_allow(list: &[String]) -> Result<ForwardedAllow, String> {
    let mut nets = Vec::new();
    let mut all = false;
    // "10.0.0.1,10.0.0.2" is a list too (gunicorn's FORWARDED_ALLOW_IPS).
    for item in list.iter().flat_map(|s| s.split(',')) {
        let item = item.trim();
        // Every item is checked, also after a "*".
        if item == "*" {
            all = true;
            continue;
        }
        let net = match item.parse::<IpNet>() {
            Ok(n) => n,
            Err(_) => match item.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => {
                    return Err(format!(
                        "{item:?} is not an IP address or CIDR network (or \"*\" for any)"
                    ));
                }
            },
        };
        nets.push(net);
    }
    if all {
        return Ok(ForwardedAllow::All);
    }
    Ok(ForwardedAllow::Nets(nets))
}

/// Check the worker program can be run: a path must name an executable file;
/// a bare name must be found in `PATH`.
pub fn resolve_program(program: &str, chdir: Option<&Path>) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        let full = match (p.is_relative(), chdir) {
            (true, Some(dir)) => dir.join(&p),
            _ => p,
        };
        return if is_exec(&full) {
            Ok(full)
        } else if full.exists() {
            Err(format!("{} is not an executable file", full.display()))
        } else {
            Err(format!(
                "command not found: {} does not exist",
                full.display()
            ))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let cand = dir.join(program);
        if is_exec(&cand) {
            return Ok(cand);
        }
    }
    Err(format!(
        "command not found: `{program}` is not in PATH (install it, activate its virtualenv, or give its full path)"
    ))
}
