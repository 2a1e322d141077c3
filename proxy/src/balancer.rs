//! The backend set and routing decisions, free of I/O.
//!
//! Contracts:
//! - Backends are [`Backend`]s, identified by their id (`ip:port`).
//! - New sessions go only to backends that are ready (in the EndpointSlice, not terminating),
//!   healthy and not removed: the one with the fewest active connections, ties taken in turn.
//! - An existing session (cookie or remembered SockJS pin) keeps its backend while that backend is
//!   healthy and not past its drain deadline, even if it is terminating or was removed.
//! - A SockJS session without a cookie is placed by rendezvous (highest random weight) hashing of
//!   its id over the live backends, so replicas with the same backend list agree with no shared
//!   state; the choice is then remembered locally, so adding a backend never moves it.
//! - `update` merges a new backend list: known ids keep their state and counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::backend::{Backend, BackendSpec, HealthState};
use crate::metrics::Metrics;

/// `--rebalance-rate` and `--rebalance-tolerance` (used by `rebalance`, a layer above).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rebalancing {
    /// WebSockets closed per second at most (above 0).
    pub rate: f64,
    /// How far above the mean a backend may be, as a fraction (0.2 for 20 %).
    pub tolerance: f64,
}

/// Changes made by [`Balancer::update`], for the caller to start or stop tasks.
#[derive(Default)]
pub struct Changes {
    /// New backends (start health checks).
    pub added: Vec<Arc<Backend>>,
    /// Backends that were removed or started terminating (start their drain deadline).
    pub draining: Vec<Arc<Backend>>,
}

/// A remembered SockJS session: its backend id and when it was last seen.
type Pin = (Arc<str>, Instant);

/// The backend set plus the local SockJS pins.
pub struct Balancer {
    backends: RwLock<Arc<[Arc<Backend>]>>,
    /// Set with `--rebalance-rate` above 0: WebSocket upgrades may leave their cookie's backend.
    pub rebalance: Option<Rebalancing>,
    pins: Mutex<HashMap<Box<str>, Pin>>,
    turn: AtomicUsize,
    rise: u32,
    fall: u32,
    metrics: Arc<Metrics>,
}

impl Balancer {
    pub fn new(rise: u32, fall: u32, metrics: Arc<Metrics>) -> Self {
        Self {
            backends: RwLock::new(Arc::from(Vec::new())),
            rebalance: None,
            pins: Mutex::new(HashMap::new()),
            turn: AtomicUsize::new(0),
            rise,
            fall,
            metrics,
        }
    }

