//! Moving WebSocket sessions onto new backends after a scale-up.
//!
//! A scale-up helps nobody already connected: least connections sends new sessions to the new
//! pods, but open WebSockets stay where they are and the sticky cookie sends every reconnect back
//! to its old backend. So each proxy replica, on its own connections only:
//!
//! - counts the open WebSockets of every backend that takes new sessions; the busiest is *over*
//!   when it holds more than the [`limit`], max(mean × (1 + tolerance), ⌈mean⌉) (the ceiling
//!   because n sockets on k backends cannot be spread finer, so the rebalancer never churns);
//! - while one is over, closes one WebSocket on it every [`period`] (1 / `rate` seconds and 2 %;
//!   the oldest, never one younger than [`MIN_AGE`]), so at most `rate` in any second, and stops
//!   as soon as none is;
//! - sends a WebSocket upgrade that its cookie pins to a backend which one more WebSocket would
//!   put over the limit by least connections instead ([`steer`]), so the closed clients'
//!   reconnects land on the emptier backends, through whichever replica they come back. Only
//!   upgrades: a WebSocket is a session of its own (SockJS' websocket transport, Meteor's raw
//!   `/websocket`: one request), so no live session changes backend. It keeps its cookie, which
//!   other tabs' polling sessions of the same browser may still follow.
//!
//! Whether rebalancing is on or off, a WebSocket upgrade whose cookie names a draining backend
//! (terminating or removed) goes by least connections too: on the draining backend it would
//! only be closed again by the drain, each of its clients reconnecting twice.
//!
//! SockJS polling and streaming requests are never cut: only upgraded tunnels close. A tunnel
//! closes as the drain windows close it: both TCP connections are shut, no close frame is sent.
//! The tunnel copies bytes without parsing frames, so the proxy cannot tell when the backend's
//! stream sits at a frame boundary, and a close frame injected into a half-sent frame would
//! corrupt it; parsing every frame would cost the message path. Meteor's client reconnects after
//! an abnormal close (1006) just as after a 1001 or 1012.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::backend::Backend;
use crate::balancer::{Balancer, Rebalancing};
use crate::sockjs;

/// A WebSocket this young is never closed: its client is still loading its subscriptions, the
/// most expensive part of a Meteor session.
pub const MIN_AGE: Duration = Duration::from_secs(2);

/// Float slack, so that 10 × 1.2 is not over 12.
const EPSILON: f64 = 1e-9;

/// Most WebSockets one backend should hold when `total` are spread over `backends`.
pub fn limit(total: usize, backends: usize, tolerance: f64) -> f64 {
    if backends == 0 {
        return f64::INFINITY;
    }
    let mean = total as f64 / backends as f64;
    (mean * (1.0 + tolerance)).max(mean.ceil()) + EPSILON
}

/// The index of the busiest of `loads` (open WebSockets per backend) if it is over the limit.
pub fn busiest_over(loads: &[usize], tolerance: f64) -> Option<usize> {
    let limit = limit(loads.iter().sum(), loads.len(), tolerance);
    let (busiest, &most) = loads.iter().enumerate().max_by_key(|(_, n)| **n)?;
    (most as f64 > limit).then_some(busiest)
}

/// The backends that take new sessions, with their open (not yet closing) WebSockets.
fn loads(balancer: &Balancer) -> (Vec<Arc<Backend>>, Vec<usize>) {
    let backends: Vec<Arc<Backend>> = balancer
        .backends()
        .iter()
        .filter(|b| b.accepts_new())
        .cloned()
        .collect();
    let loads = backends.iter().map(|b| b.movable.count()).collect();
    (backends, loads)
}

/// What one [`step`] did.
pub enum Step {
    /// No backend is over the limit.
    Balanced,
    /// Closed a WebSocket of this backend.
    Closed(Arc<Backend>),
    /// A backend is over, but none of its WebSockets is old enough.
    Waiting,
}

