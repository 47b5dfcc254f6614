//! Requests the gateway makes on an app's behalf — webhook deliveries and JWKS fetches — to URLs
//! an app or an admin chose. Checking such a URL as a string is not enough: a name can resolve
//! to the cloud metadata service, a private network or the gateway's own host, and resolve
//! differently by the time the connection is made. So every such request goes through
//! [`agent`], whose resolver looks the host up once, keeps only the addresses that may be
//! reached (public ones, or those the operator named in `outbound_allow`), and hands exactly
//! those to the connector: what was checked is what is connected to, with no second lookup in
//! between. Proxies from the environment are not used (a proxy would resolve the name itself),
//! and redirects are not followed (a redirect is a new, unchecked URL).
//!
//! Plain `http://` is reached only on a loopback address that is also allowlisted: tests and
//! local development, never the network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use ureq::config::Config as UreqConfig;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use crate::error::{Error, Result};

/// IPv4 networks that are not the public internet (IANA's special-purpose registry):
/// "this network", private (RFC 1918), shared/CGNAT, loopback, link-local, IETF protocol
/// assignments, the documentation networks, the old 6to4 relay, benchmarking, multicast, and
/// the reserved 240/4 with the broadcast address.
const V4_REFUSED: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(100, 64, 0, 0), 10),
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 0, 0, 0), 24),
    (Ipv4Addr::new(192, 0, 2, 0), 24),
    (Ipv4Addr::new(192, 88, 99, 0), 24),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    (Ipv4Addr::new(198, 18, 0, 0), 15),
    (Ipv4Addr::new(198, 51, 100, 0), 24),
    (Ipv4Addr::new(203, 0, 113, 0), 24),
    (Ipv4Addr::new(224, 0, 0, 0), 4),
    (Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// The IPv6 global unicast block; everything outside it (loopback, unspecified, unique-local
/// fc00::/7, link-local fe80::/10, site-local, multicast ff00::/8, discard, NAT64 local use…)
/// is refused, apart from the forms that embed an IPv4 address (see [`embedded_v4`]).
const V6_GLOBAL: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3);

/// Parts of the global unicast block that are not the public internet either: IETF protocol
/// assignments (Teredo, benchmarking, ORCHID), and the two documentation prefixes.
const V6_REFUSED: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
    (Ipv6Addr::new(0x2001, 0x0db8, 0, 0, 0, 0, 0, 0), 32),
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),
];

fn in_v4(ip: Ipv4Addr, (net, len): (Ipv4Addr, u8)) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn in_v6(ip: Ipv6Addr, (net, len): (Ipv6Addr, u8)) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

/// The IPv4 address inside an IPv6 address that carries one and is routed to it: IPv4-mapped
/// `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d` and 6to4
/// `2002:aabb:ccdd::/48`. Such an address is exactly as reachable as the IPv4 one it names.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    let zero = Ipv6Addr::UNSPECIFIED;
    if in_v6(ip, (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96))
        || in_v6(ip, (zero, 96))
        || in_v6(ip, (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96))
    {
        return Some(low);
    }
    if in_v6(ip, (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16)) {
        return Some(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    None
}

/// Whether `ip` is an address of the public internet, the only kind an outbound request may
/// reach without the operator's say-so.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !V4_REFUSED.iter().any(|net| in_v4(v4, *net)),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => in_v6(v6, V6_GLOBAL) && !V6_REFUSED.iter().any(|net| in_v6(v6, *net)),
        },
    }
}

/// The operator's `outbound_allow`: networks that outbound requests may reach although they are
/// not public (an issuer or a receiver on the private network, the tests' loopback servers).
/// Empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist(Arc<[IpNet]>);

