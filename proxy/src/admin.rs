//! The admin port, separate from traffic: `GET /-/status` (the seeds' check_status page as JSON:
//! every backend with its readiness, health and active sessions), `GET /-/healthz` (200 while
//! serving, 503 once shutting down) and `GET /metrics` (Prometheus text format: the
//! [`Metrics`] families, the per-pod session gauge and the backends by state, [`registry`]).

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::balancer::Balancer;
use crate::metrics::Metrics;

/// One row of the status page.
#[derive(Serialize, Debug, PartialEq)]
pub struct BackendStatus {
    pub id: String,
    pub ready: bool,
    pub terminating: bool,
    pub removed: bool,
    pub up: bool,
    pub active: i64,
    /// Open WebSockets (included in `active`).
    pub websockets: usize,
    pub requests: u64,
    /// The backend's pod, when discovery knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The status page.
#[derive(Serialize, Debug)]
pub struct Status {
    pub backends: Vec<BackendStatus>,
}

pub fn status(balancer: &Balancer) -> Status {
    let backends = balancer
        .backends()
        .iter()
        .map(|b| BackendStatus {
            id: b.id.to_string(),
            ready: b.is_ready(),
            terminating: b.is_terminating(),
            removed: b.is_removed(),
            up: b.is_up(),
            active: b.active(),
            websockets: b.tunnels(),
            requests: b.metrics.requests.get(),
            pod: b.pod.as_ref().map(|p| p.name.clone()),
            namespace: b.pod.as_ref().map(|p| p.namespace.clone()),
        })
        .collect();
    Status { backends }
}

pub struct Admin {
    pub balancer: Arc<Balancer>,
    pub registry: Registry,
    pub shutdown: CancellationToken,
}

impl Admin {
    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match req.uri().path() {
            "/-/status" => (
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&status(&self.balancer)).unwrap_or_default(),
            ),
            "/-/healthz" if self.shutdown.is_cancelled() => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "shutting down\n".into(),
            ),
            "/-/healthz" => (StatusCode::OK, "text/plain", "ok\n".into()),
            "/metrics" => {
                let mut text = String::new();
                match prometheus_client::encoding::text::encode(&mut text, &self.registry) {
                    Ok(()) => (
                        StatusCode::OK,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        text,
                    ),
                    Err(_) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        String::new(),
                    ),
                }
            }
            _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        response
    }

    /// Serves the admin endpoints until the process exits.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let response = admin.answer(&req);
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }
}

/// The registry of `/metrics`: `metrics`' families with the per-pod session gauge and the
/// backends-by-state gauge of `balancer`'s backends.
pub fn registry(metrics: &Metrics, balancer: Arc<Balancer>) -> Registry {
    let mut r = metrics.registry();
    r.register_collector(Box::new(BackendGauges(balancer)));
    r
}

/// The gauges read from the backends at each scrape (the request path keeps counting one
/// gauge per backend):
/// - `meteor_proxy_backend_sessions`: open requests and WebSockets per backend (the value of
///   `active_sessions`), labelled with the backend's pod and namespace when discovery knows
///   them, so a custom-metrics adapter can serve it per app pod;
/// - `meteor_proxy_backends{state}`: the backends counted by [`BackendState`]. All four states
///   are emitted, 0 when none, so an alert on `meteor_proxy_backends{state="serving"} == 0`
///   fires with no backend at all and no traffic.
pub struct BackendGauges(pub Arc<Balancer>);

impl std::fmt::Debug for BackendGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackendGauges")
    }
}

impl Collector for BackendGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let backends = self.0.backends();
        let gauge = ConstGauge::new(0i64).metric_type();
        let mut family = encoder.encode_descriptor(
            "backend_sessions",
            "Open requests and WebSockets per backend, labelled with its pod",
            None,
            gauge,
        )?;
        let mut counts = [0i64; BackendState::ALL.len()];
        for backend in backends.iter() {
            counts[BackendState::of(backend) as usize] += 1;
            let mut labels = vec![("backend", backend.id.to_string())];
            if let Some(pod) = &backend.pod {
                labels.push(("namespace", pod.namespace.clone()));
                labels.push(("pod", pod.name.clone()));
            }
            ConstGauge::new(backend.active()).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "backends",
            "Backends this proxy knows, by state: serving (takes new sessions), draining (terminating or removed, keeps its sessions), not_ready, down (failing health checks)",
            None,
            gauge,
        )?;
        for (state, count) in BackendState::ALL.into_iter().zip(counts) {
            ConstGauge::new(count).encode(family.encode_family(&[("state", state.label())])?)?;
        }
        Ok(())
    }
}

/// The state of a backend as `meteor_proxy_backends` counts it. Each backend is in exactly one,
/// taken in this order of precedence:
/// 1. `down`: failing health checks (`!is_up()`), whatever discovery says;
/// 2. `draining`: up, but terminating or removed from discovery (kept for its existing
///    sessions until its drain deadline);
/// 3. `not_ready`: up, listed, not terminating, but not ready per discovery;
/// 4. `serving`: everything else, which is exactly [`Backend::accepts_new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    Serving,
    Draining,
    NotReady,
    Down,
}

