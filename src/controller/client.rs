//! The operator's API client: every request counted by kind, and every request but a watch
//! bounded in time. kube's client sets no read timeout (a watch may rightly stay silent for
//! minutes; the watcher bounds those itself), so without this a slow or vanished API server
//! would hold a reconcile, and the shutdown waiting on it, forever.

use super::metrics::Metrics;
use futures::FutureExt;
use futures::future::BoxFuture;
use http::{Request, Response};
use http_body_util::Either;
use kube::client::Body;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{BoxError, Layer, Service};
use tower_http::timeout::DeadlineBody;

/// Longest a request other than a watch may take, from sending it to the last byte of the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The client for `config`, with the request counter and [`REQUEST_TIMEOUT`].
pub fn build(config: kube::Config, metrics: Arc<Metrics>) -> Result<kube::Client, kube::Error> {
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&tower::util::MapRequestLayer::new(
            move |request: Request<Body>| {
                metrics.requested(request.method(), request.uri());
                request
            },
        ))
        .with_layer(&Deadline(REQUEST_TIMEOUT))
        .build())
}

/// Bounds each request but a watch to the given time in all: waiting for the answer's head,
/// then reading its body.
#[derive(Clone, Copy)]
pub struct Deadline(pub Duration);

impl<S> Layer<S> for Deadline {
    type Service = Bounded<S>;
    fn layer(&self, inner: S) -> Bounded<S> {
        Bounded {
            inner,
            limit: self.0,
        }
    }
}

#[derive(Clone)]
pub struct Bounded<S> {
    inner: S,
    limit: Duration,
}

/// A watch (`?watch=true`, or `1`) streams for as long as the server keeps it open.
fn is_watch(uri: &http::Uri) -> bool {
    uri.query().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| matches!(pair, "watch=true" | "watch=1"))
    })
}

impl<S, B> Service<Request<Body>> for Bounded<S>
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
{
    type Response = Response<Either<DeadlineBody<B>, B>>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let watch = is_watch(request.uri());
        let what = format!("{} {}", request.method(), request.uri().path());
        let limit = self.limit;
        let answer = self.inner.call(request);
        async move {
            if watch {
                return Ok(answer.await.map_err(Into::into)?.map(Either::Right));
            }
            let deadline = tokio::time::Instant::now() + limit;
            let head = tokio::time::timeout_at(deadline, answer)
                .await
                .map_err(|_| format!("{what}: no answer from the API server within {limit:?}"))?
                .map_err(Into::into)?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            Ok(head.map(|body| Either::Left(DeadlineBody::new(left, body))))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[test]
    fn only_watches_are_unbounded() {
        let uri = |s: &str| s.parse::<http::Uri>().unwrap();
        assert!(is_watch(&uri(
            "/api/v1/secrets?watch=true&resourceVersion=1"
        )));
        assert!(is_watch(&uri("/api/v1/secrets?labelSelector=a&watch=1")));
        assert!(!is_watch(&uri("/api/v1/secrets?limit=500")));
        assert!(!is_watch(&uri("/api/v1/secrets")));
        assert!(!is_watch(&uri("/api/v1/secrets?watch=false")));
    }

    /// A server that sends the head of a LIST and then nothing: the body read ends with an error
    /// at the deadline.
    #[tokio::test(start_paused = true)]
    async fn a_silent_answer_body_fails_at_the_deadline() {
        let (tx, rx) = futures::channel::mpsc::channel::<
            Result<hyper::body::Frame<hyper::body::Bytes>, BoxError>,
        >(1);
        let body = std::sync::Mutex::new(Some(http_body_util::StreamBody::new(rx)));
        let server = tower::service_fn(move |_: Request<Body>| {
            let body = body.lock().unwrap().take().unwrap();
            async move { Ok::<_, BoxError>(Response::new(body)) }
        });
        let mut bounded = Deadline(Duration::from_secs(60)).layer(server);
        let answer = bounded
            .ready()
            .await
            .unwrap()
            .call(Request::get("/api/v1/pods").body(Body::empty()).unwrap())
            .await
            .expect("the head arrives");
        let started = tokio::time::Instant::now();
        let error = answer
            .into_body()
            .collect()
            .await
            .expect_err("no body in time");
        assert!(error.is::<tower_http::timeout::TimeoutError>(), "{error}");
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        drop(tx);
    }

    /// A server that never answers: the request fails at the deadline.
    #[tokio::test(start_paused = true)]
    async fn an_api_server_that_never_answers_fails_the_request_at_the_deadline() {
        let server = tower::service_fn(|_: Request<Body>| {
            futures::future::pending::<Result<Response<Body>, BoxError>>()
        });
        let mut bounded = Deadline(Duration::from_secs(60)).layer(server);
        let started = tokio::time::Instant::now();
        let error = bounded
            .ready()
            .await
            .unwrap()
            .call(Request::get("/api/v1/pods").body(Body::empty()).unwrap())
            .await
            .err()
            .expect("no answer in time");
        assert!(error.to_string().contains("GET /api/v1/pods"), "{error}");
        assert_eq!(started.elapsed(), Duration::from_secs(60));

        let server = tower::service_fn(|_: Request<Body>| {
            futures::future::pending::<Result<Response<Body>, BoxError>>()
        });
        let mut bounded = Deadline(Duration::from_secs(60)).layer(server);
        let watch = bounded.ready().await.unwrap().call(
            Request::get("/api/v1/pods?watch=true")
                .body(Body::empty())
                .unwrap(),
        );
        assert!(
            tokio::time::timeout(Duration::from_secs(3600), watch)
                .await
                .is_err(),
            "a watch is not cut by the deadline"
        );
    }
}
