//! Forwarding one request to a worker and its response back: the client's
//! request is rewritten for the worker (hop-by-hop headers, forwarding
//! headers, origin-form URI), sent through the [`super::dispatch`] path
//! (which retries it elsewhere while it provably never reached a worker),
//! and a dispatch failure becomes this request's 502/503/504 only, logged
//! with method, path, worker and pid.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;

use crate::config::ForwardedAllow;

use super::Front;
use super::access_log::Note;
use super::body::{Guard, ProxyBody, UpstreamBody};
use super::conn::{ConnState, RequestGuard};
use super::dispatch::{DispatchError, Unobserved, Work};
use super::headers;
use super::request_body::{self, ClientBodyError};
use super::response_body;

fn millis(d: Option<std::time::Duration>) -> u64 {
    d.map_or(0, |d| d.as_millis() as u64)
}

/// Longest path kept for logs.
const MAX_LOGGED_PATH: usize = 512;

/// Forward one request; every response (proxied or curfew's own) is
/// counted in the metrics when its headers are produced, and with the
/// access log on, logged when its body has been sent (or dropped).
pub async fn handle(
    req: Request<Incoming>,
    front: Arc<Front>,
    conn: Arc<ConnState>,
    peer: Option<IpAddr>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    let started = Instant::now();
    let trusted = peer.is_none_or(|ip| front.forwarded_allow.trusts(ip));
    let Some(log) = front.access_log() else {
        let res = forward(req, &front, conn, trusted, started, None).await;
        front
            .metrics
            .request_done(res.status().as_u16(), started.elapsed());
        return Ok(res);
    };
    let mut note = Note::of(
        &req,
        started,
        conn.peer_value.as_ref().and_then(|v| v.to_str().ok()),
        trusted,
        &front.forwarded_allow,
        log.query,
    );
    let res = forward(req, &front, conn, trusted, started, Some(&mut note)).await;
    let status = res.status().as_u16();
    front.metrics.request_done(status, started.elapsed());
    let log = log.clone();
    Ok(res.map(|body| body.logged(note, status, log)))
}

