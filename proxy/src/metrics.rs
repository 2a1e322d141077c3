//! Prometheus metrics of the proxy, served on the admin port at `/metrics`.
//!
//! Per-backend series are created when a backend appears and removed when it is forgotten, and
//! each backend keeps handles to its own series, so the request path only touches atomics. The
//! per-pod session gauge, read from the backends at each scrape, is added by
//! [`crate::admin::registry`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
    /// WebSockets closed to move their sessions onto emptier backends ([`crate::rebalance`]).
    pub rebalanced: Counter,
    /// WebSocket upgrades sent by least connections because their cookie's backend was full.
    pub steered: Counter,
}

/// One backend's handles into the families.
pub struct BackendMetrics {
    pub requests: Counter,
    pub active: Gauge,
    pub upstream_errors: Counter,
    pub went_up: Counter,
    pub went_down: Counter,
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
        BackendMetrics {
            requests,
            active,
            upstream_errors,
            went_up,
            went_down,
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

    pub fn reject(&self, reason: Reason) {
        let reason = match reason {
            Reason::RateLimited => "rate_limited",
            Reason::NoBackend => "no_backend",
        };
        self.rejected.get_or_create(&RejectLabel { reason }).inc();
    }
}
