//! Prometheus metrics of the proxy, served on the admin port at `/metrics`.
//!
//! Per-backend series are created when a backend appears and removed when it is forgotten, and
//! each backend keeps handles to its own series, so the request path only touches atomics.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::balancer::Balancer;

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
    /// WebSockets closed to move their sessions onto emptier backends ([`super::rebalance`]).
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

    /// The registry with the per-pod session gauge of `balancer`'s backends.
    pub fn registry_with_sessions(&self, balancer: Arc<Balancer>) -> Registry {
        let mut r = self.registry();
        r.register_collector(Box::new(PodSessions(balancer)));
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

/// `meteor_proxy_backend_sessions`: open requests and WebSockets per backend (the value of
/// `active_sessions`), labelled with the backend's pod and namespace when discovery knows
/// them, so a custom-metrics adapter can serve it per app pod. Read from the backends at each
/// scrape: the request path keeps counting one gauge.
pub struct PodSessions(pub Arc<Balancer>);

impl std::fmt::Debug for PodSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PodSessions")
    }
}

impl Collector for PodSessions {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "backend_sessions",
            "Open requests and WebSockets per backend, labelled with its pod",
            None,
            gauge.metric_type(),
        )?;
        for backend in self.0.backends().iter() {
            let mut labels = vec![("backend", backend.id.to_string())];
            if let Some(pod) = &backend.pod {
                labels.push(("namespace", pod.namespace.clone()));
                labels.push(("pod", pod.name.clone()));
            }
            ConstGauge::new(backend.active()).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::{BackendSpec, PodRef};

    #[test]
    fn sessions_per_pod_beside_the_existing_series() {
        let metrics = Arc::new(Metrics::default());
        let balancer = Arc::new(Balancer::new(2, 2, metrics.clone()));
        let mut pod = BackendSpec::ready("10.0.0.7:3000".parse().unwrap());
        pod.pod = Some(PodRef {
            namespace: "shop".into(),
            name: "todos-7d4b9c-x2k4q".into(),
        });
        let fixed = BackendSpec::ready("127.0.0.1:3001".parse().unwrap());
        balancer.update(&[pod, fixed]);
        let busy = balancer.existing("10.0.0.7:3000").unwrap();
        let _sessions = [busy.enter(), busy.enter()];
        let mut text = String::new();
        prometheus_client::encoding::text::encode(
            &mut text,
            &metrics.registry_with_sessions(balancer.clone()),
        )
        .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for expected in [
            "# TYPE meteor_proxy_backend_sessions gauge",
            r#"meteor_proxy_backend_sessions{backend="10.0.0.7:3000",namespace="shop",pod="todos-7d4b9c-x2k4q"} 2"#,
            r#"meteor_proxy_backend_sessions{backend="127.0.0.1:3001"} 0"#,
            r#"meteor_proxy_active_sessions{backend="10.0.0.7:3000"} 2"#,
            "meteor_proxy_rebalanced_total 0",
        ] {
            assert!(lines.contains(&expected), "no {expected:?} in\n{text}");
        }
        // A backend that left and drained leaves no series behind.
        balancer.update(&[]);
        for b in balancer.backends().iter() {
            balancer.finish_drain(b);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(
            &mut text,
            &metrics.registry_with_sessions(balancer),
        )
        .unwrap();
        assert!(!text.contains("meteor_proxy_backend_sessions{"), "{text}");
    }
}
