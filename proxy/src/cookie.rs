//! The signed sticky cookie.
//!
//! Value: `base64url(backend id) "." issued-at (unix seconds) "." base64url(HMAC-SHA256[..16])`,
//! the MAC covering `backend id "." issued-at`. Any replica holding the same key can verify it
//! and resolve the backend id (a stable `ip:port`) without shared state. Verification is
//! constant-time; anything malformed, forged or expired is treated as no cookie at all.

use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the MAC kept in the cookie (128 bits is plenty against forgery and keeps it short).
const MAC_LEN: usize = 16;
/// Longest cookie value looked at; longer ones are rejected before any decoding.
const MAX_VALUE_LEN: usize = 512;

/// Signs and verifies sticky cookies with one key.
#[derive(Clone)]
pub struct CookieSigner {
    mac: HmacSha256,
    max_age: u64,
}

impl CookieSigner {
    /// A signer with `key` (any length) accepting cookies up to `max_age` seconds old.
    pub fn new(key: &[u8], max_age: u64) -> Self {
        let mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
        Self { mac, max_age }
    }

    fn tag(&self, backend: &str, issued: u64) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(backend.as_bytes());
        mac.update(b".");
        mac.update(issued.to_string().as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The cookie value naming `backend`, issued at `now` (unix seconds).
    pub fn sign(&self, backend: &str, now: u64) -> String {
        let tag = self.tag(backend, now);
        format!(
            "{}.{}.{}",
            B64.encode(backend),
            now,
            B64.encode(&tag[..MAC_LEN])
        )
    }

    /// The backend id in `value` if its signature is valid and it is not expired at `now`.
    pub fn verify(&self, value: &str, now: u64) -> Option<String> {
        self.check(value)
            .filter(|v| self.fresh(v, now))
            .map(|v| v.backend)
    }

    /// [`verify`](Self::verify) through `last`, the last value one client connection sent:
    /// a browser sends the same cookie with every request of a keep-alive connection, so the
    /// MAC is checked once per connection (and per value), the expiry every time. `f` gets
    /// the backend id.
    pub fn verify_cached<T>(
        &self,
        last: &LastCookie,
        value: &str,
        now: u64,
        f: impl FnOnce(&str) -> Option<T>,
    ) -> Option<T> {
        let mut last = last.0.lock().expect("cookie cache lock");
        match &*last {
            Some((seen, result)) if **seen == *value => {}
            _ => *last = Some((value.into(), self.check(value))),
        }
        let (_, result) = last.as_ref()?;
        result
            .as_ref()
            .filter(|v| self.fresh(v, now))
            .and_then(|v| f(&v.backend))
    }

    /// The contents of `value` if its signature is valid, expired or not.
    fn check(&self, value: &str) -> Option<Verified> {
        if value.len() > MAX_VALUE_LEN {
            return None;
        }
        let mut parts = value.split('.');
        let (id, issued, tag) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let backend = String::from_utf8(B64.decode(id).ok()?).ok()?;
        let issued: u64 = issued.parse().ok()?;
        let tag = B64.decode(tag).ok()?;
        if tag.len() != MAC_LEN {
            return None;
        }
        let mut mac = self.mac.clone();
        mac.update(backend.as_bytes());
        mac.update(b".");
        mac.update(issued.to_string().as_bytes());
        mac.verify_truncated_left(&tag).ok()?;
        Some(Verified { backend, issued })
    }

    fn fresh(&self, cookie: &Verified, now: u64) -> bool {
        // Cookies from the future (clock skew between replicas) get a minute of grace.
        cookie.issued <= now.saturating_add(60) && now.saturating_sub(cookie.issued) <= self.max_age
    }
}

/// A cookie whose signature checked out.
struct Verified {
    backend: String,
    issued: u64,
}

/// The last sticky cookie value a client connection sent, and what its check found.
#[derive(Default)]
pub struct LastCookie(Mutex<Option<(Box<str>, Option<Verified>)>>);

/// The value of cookie `name` in a `Cookie` request header, if present.
pub fn find<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn round_trip() {
        let s = CookieSigner::new(b"key", 3600);
        let v = s.sign("10.0.0.7:3000", NOW);
        assert_eq!(s.verify(&v, NOW + 10).as_deref(), Some("10.0.0.7:3000"));
    }

    #[test]
    fn another_replica_with_the_same_key_agrees() {
        let v = CookieSigner::new(b"shared", 3600).sign("a:1", NOW);
        assert_eq!(
            CookieSigner::new(b"shared", 3600)
                .verify(&v, NOW)
                .as_deref(),
            Some("a:1")
        );
        assert_eq!(CookieSigner::new(b"other", 3600).verify(&v, NOW), None);
    }

    #[test]
    fn forged_backend_is_rejected() {
        let s = CookieSigner::new(b"key", 3600);
        let v = s.sign("10.0.0.7:3000", NOW);
        let mut parts: Vec<&str> = v.split('.').collect();
        let forged_id = B64.encode("10.0.0.8:3000");
        parts[0] = &forged_id;
        assert_eq!(s.verify(&parts.join("."), NOW), None);
    }

    #[test]
    fn expired_and_malformed_are_rejected() {
        let s = CookieSigner::new(b"key", 3600);
        let v = s.sign("b:2", NOW);
        assert_eq!(s.verify(&v, NOW + 3601), None);
        assert_eq!(s.verify(&v, NOW - 3600), None, "issued in the future");
        for bad in [
            "",
            ".",
            "..",
            "a.b.c",
            "YQ.1.",
            "YQ.x.AAAA",
            &"a".repeat(10_000),
        ] {
            assert_eq!(s.verify(bad, NOW), None, "{bad:?}");
        }
        assert_eq!(s.verify(&format!("{v}.extra"), NOW), None);
    }

    #[test]
    fn the_cache_checks_expiry_every_time_and_follows_the_value() {
        let s = CookieSigner::new(b"key", 3600);
        let last = LastCookie::default();
        let v = s.sign("b:2", NOW);
        let id = |id: &str| Some(id.to_owned());
        assert_eq!(s.verify_cached(&last, &v, NOW, id).as_deref(), Some("b:2"));
        assert_eq!(
            s.verify_cached(&last, &v, NOW + 1, id).as_deref(),
            Some("b:2")
        );
        assert_eq!(s.verify_cached(&last, &v, NOW + 3601, id), None, "expired");
        let forged = v.replace("Yjoy", "Yjoz");
        assert_eq!(s.verify_cached(&last, &forged, NOW, id), None);
        assert_eq!(
            s.verify_cached(&last, &forged, NOW, id),
            None,
            "forged, cached"
        );
        let other = s.sign("c:3", NOW);
        assert_eq!(
            s.verify_cached(&last, &other, NOW, id).as_deref(),
            Some("c:3")
        );
        assert_eq!(s.verify_cached(&last, &v, NOW, id).as_deref(), Some("b:2"));
    }

    #[test]
    fn finds_cookie_in_header() {
        let h = "a=1; meteor-sticky=xyz.1.q ; b=\"2\"";
        assert_eq!(find(h, "meteor-sticky"), Some("xyz.1.q"));
        assert_eq!(find(h, "b"), Some("2"));
        assert_eq!(find(h, "missing"), None);
        assert_eq!(find("garbage;;;", "a"), None);
    }
}
