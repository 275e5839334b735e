//! Which address a request came from when it may have passed through proxies.
//!
//! The TCP peer is the client unless it is one of `auth.trusted_proxies`. A trusted peer's
//! `X-Forwarded-For` is read from the right (each proxy appends the address it saw): the first
//! address that is not itself a trusted proxy is the client. Nothing a client writes into the
//! header can move it: the proxy next to the service appended the address it saw after it, and
//! that one is taken first. An entry that is not an address stops the walk at the last trusted
//! hop, so a garbled header never names anyone.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use http::request::Parts;
use http::HeaderMap;

/// An address with a prefix length: `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), self.prefix, 32)
                    == masked(u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix, 128)
                    == masked(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// `value` with only its first `prefix` bits of `width` kept.
fn masked(value: u128, prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let shift = width - prefix;
    (value >> shift) << shift
}

/// An IPv4 address mapped into IPv6 is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[derive(Debug, thiserror::Error)]
#[error("auth.trusted_proxies: {0:?} is not an address or a network (like 10.0.0.0/8)")]
pub struct TrustedProxiesError(String);

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Network>);

impl TrustedProxies {
    /// Parses a comma-separated list of addresses and networks; empty trusts no one.
    pub fn parse(list: &str) -> Result<Self, TrustedProxiesError> {
        let mut networks = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let invalid = || TrustedProxiesError(entry.to_owned());
            let (address, prefix) = match entry.split_once('/') {
                Some((address, prefix)) => (address, Some(prefix)),
                None => (entry, None),
            };
            let address = address.parse::<IpAddr>().map_err(|_| invalid())?;
            let width = if address.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                    p.parse::<u8>().map_err(|_| invalid())?
                }
                Some(_) => return Err(invalid()),
                None => width,
            };
            if prefix > width {
                return Err(invalid());
            }
            // Peers are matched as IPv4 when mapped into IPv6, so a mapped network is too.
            let network = match address {
                IpAddr::V6(v6) if prefix >= 96 && v6.to_ipv4_mapped().is_some() => Network {
                    address: canonical(address),
                    prefix: prefix - 96,
                },
                _ => Network { address, prefix },
            };
            networks.push(network);
        }
        Ok(Self(networks))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(ip))
    }

    /// The client of a request from `peer` carrying `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        if !self.trusts(client) {
            return client;
        }
        // Every `X-Forwarded-For` line in order, then each line's entries from the right; an
        // entry is read alone, so bytes a client wrote into its own entry spoil only that one
        // (the address a proxy appended after it on the same line is still read).
        let lines: Vec<&[u8]> = headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|value| value.as_bytes())
            .collect();
        for entry in lines
            .iter()
            .rev()
            .flat_map(|line| line.rsplit(|b| *b == b','))
        {
            let hop = std::str::from_utf8(entry).ok().map(str::trim);
            let Some(Ok(hop)) = hop.map(str::parse::<IpAddr>) else {
                return client;
            };
            client = canonical(hop);
            if !self.trusts(client) {
                return client;
            }
        }
        client
    }

    /// The client of a request, from its TCP peer (`None` without one, as in a test router
    /// called directly).
    pub fn client_of(&self, parts: &Parts) -> Option<IpAddr> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip();
        Some(self.client(peer, &parts.headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append("x-forwarded-for", HeaderValue::from_str(line).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let forged = headers(&["203.0.113.9"]);
        assert_eq!(
            proxies.client(ip("198.51.100.1"), &forged),
            ip("198.51.100.1")
        );
        let nobody = TrustedProxies::parse("").unwrap();
        assert!(nobody.is_empty());
        assert_eq!(nobody.client(ip("10.0.0.1"), &forged), ip("10.0.0.1"));
    }

    #[test]
    fn a_trusted_peers_header_is_read_from_the_right_past_trusted_hops() {
        let proxies = TrustedProxies::parse(" 10.0.0.0/8 , 192.0.2.7").unwrap();
        // The client wrote 203.0.113.9 itself; the edge proxy saw 198.51.100.4 and the next
        // proxy (192.0.2.7, trusted) forwarded to the service's peer 10.1.2.3.
        let forwarded = headers(&["203.0.113.9, 198.51.100.4", "192.0.2.7"]);
        assert_eq!(
            proxies.client(ip("10.1.2.3"), &forwarded),
            ip("198.51.100.4")
        );
        // No header: the proxy itself.
        assert_eq!(
            proxies.client(ip("10.1.2.3"), &HeaderMap::new()),
            ip("10.1.2.3")
        );
        // Only trusted hops: the left-most of them.
        let internal = headers(&["10.9.9.9, 192.0.2.7"]);
        assert_eq!(proxies.client(ip("10.1.2.3"), &internal), ip("10.9.9.9"));
    }

    #[test]
    fn a_garbled_entry_stops_at_the_last_trusted_hop() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let garbled = headers(&["198.51.100.4, not-an-address, 10.0.0.2"]);
        assert_eq!(proxies.client(ip("10.1.2.3"), &garbled), ip("10.0.0.2"));
        let port = headers(&["198.51.100.4:1234"]);
        assert_eq!(proxies.client(ip("10.1.2.3"), &port), ip("10.1.2.3"));
        // Bytes that are not text in the client's own entry: the entry the proxy appended on
        // the same line is still the client.
        let mut spoiled = HeaderMap::new();
        let line = HeaderValue::from_bytes(b"203.0.113.\xff9, 198.51.100.4").unwrap();
        spoiled.append("x-forwarded-for", line);
        assert_eq!(proxies.client(ip("10.1.2.3"), &spoiled), ip("198.51.100.4"));
    }

    #[test]
    fn networks_match_by_prefix_in_either_family_and_mapped_addresses_as_ipv4() {
        let proxies = TrustedProxies::parse("fd00::/8, 127.0.0.1, 0.0.0.0/0").unwrap();
        assert!(proxies.trusts(ip("fd12::1")));
        assert!(!proxies.trusts(ip("fe80::1")));
        assert!(proxies.trusts(ip("::ffff:127.0.0.1")));
        assert!(
            proxies.trusts(ip("203.0.113.1")),
            "/0 holds every IPv4 address"
        );
        let loopback = TrustedProxies::parse("127.0.0.1").unwrap();
        assert!(!loopback.trusts(ip("127.0.0.2")));
        let forwarded = headers(&["::ffff:198.51.100.4"]);
        assert_eq!(
            loopback.client(ip("::ffff:127.0.0.1"), &forwarded),
            ip("198.51.100.4")
        );
    }

    #[test]
    fn what_is_not_a_network_is_refused() {
        let mapped = TrustedProxies::parse("::ffff:10.0.0.0/104").unwrap();
        assert!(mapped.trusts(ip("10.9.8.7")) && !mapped.trusts(ip("11.0.0.1")));
        for bad in [
            "10.0.0.0/+8",
            "10.0.0.0/",
            "10.0.0.0/33",
            "fd00::/129",
            "example.com",
            "10.0.0.0/x",
            "10.0.0/8",
        ] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
    }
}
