//! The control socket: a Unix socket (mode 0600) through which `curfew
//! status`, `reload`, `stop` and `scale` talk to a running curfew.
//!
//! Another local user must not be able to take it over: the default lives
//! in a private directory (`$XDG_RUNTIME_DIR/curfew/` or
//! `/tmp/curfew-<uid>/`) that curfew creates 0700 and checks (owned by it,
//! not reachable by others, not a symlink) before use; only a socket is
//! ever replaced (never another kind of file); the server answers only
//! peers of its own uid (or root, `SO_PEERCRED`); the client talks only to
//! a socket owned by its own uid (or root); a request must arrive within
//! [`REQUEST_TIMEOUT`].
//!
//! Protocol: the client connects, writes one JSON request line, and reads one
//! JSON response line. `{"cmd":"status"}`, `{"cmd":"reload"}`,
//! `{"cmd":"stop"}`, `{"cmd":"scale","workers":4}`, `{"cmd":"upgrade"}` →
//! `{"ok":true,...}` or `{"ok":false,"error":"..."}`. A reload answers once
//! it has completed or failed, an upgrade once the new curfew serves (or
//! failed to start).
//!
//! An upgrade hands the listening socket itself to the new curfew (fd name
//! `control`): the old one stops accepting on it ([`serve`]'s `release`)
//! and leaves the file, so `curfew status` reaches the new one.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Longest request line accepted (an enqueue carries the payload, up to
/// jobs.max_payload's ceiling of 64 MiB, escaped).
const MAX_REQUEST: usize = 200 << 20;

/// Time a client has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub use crate::protocol::control::{Request, Response};

/// A request waiting for the orchestrator's answer.
pub type Incoming = (Request, oneshot::Sender<Response>);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot use control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "control socket {path} is in use by a running curfew (pid in `curfew status`); set another `control_socket`"
    )]
    InUse { path: PathBuf },
    #[error(
        "no curfew is listening on {path}: it is not running, or it uses another control socket (give --control-socket, or --config with its curfew.toml)"
    )]
    NotRunning { path: PathBuf },
    #[error("bad answer from {path}: {detail}")]
    BadAnswer { path: PathBuf, detail: String },
    #[error("timed out waiting for curfew on {path}")]
    Timeout { path: PathBuf },
    #[error("refusing control socket {path}: {why}")]
    Unsafe { path: PathBuf, why: String },
}

/// Check that `dir` is a private directory of ours (creating it 0700 if
/// it does not exist): a real directory (not a symlink), owned by this uid,
/// with no access for group or others.
pub fn private_dir(dir: &Path) -> Result<(), ControlError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let unsafe_dir = |why: String| ControlError::Unsafe {
        path: dir.to_path_buf(),
        why,
    };
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(ControlError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|source| ControlError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let me = nix::unistd::getuid().as_raw();
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return Err(unsafe_dir(
            "the directory is a symlink or not a directory (another user may have created it); remove it or set control_socket".into(),
        ));
    }
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "the directory is owned by uid {}, not by this user (uid {me}); remove it or set control_socket",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(unsafe_dir(format!(
            "the directory has mode {:o}: other users can reach it; make it 0700 or remove it",
            meta.mode() & 0o777
        )));
    }
    Ok(())
}

/// A socket file may be trusted by this user: owned by it or by root.
fn owned_by_us_or_root(path: &Path) -> Result<(), ControlError> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(()); // connecting will say it is missing
    };
    let me = nix::unistd::getuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(ControlError::Unsafe {
            path: path.to_path_buf(),
            why: format!(
                "it is owned by uid {}, not by this user (uid {me}) or root: it may not be curfew's",
                meta.uid()
            ),
        });
    }
    Ok(())
}

/// Bind the control socket (mode 0600). A stale socket file (nobody
/// answering) is replaced; a live one is an error.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        if crate::config::defaults::is_default_control_dir(dir) {
            private_dir(dir)?;
        } else {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(ControlError::Unsafe {
                path: path.to_path_buf(),
                why:
                    "a file that is not a socket is in the way; curfew replaces only a stale socket"
                        .into(),
            });
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse {
                path: path.to_path_buf(),
            });
        }
        owned_by_us_or_root(path)?;
        std::fs::remove_file(path).map_err(io)?;
    }
    let l = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(l)
}

