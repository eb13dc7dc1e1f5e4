//! The status page's browser session and its CSRF tokens. Stateless: the
//! cookie carries its own proof.
//!
//! - **Key.** With an `admin_token`, the key is HMAC-SHA256(token, a fixed
//!   label): sessions survive a restart of curfew and die with a change of
//!   the token. Without one, a random key per process.
//! - **Session cookie** `curfew_ui=<issued>.<nonce>.<mac>`: the issue time
//!   (unix seconds), 128 random bits, and HMAC(key, issued, nonce). Valid
//!   for [`LIFETIME`]; never the token itself, so a cookie read from a
//!   browser profile reveals nothing that outlives it. Sent `HttpOnly;
//!   SameSite=Strict; Path=/ui`: no script reads it, no other site's form
//!   carries it, and the rest of the admin API (Bearer only) never sees it.
//! - **CSRF token**: HMAC(key, "csrf", nonce), bound to the session (the
//!   "HMAC of the session" pattern, no server state). Every form carries it;
//!   a POST is refused without it, and refused when its `Origin` (or, when
//!   a browser sends no `Origin`, its `Referer`) is not the `Host` it was
//!   sent to.
//! - **Host check** (no `admin_token`, loopback address): the `Host` must be
//!   an IP address or `localhost`, so a page on another site that re-points
//!   its own name at 127.0.0.1 (DNS rebinding) is refused.
//!
//! Every comparison of a secret-derived value is constant-time
//! ([`Mac::verify_slice`]).

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, header};
use sha2::Sha256;

use crate::config::Secret;

/// The session cookie's name.
pub const COOKIE: &str = "curfew_ui";
/// How long a session lasts after login.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// A session issued this far in the future (clock skew) is still taken.
const SKEW_S: u64 = 60;

type HmacSha256 = Hmac<Sha256>;

/// The key sessions and CSRF tokens are signed with.
#[derive(Clone)]
pub struct Keys {
    key: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(…)")
    }
}

/// A verified (or new) browser session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    issued_s: u64,
    /// 32 hex digits.
    nonce: String,
}

impl Keys {
    /// Keys derived from the admin token.
    pub fn from_token(token: &Secret) -> Keys {
        let mut mac = new_mac(token.expose().as_bytes());
        mac.update(b"curfew status page session key v1");
        Keys {
            key: mac.finalize().into_bytes().into(),
        }
    }

    /// A random key for this process (no admin token).
    pub fn random() -> Keys {
        // Two v4 UUIDs: 244 bits from the OS's CSPRNG (uuid uses getrandom).
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Keys { key }
    }

    fn mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = new_mac(&self.key);
        for p in parts {
            // Length-prefixed: no two part lists sign the same bytes.
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac
    }

    /// A new session issued at `now_s` (unix seconds).
    pub fn issue(&self, now_s: u64) -> Session {
        Session {
            issued_s: now_s,
            nonce: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// The cookie value of `session`.
    pub fn cookie_value(&self, session: &Session) -> String {
        let issued = session.issued_s.to_string();
        let mac = self.mac(&[b"session", issued.as_bytes(), session.nonce.as_bytes()]);
        format!(
            "{issued}.{}.{}",
            session.nonce,
            hex(&mac.finalize().into_bytes())
        )
    }

    /// The session of a cookie value, if it is genuine and not expired.
    pub fn verify(&self, value: &str, now_s: u64) -> Option<Session> {
        let mut parts = value.split('.');
        let (issued, nonce, mac) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || nonce.len() != 32
            || !nonce.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return None;
        }
        let issued_s: u64 = issued.parse().ok()?;
        let mac = unhex(mac)?;
        self.mac(&[b"session", issued.as_bytes(), nonce.as_bytes()])
            .verify_slice(&mac)
            .ok()?;
        let fresh = issued_s <= now_s.saturating_add(SKEW_S)
            && now_s.saturating_sub(issued_s) < LIFETIME.as_secs();
        fresh.then(|| Session {
            issued_s,
            nonce: nonce.to_owned(),
        })
    }

    /// The CSRF token of `session`'s forms.
    pub fn csrf(&self, session: &Session) -> String {
        let mac = self.mac(&[b"csrf", session.nonce.as_bytes()]);
        hex(&mac.finalize().into_bytes())
    }

    /// `given` is `session`'s CSRF token (constant-time).
    pub fn csrf_ok(&self, session: &Session, given: &str) -> bool {
        unhex(given).is_some_and(|g| {
            self.mac(&[b"csrf", session.nonce.as_bytes()])
                .verify_slice(&g)
                .is_ok()
        })
    }
}

fn new_mac(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes a key of any length (longer ones are hashed):
        // `new_from_slice` has no error for it to return.
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `Set-Cookie` for a session.
pub fn set_cookie(value: &str) -> String {
    format!(
        "{COOKIE}={value}; Path=/ui; Max-Age={}; HttpOnly; SameSite=Strict",
        LIFETIME.as_secs()
    )
}

/// `Set-Cookie` that removes the session.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/ui; Max-Age=0; HttpOnly; SameSite=Strict")
}

/// The session cookie's value among the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
}

