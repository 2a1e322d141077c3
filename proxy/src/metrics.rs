//! Prometheus metrics of the proxy, served on the admin port at `/metrics`.
//!
//! Per-backend series are created when a backend appears and removed when it is forgotten, and
//! each backend keeps handles to its own series, so the request path only touches atomics (a
//! request's duration is two atomic adds into [`Durations`], no lock). The per-pod session
//! gauge, read from the backends at each scrape, is added by `admin::registry`. Every
//! series is listed in `docs/proxy.md` (Admin port).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub backend: String,
    /// "up" or "down".
    pub to: &'static str,
}

/// Why the proxy answered a request itself (the `reason` label of `rejected`).
#[derive(Clone, Copy, Debug)]
pub enum Reason {
    RateLimited,
    NoBackend,
}

/// Which cap closed a client connection (the `reason` label of `connections_refused`).
#[derive(Clone, Copy, Debug)]
pub enum Refusal {
    /// `--max-connections` were open.
    MaxConnections,
    /// `--max-connections-per-client` were open from the client's address.
    PerClient,
    /// As many responses as the memory allows were stalled by clients that do not read.
    Stalled,
    /// Closed to make room for a new connection at `--max-connections`: it had waited longest
    /// for a request head.
    Evicted,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefuseLabel {
    /// "max_connections", "per_client", "stalled" or "evicted".
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabel {
    /// "rate_limited" or "no_backend".
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    pub backend: String,
    /// The answer's status class, one of [`CLASSES`].
    pub class: &'static str,
}

/// The `class` label of a status: its first digit.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Why a WebSocket tunnel ended (the `reason` label of `websockets_closed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// The client closed its side first, or its connection failed.
    Client,
    /// The backend closed its side first, or its connection failed.
    Backend,
    /// No byte either way for `--idle-timeout`.
    Idle,
    /// Its backend's drain window ([`crate::closing`]) or deadline.
    Drain,
    /// Chosen by the rebalancer (`rebalance`).
    Rebalance,
    /// The proxy's shutdown window or deadline.
    Shutdown,
}

impl Close {
    pub const ALL: [Close; 6] = [
        Close::Client,
        Close::Backend,
        Close::Idle,
        Close::Drain,
        Close::Rebalance,
        Close::Shutdown,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Close::Client => "client",
            Close::Backend => "backend",
            Close::Idle => "idle",
            Close::Drain => "drain",
            Close::Rebalance => "rebalance",
            Close::Shutdown => "shutdown",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabel {
    /// One of [`Close::label`].
    pub reason: &'static str,
}

/// How a TLS handshake ended (the `result` label of `tls_handshakes`).
#[derive(Clone, Copy, Debug)]
pub enum Handshake {
    Ok,
    /// Refused or broken: not TLS, no common protocol version or cipher, a bad message.
    Failed,
    /// Not finished within `--header-timeout`.
    TimedOut,
}

impl Handshake {
    pub const ALL: [Handshake; 3] = [Handshake::Ok, Handshake::Failed, Handshake::TimedOut];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabel {
    /// "ok", "failed" or "timeout".
    pub result: &'static str,
}

/// Upper bounds of the request duration buckets, in seconds (then +Inf): from a cached asset to
/// a SockJS long poll (25 s).
pub const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// [`DURATION_BUCKETS`] in microseconds, the unit observations are counted in.
const BUCKET_MICROS: [u64; 12] = {
    let mut micros = [0; 12];
    let mut i = 0;
    while i < 12 {
        micros[i] = (DURATION_BUCKETS[i] * 1e6) as u64;
        i += 1;
    }
    micros
};

/// A histogram of durations, [`DURATION_BUCKETS`] wide: an observation is two relaxed atomic
/// adds (its bucket and the sum, in microseconds), where prometheus-client's own histogram
/// takes a lock. A scrape reads the buckets one by one, so a count may be one observation
/// ahead of the sum.
#[derive(Clone, Debug, Default)]
pub struct Durations(Arc<DurationCounts>);

#[derive(Debug, Default)]
struct DurationCounts {
    /// Observations per bucket (not cumulative), the last one above every bound.
    buckets: [AtomicU64; 13],
    sum_micros: AtomicU64,
}

impl Durations {
    pub fn observe(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKET_MICROS
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(BUCKET_MICROS.len());
        self.0.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.0.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }
}

impl TypedMetric for Durations {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Durations {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = [(f64::INFINITY, 0u64); 13];
        for (i, (bound, count)) in buckets.iter_mut().enumerate() {
            if let Some(&b) = DURATION_BUCKETS.get(i) {
                *bound = b;
            }
            *count = self.0.buckets[i].load(Ordering::Relaxed);
        }
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The bytes between the proxy and one backend, each way: request heads and bodies and
/// WebSocket bytes from clients (`sent`), response heads and bodies and WebSocket bytes from
/// the backend (`received`).
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    pub sent: Counter,
    pub received: Counter,
}

/// The handles of the WebSocket counters, resolved once.
pub struct WebSocketMetrics {
    pub opened: Counter,
    closed: [Counter; 6],
}

impl WebSocketMetrics {
    /// Counts a tunnel that ended for `reason`.
    pub fn closed(&self, reason: Close) {
        self.closed[reason as usize].inc(); // `ALL` is in declaration order
    }
}

/// All metric families.
#[derive(Default)]
pub struct Metrics {
    pub requests: Family<BackendLabel, Counter>,
    pub active: Family<BackendLabel, Gauge>,
    pub upstream_errors: Family<BackendLabel, Counter>,
    pub transitions: Family<TransitionLabels, Counter>,
    pub rejected: Family<RejectLabel, Counter>,
    /// Client connections closed by a cap ([`Refusal`]).
    pub connections_refused: Family<RefuseLabel, Counter>,
    /// WebSockets closed to move their sessions onto emptier backends (`rebalance`).
    pub rebalanced: Counter,
    /// WebSocket upgrades sent by least connections because their cookie's backend was full.
    pub steered: Counter,
    /// From routing to the end of the response, per backend and status class.
    pub request_duration: Family<DurationLabels, Durations>,
    pub sent_bytes: Family<BackendLabel, Counter>,
    pub received_bytes: Family<BackendLabel, Counter>,
    /// WebSocket tunnels opened (both upgrades done).
    pub websockets_opened: Counter,
    pub websockets_closed: Family<CloseLabel, Counter>,
    pub tls_handshakes: Family<HandshakeLabel, Counter>,
}

/// One backend's handles into the families.
pub struct BackendMetrics {
    pub requests: Counter,
    pub active: Gauge,
    pub upstream_errors: Counter,
    pub went_up: Counter,
    pub went_down: Counter,
    /// Per status class, in [`CLASSES`] order.
    pub durations: [Durations; 5],
    pub traffic: Traffic,
}

impl BackendMetrics {
    /// Counts one answer with status `status` (100 to 599), `elapsed` after it was routed.
    pub fn answered(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.durations[class].observe(elapsed);
    }
}

impl Metrics {
    /// A registry exposing these families.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("meteor_proxy");
        r.register(
            "requests",
            "Requests (and WebSocket upgrades) sent to a backend",
            self.requests.clone(),
        );
        r.register(
            "active_sessions",
            "Open requests and WebSockets per backend",
            self.active.clone(),
        );
        r.register(
            "upstream_errors",
            "Failed connections or requests to a backend",
            self.upstream_errors.clone(),
        );
        r.register(
            "health_transitions",
            "Backend health changes",
            self.transitions.clone(),
        );
        r.register(
            "rejected",
            "Requests answered by the proxy itself",
            self.rejected.clone(),
        );
        r.register(
            "connections_refused",
            "Client connections closed by a cap: --max-connections open (closed unanswered), --max-connections-per-client open from its address, too many stalled responses, or evicted (waiting longest for a request head) to make room at --max-connections",
            self.connections_refused.clone(),
        );
        r.register(
            "rebalanced",
            "WebSockets closed to move their sessions onto emptier backends",
            self.rebalanced.clone(),
        );
        r.register(
            "rebalance_steered",
            "WebSocket upgrades sent by least connections instead of to their cookie's backend, which held more than its share",
            self.steered.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Requests and WebSocket upgrades per backend and status class, by how long from routing to the end of the response (an upgrade: to the backend's answer); the proxy's own 502 and 504 count for the backend",
            prometheus_client::registry::Unit::Seconds,
            self.request_duration.clone(),
        );
        r.register_with_unit(
            "backend_sent",
            "Bytes sent to a backend: request heads and bodies, WebSocket bytes from clients",
            prometheus_client::registry::Unit::Bytes,
            self.sent_bytes.clone(),
        );
        r.register_with_unit(
            "backend_received",
            "Bytes received from a backend: response heads and bodies, WebSocket bytes to clients",
            prometheus_client::registry::Unit::Bytes,
            self.received_bytes.clone(),
        );
        r.register(
            "websockets_opened",
            "WebSocket tunnels opened (SockJS websocket transport and raw WebSockets)",
            self.websockets_opened.clone(),
        );
        r.register(
            "websockets_closed",
            "WebSocket tunnels closed, by reason: client or backend (that side closed first or failed), idle, drain, rebalance, shutdown",
            self.websockets_closed.clone(),
        );
        r.register(
            "tls_handshakes",
            "TLS handshakes with clients, by result: ok, failed, timeout",
            self.tls_handshakes.clone(),
        );
        r
    }

    /// The handles of backend `id`.
    pub fn backend(&self, id: &str) -> BackendMetrics {
        let label = BackendLabel {
            backend: id.to_owned(),
        };
        let transition = |to| TransitionLabels {
            backend: id.to_owned(),
            to,
        };
        // One statement each: a family's read guard must be gone before the next lookup
        // (get_or_create may take the write lock of the same family).
        let requests = self.requests.get_or_create(&label).clone();
        let active = self.active.get_or_create(&label).clone();
        let upstream_errors = self.upstream_errors.get_or_create(&label).clone();
        let went_up = self.transitions.get_or_create(&transition("up")).clone();
        let went_down = self.transitions.get_or_create(&transition("down")).clone();
        let durations = CLASSES.map(|class| {
            let labels = DurationLabels {
                backend: id.to_owned(),
                class,
            };
            self.request_duration.get_or_create(&labels).clone()
        });
        let sent = self.sent_bytes.get_or_create(&label).clone();
        let received = self.received_bytes.get_or_create(&label).clone();
        BackendMetrics {
            requests,
            active,
            upstream_errors,
            went_up,
            went_down,
            durations,
            traffic: Traffic { sent, received },
        }
    }

    /// Drops the series of a forgotten backend.
    pub fn forget(&self, id: &str) {
        let label = BackendLabel {
            backend: id.to_owned(),
        };
        self.requests.remove(&label);
        self.active.remove(&label);
        self.upstream_errors.remove(&label);
        self.sent_bytes.remove(&label);
        self.received_bytes.remove(&label);
        for class in CLASSES {
            self.request_duration.remove(&DurationLabels {
                backend: id.to_owned(),
                class,
            });
        }
        for to in ["up", "down"] {
            self.transitions.remove(&TransitionLabels {
                backend: id.to_owned(),
                to,
            });
        }
    }

    /// The counter of connections closed by `cap`.
    pub fn refused(&self, cap: Refusal) -> Counter {
        let reason = match cap {
            Refusal::MaxConnections => "max_connections",
            Refusal::PerClient => "per_client",
            Refusal::Stalled => "stalled",
            Refusal::Evicted => "evicted",
        };
        self.connections_refused
            .get_or_create(&RefuseLabel { reason })
            .clone()
    }

    /// The WebSocket counters, every close reason's series created.
    pub fn websockets(&self) -> WebSocketMetrics {
        let closed = Close::ALL.map(|reason| {
            let label = CloseLabel {
                reason: reason.label(),
            };
            self.websockets_closed.get_or_create(&label).clone()
        });
        WebSocketMetrics {
            opened: self.websockets_opened.clone(),
            closed,
        }
    }

    /// The counter of TLS handshakes that ended as `result`.
    pub fn handshakes(&self, result: Handshake) -> Counter {
        let result = match result {
            Handshake::Ok => "ok",
            Handshake::Failed => "failed",
            Handshake::TimedOut => "timeout",
        };
        self.tls_handshakes
            .get_or_create(&HandshakeLabel { result })
            .clone()
    }

    pub fn reject(&self, reason: Reason) {
        let reason = match reason {
            Reason::RateLimited => "rate_limited",
            Reason::NoBackend => "no_backend",
        };
        self.rejected.get_or_create(&RejectLabel { reason }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets are cumulative upper bounds, a bound itself included; the sum is in seconds.
    #[test]
    fn durations_encode_as_a_prometheus_histogram() {
        let metrics = Metrics::default();
        let backend = metrics.backend("10.0.0.7:3000");
        for ms in [5, 6, 40, 31_000] {
            backend.answered(200, Duration::from_millis(ms));
        }
        backend.answered(503, Duration::from_millis(1));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry()).unwrap();
        let labels = r#"backend="10.0.0.7:3000",class="2xx""#;
        for (le, count) in [
            ("0.005", 1),
            ("0.01", 2),
            ("0.05", 3),
            ("30.0", 3),
            ("+Inf", 4),
        ] {
            let line = format!(
                "meteor_proxy_request_duration_seconds_bucket{{le=\"{le}\",{labels}}} {count}"
            );
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        let sum = format!("meteor_proxy_request_duration_seconds_sum{{{labels}}} 31.051");
        assert!(text.lines().any(|l| l == sum), "no {sum} in\n{text}");
        let count =
            r#"meteor_proxy_request_duration_seconds_count{backend="10.0.0.7:3000",class="5xx"} 1"#;
        assert!(text.lines().any(|l| l == count), "{text}");
        assert_eq!(backend.durations[1].count(), 4);
    }
}
