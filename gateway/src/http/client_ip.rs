//! Who is on the other end of the connection, for the per-IP limit and the flood audit. The TCP
//! peer, unless that peer is a configured trusted proxy: then the right-most address of
//! `X-Forwarded-For` that is not itself a trusted proxy (the left part of that header is
//! whatever the client wrote, and a client can write anything).

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
    /// The form the flood audit keys refusals by.
    pub fn key(&self) -> String {
        self.0
            .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
    }

    pub fn of(req: &Request) -> ClientIp {
        req.extensions()
            .get::<ClientIp>()
            .copied()
            .unwrap_or(ClientIp(None))
    }
}

/// The client address of a request whose TCP peer is `peer`.
pub fn client_ip(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    trusted: &[IpAddr],
) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let Some(header) = forwarded_for else {
        return Some(peer);
    };
    let mut client = peer;
    for hop in header.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !trusted.contains(&ip) {
                    break;
                }
            }
            // An unparsable hop ends what can be believed.
            Err(_) => break,
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
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
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

    #[test]
    fn the_peer_is_the_client_unless_it_is_a_trusted_proxy() {
        let proxy = ip("10.0.0.5");
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_ip(Some(ip("203.0.113.9")), Some("1.2.3.4"), &[proxy]),
            Some(ip("203.0.113.9"))
        );
        // Behind the proxy: the right-most hop the proxy saw, not what the client claims.
        assert_eq!(
            client_ip(Some(proxy), Some("1.2.3.4, 198.51.100.7"), &[proxy]),
            Some(ip("198.51.100.7"))
        );
        // Chained trusted proxies are skipped.
        assert_eq!(
            client_ip(
                Some(proxy),
                Some("198.51.100.7, 10.0.0.6"),
                &[proxy, ip("10.0.0.6")]
            ),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(client_ip(Some(proxy), None, &[proxy]), Some(proxy));
        assert_eq!(
            client_ip(Some(proxy), Some("garbage"), &[proxy]),
            Some(proxy)
        );
        assert_eq!(client_ip(None, Some("1.2.3.4"), &[]), None);
    }
}
