//! Forwarding one request to a worker and its response back.
//!
//! Retries: a request is retried on another worker only when it provably
//! never reached one: the connect was refused or failed, or a pooled
//! connection turned out closed before the request was written (hyper hands
//! the request back). A worker that refused is most likely dead (the
//! supervisor is removing it): the request goes back to the router's queue,
//! keeping its place, and waits for another worker (one booting, one coming
//! back from a suspension, one freed), within `timeout` — never a 502. Once
//! any byte may have been written, a failure is a 502 for this request only,
//! logged with method, path, worker and pid.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::Front;
use super::body::{Guard, ProxyBody};
use super::conn::{ConnState, RequestGuard};
use super::headers;
use super::router::Rejected;
use super::upstream::ConnectError;

/// Run `f` until `deadline` (`None` when it passed first).
async fn until<F: std::future::Future>(
    deadline: Option<tokio::time::Instant>,
    f: F,
) -> Option<F::Output> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, f).await.ok(),
        None => Some(f.await),
    }
}

fn millis(d: Option<std::time::Duration>) -> u64 {
    d.map_or(0, |d| d.as_millis() as u64)
}

/// Longest path kept for logs.
const MAX_LOGGED_PATH: usize = 512;

/// Forward one request; every response (proxied or curfew's own) is
/// counted in the metrics when its headers are produced.
pub async fn handle(
    req: Request<Incoming>,
    front: Arc<Front>,
    conn: Arc<ConnState>,
    peer: Option<IpAddr>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    let started = Instant::now();
    let res = forward(req, &front, conn, peer, started).await;
    front
        .metrics
        .request_done(res.status().as_u16(), started.elapsed());
    Ok(res)
}

