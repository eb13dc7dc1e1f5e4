//! Who may use the admin endpoint. The probes (`/healthz`, `/readyz`) are
//! always open, so a kubelet or load balancer needs nothing. With an
//! `admin_token`, everything else needs `Authorization: Bearer <token>`.
//! Without one, an admin address that other hosts can reach (TCP, not
//! loopback) refuses the job API — it would let anyone enqueue work — and
//! curfew says so at start; `/status` and `/metrics` stay readable.
//!
//! The status page (`/ui`, [`crate::admin::ui`]) is for browsers, which
//! cannot send a Bearer header: it takes the token once at `/ui/login` and
//! then a signed session cookie; its keys live here, beside the token.

use http::{HeaderMap, StatusCode, header};

use super::ui::session::Keys;
use crate::config::{BindAddr, Secret};

/// The admin endpoint's access rule.
#[derive(Debug, Clone)]
pub struct AdminAuth {
    token: Option<Secret>,
    /// Reachable from other hosts (TCP on a non-loopback address).
    exposed: bool,
    /// A Unix socket: no browser reaches it, no Host to check.
    unix: bool,
    /// The status page's session and CSRF keys (from the token, or random).
    ui: Keys,
}

/// A refusal: the status and the text the client gets.
pub type Refusal = (StatusCode, &'static str);

impl AdminAuth {
    pub fn new(token: Option<Secret>, bind: Option<&BindAddr>) -> AdminAuth {
        let exposed = match bind {
            Some(BindAddr::Tcp(a)) => !a.ip().is_loopback(),
            Some(BindAddr::Unix(_)) | None => false,
        };
        let unix = matches!(bind, Some(BindAddr::Unix(_)));
        let ui = token.as_ref().map_or_else(Keys::random, Keys::from_token);
        AdminAuth {
            token,
            exposed,
            unix,
            ui,
        }
    }

    /// An `admin_token` is set.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Reachable from other hosts (TCP, not loopback).
    pub fn exposed(&self) -> bool {
        self.exposed
    }

    /// Served on a Unix socket.
    pub fn unix(&self) -> bool {
        self.unix
    }

    /// The status page's keys.
    pub fn ui_keys(&self) -> &Keys {
        &self.ui
    }

    /// `given` is the admin token (constant-time); false without one.
    pub fn token_matches(&self, given: &str) -> bool {
        self.token.as_ref().is_some_and(|t| t.matches(given))
    }

    /// The request carries `Authorization: Bearer <admin_token>` (the
    /// scheme in any case, RFC 9110 §11.1, and any spaces around the token).
    pub fn bearer_ok(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .is_some_and(|g| self.token_matches(g))
    }

    /// The WARN to log at start, if any.
    pub fn warning(&self) -> Option<&'static str> {
        (self.exposed && self.token.is_none()).then_some(
            "The admin address is reachable from other hosts and has no admin_token: the job API is refused there, /status and /metrics are readable by anyone who can reach it. Set admin_token (or admin_token_file).",
        )
    }

    /// May this request for `path` be answered?
    pub fn check(&self, path: &str, headers: &HeaderMap) -> Result<(), Refusal> {
        if path == "/healthz" || path == "/readyz" {
            return Ok(());
        }
        if self.token.is_some() {
            return if self.bearer_ok(headers) {
                Ok(())
            } else {
                Err((
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong admin token: send Authorization: Bearer <admin_token>\n",
                ))
            };
        }
        // No token on a loopback address: only this machine can connect —
        // including a browser on it, sent by a page whose name resolves to
        // 127.0.0.1 (DNS rebinding). Such a request carries the page's own
        // name as `Host`; a local client names an address or `localhost`.
        if !self.exposed && !self.unix && !super::ui::session::host_is_local(headers) {
            return Err((
                StatusCode::FORBIDDEN,
                "the Host header must be an IP address or localhost on an admin address without admin_token (a guard against DNS rebinding); or set admin_token\n",
            ));
        }
        let job_api = path == "/jobs" || path.starts_with("/jobs/");
        if self.exposed && job_api {
            return Err((
                StatusCode::FORBIDDEN,
                "the job API needs admin_token when admin_bind is reachable from other hosts\n",
            ));
        }
        Ok(())
    }
}

/// The token of an `Authorization: Bearer <token>` value: the scheme
/// matched in any case, then at least one space.
fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim_start();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case("bearer") || !rest.starts_with([' ', '\t']) {
        return None;
    }
    Some(rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER \t abc "), Some("abc"));
        assert_eq!(bearer_token("Bearerabc"), None);
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bear"), None);
        assert_eq!(bearer_token("Beärer abc"), None);
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {t}").parse().expect("value"),
        );
        h
    }

    #[test]
    fn probes_are_open_and_the_rest_follows_the_token() {
        let public: BindAddr = BindAddr::Tcp("0.0.0.0:9000".parse().expect("addr"));
        let local: BindAddr = BindAddr::Tcp("127.0.0.1:9000".parse().expect("addr"));
        let none = HeaderMap::new();

        let host = |h: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, h.parse().expect("value"));
            m
        };
        let open = AdminAuth::new(None, Some(&local));
        assert!(open.warning().is_none());
        assert!(open.check("/jobs", &host("127.0.0.1:9000")).is_ok());
        assert!(open.check("/metrics", &host("localhost:9000")).is_ok());
        // A page on another name resolved to 127.0.0.1 (DNS rebinding).
        for path in ["/jobs", "/status", "/metrics"] {
            assert_eq!(
                open.check(path, &host("evil.example:9000"))
                    .map_err(|r| r.0),
                Err(StatusCode::FORBIDDEN)
            );
        }
        assert!(open.check("/readyz", &host("evil.example:9000")).is_ok());
        let unix = AdminAuth::new(None, Some(&BindAddr::Unix("/run/a.sock".into())));
        assert!(unix.check("/jobs", &none).is_ok());

        let exposed = AdminAuth::new(None, Some(&public));
        assert!(exposed.warning().is_some());
        assert!(exposed.check("/readyz", &none).is_ok());
        assert!(exposed.check("/status", &none).is_ok());
        assert_eq!(
            exposed.check("/jobs/3", &none).map_err(|r| r.0),
            Err(StatusCode::FORBIDDEN)
        );

        let secret = Secret::new("s3cret-s3cret-s3cret".into());
        let guarded = AdminAuth::new(Some(secret), Some(&public));
        assert!(guarded.warning().is_none());
        assert!(guarded.check("/healthz", &none).is_ok());
        for path in ["/jobs", "/status", "/metrics"] {
            assert_eq!(
                guarded.check(path, &none).map_err(|r| r.0),
                Err(StatusCode::UNAUTHORIZED)
            );
            assert_eq!(
                guarded.check(path, &bearer("wrong")).map_err(|r| r.0),
                Err(StatusCode::UNAUTHORIZED)
            );
            assert!(guarded.check(path, &bearer("s3cret-s3cret-s3cret")).is_ok());
        }
    }
}
