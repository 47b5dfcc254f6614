//! Who is on the other end of the connection, for the per-IP limits and the flood audit. The
//! TCP peer, unless that peer is a configured trusted proxy: then the right-most address of
//! `X-Forwarded-For` that is not itself a trusted proxy. Every field line of the header counts,
//! read as one comma-separated list in order (RFC 9110 §5.3): a proxy that appends its own line
//! instead of extending the client's puts the client's line first, and reading only that line
//! would let the client name any address. The left part of the list is whatever the client
//! wrote, so the walk from the right stops at the first hop that is not a trusted proxy, and at
//! anything that does not parse as an address (then the last trusted hop is the client: nothing
//! it forwarded can be believed).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use super::request_id::ReqId;

/// The client's address as [`client_ip`] determined it; `None` when the request did not come
/// through a socket (in-process calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    /// The form failure limits and the flood audit key by: the address for IPv4, the /64 for
    /// IPv6 (`2001:db8:1:2::/64`), since one subscriber holds a whole /64 and could otherwise
    /// start afresh with every address in it.
    pub fn key(&self) -> String {
        self.0.map_or_else(
            || "unknown".to_owned(),
            |ip| match crate::limits::ip_key(ip) {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("{v6}/64"),
            },
        )
    }

    pub fn of(req: &Request) -> ClientIp {
        req.extensions()
            .get::<ClientIp>()
            .copied()
            .unwrap_or(ClientIp(None))
    }
}

/// One `X-Forwarded-For` list element as an address: a bare IPv4 or IPv6 address, or one with
/// a port (`192.0.2.1:443`, `[2001:db8::1]:443`) as some proxies write it. IPv4-mapped IPv6
/// addresses become IPv4.
fn hop_address(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The client address of a request whose TCP peer is `peer` and whose `X-Forwarded-For` field
/// lines are `forwarded_for`, in the order they arrived. Trusted proxies are compared in their
/// canonical form, so an IPv4 proxy seen as `::ffff:a.b.c.d` is still that proxy.
pub fn client_ip<'a>(
    peer: Option<IpAddr>,
    forwarded_for: impl IntoIterator<Item = &'a [u8]>,
    trusted: &[IpAddr],
) -> Option<IpAddr> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|t| t.to_canonical() == ip);
    let peer = peer?.to_canonical();
    if !is_trusted(peer) {
        return Some(peer);
    }
    let lines: Vec<&[u8]> = forwarded_for.into_iter().collect();
    let mut client = peer;
    for line in lines.into_iter().rev() {
        // A line that is not ASCII cannot be read, like an unparsable hop.
        let Some(line) = line
            .is_ascii()
            .then(|| std::str::from_utf8(line).ok())
            .flatten()
        else {
            return Some(client);
        };
        // Empty list elements (`a,,b`, a trailing comma) are ignored, as RFC 9110 §5.6.1 says.
        for hop in line
            .rsplit(',')
            .map(|h| h.trim_matches([' ', '\t']))
            .filter(|h| !h.is_empty())
        {
            match hop_address(hop) {
                Some(ip) => {
                    client = ip;
                    if !is_trusted(ip) {
                        return Some(client);
                    }
                }
                // An unparsable hop ends what can be believed.
                None => return Some(client),
            }
        }
    }
    Some(client)
}

/// The first stage of every `/v1` request: find the client and apply the per-IP limit, before
/// any key lookup, body read or decoding.
pub async fn limit_ip(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .map(axum::http::HeaderValue::as_bytes);
    let ip = ClientIp(client_ip(peer, forwarded, &state.trusted_proxies));
    if let Some(addr) = ip.0
        && let Err(refusal) = state.limits.check_ip(addr)
    {
        state.metrics.count_rate_limited(refusal.limiter);
        state
            .audit
            .note_flood(&ip.key(), "rate_limited", state.clock.now());
        return ApiError {
            error: refusal.into_error(),
            request_id: ReqId::of(&req),
        }
        .into_response();
    }
    req.extensions_mut().insert(ip);
    next.run(req).await
}

