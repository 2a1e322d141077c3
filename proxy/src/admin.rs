//! The admin port, separate from traffic: `GET /-/status` (the seeds' check_status page as JSON:
//! every backend with its readiness, health and active sessions), `GET /-/healthz` (200 while
//! serving, 503 once shutting down) and `GET /metrics` (Prometheus text format: the
//! [`Metrics`] families and the per-pod session gauge, [`registry`]).

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

/// The registry of `/metrics`: `metrics`' families with the per-pod session gauge of
/// `balancer`'s backends.
pub fn registry(metrics: &Metrics, balancer: Arc<Balancer>) -> Registry {
    let mut r = metrics.registry();
    r.register_collector(Box::new(PodSessions(balancer)));
    r
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
}
