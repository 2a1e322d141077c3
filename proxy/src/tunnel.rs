//! Byte tunnels for upgraded connections (WebSockets).
//!
//! Both directions read into one scratch buffer per thread and write straight on, so an idle
//! tunnel holds no buffer and a busy one allocates nothing per read; bytes are copied to the
//! heap only when the receiving side cannot take them at once, and freed once it has.
//! Half-closes are passed on; the tunnel ends after an idle timeout via [`Activity`]. Each read
//! adds its bytes to the backend's counters, one atomic add; a tunnel says how it ended
//! ([`Ended`]).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::body::{Buf, Bytes};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::metrics::Traffic;

/// Size of the per-thread scratch buffer: the most one read takes.
const CHUNK: usize = 16 * 1024;

thread_local! {
    /// Borrowed only within one poll, never across an await.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; CHUNK].into_boxed_slice());
}

/// Last-traffic clock shared by both directions of a tunnel.
pub struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once no traffic has passed for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            let deadline =
                self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// How a tunnel ended.
#[derive(Debug)]
pub enum Ended {
    /// The client closed its side first, or its connection failed (the error).
    Client(Option<io::Error>),
    /// The backend closed its side first, or its connection failed (the error).
    Backend(Option<io::Error>),
    /// No byte either way for the idle timeout.
    Idle,
}

/// Tunnels between two streams, first delivering bytes each side had already sent
/// (`*_pending`, read ahead by the HTTP parser), counting the bytes read from each side in
/// `traffic` (the client's as sent to the backend). Ends when both directions closed, on an
/// error, or after `idle` without traffic.
pub async fn splice<A, B>(
    mut client: A,
    client_pending: Bytes,
    mut upstream: B,
    upstream_pending: Bytes,
    idle: Duration,
    traffic: &Traffic,
) -> Ended
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut up = Direction::new(client_pending, &traffic.sent);
    let mut down = Direction::new(upstream_pending, &traffic.received);
    // Which side closed first: the one whose reading direction saw its end first.
    let mut first: Option<fn(Option<io::Error>) -> Ended> = None;
    let both = std::future::poll_fn(|cx| {
        let up_done = up
            .poll(&mut client, &mut upstream, cx, &activity)
            .map_err(|(side, e)| match side {
                Side::Reading => Ended::Client(Some(e)),
                Side::Writing => Ended::Backend(Some(e)),
            })?;
        let down_done = down
            .poll(&mut upstream, &mut client, cx, &activity)
            .map_err(|(side, e)| match side {
                Side::Reading => Ended::Backend(Some(e)),
                Side::Writing => Ended::Client(Some(e)),
            })?;
        if first.is_none() {
            if up.eof {
                first = Some(Ended::Client);
            } else if down.eof {
                first = Some(Ended::Backend);
            }
        }
        match (up_done, down_done) {
            (Poll::Ready(()), Poll::Ready(())) => Poll::Ready(Ok::<_, Ended>(())),
            _ => Poll::Pending,
        }
    });
    tokio::select! {
        result = both => match result {
            Ok(()) => first.unwrap_or(Ended::Client)(None),
            Err(ended) => ended,
        },
        _ = activity.idle_for(idle) => Ended::Idle,
    }
}

/// Which side of a [`Direction`] failed.
enum Side {
    Reading,
    Writing,
}

/// One direction of a tunnel.
struct Direction<'a> {
    /// Bytes read but not yet written (empty, holding no memory, while the writer keeps up).
    backlog: Bytes,
    /// Written since the last flush.
    unflushed: bool,
    /// The reader closed: pass the half-close on.
    eof: bool,
    done: bool,
    /// Bytes read from `from`.
    read: &'a Counter,
}

impl<'a> Direction<'a> {
    fn new(pending: Bytes, read: &'a Counter) -> Self {
        read.inc_by(pending.len() as u64);
        Self {
            backlog: pending,
            unflushed: false,
            eof: false,
            done: false,
            read,
        }
    }