impl Allowlist {
    /// Parses CIDRs (`10.1.2.0/24`, `::1/128`); a bare address means just that address.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Allowlist> {
        let nets = items
            .iter()
            .map(|s| {
                let s = s.as_ref().trim();
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map(|n| n.trunc())
                    .map_err(|_| {
                        Error::Config(format!(
                            "outbound_allow {s:?}: expected a CIDR like 10.0.0.0/8"
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Allowlist(nets.into()))
    }

    /// The networks, as configured (for logs).
    pub fn networks(&self) -> &[IpNet] {
        &self.0
    }

    /// Whether the operator allowed `ip`. An IPv4-mapped address is the IPv4 address it maps
    /// to: allowing `127.0.0.1/32` allows `::ffff:127.0.0.1`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        self.0
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
    }

    /// Whether a request may connect to `ip`: allowlisted or public; over plain HTTP only
    /// allowlisted loopback.
    pub fn permits(&self, ip: IpAddr, plain_http: bool) -> bool {
        if plain_http {
            return ip.to_canonical().is_loopback() && self.contains(ip);
        }
        self.contains(ip) || is_public(ip)
    }
}

/// A host that resolved only to addresses outbound requests may not reach. Its text is for the
/// operator's log; apps see only [`Failure::RefusedAddress`].
#[derive(Debug, thiserror::Error)]
#[error(
    "{host} resolves only to addresses outbound requests may not reach ({addresses}); an operator can allow them with outbound_allow"
)]
pub struct RefusedAddress {
    pub host: String,
    pub addresses: String,
}

/// Resolves with the system resolver and keeps only the addresses [`Allowlist::permits`]; the
/// connector then connects to exactly those.
#[derive(Debug)]
struct CheckedResolver {
    allow: Allowlist,
}

impl Resolver for CheckedResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &UreqConfig,
        timeout: NextTimeout,
    ) -> std::result::Result<ResolvedSocketAddrs, ureq::Error> {
        let resolved = DefaultResolver::default().resolve(uri, config, timeout)?;
        let plain_http = uri.scheme_str() != Some("https");
        let mut kept = self.empty();
        let mut refused = Vec::new();
        for addr in resolved.iter() {
            if self.allow.permits(addr.ip(), plain_http) {
                kept.push(*addr);
            } else {
                refused.push(addr.ip().to_string());
            }
        }
        let host = uri.host().unwrap_or_default().to_owned();
        if kept.is_empty() {
            return Err(ureq::Error::Other(Box::new(RefusedAddress {
                host,
                addresses: refused.join(", "),
            })));
        }
        if !refused.is_empty() {
            tracing::debug!(%host, refused = %refused.join(", "), "some addresses of an outbound host were left out");
        }
        Ok(kept)
    }
}

/// An HTTP client for one outbound request to an app-chosen URL: checked addresses only (see
/// the module doc), no proxy, no redirects, `timeout` for the whole exchange, and HTTP error
/// statuses returned as responses (the caller decides what they mean).
pub fn agent(allow: &Allowlist, timeout: Duration, user_agent: &str) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .http_status_as_error(false)
        .proxy(None)
        .user_agent(user_agent)
        .build();
    ureq::Agent::with_parts(
        config,
        DefaultConnector::default(),
        CheckedResolver {
            allow: allow.clone(),
        },
    )
}

/// What went wrong with an outbound request, coarsely: this is what an app may be told. The
/// detail (which address, which TLS alert, which socket error) would let an app map the
/// gateway's network, so it goes only to the operator's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The host resolved only to addresses that may not be reached.
    RefusedAddress,
    /// No connection: name not found, refused, reset, unreachable.
    ConnectFailed,
    Timeout,
    /// The TLS handshake or certificate check failed.
    Tls,
    /// The other side did not speak HTTP as expected.
    InvalidResponse,
}