async fn forward(
    mut req: Request<Incoming>,
    front: &Arc<Front>,
    conn: Arc<ConnState>,
    trusted: bool,
    started: Instant,
    note: Option<&mut Note>,
) -> Response<ProxyBody> {
    let request_guard = conn.begin();
    let http1 = req.version() < Version::HTTP_2;
    if !http1 {
        conn.http2.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let method = req.method().clone();
    let logged = LoggedPath::of(req.uri());
    let path = logged.as_str();
    if method == Method::CONNECT {
        // curfew is not a forward proxy.
        let mut r = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported\n",
            request_guard,
        );
        r.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        return r;
    }
    if let (Some(limit), Some(declared)) = (front.limits.max, declared_length(req.headers()))
        && declared > limit
    {
        // Refused before a byte of it is read.
        return client_fault(
            &method,
            path,
            ClientBodyError::TooLarge { limit },
            request_guard,
        );
    }
    let upgrade = if http1 {
        headers::upgrade_of(req.headers())
    } else {
        None
    };
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    for_worker(
        &mut parts,
        upgrade,
        trusted,
        conn.peer_value.as_ref(),
        &front.forwarded_allow,
        front.keep_underscore_headers,
        conn.local_host.as_ref(),
    );
    // Buffered: the worker's clock starts once the body is in hand.
    let (body, body_done, started) = if body.is_end_stream() {
        // No body (most requests): nothing to limit, wait for or buffer.
        (UpstreamBody::Bytes(None), None, started)
    } else if front.request_buffering {
        match request_body::buffer(body, front.limits, &front.spill_dir).await {
            Ok(b) => {
                parts.headers.remove(header::EXPECT);
                parts.headers.insert(
                    header::CONTENT_LENGTH,
                    HeaderValue::from(b.content_length()),
                );
                (UpstreamBody::buffered(b), None, Instant::now())
            }
            Err(e) => return client_fault(&method, path, e, request_guard),
        }
    } else {
        let limited = request_body::Limited::new(body, front.limits);
        let progress = limited.progress.clone();
        (UpstreamBody::Client(limited), Some(progress), started)
    };
    let upreq = Request::from_parts(parts, body);
    let retry = (front.retry_idempotent
        && client_upgrade.is_none()
        && matches!(method, Method::GET | Method::HEAD | Method::OPTIONS)
        && upreq.body().is_end_stream())
    .then(|| bodiless_copy(&upreq));

    let work = Work {
        method: &method,
        path,
        started,
        timeout: front.timeout,
        job: None,
        body_done,
    };
    let mut dispatched = front
        .dispatcher
        .dispatch(upreq, &work, &mut Unobserved)
        .await;
    if let (
        Some(again),
        Err(DispatchError::Broke {
            worker,
            pid,
            stopped_by_curfew: false,
            ..
        }),
    ) = (retry, &dispatched)
    {
        // Nothing of an answer was sent: the same request, once, to
        // another worker (the broken one is suspended meanwhile).
        tracing::info!(%method, path, worker, pid, "Worker failed before answering an idempotent request: sending it once more, to another worker.");
        dispatched = front
            .dispatcher
            .dispatch(again, &work, &mut Unobserved)
            .await;
        if let Err(DispatchError::Broke { worker, pid, .. }) = &dispatched {
            tracing::warn!(%method, path, worker, pid, "Suspected query of death: this request's retry broke a second worker; not retried again.");
        }
    }
    let mut d = match dispatched {
        Ok(d) => d,
        Err(e) => return failed(front, &work, e, request_guard),
    };
    if let Some(n) = note {
        n.worker = Some(d.lease.worker_id);
        n.queued = Some(d.queued);
        n.upstream = Some(d.upstream_time);
    }
    if d.response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let upstream_upgrade = hyper::upgrade::on(&mut d.response);
        let (parts, _body) = d.response.into_parts();
        let hold = (d.lease, d.upstream, request_guard);
        front.tasks.spawn(super::tunnel::tunnel(
            client_upgrade,
            upstream_upgrade,
            hold,
            front.abort.clone(),
            front.tunnel_idle_timeout,
        ));
        return Response::from_parts(parts, ProxyBody::empty(None));
    }

    let (mut parts, mut body) = d.response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    if http1 && front.draining.is_cancelled() {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if !front.response_buffering {
        // The guard's drop hands the connection back to the pool once the
        // body has ended.
        let guard = Guard::new(Some(d.lease), Some(d.upstream), Some(request_guard));
        return Response::from_parts(parts, ProxyBody::stream(body, guard));
    }
    let first = match response_body::try_whole(&mut body) {
        // All here already: the worker is free now.
        response_body::Ready::Whole(whole) => {
            d.lease.pool.put(d.upstream);
            drop(d.lease);
            return Response::from_parts(parts, ProxyBody::full(whole, Some(request_guard)));
        }
        response_body::Ready::Partial(first) => first,
        // Failed already (a worker that sent its head, then closed): the
        // client gets the head and a cut-off body, never a clean end. The
        // connection is not pooled; the slot is free.
        response_body::Ready::Broken(first, error) => {
            tracing::warn!(%method, path, worker = d.lease.worker_id, pid = d.lease.pid, error = %error, "Worker's response body failed before its end: the client's response is cut off.");
            drop(d.upstream);
            drop(d.lease);
            let body = response_body::broken(first, error, request_guard);
            return Response::from_parts(parts, ProxyBody::Spooled(body));
        }
    };
    let held = response_body::Held {
        lease: d.lease,
        upstream: d.upstream,
    };
    let spooled = response_body::pump(
        first,
        body,
        held,
        request_guard,
        response_body::PumpOptions {
            send_timeout: front.send_timeout,
            cut_client: conn.cut.clone(),
            abort: front.abort.clone(),
            spill_dir: front.spill_dir.clone(),
        },
        &front.tasks,
    );
    Response::from_parts(parts, ProxyBody::Spooled(spooled))
}

