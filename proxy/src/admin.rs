//! The admin port, separate from traffic: `GET /-/status` (the seeds' check_status page as JSON:
//! every backend with its readiness, health and active sessions), `GET /-/healthz` (200 while
//! serving, 503 once shutting down) and `GET /metrics` (Prometheus text format).

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::balancer::Balancer;

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
