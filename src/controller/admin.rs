//! The admin HTTP endpoint: `/metrics`, `/healthz` (the process runs), `/readyz` (MeteorApps are
//! listed, as leader or as a standby waiting for the lease).

use super::metrics::Metrics;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;

/// Longest a client may take to send a request head.
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Shared with the controller: whether `/readyz` should answer 200.
#[derive(Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
    fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Serves on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let metrics = metrics.clone();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let response = route(request.uri().path(), &metrics, &readiness);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            // A client that never finishes its request head does not hold a task for ever.
            if let Err(error) = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "admin connection ended with an error");
            }
        });
    }
}

fn route(path: &str, metrics: &Metrics, readiness: &Readiness) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" if readiness.get() => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "starting\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_follows_readiness_and_metrics_use_controller_runtime_names() {
        let metrics = Metrics::default();
        metrics.reconciled(std::time::Duration::from_millis(3), None);
        let readiness = Readiness::default();
        assert_eq!(
            route("/readyz", &metrics, &readiness).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        readiness.set(true);
        assert_eq!(
            route("/readyz", &metrics, &readiness).status(),
            StatusCode::OK
        );
        assert_eq!(
            route("/healthz", &metrics, &readiness).status(),
            StatusCode::OK
        );
        assert_eq!(
            route("/nope", &metrics, &readiness).status(),
            StatusCode::NOT_FOUND
        );
        let text = metrics.encode();
        assert!(
            text.contains(
                "controller_runtime_reconcile_total{controller=\"meteorapp\",result=\"success\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("controller_runtime_reconcile_time_seconds_bucket"));
        let rss: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .expect("resident memory is exported")
            .parse()
            .unwrap();
        assert!(rss > 1_000_000.0, "{rss}");
    }
}