/// The request's path and query as logged, cut at [`MAX_LOGGED_PATH`]:
/// a share of the URI's own bytes (reference-counted, no copy per
/// request), or a copy only when it has to be cut.
enum LoggedPath {
    Shared(http::uri::PathAndQuery),
    Owned(String),
}

impl LoggedPath {
    fn of(uri: &http::Uri) -> LoggedPath {
        let pq = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let full = pq.as_str();
        if full.len() <= MAX_LOGGED_PATH {
            return LoggedPath::Shared(pq);
        }
        let mut cut = MAX_LOGGED_PATH;
        while !full.is_char_boundary(cut) {
            cut -= 1;
        }
        LoggedPath::Owned(format!("{}…", &full[..cut]))
    }

    fn as_str(&self) -> &str {
        match self {
            LoggedPath::Shared(pq) => pq.as_str(),
            LoggedPath::Owned(s) => s,
        }
    }
}

/// The client's request head as the worker gets it: HTTP/1.1 in origin
/// form, hop-by-hop headers, the job token, spoofable forwarding headers
/// and (unless kept) every field named with a `_` removed, the upgrade (if any) restated, the forwarding headers set and
/// `Host` kept (or, for an HTTP/1.0 request without one, the address the
/// client connected to). `trusted`: the peer is one `forwarded_allow_ips`
/// trusts (a Unix-socket client always is); `peer_value` its address.
fn for_worker(
    parts: &mut http::request::Parts,
    upgrade: Option<HeaderValue>,
    trusted: bool,
    peer_value: Option<&HeaderValue>,
    allow: &ForwardedAllow,
    keep_underscores: bool,
    local_host: Option<&HeaderValue>,
) {
    let host = parts
        .headers
        .get(header::HOST)
        .cloned()
        .or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        })
        .or_else(|| local_host.cloned());
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::drop_spoofable(&mut parts.headers, trusted, keep_underscores);
    if let Some(up) = upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, up);
    }
    headers::set_forwarded(
        &mut parts.headers,
        peer_value,
        trusted,
        allow,
        host.as_ref(),
    );
    if let Some(h) = host
        && !parts.headers.contains_key(header::HOST)
    {
        parts.headers.insert(header::HOST, h);
    }
    parts.uri = parts
        .uri
        .path_and_query()
        .cloned()
        .map(http::Uri::from)
        .unwrap_or_else(|| http::Uri::from_static("/"));
    parts.version = Version::HTTP_11;
}

/// The same bodiless request head again (for `retry_idempotent`).
fn bodiless_copy(req: &Request<UpstreamBody>) -> Request<UpstreamBody> {
    let mut again = Request::new(UpstreamBody::Bytes(None));
    *again.method_mut() = req.method().clone();
    *again.uri_mut() = req.uri().clone();
    *again.version_mut() = req.version();
    *again.headers_mut() = req.headers().clone();
    again
}

/// The `Content-Length` a request declares, if it declares one number.
fn declared_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A client's own fault (a body too large, too slow or malformed): its
/// answer, never a worker's failure. Logged at DEBUG: a client that
/// misbehaves must not be able to fill the log.
fn client_fault(
    method: &Method,
    path: &str,
    error: ClientBodyError,
    request: RequestGuard,
) -> Response<ProxyBody> {
    let status = error.status();
    tracing::debug!(%method, path, status = status.as_u16(), error = %error, "Client fault: answered to the client.");
    let text = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "request body too large\n",
        StatusCode::REQUEST_TIMEOUT => "request body not received in time\n",
        StatusCode::BAD_REQUEST => "malformed request body\n",
        _ => "could not keep the request body\n",
    };
    closing_error(status, text, request)
}

