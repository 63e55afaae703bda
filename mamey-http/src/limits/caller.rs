//! Who a request comes from, as the rate limit counts callers: the subject
//! of a valid bearer token, else the client's address — the connection's
//! peer, or an address from a trusted proxy's header.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use axum::extract::ConnectInfo;
use http::{HeaderMap, HeaderName, Request};

use crate::auth::Authentication;

/// A caller, as the rate limit keys buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CallerKey<'a> {
    /// The subject of a valid bearer token.
    Subject(&'a str),
    /// An IPv4 address, or an IPv6 address's `/64` network.
    Address(IpAddr),
    /// Neither a token nor an address: all such callers share a bucket.
    Unknown,
}

impl<'a> CallerKey<'a> {
    /// The caller of `request`: its token's subject when valid (the web
    /// pipeline and the gRPC call layer put what the token established in
    /// the extensions), else the client's address by `rules`.
    pub(crate) fn of<B>(request: &'a Request<B>, rules: &ClientAddress) -> Self {
        if let Some(Authentication::Valid(identity)) = request.extensions().get() {
            return Self::Subject(&identity.subject);
        }
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(address)| address.ip());
        rules
            .client(request.headers(), peer)
            .map_or(Self::Unknown, |ip| Self::Address(network(ip)))
    }
}

/// An IPv4 address as is; an IPv6 one as its `/64`, which one client
/// usually holds whole.
fn network(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask128(64))),
        v4 => v4,
    }
}

/// At most this many entries of the proxy header are looked at.
const MAX_HOPS: usize = 32;

/// How the client's address is found: the connection's peer, or, behind a
/// proxy, the header it writes.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientAddress {
    header: Option<HeaderName>,
    proxies: Vec<Cidr>,
}

impl ClientAddress {
    /// Read from `header` when set; `proxies` are the trusted proxies.
    pub(crate) fn new(header: Option<HeaderName>, proxies: Vec<Cidr>) -> Self {
        Self { header, proxies }
    }

    /// The client's address, from `headers` and the connection's `peer`.
    ///
    /// Without a header configured: the peer. With one: unless proxies are
    /// listed and the peer is not one of them, the right-most entry of the
    /// header that is not a listed proxy; the peer again when the header is
    /// missing, or an entry before that one does not parse (a caller can
    /// write anything left of what the proxy appended).
    pub(crate) fn client(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
        let Some(header) = &self.header else {
            return peer;
        };
        if !self.proxies.is_empty() && !peer.is_some_and(|p| self.is_proxy(p)) {
            return peer;
        }
        let hops = headers
            .get_all(header)
            .iter()
            .rev()
            .flat_map(|value| value.as_bytes().rsplit(|b| *b == b','))
            .take(MAX_HOPS);
        for hop in hops {
            match parse_hop(hop) {
                Some(ip) if self.is_proxy(ip) => {}
                Some(ip) => return Some(ip),
                None => return peer,
            }
        }
        peer
    }

    fn is_proxy(&self, ip: IpAddr) -> bool {
        self.proxies.iter().any(|range| range.contains(ip))
    }
}

/// One entry of a forwarding header: an address, with or without a port
/// (`203.0.113.7`, `203.0.113.7:4711`, `2001:db8::1`, `[2001:db8::1]:4711`).
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let hop = std::str::from_utf8(hop).ok()?.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            hop.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<Ipv6Addr>()
                .ok()
                .map(IpAddr::V6)
        })
        .map(|ip| ip.to_canonical())
}

/// An address range: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the range (IPv4-mapped IPv6 addresses count as
    /// IPv4).
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix) == u32::from(network)
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix) == u128::from(network)
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address = address
            .trim()
            .parse::<IpAddr>()
            .map_err(|_| ())?
            .to_canonical();
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.trim().parse::<u8>().map_err(|_| ())?,
            None => max,
        };
        if prefix > max {
            return Err(());
        }
        let network = match address {
            IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) & mask32(prefix)).into()),
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & mask128(prefix)).into()),
        };
        Ok(Self { network, prefix })
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn rules(proxies: &[&str]) -> ClientAddress {
        ClientAddress::new(
            Some(HeaderName::from_static("x-forwarded-for")),
            proxies.iter().map(|p| p.parse().unwrap()).collect(),
        )
    }

    #[test]
    fn ranges_parse_and_match() {
        let range: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(range.contains(ip("10.1.255.3")));
        assert!(!range.contains(ip("10.2.0.1")));
        assert!(range.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped");
        let one: Cidr = "192.0.2.1".parse().unwrap();
        assert!(one.contains(ip("192.0.2.1")) && !one.contains(ip("192.0.2.2")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("2001:db8::1")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn without_a_header_configured_the_peer_is_the_client() {
        let peer = Some(ip("198.51.100.1"));
        let spoofed = forwarded(&["203.0.113.7"]);
        assert_eq!(ClientAddress::default().client(&spoofed, peer), peer);
    }

    #[test]
    fn the_right_most_entry_is_the_client_when_no_proxies_are_listed() {
        let rules = rules(&[]);
        let peer = Some(ip("10.0.0.2"));
        // A caller's own entry on the left cannot change its address.
        let headers = forwarded(&["1.2.3.4, 203.0.113.7"]);
        assert_eq!(rules.client(&headers, peer), Some(ip("203.0.113.7")));
        let lines = forwarded(&["1.2.3.4", "203.0.113.8:4711"]);
        assert_eq!(rules.client(&lines, peer), Some(ip("203.0.113.8")));
        let v6 = forwarded(&["[2001:db8::7]:80"]);
        assert_eq!(rules.client(&v6, peer), Some(ip("2001:db8::7")));
        assert_eq!(rules.client(&HeaderMap::new(), peer), peer);
        assert_eq!(rules.client(&forwarded(&["unknown"]), peer), peer);
    }

    #[test]
    fn listed_proxies_are_skipped_and_must_be_the_peer() {
        let rules = rules(&["10.0.0.0/8"]);
        let proxy = Some(ip("10.0.0.2"));
        let headers = forwarded(&["1.2.3.4, 203.0.113.7, 10.0.0.9"]);
        assert_eq!(rules.client(&headers, proxy), Some(ip("203.0.113.7")));
        // A caller connecting directly is its own address, header or not.
        let direct = Some(ip("198.51.100.1"));
        assert_eq!(rules.client(&headers, direct), direct);
        assert_eq!(rules.client(&headers, None), None, "unknown peer");
        // Garbage right of any real address: the peer, not what lies left.
        let garbage = forwarded(&["203.0.113.7, nonsense, 10.0.0.9"]);
        assert_eq!(rules.client(&garbage, proxy), proxy);
    }

    #[test]
    fn callers_are_their_subject_or_their_network() {
        let rules = ClientAddress::default();
        let mut request = Request::new(());
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(ip("2001:db8:1:2:3:4:5:6"), 9)));
        assert_eq!(
            CallerKey::of(&request, &rules),
            CallerKey::Address(ip("2001:db8:1:2::"))
        );
        request
            .extensions_mut()
            .insert(Authentication::Valid(mamey_core::Identity::new("ada")));
        assert_eq!(CallerKey::of(&request, &rules), CallerKey::Subject("ada"));
        assert_eq!(CallerKey::of(&Request::new(()), &rules), CallerKey::Unknown);
    }
}
