//! Header rules of a reverse proxy (RFC 9110 §7.6.1): hop-by-hop fields are
//! not forwarded, and `X-Forwarded-For/-Proto/-Host` tell the app who the
//! client was.
//!
//! Forwarded headers from the client are only kept when the peer is trusted
//! (`forwarded_allow_ips`, loopback by default, like gunicorn): a TLS
//! terminating load balancer's `X-Forwarded-Proto: https` reaches the app,
//! a client's forged one does not.

use std::net::IpAddr;

use crate::config::ForwardedAllow;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Fields that describe one connection, never forwarded (Go's ReverseProxy list).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Whether a `Connection` field of `headers` lists `option`.
pub fn connection_has(headers: &HeaderMap, option: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(option))
}

/// The protocol upgrade asked for (`Connection: upgrade` + `Upgrade: x`), if any.
pub fn upgrade_of(headers: &HeaderMap) -> Option<HeaderValue> {
    if connection_has(headers, "upgrade") {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// The header that proves a request is a job delivery from curfew (its value
/// is the workers' `CURFEW_JOB_TOKEN`). Never taken from a client.
pub const JOB_TOKEN_HEADER: &str = "x-curfew-job-token";

/// Fields that say who the client was or how it connected, set (or left
/// out) by curfew; from an untrusted peer none of them reaches a worker.
/// Beyond the `X-Forwarded-*` family: gunicorn's default
/// `secure_scheme_headers` (`X-Forwarded-Protocol: ssl`,
/// `X-Forwarded-Ssl: on`), which it believes from the proxies it trusts —
/// curfew — and the scheme fields other proxies and frameworks use.
const FORWARDING: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-protocol",
    "x-forwarded-scheme",
    "x-forwarded-host",
    "x-forwarded-server",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-ssl",
    "x-scheme",
    "x-url-scheme",
    "front-end-https",
    "x-real-ip",
    "x-client-ip",
    "forwarded",
];

/// Remove what a client must not be able to tell a worker: the job token,
/// and from an untrusted peer every forwarding field — also when spelled
/// with `_` for `-` (`x_forwarded_proto`), which WSGI servers fold into
/// the same `HTTP_X_FORWARDED_PROTO` variable as curfew's own field. The
/// `_` spellings are dropped from trusted peers too: no proxy sends them.
/// Unless `keep_underscores`, every other field whose name has a `_` goes
/// too, from every peer (nginx's `underscores_in_headers off`): gunicorn
/// reads `SCRIPT_NAME` and `PATH_INFO` headers from the proxies it trusts —
/// curfew, on loopback — so a client could otherwise set the app's mount
/// point.
pub fn drop_spoofable(headers: &mut HeaderMap, trusted: bool, keep_underscores: bool) {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let n = name.as_str();
            if !keep_underscores && n.contains('_') {
                return true;
            }
            // Called for every request: a `_` spelling (rare) is the only
            // case that needs a folded copy of the name.
            let spoofable = |canonical: &str, folded: bool| {
                canonical == JOB_TOKEN_HEADER
                    || ((folded || !trusted) && FORWARDING.contains(&canonical))
            };
            if n.contains('_') {
                spoofable(&n.replace('_', "-"), true)
            } else {
                spoofable(n, false)
            }
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Remove hop-by-hop fields, including every field named in `Connection`.
/// `TE: trailers` is kept (it is end-to-end in meaning for HTTP/1.1 → app).
///
/// Runs twice per request: one pass over the names finds the hop-by-hop
/// ones, and only those are removed (removing each listed name by lookup,
/// present or not, was a tenth of curfew's instructions per request).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| HOP_BY_HOP.contains(&n.as_str()))
        .cloned()
        .collect();
    if doomed.is_empty() {
        // No `Connection` either, so nothing it names.
        return;
    }
    let named = doomed.len();
    doomed.extend(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok()),
    );
    // A `TE` that `Connection` names goes whatever it says.
    let te_trailers = !doomed[named..].contains(&header::TE)
        && headers
            .get(header::TE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            });
    for n in doomed {
        headers.remove(n);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Set the `X-Forwarded-*` fields for a request from `peer`, the client's
/// address as text ([`peer_value`], made once per connection; `None` for a
/// Unix socket client, which is trusted like loopback).
///
/// From a `trusted` peer the `X-Forwarded-For` chain is extended, but only
/// from its client on: reading from the right, past the hops `allow` trusts,
/// the first other entry is the client as far as trusted proxies can tell,
/// and what stands left of it was written by that client and is dropped. So
/// the first entry is always the client curfew resolved — what a worker
/// that trusts every hop takes (uvicorn with `FORWARDED_ALLOW_IPS=*`, which
/// curfew sets for workers on Unix sockets), and what `split(",")[0]` in an
/// app reads.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: Option<&HeaderValue>,
    trusted: bool,
    allow: &ForwardedAllow,
    host: Option<&HeaderValue>,
) {
    let mut prior_xff: Vec<String> = if trusted {
        headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    } else {
        Vec::new()
    };
    if let Some(client) = client_hop(&prior_xff, allow) {
        prior_xff.drain(..client);
    }
    headers.remove(&X_FORWARDED_FOR);
    match (prior_xff.is_empty(), peer) {
        // The usual case: the peer is the whole chain.
        (true, Some(peer)) => {
            headers.insert(&X_FORWARDED_FOR, peer.clone());
        }
        (true, None) => {}
        (false, peer) => {
            let mut chain = prior_xff.join(", ");
            if let Some(p) = peer.and_then(|p| p.to_str().ok()) {
                chain.push_str(", ");
                chain.push_str(p);
            }
            if let Ok(v) = HeaderValue::from_str(&chain) {
                headers.insert(&X_FORWARDED_FOR, v);
            }
        }
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        headers.remove(&X_FORWARDED_HOST);
        if let Some(h) = host {
            headers.insert(&X_FORWARDED_HOST, h.clone());
        }
    }
}