/// curfew's own answer that also ends the connection (what is left of the
/// client's body on it cannot be trusted).
fn closing_error(
    status: StatusCode,
    text: &'static str,
    request: RequestGuard,
) -> Response<ProxyBody> {
    let mut r = error_response(status, text, request);
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// The answer to a request that could not be dispatched, and its log line.
fn failed(
    front: &Front,
    work: &Work<'_>,
    error: DispatchError,
    request: RequestGuard,
) -> Response<ProxyBody> {
    let (method, path) = (work.method, work.path);
    let (status, text) = match &error {
        DispatchError::NoWorkerInTime => {
            tracing::warn!(%method, path, timeout_ms = millis(front.timeout), "No worker became free within timeout: answering 504.");
            (
                StatusCode::GATEWAY_TIMEOUT,
                "no worker became free in time\n",
            )
        }
        DispatchError::QueueFull => {
            tracing::warn!(%method, path, backlog = front.backlog, "Every worker is busy and the queue is full: answering 503.");
            return overloaded(request);
        }
        DispatchError::Unavailable => {
            tracing::warn!(%method, path, "No worker accepted the connection: answering 502.");
            (StatusCode::BAD_GATEWAY, "no worker accepted the request\n")
        }
        DispatchError::ConnectTimeout { worker } => {
            tracing::warn!(%method, path, worker, "Connecting to the worker took longer than timeout: answering 504.");
            (
                StatusCode::GATEWAY_TIMEOUT,
                "the worker did not answer in time\n",
            )
        }
        DispatchError::Timeout { worker, .. } => {
            let age_ms = work.started.elapsed().as_millis() as u64;
            tracing::warn!(%method, path, worker, age_ms, "Request exceeded timeout: answering 504.");
            (
                StatusCode::GATEWAY_TIMEOUT,
                "the worker did not answer in time\n",
            )
        }
        DispatchError::Broke {
            worker,
            pid,
            source,
            ..
        } => {
            tracing::warn!(%method, path, worker, pid, error = %source, "Worker failed mid-request (it closed the connection or died): answering 502.");
            (
                StatusCode::BAD_GATEWAY,
                "the worker failed while handling the request\n",
            )
        }
        DispatchError::ClientBody { status, reason } => {
            tracing::debug!(%method, path, status = status.as_u16(), error = %reason, "Client fault while streaming its body: answered to the client.");
            return closing_error(
                *status,
                "the request body could not be forwarded\n",
                request,
            );
        }
        DispatchError::ClientSlow => {
            tracing::debug!(%method, path, "Client still sending its body at timeout: answering 408.");
            (
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time\n",
            )
        }
        // Requests are not observed; should one ever be, it is a 502.
        DispatchError::Abandoned => (
            StatusCode::BAD_GATEWAY,
            "the worker failed while handling the request\n",
        ),
    };
    error_response(status, text, request)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logged_path_shares_the_uri_and_cuts_long_ones() {
        let uri: http::Uri = "/a/b?c=d".parse().expect("uri");
        let p = LoggedPath::of(&uri);
        assert!(matches!(p, LoggedPath::Shared(_)));
        assert_eq!(p.as_str(), "/a/b?c=d");

        let authority_only: http::Uri = "http://example.com".parse().expect("uri");
        assert_eq!(LoggedPath::of(&authority_only).as_str(), "/");

        let long = format!("/{}", "x".repeat(MAX_LOGGED_PATH + 10));
        let uri: http::Uri = long.parse().expect("uri");
        let p = LoggedPath::of(&uri);
        let s = p.as_str();
        assert!(s.ends_with('…'), "{s}");
        let kept = s.trim_end_matches('…');
        assert_eq!(kept.len(), MAX_LOGGED_PATH);
        assert!(long.starts_with(kept));
    }
}