async fn forward(
    req: Request<Incoming>,
    front: &Arc<Front>,
    conn: Arc<ConnState>,
    peer: Option<IpAddr>,
    started: Instant,
) -> Response<ProxyBody> {
    let request_guard = conn.begin();
    let http1 = req.version() < Version::HTTP_2;
    if !http1 {
        conn.http2.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let method = req.method().clone();
    let mut path: String = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    if path.len() > MAX_LOGGED_PATH {
        let mut cut = MAX_LOGGED_PATH;
        while !path.is_char_boundary(cut) {
            cut -= 1;
        }
        path.truncate(cut);
        path.push('…');
    }

    let mut req = req;
    let upgrade = if http1 {
        headers::upgrade_of(req.headers())
    } else {
        None
    };
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    headers::strip_hop_by_hop(&mut parts.headers);
    // Only curfew's job deliveries may carry the job token.
    parts.headers.remove(headers::JOB_TOKEN_HEADER);
    if let Some(up) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, up.clone());
    }
    let trusted = peer.is_none_or(|ip| front.forwarded_allow.trusts(ip));
    headers::set_forwarded(&mut parts.headers, peer, trusted, host.as_ref());
    if let Some(h) = &host
        && !parts.headers.contains_key(header::HOST)
    {
        parts.headers.insert(header::HOST, h.clone());
    }
    parts.uri = parts
        .uri
        .path_and_query()
        .cloned()
        .map(http::Uri::from)
        .unwrap_or_else(|| http::Uri::from_static("/"));
    parts.version = Version::HTTP_11;
    let mut upreq = Request::from_parts(parts, body);

    let mut excluded: Vec<u64> = Vec::new();
    // `timeout` bounds the wait for a worker and for the response headers.
    let deadline = front
        .timeout
        .map(|t| tokio::time::Instant::from_std(started) + t);
    let (lease, tx, res) = loop {
        let Some(acquired) = until(
            deadline,
            front.router.acquire(&method, &path, started, &excluded),
        )
        .await
        else {
            tracing::warn!(%method, path, timeout_ms = millis(front.timeout), "No worker became free within timeout: answering 504.");
            return error_response(
                StatusCode::GATEWAY_TIMEOUT,
                "no worker became free in time\n",
                request_guard,
            );
        };
        let lease = match acquired {
            Ok(l) => l,
            Err(Rejected::QueueFull) => {
                tracing::warn!(%method, path, backlog = front.backlog, "Every worker is busy and the queue is full: answering 503.");
                return overloaded(request_guard);
            }
            Err(Rejected::Unavailable) => {
                tracing::warn!(%method, path, "No worker accepted the connection: answering 502.");
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    "no worker accepted the request\n",
                    request_guard,
                );
            }
        };
        // A pooled connection, or a new one.
        let (mut up, reused) = match lease.pool.take_idle() {
            Some(up) => (up, true),
            None => match until(deadline, lease.pool.connect())
                .await
                .unwrap_or(Err(ConnectError::Deadline))
            {
                Ok(up) => (up, false),
                Err(ConnectError::Deadline) => {
                    tracing::warn!(%method, path, worker = lease.worker_id, "Connecting to the worker took longer than timeout: answering 504.");
                    return error_response(
                        StatusCode::GATEWAY_TIMEOUT,
                        "the worker did not answer in time\n",
                        request_guard,
                    );
                }
                Err(e) => {
                    tracing::debug!(worker = lease.worker_id, pid = lease.pid, error = %e, "Worker refused the connection; the request waits for another.");
                    front.worker_refused(lease.uid);
                    excluded.push(lease.uid);
                    lease.unused();
                    continue;
                }
            },
        };
        if reused && up.tx.ready().await.is_err() {
            lease.unused();
            continue; // closed while idle; the request was not sent
        }
        let Some(sent) = until(deadline, up.tx.try_send_request(upreq)).await else {
            let age = started.elapsed();
            if front.worker_concurrency == 1 {
                // A sync worker that has not answered in `timeout` is hung:
                // keep it out of routing and have the supervisor abort it.
                front.worker_hung(
                    lease.uid,
                    format!(
                        "request exceeded timeout ({:?})",
                        front.timeout.unwrap_or_default()
                    ),
                    format!("{method} {path} (age {} ms)", age.as_millis()),
                );
            }
            tracing::warn!(
                %method,
                path,
                worker = lease.worker_id,
                age_ms = age.as_millis() as u64,
                "Request exceeded timeout: answering 504."
            );
            return error_response(
                StatusCode::GATEWAY_TIMEOUT,
                "the worker did not answer in time\n",
                request_guard,
            );
        };
        match sent {
            Ok(res) => break (lease, up, res),
            Err(mut e) => match e.take_message() {
                Some(back) => {
                    // Never written: safe to send again, on a fresh connection.
                    upreq = back;
                    if !reused {
                        excluded.push(lease.uid);
                    }
                    lease.unused();
                    continue;
                }
                None => {
                    front.worker_broke(
                        lease.uid,
                        format!("{method} {path} (age {} ms)", started.elapsed().as_millis()),
                    );
                    tracing::warn!(
                        %method,
                        path,
                        worker = lease.worker_id,
                        pid = lease.pid,
                        error = %e.into_error(),
                        "Worker failed mid-request (it closed the connection or died): answering 502."
                    );
                    return error_response(
                        StatusCode::BAD_GATEWAY,
                        "the worker failed while handling the request\n",
                        request_guard,
                    );
                }
            },
        }
    };

    let mut res = res;
    if res.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let upstream_upgrade = hyper::upgrade::on(&mut res);
        let (parts, _body) = res.into_parts();
        let worker = lease.worker_id;
        let abort = front.abort.clone();
        front.tasks.spawn(async move {
            // The lease and the request guard live as long as the tunnel.
            let _hold = (lease, request_guard, tx);
            let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(worker, error = %e, "Protocol upgrade did not complete.");
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            tokio::select! {
                r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                    if let Err(e) = r {
                        tracing::debug!(worker, error = %e, "Upgraded connection ended with an error.");
                    }
                }
                _ = abort.cancelled() => {}
            }
        });
        return Response::from_parts(parts, ProxyBody::empty(None));
    }

    let (mut parts, body) = res.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    if http1 && front.draining.is_cancelled() {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    // The guard's drop hands `tx` back to the pool once the body has ended.
    let guard = Guard::new(Some(lease), Some(tx), Some(request_guard));
    Response::from_parts(parts, ProxyBody::stream(body, guard))
}

fn error_response(
    status: StatusCode,
    text: &'static str,
    request: RequestGuard,
) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(text, Some(request)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn overloaded(request: RequestGuard) -> Response<ProxyBody> {
    let mut r = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "every worker is busy; retry shortly\n",
        request,
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}