/// Why a POST was refused before it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrossSite {
    /// No `Host` header to compare with.
    NoHost,
    /// `Origin` names another site (or is `null`).
    Origin,
    /// No `Origin`, and `Referer` names another site.
    Referer,
}

impl CrossSite {
    pub fn message(self) -> &'static str {
        match self {
            CrossSite::NoHost => "refused: the request has no Host header",
            CrossSite::Origin => {
                "refused: the form was sent from another site (its Origin is not this address)"
            }
            CrossSite::Referer => {
                "refused: the form was sent from another page (its Referer is not this address)"
            }
        }
    }
}

/// A POST comes from a page of this same address: its `Origin` (or, only
/// when there is none, its `Referer`) is `http(s)://<Host>`. A request with
/// neither (not a browser's form) passes here; the CSRF token still guards
/// it.
pub fn same_origin(headers: &HeaderMap) -> Result<(), CrossSite> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or(CrossSite::NoHost)?;
    let is_host = |origin: &str| {
        origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
    };
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null").trim();
        return if is_host(origin) {
            Ok(())
        } else {
            Err(CrossSite::Origin)
        };
    }
    if let Some(referer) = headers.get(header::REFERER) {
        let referer = referer.to_str().unwrap_or("").trim();
        // scheme://host[:port] up to the first '/' after the scheme.
        let end = referer
            .find("://")
            .map(|i| i + 3)
            .and_then(|start| referer[start..].find('/').map(|j| start + j))
            .unwrap_or(referer.len());
        return if is_host(&referer[..end]) {
            Ok(())
        } else {
            Err(CrossSite::Referer)
        };
    }
    Ok(())
}

/// The `Host` names this machine directly: an IP address or `localhost`,
/// with or without a port (the DNS rebinding guard of an admin address
/// without a token).
pub fn host_is_local(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = host.trim();
    // [v6]:port or [v6]
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').is_some_and(|(ip, port)| {
            ip.parse::<std::net::Ipv6Addr>().is_ok()
                && (port.is_empty()
                    || port
                        .strip_prefix(':')
                        .is_some_and(|p| p.parse::<u16>().is_ok()))
        });
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() => name,
        Some(_) => return false,
        None => host,
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

