//! Who the client is, as far as the proxy can trust it.
//!
//! - [`trusted_ip`]: the client address of a request. With `--trusted-hops 0` (nothing in
//!   front of the proxy, its own LoadBalancer or NodePort) it is the TCP peer and every
//!   `X-Forwarded-For` a client sends is ignored. With `--trusted-hops N` (N proxies in front,
//!   an Ingress or a Gateway: N = 1) it is the element N places from the right of all the
//!   request's `X-Forwarded-For` lines joined in order (RFC 9110 section 5.3): the address the
//!   nearest trusted edge saw. That is the element Meteor takes as `clientAddress` with
//!   `HTTP_FORWARDED_COUNT` = N + 1 once the proxy has appended its peer, so the proxy's rate
//!   limit and the app agree on who the client is.
//! - [`key`]: what the rate limit and the per-client connection cap count by: an IPv4 address,
//!   or an IPv6 /64 (one subscriber's prefix: a client picks any address inside it at will).
//! - [`Slots`]: open connections per client key, capped (`--max-connections-per-client`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use http::HeaderMap;
use http::header::HeaderName;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The rate-limit and connection-cap key of `ip`: IPv4 as is (an IPv4-mapped IPv6 address is
/// its IPv4 address), IPv6 by its /64.
pub fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u64::MAX as u128))),
        v4 => v4,
    }
}

/// The client address of a request from `peer` carrying `headers`, trusting `hops` proxies in
/// front (see the module's documentation). Without enough elements (an edge that added none)
/// the leftmost one stands in, as the closest to the client there is; an element that is no
/// IP address (`unknown`, an obfuscated name) gives the peer.
pub fn trusted_ip(headers: &HeaderMap, hops: u32, peer: IpAddr) -> IpAddr {
    if hops == 0 {
        return peer;
    }
    let mut left = hops;
    let mut leftmost = None;
    // From the right: the last line's last element is the nearest hop's.
    for line in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        for element in line.as_bytes().rsplit(|&b| b == b',') {
            left -= 1;
            if left == 0 {
                return parse_element(element).unwrap_or(peer);
            }
            leftmost = Some(element);
        }
    }
    leftmost.and_then(parse_element).unwrap_or(peer)
}

/// An `X-Forwarded-For` element as an address: `192.0.2.1`, `2001:db8::1`, and the forms with a
/// port some proxies write (`192.0.2.1:4711`, `[2001:db8::1]:4711`, `[2001:db8::1]`).
fn parse_element(element: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(element.trim_ascii()).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    text.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// Open connections per client key, each at most `cap` (0: no cap).
pub struct Slots {
    cap: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection of a client, counted until dropped.
pub struct Slot(Option<(Arc<Slots>, IpAddr)>);

impl Slot {
    /// A slot counted nowhere (no cap applies).
    pub fn none() -> Self {
        Slot(None)
    }
}

impl Slots {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection of `key`, or `None` when it holds `cap` already. The map
    /// holds only keys with an open connection, so it is bounded by the connection cap.
    pub fn acquire(self: &Arc<Self>, key: IpAddr) -> Option<Slot> {
        if self.cap == 0 {
            return Some(Slot(None));
        }
        let mut open = self.open.lock().expect("client slots lock");
        let count = open.entry(key).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(Slot(Some((self.clone(), key))))
    }

    /// Connections open now for `key`.
    pub fn open(&self, key: IpAddr) -> usize {
        let open = self.open.lock().expect("client slots lock");
        open.get(&key).copied().unwrap_or(0)
    }

    /// Client keys with an open connection.
    pub fn clients(&self) -> usize {
        self.open.lock().expect("client slots lock").len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((slots, key)) = self.0.take() {
            let mut open = slots.open.lock().expect("client slots lock");
            if let Some(count) = open.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_are_grouped_by_their_64() {
        assert_eq!(
            key(ip("2001:db8:1:2:aaaa::1")),
            key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_eq!(key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_ne!(key(ip("2001:db8:1:2::1")), key(ip("2001:db8:1:3::1")));
        assert_eq!(key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"), "IPv4-mapped");
    }

    fn lines(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_static(value));
        }
        headers
    }

    /// The forged element a client sends never counts; the edge's element does, whether the
    /// edge appended it to the client's line or wrote a line of its own (HAProxy's `option
    /// forwardfor`).
    #[test]
    fn the_trusted_address_is_the_edges_element() {
        let peer = ip("10.1.2.3");
        let forged = lines(&["6.6.6.6", "198.51.100.9"]);
        assert_eq!(trusted_ip(&forged, 0, peer), peer, "no edge: the peer");
        assert_eq!(trusted_ip(&forged, 1, peer), ip("198.51.100.9"));
        let appended = lines(&["6.6.6.6, 198.51.100.9"]);
        assert_eq!(trusted_ip(&appended, 1, peer), ip("198.51.100.9"));
        // Two hops (a CDN, then the Ingress): the CDN's view of the client.
        let two = lines(&["6.6.6.6, 198.51.100.9", "203.0.113.5"]);
        assert_eq!(trusted_ip(&two, 2, peer), ip("198.51.100.9"));
        // Too few elements: the leftmost; none at all: the peer.
        assert_eq!(
            trusted_ip(&lines(&["198.51.100.9"]), 3, peer),
            ip("198.51.100.9")
        );
        assert_eq!(trusted_ip(&HeaderMap::new(), 1, peer), peer);
        // Elements with ports; junk gives the peer.
        for (value, expected) in [
            ("192.0.2.1:4711", "192.0.2.1"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            (" 2001:db8::2 ", "2001:db8::2"),
            ("unknown", "10.1.2.3"),
            ("", "10.1.2.3"),
        ] {
            assert_eq!(
                trusted_ip(&lines(&[value]), 1, peer),
                ip(expected),
                "{value}"
            );
        }
    }

    #[test]
    fn slots_cap_each_client_and_free_on_drop() {
        let slots = Slots::new(2);
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let first = slots.acquire(a).unwrap();
        let second = slots.acquire(a).unwrap();
        assert!(slots.acquire(a).is_none(), "a third connection of a");
        let other = slots.acquire(b).unwrap();
        assert_eq!((slots.open(a), slots.open(b), slots.clients()), (2, 1, 2));
        drop(first);
        let third = slots.acquire(a).unwrap();
        drop((second, third, other));
        assert_eq!(slots.clients(), 0, "no key without an open connection");
        let unlimited = Slots::new(0);
        let held: Vec<_> = (0..1000).map(|_| unlimited.acquire(a).unwrap()).collect();
        assert_eq!((held.len(), unlimited.clients()), (1000, 0));
    }
}
