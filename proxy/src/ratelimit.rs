//! Per-client rate limiting (token bucket): `rate` requests per second with bursts of `burst`.
//! Over the limit the proxy answers 429 itself. Clients are counted by the key of the address
//! the proxy trusts ([`crate::client`]: the peer, or the edge's element of `X-Forwarded-For`;
//! IPv6 by /64). Idle buckets are pruned so memory stays bounded by the number of recently
//! active clients, and never exceeds [`MAX_BUCKETS`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Most clients tracked at once (about 50 bytes each); past it the least recently seen go.
pub const MAX_BUCKETS: usize = 100_000;

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for client key `ip` at `now`; false means "answer 429".
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&ip) {
            let refilled = |b: &Bucket| self.is_refilled(b, now);
            super::bounded::make_room(&mut buckets, MAX_BUCKETS, refilled, |b| b.last);
        }
        let bucket = buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Drops buckets that have refilled completely (they behave like new ones).
    pub fn prune(&self, now: Instant) -> usize {
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        buckets.retain(|_, b| !self.is_refilled(b, now));
        buckets.len()
    }

    /// Whether `bucket` is full again at `now`, so it behaves like a new one.
    fn is_refilled(&self, bucket: &Bucket, now: Instant) -> bool {
        now.saturating_duration_since(bucket.last).as_secs_f64() >= self.burst / self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_limits_then_refills() {
        let rl = RateLimiter::new(10.0, 3);
        let ip: IpAddr = [127, 0, 0, 1].into();
        let other: IpAddr = [127, 0, 0, 2].into();
        let t = Instant::now();
        assert!((0..3).all(|_| rl.allow(ip, t)));
        assert!(!rl.allow(ip, t));
        assert!(rl.allow(other, t), "clients are limited separately");
        assert!(
            rl.allow(ip, t + Duration::from_millis(100)),
            "one token per 100 ms"
        );
        assert!(!rl.allow(ip, t + Duration::from_millis(100)));
        assert_eq!(rl.prune(t + Duration::from_secs(1)), 0);
    }

    #[test]
    fn buckets_are_bounded_and_the_oldest_go_first() {
        let rl = RateLimiter::new(1.0, 100);
        let t = Instant::now();
        for i in 0..MAX_BUCKETS as u32 {
            rl.allow(IpAddr::from(i.to_be_bytes()), t);
        }
        let recent: IpAddr = [255, 0, 0, 1].into();
        rl.allow(recent, t + Duration::from_secs(1));
        for i in 0..1000u32 {
            rl.allow(
                IpAddr::from((u32::MAX - i).to_be_bytes()),
                t + Duration::from_secs(2),
            );
        }
        let buckets = rl.buckets.lock().unwrap();
        assert!(buckets.len() <= MAX_BUCKETS, "{} buckets", buckets.len());
        assert!(buckets.contains_key(&recent));
    }
}