/// Closes the oldest WebSocket of the busiest backend if that backend is over the limit.
pub fn step(balancer: &Balancer, tolerance: f64, now: Instant) -> Step {
    let (backends, loads) = loads(balancer);
    let Some(busiest) = busiest_over(&loads, tolerance) else {
        return Step::Balanced;
    };
    let backend = &backends[busiest];
    if backend.movable.close_oldest(now, MIN_AGE) {
        Step::Closed(backend.clone())
    } else {
        Step::Waiting
    }
}

/// The time between two steps: 1 / `rate`, plus 2 % so that clients, which see the closes a
/// few milliseconds off the proxy's clock, never count more than `rate` in a second either.
pub fn period(rate: f64) -> Duration {
    Duration::from_secs_f64(1.02 / rate)
}

/// Rebalances for as long as the proxy runs: one [`step`] every [`period`], never two closer
/// together (a late tick delays the next rather than bursting).
pub async fn run(balancer: Arc<Balancer>, settings: Rebalancing) {
    let mut ticker = tokio::time::interval(period(settings.rate));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut balanced = true;
    loop {
        ticker.tick().await;
        let step = step(&balancer, settings.tolerance, Instant::now());
        if let Step::Closed(backend) = &step {
            balancer.metrics().rebalanced.inc();
            tracing::debug!(backend = %backend.id, "WebSocket closed to rebalance");
        }
        let now_balanced = matches!(step, Step::Balanced);
        if now_balanced != balanced {
            if now_balanced {
                tracing::info!("WebSockets within tolerance: rebalancing stopped");
            } else {
                tracing::info!(rate = settings.rate, "WebSockets skewed: rebalancing");
            }
            balanced = now_balanced;
        }
    }
}