/// Seconds since the unix epoch (0 if the clock is before it).
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn keys() -> Keys {
        Keys::from_token(&Secret::new("s3cret-s3cret-s3cret".into()))
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn a_session_cookie_verifies_only_unchanged_and_fresh() {
        let k = keys();
        let s = k.issue(NOW);
        let v = k.cookie_value(&s);
        assert_eq!(k.verify(&v, NOW), Some(s.clone()));
        assert_eq!(k.verify(&v, NOW + 3600), Some(s.clone()));
        // Expired, or from the future beyond the skew.
        assert_eq!(k.verify(&v, NOW + LIFETIME.as_secs()), None);
        assert_eq!(k.verify(&v, NOW - SKEW_S - 1), None);
        // Any byte changed: refused.
        let (issued, rest) = v.split_once('.').expect("dot");
        let later = format!("{}.{rest}", issued.parse::<u64>().expect("n") + 1000);
        assert_eq!(
            k.verify(&later, NOW),
            None,
            "a longer life cannot be forged"
        );
        let mut flipped = v.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            k.verify(&String::from_utf8(flipped).expect("utf8"), NOW),
            None
        );
        for bad in [
            "",
            "x",
            "1.2.3",
            &format!("{v}.x"),
            "1..",
            &v.replace('.', ""),
        ] {
            assert_eq!(k.verify(bad, NOW), None, "{bad:?}");
        }
        // Another token's key, or the per-process random key, does not take it.
        let other = Keys::from_token(&Secret::new("another-token-0123".into()));
        assert_eq!(other.verify(&v, NOW), None);
        assert_eq!(Keys::random().verify(&v, NOW), None);
        // The cookie never holds the token.
        assert!(!v.contains("s3cret"));
    }

    #[test]
    fn the_same_token_gives_the_same_key_across_restarts() {
        let s = keys().issue(NOW);
        let v = keys().cookie_value(&s);
        assert_eq!(keys().verify(&v, NOW), Some(s));
    }

    #[test]
    fn csrf_tokens_are_bound_to_their_session() {
        let k = keys();
        let (a, b) = (k.issue(NOW), k.issue(NOW));
        assert_ne!(a, b, "each session has its own nonce");
        let ta = k.csrf(&a);
        assert!(k.csrf_ok(&a, &ta));
        assert!(!k.csrf_ok(&b, &ta), "another session's token");
        assert!(!k.csrf_ok(&a, ""));
        assert!(!k.csrf_ok(&a, &ta[..ta.len() - 2]));
        assert!(!k.csrf_ok(&a, "zz"));
        assert!(!k.csrf_ok(&a, &format!("{ta}00")));
        // The CSRF token is not the cookie's MAC (a page reveals it).
        assert!(!k.cookie_value(&a).contains(&ta));
    }

    #[test]
    fn the_cookie_is_found_among_others_and_set_strictly() {
        let h = headers(&[
            ("cookie", "a=1; curfew_ui=v.a.l"),
            ("cookie", "curfew_uix=no"),
        ]);
        assert_eq!(cookie(&h), Some("v.a.l"));
        assert_eq!(cookie(&headers(&[("cookie", "curfew_uix=no")])), None);
        assert_eq!(cookie(&HeaderMap::new()), None);
        let set = set_cookie("v");
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=43200"] {
            assert!(set.contains(attr), "{set}");
        }
        assert!(clear_cookie().contains("Max-Age=0"));
    }

    #[test]
    fn a_post_must_come_from_the_host_it_was_sent_to() {
        let host = ("host", "127.0.0.1:9000");
        assert_eq!(
            same_origin(&headers(&[host, ("origin", "http://127.0.0.1:9000")])),
            Ok(())
        );
        assert_eq!(
            same_origin(&headers(&[host, ("origin", "https://127.0.0.1:9000")])),
            Ok(())
        );
        for bad in [
            "http://evil.example",
            "http://127.0.0.1:9001",
            "http://127.0.0.1:9000.evil.example",
            "null",
            "",
        ] {
            assert_eq!(
                same_origin(&headers(&[host, ("origin", bad)])),
                Err(CrossSite::Origin),
                "{bad:?}"
            );
        }
        // Origin wins over a same-site Referer.
        assert_eq!(
            same_origin(&headers(&[
                host,
                ("origin", "http://evil.example"),
                ("referer", "http://127.0.0.1:9000/ui")
            ])),
            Err(CrossSite::Origin)
        );
        assert_eq!(
            same_origin(&headers(&[
                host,
                ("referer", "http://127.0.0.1:9000/ui?x=1")
            ])),
            Ok(())
        );
        assert_eq!(
            same_origin(&headers(&[host, ("referer", "http://127.0.0.1:9000")])),
            Ok(())
        );
        for bad in [
            "http://evil.example/ui",
            "http://127.0.0.1:9000.evil.example/ui",
            "http://127.0.0.1:90001/",
            "garbage",
        ] {
            assert_eq!(
                same_origin(&headers(&[host, ("referer", bad)])),
                Err(CrossSite::Referer),
                "{bad:?}"
            );
        }
        // Neither (not a browser form): left to the CSRF token.
        assert_eq!(same_origin(&headers(&[host])), Ok(()));
        assert_eq!(
            same_origin(&headers(&[("origin", "http://127.0.0.1:9000")])),
            Err(CrossSite::NoHost)
        );
    }

    #[test]
    fn only_ip_addresses_and_localhost_pass_the_rebinding_guard() {
        for ok in [
            "127.0.0.1:9000",
            "127.0.0.1",
            "localhost:9000",
            "LOCALHOST",
            "[::1]:9000",
            "[::1]",
            "10.1.2.3:80",
        ] {
            assert!(host_is_local(&headers(&[("host", ok)])), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9000",
            "localhost.evil.example:9000",
            "127.0.0.1.nip.io:9000",
            "[::1]x",
            "[evil]:80",
            "127.0.0.1:port",
            "",
        ] {
            assert!(!host_is_local(&headers(&[("host", bad)])), "{bad}");
        }
        assert!(!host_is_local(&HeaderMap::new()));
    }
}