impl Failure {
    /// Sorts a client error into its kind.
    pub fn of(error: &ureq::Error) -> Failure {
        match error {
            ureq::Error::Other(inner) if inner.is::<RefusedAddress>() => Failure::RefusedAddress,
            ureq::Error::Timeout(_) => Failure::Timeout,
            ureq::Error::Io(e) if e.get_ref().is_some_and(|i| i.is::<rustls::Error>()) => {
                Failure::Tls
            }
            ureq::Error::Io(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                Failure::Timeout
            }
            ureq::Error::Io(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::BadUri(_) => Failure::ConnectFailed,
            ureq::Error::Tls(_)
            | ureq::Error::Rustls(_)
            | ureq::Error::Pem(_)
            | ureq::Error::TlsRequired => Failure::Tls,
            _ => Failure::InvalidResponse,
        }
    }

    /// The stable name apps see.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::RefusedAddress => "refused_address",
            Failure::ConnectFailed => "connect_failed",
            Failure::Timeout => "timeout",
            Failure::Tls => "tls",
            Failure::InvalidResponse => "invalid_response",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn public_v4_is_reached_and_special_v4_is_not() {
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.215.14",
            "100.63.255.255",
            "100.128.0.1",
        ] {
            assert!(is_public(ip(public)), "{public}");
        }
        for special in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.0.9",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!is_public(ip(special)), "{special}");
        }
        assert!(is_public(ip("172.32.0.1")) && is_public(ip("172.15.255.255")));
    }

    #[test]
    fn public_v6_is_reached_and_special_v6_is_not() {
        for public in [
            "2606:4700:4700::1111",
            "2a00:1450:4001:81c::200e",
            "2001:200::1",
        ] {
            assert!(is_public(ip(public)), "{public}");
        }
        for special in [
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
            "100::1",
            "64:ff9b:1::1",
            "2001::1",
            "2001:db8::1",
            "3fff::1",
            "4000::1",
        ] {
            assert!(!is_public(ip(special)), "{special}");
        }
    }

    #[test]
    fn v6_forms_that_embed_v4_are_judged_by_the_v4_address() {
        for refused in [
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "2002:c0a8:0101:1::1",
        ] {
            assert!(!is_public(ip(refused)), "{refused}");
        }
        for reached in ["::ffff:1.1.1.1", "64:ff9b::101:101", "2002:0808:0808::1"] {
            assert!(is_public(ip(reached)), "{reached}");
        }
        assert_eq!(
            embedded_v4("2002:c0a8:0101:1::1".parse().unwrap()),
            Some(Ipv4Addr::new(192, 168, 1, 1))
        );
        assert_eq!(
            embedded_v4("64:ff9b::a9fe:a9fe".parse().unwrap()),
            Some(Ipv4Addr::new(169, 254, 169, 254))
        );
        assert_eq!(embedded_v4("2606:4700::1".parse().unwrap()), None);
    }

    #[test]
    fn the_allowlist_matches_cidrs_and_mapped_forms() {
        let allow =
            Allowlist::parse(&["127.0.0.1/32", "::1/128", "10.1.0.0/16", "192.168.7.9"]).unwrap();
        assert!(allow.contains(ip("127.0.0.1")));
        assert!(allow.contains(ip("::ffff:127.0.0.1")));
        assert!(!allow.contains(ip("127.0.0.2")));
        assert!(allow.contains(ip("::1")));
        assert!(allow.contains(ip("10.1.255.3")));
        assert!(!allow.contains(ip("10.2.0.1")));
        assert!(allow.contains(ip("192.168.7.9")));
        assert!(!allow.contains(ip("192.168.7.10")));
        // Host bits in a CIDR are dropped, as `ip route` would.
        let wide = Allowlist::parse(&["10.1.2.3/8"]).unwrap();
        assert!(wide.contains(ip("10.200.0.1")));
        assert!(Allowlist::parse(&["10.0.0.0/33"]).is_err());
        assert!(Allowlist::parse(&["localhost"]).is_err());
        assert!(Allowlist::default().networks().is_empty());
    }

    #[test]
    fn permits_public_or_allowlisted_and_plain_http_only_to_allowlisted_loopback() {
        let none = Allowlist::default();
        assert!(none.permits(ip("1.1.1.1"), false));
        assert!(!none.permits(ip("127.0.0.1"), false));
        assert!(!none.permits(ip("::ffff:127.0.0.1"), false));
        assert!(!none.permits(ip("127.0.0.1"), true));
        assert!(!none.permits(ip("1.1.1.1"), true));
        let allow = Allowlist::parse(&["127.0.0.1/32", "10.0.0.0/8"]).unwrap();
        assert!(allow.permits(ip("127.0.0.1"), false));
        assert!(allow.permits(ip("127.0.0.1"), true));
        assert!(allow.permits(ip("::ffff:127.0.0.1"), true));
        assert!(allow.permits(ip("10.0.0.1"), false));
        // Allowlisted, but not loopback: still HTTPS only.
        assert!(!allow.permits(ip("10.0.0.1"), true));
        assert!(!allow.permits(ip("::1"), true));
        assert!(!allow.permits(ip("169.254.169.254"), false));
    }

    #[test]
    fn failures_are_named_coarsely() {
        let refused = ureq::Error::Other(Box::new(RefusedAddress {
            host: "metadata".into(),
            addresses: "169.254.169.254".into(),
        }));
        assert_eq!(Failure::of(&refused), Failure::RefusedAddress);
        let io = |kind| ureq::Error::Io(std::io::Error::from(kind));
        assert_eq!(
            Failure::of(&io(std::io::ErrorKind::ConnectionRefused)),
            Failure::ConnectFailed
        );
        assert_eq!(
            Failure::of(&io(std::io::ErrorKind::TimedOut)),
            Failure::Timeout
        );
        let tls = ureq::Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        ));
        assert_eq!(Failure::of(&tls), Failure::Tls);
        assert_eq!(
            Failure::of(&ureq::Error::HostNotFound),
            Failure::ConnectFailed
        );
        assert_eq!(
            Failure::of(&ureq::Error::TooManyRedirects),
            Failure::InvalidResponse
        );
        assert_eq!(Failure::RefusedAddress.as_str(), "refused_address");
    }
}
