//! The control socket: a Unix socket (mode 0600) through which `curfew
//! status`, `reload`, `stop` and `scale` talk to a running curfew.
//!
//! Protocol: the client connects, writes one JSON request line, and reads one
//! JSON response line. `{"cmd":"status"}`, `{"cmd":"reload"}`,
//! `{"cmd":"stop"}`, `{"cmd":"scale","workers":4}` → `{"ok":true,...}` or
//! `{"ok":false,"error":"..."}`. A reload answers once it has completed or
//! failed.

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
}

/// Bind the control socket (mode 0600). A stale socket file (nobody
/// answering) is replaced; a live one is an error.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let l = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(l)
}

/// Serve the control socket until `stop`; requests go to `to_orchestrator`.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    to_orchestrator: mpsc::Sender<Incoming>,
    stop: CancellationToken,
) {
    loop {
        let conn = tokio::select! {
            _ = stop.cancelled() => break,
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
    let _ = std::fs::remove_file(&path);
}

async fn answer(stream: UnixStream, tx: mpsc::Sender<Incoming>) {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(r).take(MAX_REQUEST as u64);
    let response = match reader.read_line(&mut line).await {
        Err(e) => Response::err(format!("cannot read the request: {e}")),
        Ok(_) => match serde_json::from_str::<Request>(line.trim()) {
            Err(e) => Response::err(format!(
                "bad request {:?}: {e} (send {{\"cmd\":\"status\"}}, reload, stop, or scale with workers)",
                line.trim()
            )),
            Ok(req) => {
                let (rtx, rrx) = oneshot::channel();
                if tx.send((req, rtx)).await.is_err() {
                    Response::err("curfew is shutting down")
                } else {
                    rrx.await
                        .unwrap_or_else(|_| Response::err("curfew is shutting down"))
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
        tokio::spawn(serve(l, path.clone(), tx, stop.clone()));
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