    /// This balancer with rebalancing after a scale-up (done by `rebalance`, a layer above).
    pub fn with_rebalancing(mut self, settings: Rebalancing) -> Self {
        self.rebalance = Some(settings);
        self
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A snapshot of every known backend (including draining ones).
    pub fn backends(&self) -> Arc<[Arc<Backend>]> {
        self.backends.read().expect("backends lock").clone()
    }

    /// Merges the list discovery reports.
    pub fn update(&self, specs: &[BackendSpec]) -> Changes {
        let mut changes = Changes::default();
        let mut guard = self.backends.write().expect("backends lock");
        let mut next: Vec<Arc<Backend>> = Vec::with_capacity(specs.len());
        for spec in specs {
            if next.iter().any(|b| *b.id == *spec.id) {
                continue; // the same endpoint listed twice
            }
            let known = guard
                .iter()
                .find(|b| *b.id == *spec.id && !b.drained.is_cancelled());
            let backend = match known {
                Some(b) => {
                    if b.relisted(spec) {
                        changes.draining.push(b.clone());
                    }
                    b.clone()
                }
                None => {
                    let b = Arc::new(Backend::new(
                        spec,
                        HealthState::new(self.rise, self.fall),
                        &self.metrics,
                    ));
                    changes.added.push(b.clone());
                    if spec.terminating {
                        changes.draining.push(b.clone());
                    }
                    b
                }
            };
            next.push(backend);
        }
        for old in guard.iter() {
            if next.iter().any(|b| Arc::ptr_eq(b, old)) {
                continue;
            }
            if old.drained.is_cancelled() {
                // Drained while still listed (terminating), now gone from the list too.
                if !next.iter().any(|b| b.id == old.id) {
                    self.metrics.forget(&old.id);
                }
                continue;
            }
            if old.unlisted() {
                changes.draining.push(old.clone());
            }
            next.push(old.clone()); // kept until drained, for its existing sessions
        }
        *guard = Arc::from(next);
        changes
    }

    /// Ends a draining backend's grace: its sessions move, and it is dropped if removed.
    pub fn finish_drain(&self, backend: &Arc<Backend>) {
        backend.drained.cancel();
        let mut guard = self.backends.write().expect("backends lock");
        if backend.is_removed() {
            let next: Vec<_> = guard
                .iter()
                .filter(|b| !Arc::ptr_eq(b, backend))
                .cloned()
                .collect();
            *guard = Arc::from(next);
            self.metrics.forget(&backend.id);
        }
    }

    /// The backend for a new session: fewest active connections, ties taken in turn.
    pub fn pick(&self) -> Option<Arc<Backend>> {
        let all = self.backends();
        let mut least = i64::MAX;
        let mut ties = 0usize;
        for b in all.iter().filter(|b| b.accepts_new()) {
            let active = b.active();
            if active < least {
                least = active;
                ties = 1;
            } else if active == least {
                ties += 1;
            }
        }
        if ties == 0 {
            return None;
        }
        let nth = self.turn.fetch_add(1, Ordering::Relaxed) % ties;
        all.iter()
            .filter(|b| b.accepts_new() && b.active() == least)
            .nth(nth)
            .or_else(|| all.iter().find(|b| b.accepts_new()))
            .cloned()
    }

    /// The backend named `id` if it still keeps existing sessions.
    pub fn existing(&self, id: &str) -> Option<Arc<Backend>> {
        self.backends()
            .iter()
            .find(|b| *b.id == *id && b.keeps_existing())
            .cloned()
    }

    /// The backend of SockJS session `session`: its remembered pin if still alive, otherwise
    /// the rendezvous-hash choice among backends taking new sessions (then remembered).
    pub fn for_session(&self, session: &str, now: Instant) -> Option<Arc<Backend>> {
        let mut pins = self.pins.lock().expect("pins lock");
        if let Some((id, seen)) = pins.get_mut(session)
            && let Some(b) = self.existing(id)
        {
            *seen = now;
            return Some(b);
        }
        let chosen = self
            .backends()
            .iter()
            .filter(|b| b.accepts_new())
            .max_by_key(|b| rendezvous(session, &b.id))
            .cloned()?;
        make_room_for_pin(&mut pins, now);
        pins.insert(session.into(), (chosen.id.clone(), now));
        Some(chosen)
    }

    /// Remembers that `session` lives on `backend` (e.g. chosen by cookie), replacing an
    /// earlier pin.
    pub fn remember(&self, session: &str, backend: &Arc<str>, now: Instant) {
        let mut pins = self.pins.lock().expect("pins lock");
        match pins.get_mut(session) {
            Some(pin) if pin.0 == *backend => pin.1 = now,
            _ => {
                make_room_for_pin(&mut pins, now);
                pins.insert(session.into(), (backend.clone(), now));
            }
        }
    }

    /// Forgets pins unused since `cutoff` (SockJS sessions die 60 s after their last request).
    pub fn prune_pins(&self, cutoff: Instant) -> usize {
        let mut pins = self.pins.lock().expect("pins lock");
        pins.retain(|_, (_, seen)| *seen >= cutoff);
        pins.len()
    }
}

/// Keeps the pins under [`MAX_PINS`] before one more is inserted.
fn make_room_for_pin(pins: &mut HashMap<Box<str>, Pin>, now: Instant) {
    let cutoff = now.checked_sub(PIN_IDLE).unwrap_or(now);
    crate::bounded::make_room(
        pins,
        MAX_PINS,
        |(_, seen)| *seen < cutoff,
        |(_, seen)| *seen,
    );
}

/// The rendezvous weight of `key` on backend `id`: FNV-1a then a SplitMix64 finalizer, stable
/// across builds and platforms so every replica computes the same choice.
pub fn rendezvous(key: &str, id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in key.as_bytes().iter().chain(&[0xff]).chain(id.as_bytes()) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// How long an unused SockJS pin is kept: above SockJS's 60 s disconnect delay.
pub const PIN_IDLE: Duration = Duration::from_secs(120);

/// Most SockJS pins kept (about 100 bytes each); past it the least recently used go.
pub const MAX_PINS: usize = 100_000;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn spec(port: u16) -> BackendSpec {
        BackendSpec::ready(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn balancer(ports: &[u16]) -> Balancer {
        let b = Balancer::new(2, 2, Arc::new(Metrics::default()));
        b.update(&ports.iter().map(|&p| spec(p)).collect::<Vec<_>>());
        b
    }

    #[test]
    fn least_connections_with_fair_ties() {
        let b = balancer(&[1, 2, 3]);
        let mut guards = Vec::new();
        let mut seen = Vec::new();
        for _ in 0..3 {
            let chosen = b.pick().unwrap();
            seen.push(chosen.id.to_string());
            guards.push(chosen.enter());
        }
        seen.sort();
        assert_eq!(seen, ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        // Free one slot on backend 2: it is now the only least-loaded one.
        let two = guards
            .iter()
            .position(|g| &*g.0.id == "127.0.0.1:2")
            .unwrap();
        guards.remove(two);
        for _ in 0..5 {
            assert_eq!(&*b.pick().unwrap().id, "127.0.0.1:2");
        }
    }

    #[test]
    fn ties_rotate_when_idle() {
        let b = balancer(&[1, 2]);
        let first = b.pick().unwrap().id.clone();
        let second = b.pick().unwrap().id.clone();
        assert_ne!(first, second);
    }

    #[test]
    fn down_terminating_and_removed_backends_take_no_new_sessions() {
        let b = balancer(&[1, 2, 3]);
        let all = b.backends();
        all[0].observe_health(false);
        all[0].observe_health(false);
        let mut t = spec(2);
        t.terminating = true;
        let changes = b.update(&[spec(1), t]);
        assert_eq!(changes.draining.len(), 2, "2 terminating, 3 removed");
        assert!(b.pick().is_none());
        // Existing sessions stay on the terminating and removed ones until drained.
        assert!(b.existing("127.0.0.1:2").is_some());
        assert!(b.existing("127.0.0.1:3").is_some());
        assert!(b.existing("127.0.0.1:1").is_none(), "down");
        let three = b
            .backends()
            .iter()
            .find(|x| &*x.id == "127.0.0.1:3")
            .cloned();
        b.finish_drain(&three.unwrap());
        assert!(b.existing("127.0.0.1:3").is_none());
        assert_eq!(b.backends().len(), 2);
    }

    #[test]
    fn update_keeps_state_of_known_backends() {
        let b = balancer(&[1, 2]);
        let one = b.existing("127.0.0.1:1").unwrap();
        let _g = one.enter();
        let changes = b.update(&[spec(1), spec(2), spec(4)]);
        assert_eq!(changes.added.len(), 1);
        assert!(Arc::ptr_eq(&one, &b.existing("127.0.0.1:1").unwrap()));
        assert_eq!(b.existing("127.0.0.1:1").unwrap().active(), 1);
    }

    #[test]
    fn a_backend_that_returns_before_it_drained_keeps_its_state() {
        let b = balancer(&[1, 2]);
        let two = b.existing("127.0.0.1:2").unwrap();
        assert_eq!(b.update(&[spec(1)]).draining.len(), 1);
        assert!(two.is_removed());
        let changes = b.update(&[spec(1), spec(2)]);
        assert!(changes.added.is_empty(), "the same backend, not a new one");
        assert!(Arc::ptr_eq(&two, &b.existing("127.0.0.1:2").unwrap()));
        assert!(!two.is_removed());
        // Once drained, a return is a new backend with fresh state (and a new checker).
        b.update(&[spec(1)]);
        b.finish_drain(&two);
        assert_eq!(b.update(&[spec(1), spec(2)]).added.len(), 1);
    }

    #[test]
    fn sockjs_sessions_agree_across_replicas_and_do_not_move() {
        let now = Instant::now();
        let r1 = balancer(&[1, 2, 3]);
        let r2 = balancer(&[3, 1, 2]); // same set, another order
        let sessions: Vec<String> = (0..200).map(|i| format!("s{i}")).collect();
        let mut placed = HashMap::new();
        for s in &sessions {
            let a = r1.for_session(s, now).unwrap().id.clone();
            let b = r2.for_session(s, now).unwrap().id.clone();
            assert_eq!(a, b, "replicas disagree on {s}");
            placed.insert(s.clone(), a);
        }
        let distinct: std::collections::HashSet<_> = placed.values().collect();
        assert_eq!(distinct.len(), 3, "hashing spreads sessions");
        // A new backend: remembered sessions stay put, new ones may land on it.
        r1.update(&[spec(1), spec(2), spec(3), spec(4)]);
        for s in &sessions {
            assert_eq!(r1.for_session(s, now).unwrap().id, placed[s]);
        }
        let fresh = (0..200)
            .filter(|i| &*r1.for_session(&format!("new{i}"), now).unwrap().id == "127.0.0.1:4")
            .count();
        assert!(fresh > 0);
    }

    #[test]
    fn dead_pin_is_repinned_to_a_live_backend() {
        let now = Instant::now();
        let b = balancer(&[1, 2]);
        let first = b.for_session("abc", now).unwrap();
        first.observe_health(false);
        first.observe_health(false);
        let second = b.for_session("abc", now).unwrap();
        assert_ne!(first.id, second.id);
        assert_eq!(b.for_session("abc", now).unwrap().id, second.id);
    }

    #[test]
    fn pins_are_pruned() {
        let now = Instant::now();
        let b = balancer(&[1]);
        b.for_session("old", now);
        b.remember("new", &Arc::from("127.0.0.1:1"), now + PIN_IDLE);
        assert_eq!(b.prune_pins(now + Duration::from_secs(1)), 1);
    }

    #[test]
    fn pins_are_bounded_and_the_oldest_go_first() {
        let t = Instant::now();
        let b = balancer(&[1]);
        for i in 0..MAX_PINS {
            b.for_session(&format!("s{i}"), t);
        }
        b.for_session("recent", t + Duration::from_secs(1));
        for i in 0..1000 {
            b.for_session(&format!("late{i}"), t + Duration::from_secs(2));
        }
        let pins = b.pins.lock().unwrap();
        assert!(pins.len() <= MAX_PINS, "{} pins", pins.len());
        assert!(pins.contains_key("recent") && pins.contains_key("late999"));
    }

    #[test]
    fn rendezvous_is_stable() {
        // Values from an independent (Python) implementation: every replica, whatever its
        // build, must compute the same weights.
        assert_eq!(
            rendezvous("session", "10.0.0.1:3000"),
            0xddc9_74d0_a455_c893
        );
        assert_eq!(
            rendezvous("session", "10.0.0.2:3000"),
            0x775f_8ec1_9eb4_22a2
        );
    }
}