impl BackendState {
    /// Every state, in declaration order (`state as usize` indexes it), the order the series
    /// are emitted in.
    pub const ALL: [Self; 4] = [Self::Serving, Self::Draining, Self::NotReady, Self::Down];

    pub fn of(backend: &Backend) -> Self {
        if !backend.is_up() {
            Self::Down
        } else if backend.is_terminating() || backend.is_removed() {
            Self::Draining
        } else if !backend.is_ready() {
            Self::NotReady
        } else {
            Self::Serving
        }
    }

    /// The value of the `state` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Serving => "serving",
            Self::Draining => "draining",
            Self::NotReady => "not_ready",
            Self::Down => "down",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendSpec, PodRef};

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
        prometheus_client::encoding::text::encode(&mut text, &registry(&metrics, balancer.clone()))
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
        prometheus_client::encoding::text::encode(&mut text, &registry(&metrics, balancer))
            .unwrap();
        assert!(!text.contains("meteor_proxy_backend_sessions{"), "{text}");
    }

    /// The `meteor_proxy_backends` lines of `balancer`'s registry.
    fn state_lines(metrics: &Metrics, balancer: &Arc<Balancer>) -> Vec<String> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry(metrics, balancer.clone()))
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with("meteor_proxy_backends{"))
            .map(String::from)
            .collect()
    }

    #[test]
    fn backends_by_state_count_each_backend_once() {
        let metrics = Arc::new(Metrics::default());
        let balancer = Arc::new(Balancer::new(2, 2, metrics.clone()));
        let spec = |port: u16| BackendSpec::ready(([10, 0, 0, 1], port).into());
        let not_ready = BackendSpec {
            ready: false,
            ..spec(3002)
        };
        let terminating = BackendSpec {
            terminating: true,
            ..spec(3003)
        };
        let down_and_terminating = BackendSpec {
            terminating: true,
            ..spec(3006)
        };
        let down_not_ready = BackendSpec {
            ready: false,
            ..spec(3007)
        };
        balancer.update(&[
            spec(3000),
            spec(3001),
            not_ready.clone(),
            terminating.clone(),
            spec(3004), // removed below
            spec(3005), // down by health checks
            down_and_terminating.clone(),
            down_not_ready.clone(),
            spec(3008), // down by a failed connect
        ]);
        let by_id = |port: u16| {
            let id = format!("10.0.0.1:{port}");
            balancer
                .backends()
                .iter()
                .find(|b| *b.id == id)
                .unwrap()
                .clone()
        };
        for port in [3005, 3006, 3007] {
            by_id(port).observe_health(false);
            by_id(port).observe_health(false);
        }
        by_id(3008).connect_failed();
        // 3004 leaves discovery: kept, draining, for its sessions.
        balancer.update(&[
            spec(3000),
            spec(3001),
            not_ready,
            terminating,
            spec(3005),
            down_and_terminating,
            down_not_ready,
            spec(3008),
        ]);
        assert_eq!(balancer.backends().len(), 9);
        assert_eq!(
            state_lines(&metrics, &balancer),
            [
                r#"meteor_proxy_backends{state="serving"} 2"#,
                r#"meteor_proxy_backends{state="draining"} 2"#,
                r#"meteor_proxy_backends{state="not_ready"} 1"#,
                r#"meteor_proxy_backends{state="down"} 4"#,
            ]
        );
        // `serving` is what takes new sessions.
        let serving = balancer
            .backends()
            .iter()
            .filter(|b| BackendState::of(b) == BackendState::Serving)
            .count();
        let accepting = balancer
            .backends()
            .iter()
            .filter(|b| b.accepts_new())
            .count();
        assert_eq!(serving, accepting);
        // A down backend that recovers counts as serving again.
        by_id(3005).observe_health(true);
        by_id(3005).observe_health(true);
        assert_eq!(
            state_lines(&metrics, &balancer),
            [
                r#"meteor_proxy_backends{state="serving"} 3"#,
                r#"meteor_proxy_backends{state="draining"} 2"#,
                r#"meteor_proxy_backends{state="not_ready"} 1"#,
                r#"meteor_proxy_backends{state="down"} 3"#,
            ]
        );
    }

    #[test]
    fn backends_by_state_all_zero_without_backends() {
        let metrics = Arc::new(Metrics::default());
        let balancer = Arc::new(Balancer::new(2, 2, metrics.clone()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry(&metrics, balancer.clone()))
            .unwrap();
        assert!(
            text.lines()
                .any(|l| l == "# TYPE meteor_proxy_backends gauge"),
            "{text}"
        );
        assert_eq!(
            state_lines(&metrics, &balancer),
            [
                r#"meteor_proxy_backends{state="serving"} 0"#,
                r#"meteor_proxy_backends{state="draining"} 0"#,
                r#"meteor_proxy_backends{state="not_ready"} 0"#,
                r#"meteor_proxy_backends{state="down"} 0"#,
            ]
        );
    }
}