/// Serve the control socket until `stop`, or until `release` (an upgrade's
/// successor took the socket over: accepting ends, requests already
/// accepted are still answered); requests go to `to_orchestrator`. The
/// file is left to the caller, which alone knows whether it owns it (an
/// upgrade's new curfew that was never acknowledged does not).
pub async fn serve(
    listener: UnixListener,
    to_orchestrator: mpsc::Sender<Incoming>,
    stop: CancellationToken,
    release: CancellationToken,
) {
    loop {
        let conn = tokio::select! {
            _ = stop.cancelled() => break,
            _ = release.cancelled() => return,
            c = listener.accept() => c,
        };
        let Ok((stream, _)) = conn else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let tx = to_orchestrator.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = answer(stream, tx) => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// Only this uid and root may use the socket (its mode says so too; this
/// holds even if the file's mode was loosened).
fn peer_allowed(stream: &UnixStream) -> bool {
    let me = nix::unistd::getuid().as_raw();
    stream
        .peer_cred()
        .is_ok_and(|c| c.uid() == me || c.uid() == 0)
}

async fn answer(stream: UnixStream, tx: mpsc::Sender<Incoming>) {
    let allowed = peer_allowed(&stream);
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(r).take(MAX_REQUEST as u64);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await;
    let response = match read {
        _ if !allowed => {
            tracing::warn!("Control socket: refused a request from another user.");
            Response::err("permission denied: only curfew's own user (or root) may use this socket")
        }
        Err(_) => Response::err(format!("no complete request within {REQUEST_TIMEOUT:?}")),
        Ok(Err(e)) => Response::err(format!("cannot read the request: {e}")),
        Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim()) {
            Err(e) => Response::err(format!(
                "bad request {:?}: {e} (send {{\"cmd\":\"status\"}}, reload, stop, or scale with workers)",
                line.trim()
            )),
            Ok(req) => {
                let (rtx, rrx) = oneshot::channel();
                // A jobs request that meets the stop was not taken (or may
                // have been cut mid-write): a 503 to the SDK, as over HTTP.
                let stopping = || Response {
                    http_status: Some(503),
                    retry_after: Some(1),
                    ..Response::err("curfew is shutting down")
                };
                if tx.send((req, rtx)).await.is_err() {
                    stopping()
                } else {
                    rrx.await.unwrap_or_else(|_| stopping())
                }
            }
        },
    };
    let mut out = serde_json::to_string(&response).unwrap_or_else(|_| "{\"ok\":false}".into());
    out.push('\n');
    let _ = w.write_all(out.as_bytes()).await;
}

use tokio::io::AsyncReadExt as _;

/// Send one request to the curfew at `path` and wait for its answer.
pub async fn request(
    path: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<Response, ControlError> {
    let p = || path.to_path_buf();
    owned_by_us_or_root(path)?;
    let mut stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ControlError::NotRunning { path: p() });
        }
        Err(source) => return Err(ControlError::Io { path: p(), source }),
    };
    let mut line = serde_json::to_string(req).map_err(|e| ControlError::BadAnswer {
        path: p(),
        detail: e.to_string(),
    })?;
    line.push('\n');
    let exchange = async {
        stream.write_all(line.as_bytes()).await?;
        let mut answer = String::new();
        BufReader::new(&mut stream).read_line(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ControlError::Timeout { path: p() })?
        .map_err(|source| ControlError::Io { path: p(), source })?;
    serde_json::from_str(answer.trim()).map_err(|e| ControlError::BadAnswer {
        path: p(),
        detail: format!("{e}: {answer:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format() {
        assert_eq!(
            serde_json::to_string(&Request::Status).expect("json"),
            r#"{"cmd":"status"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"scale","workers":3}"#).expect("parse"),
            Request::Scale { workers: 3 }
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
    }

    #[tokio::test]
    async fn round_trip_and_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.sock");
        assert!(matches!(
            request(&path, &Request::Status, Duration::from_secs(1)).await,
            Err(ControlError::NotRunning { .. })
        ));
        let l = bind(&path).expect("bind");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(bind(&path), Err(ControlError::InUse { .. })));
        let (tx, mut rx) = mpsc::channel::<Incoming>(4);
        let stop = CancellationToken::new();
        tokio::spawn(serve(l, tx, stop.clone(), CancellationToken::new()));
        tokio::spawn(async move {
            while let Some((req, reply)) = rx.recv().await {
                let _ = reply.send(Response::ok(format!("{req:?}")));
            }
        });
        let r = request(&path, &Request::Reload, Duration::from_secs(2))
            .await
            .expect("answer");
        assert_eq!(r.message.as_deref(), Some("Reload"));
        stop.cancel();
    }

    #[test]
    fn squatted_paths_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        // A regular file where the socket goes: never unlinked.
        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, "keep me").expect("write");
        assert!(matches!(bind(&file), Err(ControlError::Unsafe { .. })));
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "keep me");
        // A private directory that others can reach, or that is a symlink.
        let open = dir.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = private_dir(&open).expect_err("mode 0777 refused");
        assert!(e.to_string().contains("mode 777"), "{e}");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).expect("symlink");
        let e = private_dir(&link).expect_err("symlink refused");
        assert!(e.to_string().contains("symlink"), "{e}");
        // Created 0700 when missing, and accepted.
        let fresh = dir.path().join("fresh");
        private_dir(&fresh).expect("created");
        let mode = std::fs::metadata(&fresh)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
        private_dir(&fresh).expect("accepted again");
    }

    #[test]
    fn stale_socket_file_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        assert!(path.exists());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async { bind(&path).expect("stale replaced") });
    }
}