    /// Moves bytes from `from` to `to` until one of them must wait; ready once `from` closed
    /// and `to` was shut down for writing.
    fn poll<R, W>(
        &mut self,
        from: &mut R,
        to: &mut W,
        cx: &mut Context<'_>,
        activity: &Activity,
    ) -> Poll<Result<(), (Side, io::Error)>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let writing = |e| (Side::Writing, e);
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            while !self.backlog.is_empty() {
                let n =
                    ready!(Pin::new(&mut *to).poll_write(cx, &self.backlog)).map_err(writing)?;
                if n == 0 {
                    return Poll::Ready(Err(writing(io::ErrorKind::WriteZero.into())));
                }
                self.backlog.advance(n);
                self.unflushed = true;
            }
            self.backlog = Bytes::new(); // let the copy go
            if self.eof {
                ready!(Pin::new(&mut *to).poll_shutdown(cx)).map_err(writing)?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            let read = SCRATCH.with_borrow_mut(|scratch| self.relay(from, to, cx, scratch));
            match read {
                Poll::Ready(result) => result?,
                Poll::Pending => {
                    // Nothing more to read for now: push out what the writer buffered (TLS).
                    if self.unflushed
                        && Pin::new(&mut *to)
                            .poll_flush(cx)
                            .map_err(writing)?
                            .is_ready()
                    {
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
            }
            activity.touch();
        }
    }

    /// One read into `scratch`, written on at once; what `to` cannot take now is kept.
    fn relay<R, W>(
        &mut self,
        from: &mut R,
        to: &mut W,
        cx: &mut Context<'_>,
        scratch: &mut [u8],
    ) -> Poll<Result<(), (Side, io::Error)>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut buf = ReadBuf::new(scratch);
        ready!(Pin::new(&mut *from).poll_read(cx, &mut buf)).map_err(|e| (Side::Reading, e))?;
        let data = buf.filled();
        if data.is_empty() {
            self.eof = true;
            return Poll::Ready(Ok(()));
        }
        self.read.inc_by(data.len() as u64);
        let written = match Pin::new(&mut *to).poll_write(cx, data) {
            Poll::Ready(result) => result.map_err(|e| (Side::Writing, e))?,
            Poll::Pending => 0,
        };
        self.unflushed = true;
        if written < data.len() {
            self.backlog = Bytes::copy_from_slice(&data[written..]);
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Counts the bytes each thread allocates, to prove the relay allocates nothing per read.
    struct Counting;

    thread_local! {
        static ALLOCATED: Cell<usize> = const { Cell::new(0) };
    }

    unsafe impl std::alloc::GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
            let _ = ALLOCATED.try_with(|a| a.set(a.get() + layout.size()));
            unsafe { std::alloc::System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
            unsafe { std::alloc::System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    #[test]
    fn relaying_allocates_no_buffer_per_read() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ((client, a), (b, upstream)) = runtime.block_on(async { (pair().await, pair().await) });
        let (mut client, mut upstream) = (client.into_std().unwrap(), upstream.into_std().unwrap());
        const MESSAGES: usize = 1000;
        // The peers run on another thread, with blocking sockets: one message at a time, so
        // every message is its own readable event in the tunnel.
        let peers = std::thread::spawn(move || {
            use std::io::{Read, Write};
            client.set_nonblocking(false).unwrap();
            upstream.set_nonblocking(false).unwrap();
            let mut got = [0u8; 1000];
            for i in 0..MESSAGES {
                client.write_all(&[i as u8; 1000]).unwrap();
                upstream.read_exact(&mut got).unwrap();
                assert_eq!(got[999], i as u8);
            }
        });
        let traffic = Traffic::default();
        let before = ALLOCATED.with(Cell::get);
        let ended = runtime.block_on(splice(
            a,
            Bytes::new(),
            b,
            Bytes::new(),
            Duration::from_secs(30),
            &traffic,
        ));
        let allocated = ALLOCATED.with(Cell::get) - before;
        peers.join().unwrap();
        assert!(
            matches!(ended, Ended::Client(None) | Ended::Backend(None)),
            "{ended:?}"
        );
        assert_eq!(traffic.sent.get(), (MESSAGES * 1000) as u64);
        assert_eq!(traffic.received.get(), 0);
        // One scratch buffer per thread at most, nothing per message.
        assert!(
            allocated <= CHUNK + 4096,
            "{allocated} bytes allocated for {MESSAGES} messages"
        );
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    #[tokio::test]
    async fn copies_pending_bytes_both_ways_and_passes_half_close() {
        let (mut client, proxy_client_side) = pair().await;
        let (proxy_upstream_side, mut upstream) = pair().await;
        let traffic = Traffic::default();
        let counted = traffic.clone();
        let task = tokio::spawn(async move {
            splice(
                proxy_client_side,
                Bytes::from_static(b"early"),
                proxy_upstream_side,
                Bytes::from_static(b"hello"),
                Duration::from_secs(5),
                &counted,
            )
            .await
        });
        let mut buf = [0u8; 5];
        upstream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"early");
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        let big = vec![7u8; 1 << 20];
        let (w, r) = tokio::join!(client.write_all(&big), async {
            let mut got = vec![0u8; big.len()];
            upstream.read_exact(&mut got).await.map(|_| got)
        });
        w.unwrap();
        assert_eq!(r.unwrap(), big);
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        upstream.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "upstream sees EOF");
        upstream.write_all(b"bye").await.unwrap();
        upstream.shutdown().await.unwrap();
        let mut tail = Vec::new();
        client.read_to_end(&mut tail).await.unwrap();
        assert_eq!(
            tail, b"bye",
            "the other direction still flows after a half-close"
        );
        let ended = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(ended, Ended::Client(None)), "{ended:?}");
        assert_eq!(traffic.sent.get(), 5 + (1 << 20), "pending bytes count too");
        assert_eq!(traffic.received.get(), 5 + 3);
    }

    /// The side that closes first is the one a tunnel names; a reset is that side's too.
    #[tokio::test]
    async fn a_tunnel_says_which_side_ended_it() {
        for backend_first in [true, false] {
            let (mut client, a) = pair().await;
            let (b, mut upstream) = pair().await;
            let task = tokio::spawn(async move {
                let traffic = Traffic::default();
                splice(
                    a,
                    Bytes::new(),
                    b,
                    Bytes::new(),
                    Duration::from_secs(5),
                    &traffic,
                )
                .await
            });
            let (first, second) = if backend_first {
                (&mut upstream, &mut client)
            } else {
                (&mut client, &mut upstream)
            };
            first.shutdown().await.unwrap();
            let mut rest = Vec::new();
            second.read_to_end(&mut rest).await.unwrap();
            second.shutdown().await.unwrap();
            let ended = tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .unwrap()
                .unwrap();
            match ended {
                Ended::Backend(None) if backend_first => {}
                Ended::Client(None) if !backend_first => {}
                other => panic!("backend first: {backend_first}: {other:?}"),
            }
        }
        // The backend's connection reset (closed with unread bytes): the backend's end.
        let (mut client, a) = pair().await;
        let (b, upstream) = pair().await;
        let task = tokio::spawn(async move {
            let traffic = Traffic::default();
            splice(
                a,
                Bytes::new(),
                b,
                Bytes::new(),
                Duration::from_secs(5),
                &traffic,
            )
            .await
        });
        client.write_all(b"unread").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let linger = socket2::SockRef::from(&upstream);
        linger.set_linger(Some(Duration::ZERO)).unwrap();
        drop(upstream);
        let ended = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(ended, Ended::Backend(_)), "{ended:?}");
    }

    #[tokio::test]
    async fn idle_tunnels_close() {
        let (mut client, a) = pair().await;
        let (b, _upstream) = pair().await;
        let task = tokio::spawn(async move {
            let traffic = Traffic::default();
            splice(
                a,
                Bytes::new(),
                b,
                Bytes::new(),
                Duration::from_millis(200),
                &traffic,
            )
            .await
        });
        let ended = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(ended, Ended::Idle), "{ended:?}");
        let mut buf = Vec::new();
        assert_eq!(
            client.read_to_end(&mut buf).await.unwrap(),
            0,
            "closed by the proxy"
        );
    }
}
