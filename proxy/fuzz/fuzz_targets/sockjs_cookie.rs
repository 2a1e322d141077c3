//! Fuzzes what routing reads from a client besides the request's framing: the SockJS session
//! id in the path ([`meteor_proxy::sockjs`]), the sticky cookie in `Cookie` lines and its
//! signature ([`meteor_proxy::cookie`]), and the client address behind `X-Forwarded-For` lines
//! ([`meteor_proxy::client`]). The input is up to three `\n`-separated parts: a path, a `Cookie`
//! header value, `X-Forwarded-For` lines separated by `\r`. Fails on a panic or a broken
//! property: a session id that is not a valid part of its path, a cookie verified differently
//! with and without the per-connection cache, a signed backend id that does not come back, a
//! client address taken from nowhere. Seeds are in `../seeds/sockjs_cookie`.
#![no_main]

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use meteor_proxy::client;
use meteor_proxy::cookie::{self, CookieSigner, LastCookie};
use meteor_proxy::sockjs;

const NOW: u64 = 1_800_000_000;

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    let mut parts = text.splitn(3, '\n');
    let (path, cookies, forwarded) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );

    if let Some(id) = sockjs::session_id(path) {
        assert!(path.contains(&format!("/{id}/")), "{id:?} in {path:?}");
        assert!(!id.is_empty() && id.len() <= 128 && !id.contains('.'));
        assert!(id.bytes().all(|b| b.is_ascii_graphic()), "{id:?}");
    }

    let signer = CookieSigner::new(b"a key of sixteen bytes or more", 86_400);
    if let Some(value) = cookie::find(cookies, "meteor-sticky") {
        assert!(cookies.contains(value));
        let direct = signer.verify(value, NOW);
        let last = LastCookie::default();
        for _ in 0..2 {
            let cached = signer.verify_cached(&last, value, NOW, |id| Some(id.to_owned()));
            assert_eq!(direct, cached, "{value:?}");
        }
        // Nothing but a signature made with the key verifies (the chance of a forged 128-bit
        // MAC is nil): what verifies names the backend it was signed for.
        if let Some(backend) = &direct {
            let issued: u64 = value.split('.').nth(1).unwrap().parse().unwrap();
            assert_eq!(signer.sign(backend, issued), value);
        }
    }
    // Any backend id of a sane length comes back from its own cookie, on any replica.
    if path.len() <= 300 {
        let signed = signer.sign(path, NOW);
        assert_eq!(signer.verify(&signed, NOW + 1).as_deref(), Some(path));
        let other = CookieSigner::new(b"another key of sixteen bytes", 86_400);
        assert_eq!(other.verify(&signed, NOW), None);
    }

    let mut headers = HeaderMap::new();
    for line in forwarded.split('\r') {
        if let Ok(value) = HeaderValue::from_str(line) {
            headers.append(client::X_FORWARDED_FOR, value);
        }
    }
    let peer: IpAddr = [10, 1, 2, 3].into();
    // Every address the lines name, in any form a proxy writes one.
    let named: Vec<IpAddr> = forwarded
        .split(['\r', ','])
        .filter_map(|e| {
            let e = e.trim();
            e.parse::<IpAddr>()
                .ok()
                .or_else(|| e.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
                .or_else(|| e.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
        })
        .collect();
    for hops in 0..4 {
        let ip = client::trusted_ip(&headers, hops, peer);
        if hops == 0 {
            assert_eq!(ip, peer);
        } else if ip != peer {
            assert!(named.contains(&ip), "{ip} from {forwarded:?}");
        }
        let key = client::key(ip);
        assert_eq!(client::key(key), key, "a key is its own key");
    }
});
