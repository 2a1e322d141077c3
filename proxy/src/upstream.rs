//! Upstream HTTP/1.1 connections: a small keep-alive pool per backend.
//!
//! A connection is taken from the pool for one request and returned when that request's
//! response body has been read to the end; connections whose response was abandoned are
//! dropped. A pooled connection expires after `--upstream-idle-timeout` (4 s), before a Node
//! backend's own 5 s `keepAliveTimeout` closes it under a request. One the backend closed
//! anyway is detected when used: an unsent request comes back and goes on another connection,
//! and the caller retries an idempotent one that was sent ([`retry_copy`]).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{Method, Request};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::server::RequestBody;

/// Idle connections kept per backend.
const MAX_IDLE: usize = 512;

pub type Sender = SendRequest<RequestBody>;

/// The idle connections of one backend, oldest first, each with the time it was returned.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<VecDeque<(Sender, Instant)>>,
}

impl Pool {
    /// The most recently used connection idle for less than `max_idle` (expired ones are
    /// closed), and how long it was idle.
    pub fn take(&self, max_idle: Duration) -> Option<(Sender, Duration)> {
        let now = Instant::now();
        let fresh = |since: &Instant| now.saturating_duration_since(*since) < max_idle;
        let mut idle = self.idle.lock().expect("pool lock");
        while idle.front().is_some_and(|(_, since)| !fresh(since)) {
            idle.pop_front();
        }
        while let Some((sender, since)) = idle.pop_back() {
            if fresh(&since) && !sender.is_closed() {
                return Some((sender, now.saturating_duration_since(since)));
            }
        }
        None
    }

    /// Returns a connection whose last response was read completely.
    pub fn put(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < MAX_IDLE {
            idle.push_back((sender, Instant::now()));
        }
    }

    pub fn idle(&self) -> usize {
        self.idle.lock().expect("pool lock").len()
    }
}

/// Keep-alive timers close connections idle for seconds; one reused sooner (every connection
/// under load) is not worth copying its request for.
pub const RETRY_AFTER_IDLE: Duration = Duration::from_millis(100);

/// A copy of `request` to send again if a pooled connection closes under it: only for an
/// idempotent method with no body (nothing of it can have been acted on twice, nor consumed).
pub fn retry_copy(request: &Request<RequestBody>) -> Option<Request<RequestBody>> {
    let idempotent = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    );
    if !idempotent || !matches!(request.body(), RequestBody::Empty) {
        return None;
    }
    let mut copy = Request::new(RequestBody::Empty);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    Some(copy)
}

/// Opens a new connection to `addr`.
pub async fn connect(addr: std::net::SocketAddr, timeout: Duration) -> std::io::Result<Sender> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(%error, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}
