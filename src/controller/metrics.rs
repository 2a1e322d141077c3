//! Prometheus metrics, named like controller-runtime's so existing dashboards fit.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

const CONTROLLER: &str = "meteorapp";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    controller: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: String,
    error: String,
}

/// The operator's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    reconcile_total: Family<ResultLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_time: Family<ControllerLabels, Histogram>,
    writes: Family<ControllerLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    leader: Gauge,
    resident_memory: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reconcile_total = Family::<ResultLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_time = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        let writes = Family::<ControllerLabels, Counter>::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let leader = Gauge::default();
        let resident_memory = Gauge::default();
        registry.register(
            "controller_runtime_reconcile",
            "Reconciliations by result",
            reconcile_total.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_errors",
            "Reconciliations that failed, by error kind",
            reconcile_errors.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_time_seconds",
            "Time per reconciliation",
            reconcile_time.clone(),
        );
        registry.register(
            "meteor_operator_api_writes",
            "Write requests (apply, delete, status) sent to the API server",
            writes.clone(),
        );
        registry.register(
            "meteor_operator_api_requests",
            "Requests sent to the API server, by kind (get, list, watch, apply, status, event, create, delete, lease, other)",
            requests.clone(),
        );
        registry.register(
            "leader_election_master_status",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the operator process",
            resident_memory.clone(),
        );
        Self {
            registry,
            reconcile_total,
            reconcile_errors,
            reconcile_time,
            writes,
            requests,
            leader,
            resident_memory,
        }
    }
}

impl Metrics {
    /// Records one finished reconciliation.
    pub fn reconciled(&self, took: Duration, error: Option<&'static str>) {
        let result = if error.is_some() { "error" } else { "success" };
        self.reconcile_total
            .get_or_create(&ResultLabels {
                controller: CONTROLLER.into(),
                result: result.into(),
            })
            .inc();
        if let Some(error) = error {
            self.reconcile_errors
                .get_or_create(&ErrorLabels {
                    controller: CONTROLLER.into(),
                    error: error.into(),
                })
                .inc();
        }
        self.reconcile_time
            .get_or_create(&ControllerLabels {
                controller: CONTROLLER.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts `n` write requests.
    pub fn wrote(&self, n: u64) {
        if n > 0 {
            self.writes
                .get_or_create(&ControllerLabels {
                    controller: CONTROLLER.into(),
                })
                .inc_by(n);
        }
    }

    /// Counts one request to the API server (see [`request_kind`]).
    pub fn requested(&self, method: &http::Method, uri: &http::Uri) {
        self.requests
            .get_or_create(&RequestLabels {
                kind: request_kind(method, uri.path(), uri.query().unwrap_or("")),
            })
            .inc();
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        if let Some(bytes) = resident_memory_bytes() {
            self.resident_memory.set(bytes);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// What a request to the API server is, in the words of the scale table: `get` (one object),
/// `list`, `watch`, `apply` (server-side apply of a child), `status`, `event`, `create`,
/// `delete`, `lease` (leader election), `other`.
pub fn request_kind(method: &http::Method, path: &str, query: &str) -> &'static str {
    use http::Method;
    if path.contains("/leases") {
        return "lease";
    }
    if path.contains("/events") {
        return "event";
    }
    // After `/api/v1` or `/apis/<group>/<version>` and `namespaces/<ns>`: resource[/name[/sub]].
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    }
    .unwrap_or_default();
    let rest = match rest {
        ["namespaces", _, resource @ ..] if !resource.is_empty() => resource,
        _ => rest,
    };
    let watch = query
        .split('&')
        .any(|pair| pair == "watch=true" || pair == "watch=1");
    match *method {
        Method::GET if watch => "watch",
        Method::GET if rest.len() == 1 => "list",
        Method::GET => "get",
        Method::PATCH if rest.len() == 3 && rest[2] == "status" => "status",
        Method::PATCH => "apply",
        Method::POST => "create",
        Method::DELETE => "delete",
        _ => "other",
    }
}

/// Resident set size from `/proc/self/statm` (Linux; None elsewhere).
fn resident_memory_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // Kubernetes nodes and the operator image are Linux with 4 KiB pages.
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::request_kind;
    use http::Method;

    #[test]
    fn requests_are_named_by_what_they_do() {
        let ns = "/apis/apps/v1/namespaces/shop/deployments";
        assert_eq!(
            request_kind(&Method::GET, &format!("{ns}/todos"), ""),
            "get"
        );
        assert_eq!(request_kind(&Method::GET, ns, "labelSelector=x"), "list");
        assert_eq!(
            request_kind(&Method::GET, ns, "watch=true&resourceVersion=1"),
            "watch"
        );
        assert_eq!(
            request_kind(&Method::GET, "/api/v1/secrets", "watch=true"),
            "watch"
        );
        assert_eq!(request_kind(&Method::GET, "/api/v1/secrets", ""), "list");
        assert_eq!(
            request_kind(&Method::GET, "/api/v1/namespaces/shop/secrets/m", ""),
            "get"
        );
        assert_eq!(
            request_kind(&Method::PATCH, &format!("{ns}/todos"), "fieldManager=x"),
            "apply"
        );
        let app = "/apis/meteorfleet.dev/v1alpha1/namespaces/shop/meteorapps/todos/status";
        assert_eq!(request_kind(&Method::PATCH, app, ""), "status");
        let events = "/apis/events.k8s.io/v1/namespaces/shop/events";
        assert_eq!(request_kind(&Method::POST, events, ""), "event");
        let lease = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/meteor-operator";
        assert_eq!(request_kind(&Method::PATCH, lease, ""), "lease");
        assert_eq!(
            request_kind(&Method::DELETE, &format!("{ns}/todos"), ""),
            "delete"
        );
    }
}
