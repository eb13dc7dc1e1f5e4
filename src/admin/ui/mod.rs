//! The status page at `/ui` on the admin address: what an operator opens
//! first. Server-rendered HTML that reads whole without JavaScript; a small
//! script (`assets/ui.js`) replaces the live region with `/ui/live` every 2 s and
//! draws the request rate and latency from successive polls. No build
//! step, no external asset: the CSS and script are compiled in and served
//! here, under `Content-Security-Policy: default-src 'self'`.
//!
//! | request | answer |
//! |---|---|
//! | `GET /ui` | the page (`?done=` after an action: its message) |
//! | `GET /ui/live` | the live region alone (the script's poll) |
//! | `GET /ui/login`, `POST /ui/login` (`token=`) | the login form; the session cookie, 303 to `/ui` |
//! | `POST /ui/logout` | the cookie removed, 303 to `/ui/login` |
//! | `POST /ui/jobs/<id>/retry`, `…/cancel` | the action, 303 to `/ui?done=…` |
//! | `POST /ui/queues/<name>/pause`, `…/resume` | the same |
//! | `GET /ui/static/ui.css`, `…/ui.js` | the assets (no authentication: nothing secret) |
//!
//! **Who may see and act** (`access`): with an `admin_token`, a valid
//! session cookie (from `/ui/login`) or `Authorization: Bearer` (which gets
//! a session too, for the forms); without, on a loopback address or Unix
//! socket, anyone who reaches it (a session is issued on the first visit,
//! for the CSRF token) once the `Host` passes the rebinding guard; without,
//! on an address other hosts reach, the status only (no jobs, no actions),
//! as for the job API. Every POST needs the session's CSRF token and a
//! same-site `Origin`/`Referer` ([`session`] has the design). Every job
//! string shown is escaped; errors are cut at `live::ERROR_CHARS` (300 characters); a
//! load reads at most `view::RECENT` (20) jobs of each state, without payloads.

mod actions;
mod live;
mod render;
pub mod session;
mod view;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

use super::AdminState;
use super::auth::AdminAuth;
use session::Session;

/// The stylesheet.
const CSS: &str = include_str!("assets/ui.css");
/// The script: polls `/ui/live`, draws the chart.
const JS: &str = include_str!("assets/ui.js");

