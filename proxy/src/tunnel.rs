//! Byte tunnels for upgraded connections (WebSockets).
//!
//! The plain-TCP tunnel waits for readiness and only allocates a copy buffer while data flows,
//! so an idle WebSocket costs the proxy two sockets and a small task, not two 8 KiB buffers.
//! Half-closes are passed on; the caller bounds the tunnel with an idle timeout via [`Activity`].

use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Buffer used while data flows (freed as soon as the socket has nothing more to read).
const CHUNK: usize = 16 * 1024;

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

    /// Wraps a stream so that reads count as traffic.
    pub fn wrap<'a, T>(&'a self, inner: &'a mut T) -> Touching<'a, T> {
        Touching {
            inner,
            activity: self,
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// A stream whose reads refresh an [`Activity`].
pub struct Touching<'a, T> {
    inner: &'a mut T,
    activity: &'a Activity,
}

impl<T: AsyncRead + Unpin> AsyncRead for Touching<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut *this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Touching<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write(cx, data)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Tunnels between two TCP streams, first delivering bytes each side had already sent
/// (`*_pending`, read ahead by the HTTP parser). Ends when both directions closed, on an error,
/// or after `idle` without traffic.
pub async fn splice(
    client: TcpStream,
    client_pending: Bytes,
    upstream: TcpStream,
    upstream_pending: Bytes,
    idle: Duration,
) -> io::Result<()> {
    let activity = Activity::new();
    let both = async {
        tokio::try_join!(
            pump(&client, &upstream, client_pending, &activity),
            pump(&upstream, &client, upstream_pending, &activity),
        )
    };
    tokio::select! {
        result = both => result.map(|_| ()),
        _ = activity.idle_for(idle) => Ok(()),
    }
}

async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    pending: Bytes,
    activity: &Activity,
) -> io::Result<()> {
    write_all(to, &pending).await?;
    drop(pending);
    loop {
        from.readable().await?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from.try_read(&mut buf) {
                Ok(0) => {
                    // Pass the half-close on; the other direction may still be sending.
                    let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
                    return Ok(());
                }
                Ok(n) => {
                    activity.touch();
                    write_all(to, &buf[..n]).await?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
}

async fn write_all(to: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        to.writable().await?;
        match to.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

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
        let task = tokio::spawn(splice(
            proxy_client_side,
            Bytes::from_static(b"early"),
            proxy_upstream_side,
            Bytes::from_static(b"hello"),
            Duration::from_secs(5),
        ));
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
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn idle_tunnels_close() {
        let (mut client, a) = pair().await;
        let (b, _upstream) = pair().await;
        let task = tokio::spawn(splice(
            a,
            Bytes::new(),
            b,
            Bytes::new(),
            Duration::from_millis(200),
        ));
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let mut buf = Vec::new();
        assert_eq!(
            client.read_to_end(&mut buf).await.unwrap(),
            0,
            "closed by the proxy"
        );
    }
}