/// A client's address as a header value (`X-Forwarded-For`), made once per
/// connection: formatting the address for each request was 3 % of curfew's
/// instructions per request.
pub fn peer_value(ip: IpAddr) -> HeaderValue {
    // An address's text is digits, `.`, `:` and hex letters: always a
    // valid header value (the fallback is never taken).
    HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
}

/// Where the client stands in a forwarding chain (`X-Forwarded-For`
/// entries, oldest first, maybe followed by the peer): the rightmost hop
/// that `allow` does not trust, `None` when every hop is trusted. The one
/// reading of the chain behind both what the worker gets
/// ([`set_forwarded`]) and whom the access log names
/// ([`super::access_log::client`]).
pub fn client_hop<S: AsRef<str>>(chain: &[S], allow: &ForwardedAllow) -> Option<usize> {
    chain
        .iter()
        .rposition(|hop| !hop_ip(hop.as_ref()).is_some_and(|ip| allow.trusts(ip)))
}

/// The address in one `X-Forwarded-For` entry: `192.0.2.1`, `192.0.2.1:443`,
/// `2001:db8::1` or `[2001:db8::1]:443`; `None` for anything else
/// (`unknown`, an obfuscated name), which no trusted network contains.
fn hop_ip(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (ip, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> ForwardedAllow {
        nets(&["127.0.0.0/8", "::1/128"])
    }

    fn nets(list: &[&str]) -> ForwardedAllow {
        ForwardedAllow::Nets(list.iter().map(|n| n.parse().expect("net")).collect())
    }

    fn xff_after(prior: &[&str], peer: &str, allow: &ForwardedAllow) -> String {
        let mut h = HeaderMap::new();
        for p in prior {
            h.append(&X_FORWARDED_FOR, HeaderValue::from_str(p).expect("value"));
        }
        set_forwarded(
            &mut h,
            Some(&peer_value(peer.parse().expect("ip"))),
            true,
            allow,
            None,
        );
        h.get(&X_FORWARDED_FOR)
            .expect("xff")
            .to_str()
            .expect("ascii")
            .to_owned()
    }

    #[test]
    fn a_chain_starts_at_the_client_the_trusted_hops_name() {
        let lb = nets(&["10.0.0.0/8", "127.0.0.0/8"]);
        // A client's own XFF that a load balancer appended to: the forged
        // entry is dropped; the client the balancer saw comes first.
        assert_eq!(
            xff_after(&["6.6.6.6, 203.0.113.9"], "10.0.0.5", &lb),
            "203.0.113.9, 10.0.0.5"
        );
        // Several trusted hops (and several header lines) are kept.
        assert_eq!(
            xff_after(&["6.6.6.6, 203.0.113.9", "10.0.0.7"], "10.0.0.5", &lb),
            "203.0.113.9, 10.0.0.7, 10.0.0.5"
        );
        // Every hop trusted: the whole chain, as given.
        assert_eq!(
            xff_after(&["10.0.0.9, 10.0.0.7"], "10.0.0.5", &lb),
            "10.0.0.9, 10.0.0.7, 10.0.0.5"
        );
        // Ports and brackets are read; a name is never trusted.
        assert_eq!(
            xff_after(
                &["6.6.6.6, [2001:db8::1]:443, 10.0.0.7:8080"],
                "10.0.0.5",
                &lb
            ),
            "[2001:db8::1]:443, 10.0.0.7:8080, 10.0.0.5"
        );
        assert_eq!(
            xff_after(&["6.6.6.6, unknown, 10.0.0.7"], "10.0.0.5", &lb),
            "unknown, 10.0.0.7, 10.0.0.5"
        );
        // Everyone trusted (`forwarded_allow_ips = "*"`): nothing dropped.
        assert_eq!(
            xff_after(&["6.6.6.6, 203.0.113.9"], "10.0.0.5", &ForwardedAllow::All),
            "6.6.6.6, 203.0.113.9, 10.0.0.5"
        );
    }

    #[test]
    fn hop_addresses_are_read_with_or_without_ports() {
        assert_eq!(hop_ip("192.0.2.1"), Some("192.0.2.1".parse().expect("ip")));
        assert_eq!(
            hop_ip("192.0.2.1:443"),
            Some("192.0.2.1".parse().expect("ip"))
        );
        assert_eq!(
            hop_ip("2001:db8::1"),
            Some("2001:db8::1".parse().expect("ip"))
        );
        assert_eq!(
            hop_ip("[2001:db8::1]:443"),
            Some("2001:db8::1".parse().expect("ip"))
        );
        assert_eq!(hop_ip("unknown"), None);
        assert_eq!(hop_ip("_hidden"), None);
        assert_eq!(hop_ip("192.0.2.1:x"), None);
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        m
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_fields() {
        let mut h = map(&[
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip, trailers"),
            ("upgrade", "websocket"),
            ("content-type", "text/plain"),
            ("x-keep", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert!(names.contains(&"content-type") && names.contains(&"x-keep"));
        for gone in [
            "connection",
            "keep-alive",
            "x-private",
            "transfer-encoding",
            "upgrade",
        ] {
            assert!(!h.contains_key(gone), "{gone} kept");
        }
        assert_eq!(h.get("te").map(|v| v.as_bytes()), Some(&b"trailers"[..]));

        // `Connection` naming `TE` removes it, `trailers` or not.
        let mut h = map(&[("connection", "te"), ("te", "trailers"), ("x-keep", "1")]);
        strip_hop_by_hop(&mut h);
        assert!(!h.contains_key("te") && !h.contains_key("connection"));
        assert!(h.contains_key("x-keep"));
        // Nothing hop-by-hop: nothing changes (a field `Connection` would
        // name stays when there is no `Connection`).
        let mut h = map(&[("x-private", "1"), ("host", "a")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn detects_upgrade() {
        assert!(upgrade_of(&map(&[("connection", "Upgrade"), ("upgrade", "websocket")])).is_some());
        assert!(
            upgrade_of(&map(&[
                ("connection", "keep-alive, upgrade"),
                ("upgrade", "h2c")
            ]))
            .is_some()
        );
        assert!(upgrade_of(&map(&[("upgrade", "websocket")])).is_none());
    }

    #[test]
    fn untrusted_peer_cannot_forge_forwarded_headers() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
        ]);
        let host = HeaderValue::from_static("example.com");
        set_forwarded(
            &mut h,
            Some(&peer_value("203.0.113.9".parse().expect("ip"))),
            false,
            &loopback(),
            Some(&host),
        );
        assert_eq!(h.get("x-forwarded-for").expect("xff"), "203.0.113.9");
        assert_eq!(h.get("x-forwarded-proto").expect("proto"), "http");
        assert_eq!(h.get("x-forwarded-host").expect("host"), "example.com");
    }

    #[test]
    fn trusted_peer_chain_is_extended_and_proto_kept() {
        let mut h = map(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-proto", "https"),
        ]);
        let host = HeaderValue::from_static("example.com");
        set_forwarded(
            &mut h,
            Some(&peer_value("127.0.0.1".parse().expect("ip"))),
            true,
            &loopback(),
            Some(&host),
        );
        assert_eq!(
            h.get("x-forwarded-for").expect("xff"),
            "198.51.100.1, 127.0.0.1"
        );
        assert_eq!(h.get("x-forwarded-proto").expect("proto"), "https");
        assert_eq!(h.get("x-forwarded-host").expect("host"), "example.com");
    }

    #[test]
    fn unix_peer_adds_nothing_to_the_chain() {
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, None, true, &loopback(), None);
        assert!(!h.contains_key("x-forwarded-for"));
        assert_eq!(h.get("x-forwarded-proto").expect("proto"), "http");
    }
}
