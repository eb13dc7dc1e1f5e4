//! Who may use the admin endpoint. The probes (`/healthz`, `/readyz`) are
//! always open, so a kubelet or load balancer needs nothing. With an
//! `admin_token`, everything else needs `Authorization: Bearer <token>`.
//! Without one, an admin address that other hosts can reach (TCP, not
//! loopback) refuses the job API — it would let anyone enqueue work — and
//! curfew says so at start; `/status` and `/metrics` stay readable.

use http::{HeaderMap, StatusCode, header};

use crate::config::{BindAddr, Secret};

/// The admin endpoint's access rule.
#[derive(Debug, Clone)]
pub struct AdminAuth {
    token: Option<Secret>,
    /// Reachable from other hosts (TCP on a non-loopback address).
    exposed: bool,
}

/// A refusal: the status and the text the client gets.
pub type Refusal = (StatusCode, &'static str);

impl AdminAuth {
    pub fn new(token: Option<Secret>, bind: Option<&BindAddr>) -> AdminAuth {
        let exposed = match bind {
            Some(BindAddr::Tcp(a)) => !a.ip().is_loopback(),
            Some(BindAddr::Unix(_)) | None => false,
        };
        AdminAuth { token, exposed }
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
        if let Some(token) = &self.token {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            return match given {
                Some(g) if token.matches(g) => Ok(()),
                _ => Err((
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong admin token: send Authorization: Bearer <admin_token>\n",
                )),
            };
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

#[cfg(test)]
mod tests {
    use super::*;

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

        let open = AdminAuth::new(None, Some(&local));
        assert!(open.warning().is_none());
        assert!(open.check("/jobs", &none).is_ok());

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