/// For a WebSocket upgrade routed to `routed` (by its cookie when `from_cookie`): the
/// least-connections choice instead when `routed` takes no new sessions (draining: the socket
/// would only be closed again at the drain deadline), or when rebalancing is on and one more
/// WebSocket would put `routed` over the limit. A SockJS session in `path` is pinned to the
/// choice.
pub fn steer(
    balancer: &Balancer,
    routed: Arc<Backend>,
    from_cookie: bool,
    path: &str,
) -> Arc<Backend> {
    if !from_cookie {
        return routed;
    }
    if routed.accepts_new() {
        let Some(settings) = balancer.rebalance else {
            return routed;
        };
        let (_, loads) = loads(balancer);
        let limit = limit(
            loads.iter().sum::<usize>() + 1,
            loads.len(),
            settings.tolerance,
        );
        if (routed.movable.count() + 1) as f64 <= limit {
            return routed;
        }
    }
    match balancer.pick() {
        Some(chosen) if !Arc::ptr_eq(&chosen, &routed) => {
            if let Some(session) = sockjs::session_id(path) {
                balancer.remember(session, &chosen.id, std::time::Instant::now());
            }
            balancer.metrics().steered.inc();
            chosen
        }
        _ => routed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{ActiveGuard, BackendSpec, TunnelGuard};
    use crate::metrics::Metrics;
    use std::net::SocketAddr;
    use std::sync::Mutex;

    const TOLERANCE: f64 = 0.2;

    fn spec(port: u16) -> BackendSpec {
        BackendSpec::ready(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn balancer(ports: &[u16], rate: f64) -> Arc<Balancer> {
        let b = Balancer::new(2, 2, Arc::new(Metrics::default())).with_rebalancing(Rebalancing {
            rate,
            tolerance: TOLERANCE,
        });
        b.update(&ports.iter().map(|&p| spec(p)).collect::<Vec<_>>());
        Arc::new(b)
    }

    fn backend(b: &Balancer, port: u16) -> Arc<Backend> {
        b.existing(&format!("127.0.0.1:{port}")).unwrap()
    }

    #[test]
    fn only_a_backend_above_the_tolerance_and_a_whole_socket_is_over() {
        assert_eq!(busiest_over(&[21, 20, 0, 0], TOLERANCE), Some(0));
        assert_eq!(busiest_over(&[12, 13, 8, 7], TOLERANCE), Some(1));
        // Mean 10: 12 is exactly 10 × 1.2, within tolerance.
        assert_eq!(busiest_over(&[12, 12, 8, 8], TOLERANCE), None);
        // 3 sockets on 2 backends cannot do better than 2 and 1 (mean 1.5, 1.5 × 1.2 = 1.8).
        assert_eq!(busiest_over(&[2, 1], TOLERANCE), None);
        assert_eq!(busiest_over(&[3, 0], TOLERANCE), Some(0));
        assert_eq!(busiest_over(&[0, 0], TOLERANCE), None);
        assert_eq!(busiest_over(&[], TOLERANCE), None);
        assert_eq!(busiest_over(&[7], TOLERANCE), None);
    }

    /// Where each rebalanced client went: (when it was closed, from, to).
    type Moves = Arc<Mutex<Vec<(Instant, Arc<str>, Arc<str>)>>>;

    /// A fake WebSocket client on `backend`: when the rebalancer closes its tunnel it
    /// reconnects at once with its cookie (which names the old backend), routed by [`steer`].
    fn client(
        b: &Arc<Balancer>,
        backend: Arc<Backend>,
        moves: &Moves,
    ) -> tokio::task::JoinHandle<()> {
        let (b, moves) = (b.clone(), moves.clone());
        tokio::spawn(async move {
            let mut backend = backend;
            loop {
                {
                    let _active = backend.enter();
                    TunnelGuard::new(&backend).moved().await;
                }
                let next = steer(&b, backend.clone(), true, "/websocket");
                let mut moves = moves.lock().unwrap();
                moves.push((Instant::now(), backend.id.clone(), next.id.clone()));
                backend = next;
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn closes_at_the_rate_moves_reconnects_and_stops_within_tolerance() {
        let b = balancer(&[1, 2], 5.0);
        let moves = Moves::default();
        let mut clients = Vec::new();
        for port in [1, 2] {
            for _ in 0..20 {
                clients.push(client(&b, backend(&b, port), &moves));
            }
        }
        while backend(&b, 1).movable.count() + backend(&b, 2).movable.count() < 40 {
            tokio::task::yield_now().await;
        }
        let runner = tokio::spawn(run(b.clone(), b.rebalance.unwrap()));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(moves.lock().unwrap().is_empty(), "20 and 20 is balanced");
        // Scale-up: two new backends (they start up), and the sockets are old enough.
        b.update(&[spec(1), spec(2), spec(3), spec(4)]);
        tokio::time::sleep(Duration::from_secs(30)).await;
        runner.abort();
        for c in clients {
            c.abort();
        }
        let moves = moves.lock().unwrap();
        let counts: Vec<usize> = (1..=4).map(|p| backend(&b, p).movable.count()).collect();
        // Mean 10, limit 12: 8 from each old backend, every reconnect to a new one.
        assert_eq!(counts, [12, 12, 8, 8]);
        assert_eq!(moves.len(), 16);
        assert_eq!(b.metrics().rebalanced.get(), 16);
        assert_eq!(b.metrics().steered.get(), 16);
        let new = ["127.0.0.1:3", "127.0.0.1:4"];
        assert!(
            moves
                .iter()
                .all(|(_, from, to)| !new.contains(&&**from) && new.contains(&&**to)),
            "{moves:?}"
        );
        // One close per tick of 204 ms (5 a second, 2 % margin), never two closer together.
        let first = moves[0].0;
        let offsets: Vec<Duration> = moves.iter().map(|(at, ..)| *at - first).collect();
        let expected: Vec<Duration> = (0..16).map(|k| period(5.0) * k).collect();
        assert_eq!(offsets, expected);
        assert_eq!(period(5.0), Duration::from_millis(204));
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_tunnel_goes_first_and_young_ones_stay() {
        let b = balancer(&[1, 2], 5.0);
        let one = backend(&b, 1);
        let mut old = TunnelGuard::new(&one);
        let mut second = TunnelGuard::new(&one);
        tokio::time::advance(MIN_AGE).await;
        let mut young = TunnelGuard::new(&one);
        let now = Instant::now();
        assert!(one.movable.close_oldest(now, MIN_AGE));
        assert!(one.movable.close_oldest(now, MIN_AGE));
        assert!(!one.movable.close_oldest(now, MIN_AGE), "young");
        tokio::time::timeout(Duration::from_millis(1), old.moved())
            .await
            .expect("the oldest closes");
        tokio::time::timeout(Duration::from_millis(1), second.moved())
            .await
            .expect("then the next");
        assert!(
            tokio::time::timeout(Duration::from_secs(60), young.moved())
                .await
                .is_err(),
            "a young tunnel was closed"
        );
        assert_eq!(one.movable.count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn draining_and_unready_backends_neither_count_nor_lose_sockets() {
        let b = balancer(&[1, 2], 5.0);
        let one = backend(&b, 1);
        let _open: Vec<_> = (0..10).map(|_| TunnelGuard::new(&one)).collect();
        tokio::time::advance(MIN_AGE).await;
        assert!(matches!(
            step(&b, TOLERANCE, Instant::now()),
            Step::Closed(_)
        ));
        // Backend 2 not ready (not yet past its readiness probe): backend 1 is the only one
        // taking sessions, so holding them all is balanced.
        let mut unready = spec(2);
        unready.ready = false;
        b.update(&[spec(1), unready]);
        assert!(matches!(
            step(&b, TOLERANCE, Instant::now()),
            Step::Balanced
        ));
        // Backend 1 terminating: its sockets follow the drain window, not the rebalancer.
        let mut terminating = spec(1);
        terminating.terminating = true;
        b.update(&[terminating, spec(2)]);
        assert!(matches!(
            step(&b, TOLERANCE, Instant::now()),
            Step::Balanced
        ));
        assert_eq!(one.movable.count(), 9);
    }

    /// `n` open WebSockets, counted as connections too (least connections sees them).
    fn open(backend: &Arc<Backend>, n: usize) -> Vec<(ActiveGuard, TunnelGuard<'_>)> {
        (0..n)
            .map(|_| (backend.enter(), TunnelGuard::new(backend)))
            .collect()
    }

    #[test]
    fn a_websocket_leaves_its_cookie_only_for_a_backend_over_its_share_or_draining() {
        let b = balancer(&[1, 2], 5.0);
        let (one, two) = (backend(&b, 1), backend(&b, 2));
        let mut sockets = open(&one, 5);
        sockets.extend(open(&two, 5));
        // 5 and 5: a sixth on backend 1 is 6 of 11 (limit 6.6), allowed.
        let routed = steer(&b, one.clone(), true, "/sockjs/123/abc/websocket");
        assert!(Arc::ptr_eq(&routed, &one));
        sockets.extend(open(&one, 3));
        // 8 and 5: a ninth would be 9 of 14 (limit 8.4): least connections, and the SockJS
        // session is pinned there.
        let routed = steer(&b, one.clone(), true, "/sockjs/123/abc/websocket");
        assert!(Arc::ptr_eq(&routed, &two));
        assert!(Arc::ptr_eq(
            &b.for_session("abc", std::time::Instant::now()).unwrap(),
            &two
        ));
        assert_eq!(b.metrics().steered.get(), 1);
        // Not routed by a cookie (least connections or SockJS hashing already): unchanged.
        assert!(Arc::ptr_eq(
            &steer(&b, one.clone(), false, "/websocket"),
            &one
        ));
        // Rebalancing off: the cookie wins, unless its backend is draining.
        let off = Balancer::new(2, 2, Arc::new(Metrics::default()));
        off.update(&[spec(1), spec(2)]);
        let off_one = backend(&off, 1);
        let _many = open(&off_one, 9);
        assert!(Arc::ptr_eq(
            &steer(&off, off_one.clone(), true, "/websocket"),
            &off_one
        ));
        let mut terminating = spec(1);
        terminating.terminating = true;
        off.update(&[terminating, spec(2)]);
        assert!(
            off.existing("127.0.0.1:1").is_some(),
            "it keeps its sessions"
        );
        let routed = steer(&off, off_one.clone(), true, "/websocket");
        assert_eq!(&*routed.id, "127.0.0.1:2");
    }
}
