//! A hint added to a boot failure when its cause is a common setup
//! mistake: the worker serving on a port of its own instead of the socket
//! curfew passed it. Both show up as "never ready" without it.

use crate::config::WorkerSocket;

/// How a boot failed, as far as the hint needs to know.
pub enum Failure<'a> {
    /// Never ready within `boot_timeout`; the last probe's error.
    TimedOut { last_probe: &'a str },
    /// Exited while booting.
    Exited,
}

/// The hint for a worker of `socket` kind that failed as `failure`, having
/// written `stderr` (its last lines); `None` when nothing points at a setup
/// mistake.
pub fn for_boot_failure(
    socket: WorkerSocket,
    failure: Failure<'_>,
    stderr: &str,
) -> Option<String> {
    let lower = stderr.to_ascii_lowercase();
    if lower.contains("address already in use") || lower.contains("eaddrinuse") {
        return Some(format!(
            "the worker tried to listen on an address of its own, which is taken (often curfew's own \
             `bind`): curfew owns the public address and passes each worker its socket; {}",
            how_to_serve(socket)
        ));
    }
    match failure {
        // A probe that got an HTTP answer (e.g. 503 from a `ready_path`)
        // reached the app: the socket is right, the app is not ready.
        Failure::TimedOut { last_probe } if !last_probe.contains(" answered ") => Some(format!(
            "the worker never answered on the socket curfew gave it (if it is only slow to \
             start, raise boot_timeout); {}",
            how_to_serve(socket)
        )),
        _ => None,
    }
}

fn how_to_serve(socket: WorkerSocket) -> &'static str {
    match socket {
        WorkerSocket::Fd => {
            "with worker_socket = \"fd\" the command must serve on the inherited fd 3, a Unix socket \
             (uvicorn --fd 3; gunicorn with no --bind, it adopts fd 3 from LISTEN_FDS; \
             hypercorn --bind fd://3); a server that takes only a TCP socket there needs \
             worker_socket = \"fd-tcp\"; or set worker_socket = \"port\" and serve on {port} / $PORT"
        }
        WorkerSocket::FdTcp => {
            "with worker_socket = \"fd-tcp\" the command must serve on the inherited fd 3, a TCP socket \
             (uvicorn --fd 3; gunicorn with no --bind, it adopts fd 3 from LISTEN_FDS), \
             or set worker_socket = \"port\" and serve on {port} / $PORT"
        }
        WorkerSocket::Port => {
            "with worker_socket = \"port\" the command must listen on 127.0.0.1 at {port} / $PORT \
             (e.g. --port {port}), not on a port of its own"
        }
        WorkerSocket::Unix => {
            "with worker_socket = \"unix\" the command must listen on the path in {socket} / \
             $CURFEW_SOCKET (e.g. uvicorn --uds {socket}, gunicorn --bind unix:{socket})"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_that_never_answers_on_fd_3_is_told_about_fd_3() {
        let h = for_boot_failure(
            WorkerSocket::Fd,
            Failure::TimedOut {
                last_probe: "no answer within 5s",
            },
            "INFO:     Started server process [12]",
        )
        .expect("hint");
        assert!(h.contains("--fd 3") && h.contains("never answered"), "{h}");
    }

    #[test]
    fn address_in_use_names_curfews_bind() {
        // uvicorn's own words when it binds 127.0.0.1:8000 beside curfew.
        let stderr = "INFO:     Started server process [7]\nINFO:     Waiting for application startup.\n\
                      ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', 8000): \
                      address already in use";
        let h = for_boot_failure(WorkerSocket::Fd, Failure::Exited, stderr).expect("hint");
        assert!(h.contains("curfew's own") && h.contains("fd 3"), "{h}");
        let node = "Error: listen EADDRINUSE: address already in use :::8000";
        let h = for_boot_failure(WorkerSocket::Port, Failure::Exited, node).expect("hint");
        assert!(h.contains("$PORT"), "{h}");
    }

    #[test]
    fn an_app_that_answers_not_ready_or_crashes_gets_no_hint() {
        assert!(
            for_boot_failure(
                WorkerSocket::Fd,
                Failure::TimedOut {
                    last_probe: "GET /ready answered 503 Service Unavailable"
                },
                ""
            )
            .is_none()
        );
        assert!(
            for_boot_failure(
                WorkerSocket::Unix,
                Failure::Exited,
                "Traceback (most recent call last):\nImportError: no module named app"
            )
            .is_none()
        );
    }
}
