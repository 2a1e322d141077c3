//! Upstream HTTP/1.1 connections: a small keep-alive pool per backend.
//!
//! A connection is taken from the pool for one request and returned when that request's
//! response body has been read to the end; connections whose response was abandoned are
//! dropped. A pooled connection the backend closed in the meantime is detected when used (the
//! unsent request comes back and is sent on another connection), so no timers are needed.

use std::sync::Mutex;
use std::time::Duration;

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::server::RequestBody;

/// Idle connections kept per backend.
const MAX_IDLE: usize = 512;

pub type Sender = SendRequest<RequestBody>;

/// The idle connections of one backend.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<Sender>>,
}

impl Pool {
    /// An idle connection, most recently used first.
    pub fn take(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().expect("pool lock");
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
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
            idle.push(sender);
        }
    }

    pub fn idle(&self) -> usize {
        self.idle.lock().expect("pool lock").len()
    }
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
