//! A backend's idle keep-alive connections ([`Pool`]) and the connection they hold ([`Conn`]:
//! its socket, read buffer, byte counters and what the response parser remembers of it). It
//! keeps and checks idle connections; it never writes a request or reads a response (that is
//! `upstream`'s, a layer above).

use std::collections::VecDeque;
use std::io;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use http::header::{self, HeaderName};
use tokio::net::TcpStream;
use tokio_util::bytes::BytesMut;

use crate::metrics::Traffic;

/// Idle connections kept per backend.
const MAX_IDLE: usize = 512;

/// One upstream keep-alive connection.
pub struct Conn {
    pub(crate) io: TcpStream,
    /// Bytes read and not yet consumed; empty between exchanges.
    pub(crate) buf: BytesMut,
    /// The request head being written (kept for the next one: no allocation per request).
    pub(crate) head: Vec<u8>,
    /// The header names of the last response, by position, as sent and as parsed: a backend
    /// sends the same names in the same order, and a comparison is cheaper than parsing one.
    pub(crate) names: Names,
    /// Its backend's byte counters.
    pub(crate) traffic: Traffic,
}

/// Header names seen, by position, with what each is to the parser.
pub(crate) type Names = Vec<(Box<[u8]>, HeaderName, Kind)>;

/// What a response header is to the parser.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Connection,
    /// Another hop-by-hop header: left out.
    Hop,
    ContentLength,
    TransferEncoding,
    Other,
}

impl Kind {
    pub(crate) fn of(name: &HeaderName) -> Self {
        if name == header::CONNECTION {
            Kind::Connection
        } else if name == KEEP_ALIVE
            || name == PROXY_CONNECTION
            || name == header::UPGRADE
            || name == header::TRAILER
            || name == header::PROXY_AUTHENTICATE
        {
            Kind::Hop
        } else if name == header::CONTENT_LENGTH {
            Kind::ContentLength
        } else if name == header::TRANSFER_ENCODING {
            Kind::TransferEncoding
        } else {
            Kind::Other
        }
    }
}

impl Conn {
    /// A connection over `io` with empty buffers, its bytes counted in `traffic`.
    pub(crate) fn new(io: TcpStream, traffic: Traffic) -> Self {
        Conn {
            io,
            buf: BytesMut::new(),
            head: Vec::new(),
            names: Vec::new(),
            traffic,
        }
    }

    /// Whether the connection looks usable: nothing arrived on it while idle (an end of
    /// stream, an error or stray bytes all make it unusable). No system call unless the socket
    /// was seen readable.
    pub(crate) fn looks_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readiness may be left over from a read that filled the buffer exactly.
            Poll::Ready(Ok(())) => matches!(
                self.io.try_read(&mut [0; 1]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock
            ),
        }
    }
}

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The idle connections of one backend, oldest first, each with the time it was returned.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<VecDeque<(Conn, Instant)>>,
}

impl Pool {
    /// The most recently used connection idle for less than `max_idle` (expired ones are
    /// closed), and how long it was idle.
    pub fn take(&self, max_idle: Duration) -> Option<(Conn, Duration)> {
        let now = Instant::now();
        let fresh = |since: &Instant| now.saturating_duration_since(*since) < max_idle;
        // Connections to close are closed after the lock is released (system calls).
        let mut closing = Vec::new();
        let mut idle = self.idle.lock().expect("pool lock");
        while idle.front().is_some_and(|(_, since)| !fresh(since)) {
            closing.extend(idle.pop_front());
        }
        let mut found = None;
        while let Some((mut conn, since)) = idle.pop_back() {
            if fresh(&since) && conn.looks_open() {
                found = Some((conn, now.saturating_duration_since(since)));
                break;
            }
            closing.push((conn, since));
        }
        drop(idle);
        drop(closing);
        found
    }

    /// Returns a connection whose last response was read completely. Connections idle for
    /// `max_idle` or more are closed now rather than at the next `take`; in a full pool the
    /// oldest makes room.
    pub fn put(&self, conn: Conn, max_idle: Duration) {
        let now = Instant::now();
        let mut closing = Vec::new();
        let mut idle = self.idle.lock().expect("pool lock");
        while idle.front().is_some_and(|(_, since)| {
            now.saturating_duration_since(*since) >= max_idle || idle.len() >= MAX_IDLE
        }) {
            closing.extend(idle.pop_front());
        }
        idle.push_back((conn, now));
        drop(idle);
        drop(closing); // closed after the lock is released (system calls)
    }

    pub fn idle(&self) -> usize {
        self.idle.lock().expect("pool lock").len()
    }
}