/// The client's address in the form failure limits and flood events key by; `unknown` when the
/// IP middleware did not run.
pub(super) fn ip_key(ip: Option<axum::extract::Extension<ClientIp>>) -> String {
    ip.map_or_else(
        || "unknown".to_owned(),
        |axum::extract::Extension(ip)| ip.key(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn client(peer: &str, lines: &[&str], trusted: &[IpAddr]) -> Option<IpAddr> {
        client_ip(Some(ip(peer)), lines.iter().map(|l| l.as_bytes()), trusted)
    }

    #[test]
    fn the_peer_is_the_client_unless_it_is_a_trusted_proxy() {
        let proxy = ip("10.0.0.5");
        // An untrusted peer's header is ignored.
        assert_eq!(
            client("203.0.113.9", &["1.2.3.4"], &[proxy]),
            Some(ip("203.0.113.9"))
        );
        // Behind the proxy: the right-most hop the proxy saw, not what the client claims.
        assert_eq!(
            client("10.0.0.5", &["1.2.3.4, 198.51.100.7"], &[proxy]),
            Some(ip("198.51.100.7"))
        );
        // Chained trusted proxies are skipped.
        assert_eq!(
            client(
                "10.0.0.5",
                &["198.51.100.7, 10.0.0.6"],
                &[proxy, ip("10.0.0.6")]
            ),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(client("10.0.0.5", &[], &[proxy]), Some(proxy));
        assert_eq!(client("10.0.0.5", &["garbage"], &[proxy]), Some(proxy));
        assert_eq!(client_ip(None, [b"1.2.3.4".as_slice()], &[]), None);
    }

    #[test]
    fn every_field_line_counts_in_order() {
        let proxy = ip("10.0.0.5");
        // The client's own line comes first, the proxy's appended line last: the proxy's wins.
        assert_eq!(
            client("10.0.0.5", &["1.2.3.4", "198.51.100.7"], &[proxy]),
            Some(ip("198.51.100.7"))
        );
        // A chain across lines: the trusted hop in the last line is skipped.
        assert_eq!(
            client(
                "10.0.0.5",
                &["6.6.6.6", "198.51.100.7, 10.0.0.6"],
                &[proxy, ip("10.0.0.6")]
            ),
            Some(ip("198.51.100.7"))
        );
        // Empty elements are ignored, whitespace and ports are tolerated.
        assert_eq!(
            client(
                "10.0.0.5",
                &["6.6.6.6,, ", "\t198.51.100.7:4711 ,"],
                &[proxy]
            ),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            client("10.0.0.5", &["[2001:db8::1]:443"], &[proxy]),
            Some(ip("2001:db8::1"))
        );
    }

    #[test]
    fn anything_unparsable_stops_the_walk_at_the_last_trusted_hop() {
        let (proxy, inner) = (ip("10.0.0.5"), ip("10.0.0.6"));
        let trusted = [proxy, inner];
        // Nothing left of garbage is believed, whichever line it is in.
        assert_eq!(
            client("10.0.0.5", &["1.2.3.4", "bogus, 10.0.0.6"], &trusted),
            Some(inner)
        );
        assert_eq!(
            client("10.0.0.5", &["1.2.3.4, unknown", "10.0.0.6"], &trusted),
            Some(inner)
        );
        assert_eq!(
            client_ip(
                Some(proxy),
                [b"1.2.3.4".as_slice(), b"\xff198.51.100.7".as_slice()],
                &trusted
            ),
            Some(proxy)
        );
    }

    #[test]
    fn ipv4_mapped_peers_and_hops_are_ipv4() {
        let proxy = ip("10.0.0.5");
        assert_eq!(
            client("::ffff:10.0.0.5", &["::ffff:198.51.100.7"], &[proxy]),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            client("::ffff:203.0.113.9", &[], &[]),
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_slash_64() {
        let a = ClientIp(Some(ip("2001:db8:1:2::1")));
        let b = ClientIp(Some(ip("2001:db8:1:2:ffff:1:2:3")));
        assert_eq!(a.key(), "2001:db8:1:2::/64");
        assert_eq!(a.key(), b.key());
        assert_ne!(a.key(), ClientIp(Some(ip("2001:db8:1:3::1"))).key());
        assert_eq!(ClientIp(Some(ip("192.0.2.1"))).key(), "192.0.2.1");
        assert_eq!(ClientIp(Some(ip("::ffff:192.0.2.1"))).key(), "192.0.2.1");
        assert_eq!(ClientIp(None).key(), "unknown");
    }
}