/// The status page's paths.
pub fn owns(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// What a request may do here.
pub(crate) enum Access {
    /// Read everything and act: the session whose CSRF token signs the
    /// forms, and its cookie to set when it is new.
    Full {
        session: Session,
        set_cookie: Option<String>,
    },
    /// The status only: an admin address other hosts reach, without a token.
    ReadOnly,
}

/// Why a request may not.
pub(crate) enum Denied {
    /// No valid session or token: log in.
    Login,
    Forbidden(&'static str),
}

/// Who is asking (see the module docs).
pub(crate) fn access(auth: &AdminAuth, headers: &HeaderMap) -> Result<Access, Denied> {
    let keys = auth.ui_keys();
    let now = session::now_s();
    let existing = session::cookie(headers).and_then(|v| keys.verify(v, now));
    let new = || {
        let session = keys.issue(now);
        let set_cookie = Some(session::set_cookie(&keys.cookie_value(&session)));
        Access::Full {
            session,
            set_cookie,
        }
    };
    if auth.has_token() {
        return match existing {
            Some(session) => Ok(Access::Full {
                session,
                set_cookie: None,
            }),
            None if auth.bearer_ok(headers) => Ok(new()),
            None => Err(Denied::Login),
        };
    }
    if auth.exposed() {
        return Ok(Access::ReadOnly);
    }
    if !auth.unix() && !session::host_is_local(headers) {
        return Err(Denied::Forbidden(
            "refused: without an admin_token the status page answers only to an IP address or localhost in the Host (open it as http://127.0.0.1:<port>/ui), so that another site cannot reach it by pointing its own name at this address; or set admin_token",
        ));
    }
    Ok(match existing {
        Some(session) => Access::Full {
            session,
            set_cookie: None,
        },
        None => new(),
    })
}

/// Answers a request for a `/ui` path.
pub async fn respond(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let mut r = route(state, req).await;
    secure(r.headers_mut());
    r
}

async fn route(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/ui/static/ui.css") => return asset(CSS, "text/css; charset=utf-8"),
        (&Method::GET, "/ui/static/ui.js") => {
            return asset(JS, "text/javascript; charset=utf-8");
        }
        (&Method::GET, "/ui/login") => {
            let logged_in = matches!(
                access(&state.auth, req.headers()),
                Ok(Access::Full {
                    set_cookie: None,
                    ..
                }) | Ok(Access::ReadOnly)
            );
            return if !state.auth.has_token() || logged_in {
                redirect("/ui")
            } else {
                html(StatusCode::OK, render::login_page(false))
            };
        }
        (&Method::POST, "/ui/login") => return actions::login(state, req).await,
        _ => {}
    }
    let access = match access(&state.auth, req.headers()) {
        Ok(a) => a,
        Err(Denied::Login) if method == Method::GET && path != "/ui/live" => {
            return redirect("/ui/login");
        }
        Err(Denied::Login) => {
            return html(
                StatusCode::UNAUTHORIZED,
                render::error_page("Log in first: /ui/login takes the admin token."),
            );
        }
        Err(Denied::Forbidden(why)) => return html(StatusCode::FORBIDDEN, render::error_page(why)),
    };
    let mut r = match (&method, path.as_str()) {
        (&Method::GET, "/ui" | "/ui/") => page(state, &access, req.uri().query()).await,
        (&Method::GET, "/ui/live") => {
            let view = gather(state, &access).await;
            html(StatusCode::OK, live::render(&view))
        }
        (&Method::POST, "/ui/logout") => actions::logout(state, &access, req).await,
        (&Method::POST, _) => actions::act(state, &access, req).await,
        _ => html(
            StatusCode::NOT_FOUND,
            render::error_page(
                "Not found: the status page is /ui (GET); its actions are POSTs of its own forms.",
            ),
        ),
    };
    // A new session's cookie goes with whatever answer (not for a logout,
    // which clears it).
    if let Access::Full {
        set_cookie: Some(c),
        ..
    } = &access
        && !r.headers().contains_key(header::SET_COOKIE)
        && let Ok(v) = HeaderValue::from_str(c)
    {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn gather(state: &AdminState, access: &Access) -> view::View {
    match access {
        Access::Full { session, .. } => {
            view::gather(state, true, Some(state.auth.ui_keys().csrf(session))).await
        }
        Access::ReadOnly => view::gather(state, false, None).await,
    }
}

async fn page(state: &AdminState, access: &Access, query: Option<&str>) -> Response<Full<Bytes>> {
    let view = gather(state, access).await;
    let flash = query.and_then(actions::flash);
    let can_logout = state.auth.has_token() && matches!(access, Access::Full { .. });
    html(
        StatusCode::OK,
        render::status_page(&view, flash.as_deref(), can_logout),
    )
}

pub(crate) fn html(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// 303 See Other to `location` (a literal or built from checked parts).
pub(crate) fn redirect(location: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn asset(body: &'static str, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// The headers of every answer under `/ui`: only this origin's scripts,
/// styles and form targets, no framing, no sniffing, no caching (the pages
/// carry a CSRF token and job data).
fn secure(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BindAddr, Secret};

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().expect("value"));
        }
        m
    }

    fn full(a: Result<Access, Denied>) -> (bool, bool) {
        match a {
            Ok(Access::Full { set_cookie, .. }) => (true, set_cookie.is_some()),
            _ => (false, false),
        }
    }

    #[test]
    fn with_a_token_only_a_session_or_the_bearer_gets_in() {
        let local: BindAddr = BindAddr::Tcp("127.0.0.1:9000".parse().expect("addr"));
        let auth = AdminAuth::new(
            Some(Secret::new("s3cret-s3cret-s3cret".into())),
            Some(&local),
        );
        let host = ("host", "127.0.0.1:9000");
        assert!(matches!(access(&auth, &h(&[host])), Err(Denied::Login)));
        assert!(matches!(
            access(&auth, &h(&[host, ("authorization", "Bearer wrong")])),
            Err(Denied::Login)
        ));
        assert_eq!(
            full(access(
                &auth,
                &h(&[host, ("authorization", "Bearer s3cret-s3cret-s3cret")])
            )),
            (true, true),
            "the bearer gets a session for the forms"
        );
        let keys = auth.ui_keys();
        let cookie = format!(
            "curfew_ui={}",
            keys.cookie_value(&keys.issue(session::now_s()))
        );
        assert_eq!(
            full(access(&auth, &h(&[host, ("cookie", &cookie)]))),
            (true, false)
        );
        // Another curfew's (another token's) cookie is no session here.
        let other = AdminAuth::new(Some(Secret::new("another-token-0123".into())), Some(&local));
        assert!(matches!(
            access(&other, &h(&[host, ("cookie", &cookie)])),
            Err(Denied::Login)
        ));
        // With a token, any Host (a name behind a proxy) is fine.
        assert!(matches!(
            access(&auth, &h(&[("host", "admin.example"), ("cookie", &cookie)])),
            Ok(Access::Full { .. })
        ));
    }

    #[test]
    fn without_a_token_loopback_is_open_exposed_is_read_only() {
        let local: BindAddr = BindAddr::Tcp("127.0.0.1:9000".parse().expect("addr"));
        let open = AdminAuth::new(None, Some(&local));
        assert_eq!(
            full(access(&open, &h(&[("host", "127.0.0.1:9000")]))),
            (true, true)
        );
        assert!(matches!(
            access(&open, &h(&[("host", "rebound.example:9000")])),
            Err(Denied::Forbidden(_))
        ));
        let unix: BindAddr = BindAddr::Unix("/run/x.sock".into());
        assert_eq!(
            full(access(
                &AdminAuth::new(None, Some(&unix)),
                &h(&[("host", "anything")])
            )),
            (true, true)
        );
        let public: BindAddr = BindAddr::Tcp("0.0.0.0:9000".parse().expect("addr"));
        assert!(matches!(
            access(
                &AdminAuth::new(None, Some(&public)),
                &h(&[("host", "10.0.0.1:9000")])
            ),
            Ok(Access::ReadOnly)
        ));
    }
}
