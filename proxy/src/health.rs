//! Backend health: the rise/fall state machine and the active checker task.
//!
//! A backend starts up (EndpointSlices only list pods that passed their readiness probe). It goes
//! down after `fall` consecutive failures, active (a GET of the health path that fails, times out
//! or answers 5xx) or passive (a failed upstream connect), and comes back after `rise`
//! consecutive successful active checks.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;

use super::balancer::Backend;

/// The rise/fall counter of one backend.
#[derive(Debug, Clone)]
pub struct HealthState {
    up: bool,
    streak: u32,
    rise: u32,
    fall: u32,
}

impl HealthState {
    /// A state that starts up.
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            up: true,
            streak: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    /// Whether the backend is up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// A passive failure that is conclusive (the backend refused or timed out a connection):
    /// down at once; active checks must then see `rise` successes. Returns Some(false) if it
    /// was up.
    pub fn fail_now(&mut self) -> Option<bool> {
        self.streak = 0;
        std::mem::replace(&mut self.up, false).then_some(false)
    }

    /// Records one observation; returns the new state if it changed.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak >= needed {
            self.up = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }
}

/// Settings of the active checker.
#[derive(Debug, Clone)]
pub struct CheckSettings {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Checks `backend` every interval until it has left the balancer for good (drained); a
/// draining backend is still checked, since it still serves its existing sessions.
pub async fn run_checker(backend: Arc<Backend>, settings: CheckSettings) {
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !backend.drained.is_cancelled() {
        ticker.tick().await;
        let ok = tokio::time::timeout(settings.timeout, probe(&backend, &settings.path))
            .await
            .unwrap_or(false);
        backend.observe_health(ok);
    }
}

/// One GET of `path` on its own connection (with an empty path: a TCP connect only); any answer below 500 counts as alive (a Meteor app
/// answers its routes; a 5xx or no answer means it is not serving).
async fn probe(backend: &Backend, path: &str) -> bool {
    let Ok(stream) = tokio::net::TcpStream::connect(backend.addr).await else {
        return false;
    };
    if path.is_empty() {
        return true;
    }
    let io = hyper_util::rt::TokioIo::new(stream);
    let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(io).await else {
        return false;
    };
    let conn = tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, backend.id.as_ref())
        .header(hyper::header::USER_AGENT, "meteor-proxy-health")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new());
    let ok = match request {
        Ok(request) => match send.send_request(request).await {
            Ok(response) => response.status().as_u16() < 500,
            Err(_) => false,
        },
        Err(_) => false,
    };
    conn.abort();
    ok
}

#[cfg(test)]
mod tests {
    use super::HealthState;

    #[test]
    fn falls_after_fall_failures_and_rises_after_rise_successes() {
        let mut h = HealthState::new(2, 3);
        assert!(h.is_up());
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), Some(false));
        assert!(!h.is_up());
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(true));
        assert!(h.is_up());
    }

    #[test]
    fn a_conclusive_failure_takes_it_down_at_once() {
        let mut h = HealthState::new(2, 2);
        assert_eq!(h.fail_now(), Some(false));
        assert_eq!(h.fail_now(), None);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(true));
    }

    #[test]
    fn a_success_resets_the_failure_streak() {
        let mut h = HealthState::new(2, 2);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(false), None, "streak was reset");
        assert_eq!(h.observe(false), Some(false));
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None);
        assert!(!h.is_up(), "needs two successes in a row");
    }
}
