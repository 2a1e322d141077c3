//! The active health checker: one task per backend, feeding each check's result into the
//! backend's rise/fall state ([`crate::backend::HealthState`]). It never routes or decides.
//!
//! A backend starts up (EndpointSlices only list pods that passed their readiness probe). It goes
//! down after `fall` consecutive failures, active (a GET of the health path that fails, times out
//! or answers 5xx) or passive (a failed upstream connect), and comes back after `rise`
//! consecutive successful active checks.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;

use crate::backend::Backend;

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
