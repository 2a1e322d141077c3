//! Upstream HTTP/1.1: each exchange runs inside the client connection's task (no connection
//! task, no channel between the two), over a small keep-alive pool per backend.
//!
//! Contracts:
//! - A connection is taken from the pool for one request and returned when that request's
//!   response body has been read to the end with nothing after it; connections whose response
//!   was abandoned, ended the connection, or broke the framing are dropped.
//! - A pooled connection expires after `--upstream-idle-timeout` (4 s), before a Node backend's
//!   own 5 s `keepAliveTimeout` closes it under a request. One seen closed (or with unexpected
//!   bytes) when taken is dropped; one that fails before any byte of a request was written gives
//!   the request back ([`Error::Unsent`]) for another connection, and the caller retries an
//!   idempotent request without a body that was sent ([`retryable`]).
//! - Requests go out in origin form (`/path?query`) with their headers as prepared by the
//!   caller, a body framed as its headers say (`Transfer-Encoding: chunked` re-encoded chunk by
//!   chunk, `Content-Length` as is).
//! - Responses are parsed strictly: `HTTP/1.0` or `HTTP/1.1`, CRLF line endings, no obs-fold,
//!   header names and values as `http` accepts them, at most [`MAX_HEADERS`] headers and
//!   [`MAX_HEAD`] bytes; 1xx informational responses are skipped (101 is refused outside an
//!   upgrade); the body is framed by RFC 9112 section 6.3 (no body for HEAD, 204 and 304;
//!   `Transfer-Encoding` ending in `chunked` decoded, any other `Transfer-Encoding` read to
//!   the end of the connection; else `Content-Length`, every value the same; else to the end of
//!   the connection). Anything else fails the exchange (502), never the proxy.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Version};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::bytes::{Buf, BytesMut};

use crate::metrics::Traffic;
use crate::pool::{Conn, Kind, Names};

/// Longest response head read (hyper's own limit is about 400 KiB).
pub const MAX_HEAD: usize = 256 * 1024;
/// Most header lines in a response head (hyper's default too).
pub const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (with extensions) or trailer line of a chunked body.
const MAX_LINE: usize = 4096;
/// Most trailer bytes of a chunked body (they are read and dropped, as hyper's server sends
/// trailers only to clients that ask with `TE: trailers`, which the proxy strips).
const MAX_TRAILERS: usize = 64 * 1024;
/// Read buffer space made available before each read.
const READ_SPACE: usize = 16 * 1024;

/// The body of a request sent upstream.
pub enum RequestBody {
    Stream(Incoming),
    Empty,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Stream(body) => Pin::new(body).poll_frame(cx),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Stream(body) => body.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Stream(body) => body.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// The connection type of upgrade (WebSocket) exchanges, which keep hyper's client for the
/// handshake and tunnel afterwards.
pub type Sender = SendRequest<RequestBody>;

/// Most header names remembered per connection.
const MAX_NAMES: usize = 32;

/// Keep-alive timers close connections idle for seconds; a request on one reused sooner (every
/// connection under load) is not retried when the connection fails under it.
pub const RETRY_AFTER_IDLE: Duration = Duration::from_millis(100);

/// Whether `request` may be sent again after its connection failed under it: an idempotent
/// method with no body (nothing of it can have been acted on twice, nor consumed).
pub fn retryable(request: &Request<RequestBody>) -> bool {
    matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    ) && matches!(request.body(), RequestBody::Empty)
}

/// The receive buffer of a backend connection (`SO_RCVBUF`; the kernel allows twice this with
/// its overhead). A backend is a round trip of well under a millisecond away, so this window
/// still carries hundreds of MB/s; it bounds what a response stalled by a client that stops
/// reading holds in the proxy's kernel queues (the rest waits in the backend's).
pub const BACKEND_RECEIVE_BUFFER: u32 = 64 * 1024;

/// A new TCP connection to a backend: `TCP_NODELAY`, and a receive buffer of
/// [`BACKEND_RECEIVE_BUFFER`] (set before connecting, so the window scale fits it).
pub async fn open(addr: std::net::SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    let _ = socket.set_recv_buffer_size(BACKEND_RECEIVE_BUFFER);
    let io = tokio::time::timeout(timeout, socket.connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = io.set_nodelay(true);
    Ok(io)
}

/// Opens a new connection to `addr`, its bytes counted in `traffic`.
pub async fn connect(
    addr: std::net::SocketAddr,
    timeout: Duration,
    traffic: &Traffic,
) -> io::Result<Conn> {
    let io = open(addr, timeout).await?;
    Ok(Conn::new(io, traffic.clone()))
}

/// One exchange on `io`, a connection to a backend: a `GET /` (or `HEAD /`) sent, the response
/// read as the proxy reads every response (its head, then its body to the end as its framing
/// says). Returns the status, the body as the client would get it, and whether the connection
/// could serve another request. The harness of the `response` fuzz target (`proxy/fuzz`), which
/// plays the backend.
pub async fn replay_exchange(
    io: TcpStream,
    head_request: bool,
) -> Result<(StatusCode, Vec<u8>, bool), Error> {
    let mut conn = Conn::new(io, Traffic::default());
    let mut request = Request::new(RequestBody::Empty);
    if head_request {
        *request.method_mut() = Method::HEAD;
    }
    *request.uri_mut() = http::Uri::from_static("/");
    let head = conn.exchange(&mut request, &[]).await?;
    let mut body = DirectBody::new(conn, &head, Duration::from_secs(5));
    let mut out = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame.map_err(Error::Invalid)?.into_data() {
            out.extend_from_slice(&data);
        }
    }
    let reusable = body.reusable().is_some();
    Ok((head.status, out, reusable))
}

/// How an exchange failed.
#[derive(Debug)]
pub enum Error {
    /// Not a byte of the request was written: it is intact and may go on another connection.
    Unsent(io::Error),
    /// The request (or part of it) went out; the connection failed before a response head.
    Sent(io::Error),
    /// The backend answered with a head that breaks the rules above (not retried).
    Invalid(io::Error),
}

/// A response head (hop-by-hop headers left out) and how its body is framed on the
/// connection.
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

impl Head {
    /// The response head `raw`, its status line already parsed into `status_line`; its headers
    /// go into `headers` (empty; a request's map is passed on for its allocation).
    fn parse(
        raw: Bytes,
        (version, status): (Version, StatusCode),
        head_request: bool,
        mut headers: HeaderMap,
        names: &mut Names,
    ) -> io::Result<Head> {
        let (framing, keep_alive) =
            parse_headers(raw, version, status, head_request, &mut headers, names)?;
        Ok(Head {
            status,
            version,
            headers,
            framing,
            keep_alive,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// This many bytes left.
    Length(u64),
    Chunked(Chunk),
    /// Until the backend closes the connection.
    Close,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes left.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk, at the trailer section (this many trailer bytes seen so far).
    Trailers(usize),
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Conn {
    /// Sends `request` (its body, if streamed, is taken out of it) and reads the response head.
    /// Once a head arrived, the request's header map holds the response's headers instead
    /// (one map per client connection goes round: hyper's server reuses a response's map for
    /// the next request); until then the request is intact.
    pub async fn exchange(
        &mut self,
        request: &mut Request<RequestBody>,
        added: &[(&HeaderName, &HeaderValue)],
    ) -> Result<Head, Error> {
        encode_head(request, added, &mut self.head);
        // The first write tells whether the connection still takes bytes at all.
        let written = self.io.write(&self.head).await.map_err(Error::Unsent)?;
        if written == 0 {
            return Err(Error::Unsent(io::ErrorKind::WriteZero.into()));
        }
        self.io
            .write_all(&self.head[written..])
            .await
            .map_err(Error::Sent)?;
        self.traffic.sent.inc_by(self.head.len() as u64);
        if let RequestBody::Stream(_) = request.body() {
            let chunked = is_chunked(request.headers());
            let body = std::mem::replace(request.body_mut(), RequestBody::Empty);
            self.send_body(body, chunked).await.map_err(Error::Sent)?;
        }
        let (raw, version, status) = self.read_head().await?;
        let mut headers = std::mem::take(request.headers_mut());
        headers.clear();
        let head_request = request.method() == Method::HEAD;
        Head::parse(
            raw,
            (version, status),
            head_request,
            headers,
            &mut self.names,
        )
        .map_err(Error::Invalid)
    }

    async fn send_body(&mut self, mut body: RequestBody, chunked: bool) -> io::Result<()> {
        let mut body = Pin::new(&mut body);
        while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            let frame = frame.map_err(io::Error::other)?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers: dropped (hyper's client did not send them either)
            };
            if data.is_empty() {
                continue;
            }
            if chunked {
                let size = Bytes::from(format!("{:x}\r\n", data.len()));
                let mut frame = size.chain(data).chain(&b"\r\n"[..]);
                let framed = frame.remaining() as u64;
                self.io.write_all_buf(&mut frame).await?;
                self.traffic.sent.inc_by(framed);
            } else {
                self.io.write_all(&data).await?;
                self.traffic.sent.inc_by(data.len() as u64);
            }
        }
        if chunked {
            self.io.write_all(b"0\r\n\r\n").await?;
            self.traffic.sent.inc_by(5);
        }
        Ok(())
    }

    /// Reads up to the final (non-1xx) response head: its bytes, version and status.
    async fn read_head(&mut self) -> Result<(Bytes, Version, StatusCode), Error> {
        loop {
            if let Some(len) = head_end(&self.buf).map_err(Error::Invalid)? {
                let raw = self.buf.split_to(len).freeze();
                let (version, status) = parse_status(&raw).map_err(Error::Invalid)?;
                if status.is_informational() {
                    if status == StatusCode::SWITCHING_PROTOCOLS {
                        let error = invalid("101 Switching Protocols without an upgrade");
                        return Err(Error::Invalid(error));
                    }
                    continue; // 100 Continue, 103 Early Hints: the final head follows
                }
                return Ok((raw, version, status));
            }
            if self.buf.len() >= MAX_HEAD {
                return Err(Error::Invalid(invalid("response head too large")));
            }
            let read = std::future::poll_fn(|cx| self.poll_read(cx)).await;
            if read.map_err(Error::Sent)? == 0 {
                return Err(Error::Sent(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a response head",
                )));
            }
        }
    }

    /// Reads what the socket has into `buf`; 0 at the end of the stream.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_SPACE / 4 {
            self.buf.reserve(READ_SPACE);
        }
        let spare = self.buf.spare_capacity_mut();
        let mut read = ReadBuf::uninit(spare);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        // SAFETY: `poll_read` initialized the first `n` bytes of the spare capacity.
        unsafe { self.buf.set_len(self.buf.len() + n) };
        self.traffic.received.inc_by(n as u64);
        Poll::Ready(Ok(n))
    }
}

/// The request head in origin form, with the `added` headers after its own, as bytes to write,
/// into `head`.
fn encode_head(
    request: &Request<RequestBody>,
    added: &[(&HeaderName, &HeaderValue)],
    head: &mut Vec<u8>,
) {
    let method = request.method().as_str();
    let uri = request.uri();
    let whole = uri.path_and_query().map_or("", |pq| pq.as_str());
    // `OPTIONS *` asks about the server as a whole (RFC 9112 section 3.2.4; an absolute-form
    // `OPTIONS http://host` parses as `http://host/`, so it asks about `/`). Otherwise the path
    // is at least `/` (an absolute form like `http://host?q` has none) and the query follows.
    let (path, query) = if request.method() == Method::OPTIONS && (whole.is_empty() || whole == "*")
    {
        ("*", None)
    } else {
        (
            Some(uri.path()).filter(|p| !p.is_empty()).unwrap_or("/"),
            uri.query(),
        )
    };
    let mut size = method.len() + path.len() + query.map_or(0, |q| q.len() + 1) + 13;
    for (name, value) in request.headers().iter().chain(added.iter().copied()) {
        size += name.as_str().len() + value.len() + 4;
    }
    let chunked = matches!(request.body(), RequestBody::Stream(_))
        && !request.headers().contains_key(header::CONTENT_LENGTH)
        && !request.headers().contains_key(header::TRANSFER_ENCODING);
    head.clear();
    head.reserve(size + 2 + if chunked { 28 } else { 0 });
    head.extend_from_slice(method.as_bytes());
    head.push(b' ');
    head.extend_from_slice(path.as_bytes());
    if let Some(query) = query {
        head.push(b'?');
        head.extend_from_slice(query.as_bytes());
    }
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers().iter().chain(added.iter().copied()) {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if chunked {
        // A body with no framing header (not from hyper's HTTP/1 server, which requires one).
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    head.extend_from_slice(b"\r\n");
}

/// Whether a request body goes out chunked: its `Transfer-Encoding` ends in `chunked`, or it
/// has no framing header at all.
fn is_chunked(headers: &HeaderMap) -> bool {
    match headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
    {
        Some(last) => ends_in_chunked(last),
        None => !headers.contains_key(header::CONTENT_LENGTH),
    }
}

fn ends_in_chunked(value: &HeaderValue) -> bool {
    value
        .as_bytes()
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// The position of the first `\n` in `bytes`, eight bytes at a time.
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const NL: u64 = LO * b'\n' as u64;
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes")) ^ NL;
        let found = word.wrapping_sub(LO) & !word & HI;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| at + i)
}

/// The length of the head at the start of `buf` (through its empty line), once complete.
/// Lines must end in CRLF.
fn head_end(buf: &[u8]) -> io::Result<Option<usize>> {
    let mut at = 0;
    let mut lines = 0;
    while let Some(nl) = find_newline(&buf[at..]) {
        if nl == 0 || buf[at + nl - 1] != b'\r' {
            return Err(invalid("response line without CRLF"));
        }
        if nl == 1 {
            return Ok(Some(at + 2));
        }
        lines += 1;
        if lines > MAX_HEADERS + 1 {
            return Err(invalid("too many response headers"));
        }
        at += nl + 1;
    }
    Ok(None)
}

/// A non-empty run of ASCII digits as a number, unless it overflows.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .flatten()
    })
}

/// The version and status of a complete head.
fn parse_status(raw: &[u8]) -> io::Result<(Version, StatusCode)> {
    let end = find_newline(raw).ok_or_else(|| invalid("no status line"))?;
    let line = &raw[..end - 1];
    let version = match line.get(..9) {
        Some(b"HTTP/1.1 ") => Version::HTTP_11,
        Some(b"HTTP/1.0 ") => Version::HTTP_10,
        _ => return Err(invalid("not an HTTP/1.x status line")),
    };
    let code = line.get(9..12).ok_or_else(|| invalid("no status code"))?;
    if line.len() > 12 && line[12] != b' ' {
        return Err(invalid("malformed status line"));
    }
    let status = StatusCode::from_bytes(code).map_err(|_| invalid("malformed status code"))?;
    Ok((version, status))
}

/// Parses the header lines of a complete head (`raw` ends with its empty line) into `headers`,
/// values sharing `raw`, and frames its body. Hop-by-hop headers are left out (`Connection`,
/// the headers it names, `Keep-Alive`, `Proxy-Connection`, `Upgrade`, `Trailer`), as the
/// proxy's own answer must not carry them.
fn parse_headers(
    raw: Bytes,
    version: Version,
    status: StatusCode,
    head_request: bool,
    headers: &mut HeaderMap,
    names: &mut Names,
) -> io::Result<(Framing, bool)> {
    let mut index = 0;
    let mut at = find_newline(&raw).ok_or_else(|| invalid("no status line"))? + 1;
    let mut close = false;
    let mut keep_alive = false;
    let mut named: Vec<(usize, usize)> = Vec::new(); // headers named in Connection
    let mut length: Option<u64> = None;
    let mut bad_length = false;
    let mut transfer: Option<bool> = None; // Some(ends in chunked) of the last value
    loop {
        let nl = find_newline(&raw[at..]).ok_or_else(|| invalid("unterminated head"))?;
        if nl == 1 {
            break;
        }
        let (start, end) = (at, at + nl - 1);
        at += nl + 1;
        let line = &raw[start..end];
        if matches!(line.first(), Some(b' ' | b'\t')) {
            return Err(invalid("obsolete line folding"));
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| invalid("header line without a colon"))?;
        let raw_name = &line[..colon];
        let (name, kind) = match names.get(index) {
            Some((seen, name, kind)) if **seen == *raw_name => (name.clone(), *kind),
            _ => {
                let name =
                    HeaderName::from_bytes(raw_name).map_err(|_| invalid("bad header name"))?;
                let kind = Kind::of(&name);
                if index < names.len() {
                    names[index] = (raw_name.into(), name.clone(), kind);
                } else if index < MAX_NAMES {
                    names.push((raw_name.into(), name.clone(), kind));
                }
                (name, kind)
            }
        };
        index += 1;
        let after = &line[colon + 1..];
        let lead = after.len() - after.trim_ascii_start().len();
        let value = after.trim_ascii();
        let from = start + colon + 1 + lead;
        match kind {
            Kind::Connection => {
                for token in value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive = true;
                    } else if !token.is_empty() {
                        let offset = token.as_ptr() as usize - raw.as_ptr() as usize;
                        named.push((offset, offset + token.len()));
                    }
                }
                if !value
                    .iter()
                    .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
                {
                    return Err(invalid("bad header value"));
                }
                continue;
            }
            Kind::Hop => continue,
            Kind::ContentLength => {
                for n in value.split(|&b| b == b',') {
                    match (decimal(n.trim_ascii()), length) {
                        (Some(n), None) => length = Some(n),
                        (Some(n), Some(earlier)) if n == earlier => {}
                        _ => bad_length = true,
                    }
                }
            }
            Kind::TransferEncoding => {
                transfer = Some(
                    value
                        .rsplit(|&b| b == b',')
                        .next()
                        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked")),
                );
            }
            Kind::Other => {}
        }
        let value = HeaderValue::from_maybe_shared(raw.slice(from..from + value.len()))
            .map_err(|_| invalid("bad header value"))?;
        headers.append(name, value);
    }
    for (start, end) in named {
        if let Ok(name) = std::str::from_utf8(&raw[start..end]) {
            headers.remove(name);
        }
    }
    let reusable = if version == Version::HTTP_11 {
        !close
    } else {
        keep_alive && !close
    };
    let no_body = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = match transfer {
        _ if no_body => Framing::Length(0),
        Some(true) => Framing::Chunked(Chunk::Size),
        Some(false) => Framing::Close,
        None if bad_length => return Err(invalid("bad Content-Length")),
        None => length.map_or(Framing::Close, Framing::Length),
    };
    // Transfer-Encoding beside a length, or in HTTP/1.0, is faulty framing: the message is
    // read as Transfer-Encoding says, and its connection closed after it (RFC 9112 section 6.1,
    // 6.3), in case the backend meant the other framing.
    let faulty =
        transfer.is_some() && (length.is_some() || bad_length || version == Version::HTTP_10);
    if transfer.is_some() {
        // Framed by Transfer-Encoding alone: a length beside it says nothing (and must not
        // reach the client).
        headers.remove(header::CONTENT_LENGTH);
    }
    Ok((framing, reusable && !faulty && framing != Framing::Close))
}

/// A response body read from its connection in the client's task, as hyper's server asks for
/// it; the connection goes back to `pool` once the body ended cleanly. A backend silent for
/// `idle_timeout` inside a body fails it (the client connection closes), so a stalled backend
/// cannot hold a client, and its connection, forever.
pub struct DirectBody {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    done: bool,
    idle_timeout: Duration,
    /// Made at the first wait for body bytes (a small body comes with its head: none), moved
    /// on after each piece.
    silence: Option<Pin<Box<tokio::time::Sleep>>>,
    progressed: bool,
}

impl DirectBody {
    /// The body framed by `head` on `conn`.
    pub fn new(conn: Conn, head: &Head, idle_timeout: Duration) -> Self {
        let done = head.framing == Framing::Length(0);
        Self {
            conn: Some(conn),
            framing: head.framing,
            keep_alive: head.keep_alive,
            done,
            idle_timeout,
            silence: None,
            progressed: false,
        }
    }

    /// Pending while the backend has been silent for less than the idle timeout.
    fn poll_silence(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let progressed = std::mem::take(&mut self.progressed);
        let timer = match &mut self.silence {
            Some(timer) => {
                if progressed {
                    timer
                        .as_mut()
                        .reset(tokio::time::Instant::now() + self.idle_timeout);
                }
                timer
            }
            None => self
                .silence
                .insert(Box::pin(tokio::time::sleep(self.idle_timeout))),
        };
        timer.as_mut().poll(cx)
    }

    /// The connection, if it can serve another request (the body ended cleanly, with nothing
    /// after it).
    pub fn reusable(&mut self) -> Option<Conn> {
        if !(self.done && self.keep_alive) {
            return None;
        }
        self.conn.take().filter(|conn| conn.buf.is_empty())
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(None));
        };
        loop {
            match &mut self.framing {
                Framing::Length(0) => {
                    self.done = true;
                    return Poll::Ready(Ok(None));
                }
                Framing::Length(left) => {
                    if conn.buf.is_empty() && ready!(conn.poll_read(cx))? == 0 {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "backend closed the connection inside a body",
                        )));
                    }
                    let take = conn
                        .buf
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= take as u64;
                    if *left == 0 {
                        self.done = true;
                    }
                    return Poll::Ready(Ok(Some(conn.buf.split_to(take).freeze())));
                }
                Framing::Close => {
                    if conn.buf.is_empty() && ready!(conn.poll_read(cx))? == 0 {
                        self.done = true;
                        return Poll::Ready(Ok(None));
                    }
                    return Poll::Ready(Ok(Some(conn.buf.split().freeze())));
                }
                Framing::Chunked(chunk) => {
                    if let Some(data) = decode_chunk(chunk, &mut conn.buf)? {
                        return Poll::Ready(Ok(Some(data)));
                    }
                    if *chunk == Chunk::Trailers(usize::MAX) {
                        self.done = true;
                        return Poll::Ready(Ok(None));
                    }
                    if ready!(conn.poll_read(cx))? == 0 {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "backend closed the connection inside a chunked body",
                        )));
                    }
                }
            }
        }
    }
}

/// Decodes what `buf` holds of a chunked body: a piece of chunk data, or `None` when more bytes
/// are needed (or the body ended: `chunk` is then `Trailers(usize::MAX)`).
fn decode_chunk(chunk: &mut Chunk, buf: &mut BytesMut) -> io::Result<Option<Bytes>> {
    loop {
        match *chunk {
            Chunk::Size => {
                let Some(nl) = find_newline(buf) else {
                    if buf.len() > MAX_LINE {
                        return Err(invalid("chunk size line too long"));
                    }
                    return Ok(None);
                };
                if nl == 0 || buf[nl - 1] != b'\r' || nl > MAX_LINE {
                    return Err(invalid("malformed chunk size line"));
                }
                let line = &buf[..nl - 1];
                let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                if digits == 0 || digits > 16 {
                    return Err(invalid("malformed chunk size"));
                }
                // After the size: optional whitespace, then extensions (ignored) or nothing.
                let rest = line[digits..].trim_ascii_start();
                if !(rest.is_empty() || rest[0] == b';') {
                    return Err(invalid("malformed chunk size line"));
                }
                let hex = std::str::from_utf8(&line[..digits]).expect("hex digits are ASCII");
                let size = u64::from_str_radix(hex, 16).map_err(|_| invalid("chunk too large"))?;
                buf.advance(nl + 1);
                *chunk = if size == 0 {
                    Chunk::Trailers(0)
                } else {
                    Chunk::Data(size)
                };
            }
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                *chunk = match left - take as u64 {
                    0 => Chunk::DataEnd,
                    left => Chunk::Data(left),
                };
                return Ok(Some(buf.split_to(take).freeze()));
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(None);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(invalid("chunk data not followed by CRLF"));
                }
                buf.advance(2);
                *chunk = Chunk::Size;
            }
            Chunk::Trailers(usize::MAX) => return Ok(None),
            Chunk::Trailers(seen) => {
                let Some(nl) = find_newline(buf) else {
                    if seen + buf.len() > MAX_TRAILERS {
                        return Err(invalid("chunked trailers too large"));
                    }
                    return Ok(None);
                };
                if nl == 0 || buf[nl - 1] != b'\r' {
                    return Err(invalid("trailer line without CRLF"));
                }
                buf.advance(nl + 1);
                *chunk = if nl == 1 {
                    Chunk::Trailers(usize::MAX)
                } else if seen + nl + 1 > MAX_TRAILERS {
                    return Err(invalid("chunked trailers too large"));
                } else {
                    Chunk::Trailers(seen + nl + 1)
                };
            }
        }
    }
}

impl Body for DirectBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let polled = match this.poll_data(cx) {
            Poll::Pending if this.poll_silence(cx).is_ready() => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "backend silent inside a response body",
            ))),
            polled => polled,
        };
        let polled = ready!(polled);
        this.progressed = true; // a piece came: the silence starts again at the next wait
        match polled {
            Ok(Some(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Ok(None) => Poll::Ready(None),
            Err(error) => {
                this.conn = None; // the framing is lost: the connection goes
                Poll::Ready(Some(Err(error)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            _ if self.done => SizeHint::with_exact(0),
            Framing::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::Pool;

    fn parse(raw: &str, head_request: bool) -> io::Result<Head> {
        let raw = Bytes::copy_from_slice(raw.as_bytes());
        assert_eq!(head_end(&raw).unwrap(), Some(raw.len()), "complete");
        let status_line = parse_status(&raw)?;
        Head::parse(
            raw,
            status_line,
            head_request,
            HeaderMap::new(),
            &mut Vec::new(),
        )
    }

    fn head(raw: &str) -> io::Result<Head> {
        parse(raw, false)
    }

    #[test]
    fn finds_newlines_anywhere() {
        for len in 0..40 {
            for at in 0..len {
                let mut bytes = vec![b'x'; len];
                bytes[at] = b'\n';
                if at + 1 < len {
                    bytes[at + 1] = b'\n';
                }
                assert_eq!(find_newline(&bytes), Some(at), "{len} {at}");
            }
            assert_eq!(find_newline(&vec![0x8a; len]), None);
        }
    }

    #[test]
    fn response_heads_and_their_framing() {
        let h =
            head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-A:  b \r\nx-a: c\r\n\r\n").unwrap();
        assert_eq!((h.status, h.version), (StatusCode::OK, Version::HTTP_11));
        assert_eq!(h.framing, Framing::Length(12));
        assert!(h.keep_alive);
        let values: Vec<_> = h.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["b", "c"]);
        let h = head(
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
        assert!(!h.headers.contains_key(header::CONTENT_LENGTH), "TE wins");
        assert!(!h.keep_alive, "a length beside TE is faulty: not reused");
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").unwrap();
        assert_eq!(
            (h.framing, h.keep_alive),
            (Framing::Chunked(Chunk::Size), true)
        );
        let h = head(concat!(
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n",
            "connection: keep-alive\r\n\r\n"
        ))
        .unwrap();
        assert!(!h.keep_alive, "TE in HTTP/1.0 is faulty: not reused");
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n").unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = head("HTTP/1.1 200\r\n\r\n").unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = head("HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n").unwrap();
        assert_eq!(h.framing, Framing::Length(0));
        let h =
            head("HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\nconnection: close\r\n\r\n").unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(7), false));
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n").unwrap();
        assert!(!h.keep_alive, "HTTP/1.0 closes by default");
        let h =
            head("HTTP/1.0 200 OK\r\ncontent-length: 1\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
        assert!(h.keep_alive);
        let h = parse("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true).unwrap();
        assert_eq!(h.framing, Framing::Length(0), "HEAD");
        assert_eq!(h.headers[header::CONTENT_LENGTH], "9");
        // Hop-by-hop headers are left out, with those Connection names.
        let h = head(concat!(
            "HTTP/1.1 200 OK\r\nx-hop: 1\r\nConnection: keep-alive, X-Hop, x-later\r\n",
            "Keep-Alive: timeout=5\r\nx-later: 2\r\nx-end: 3\r\nTrailer: x-t\r\n",
            "upgrade: h2c\r\ncontent-length: 0\r\n\r\n"
        ))
        .unwrap();
        let mut names: Vec<_> = h.headers.keys().map(|n| n.as_str()).collect();
        names.sort();
        assert_eq!(names, ["content-length", "x-end"]);
        assert!(h.keep_alive);
    }

    #[test]
    fn remembered_names_follow_each_response() {
        let mut names = Vec::new();
        for (raw, expected) in [
            (
                "HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n",
                ["x-a", "content-length"],
            ),
            (
                "HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n",
                ["x-a", "content-length"],
            ),
            (
                "HTTP/1.1 200 OK\r\nx-b: 1\r\nContent-Length: 0\r\n\r\n",
                ["x-b", "content-length"],
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A: 1\r\n\r\n",
                ["content-length", "x-a"],
            ),
        ] {
            let raw = Bytes::from_static(raw.as_bytes());
            let mut headers = HeaderMap::new();
            parse_headers(
                raw,
                Version::HTTP_11,
                StatusCode::OK,
                false,
                &mut headers,
                &mut names,
            )
            .unwrap();
            let keys: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
            assert_eq!(keys, expected);
        }
    }

    #[test]
    fn malformed_response_heads_are_refused() {
        for bad in [
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 20 OK\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 abc OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\n: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx-a: a\x00b\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
        ] {
            assert!(head(bad).is_err(), "{bad:?}");
        }
        assert!(head_end(b"HTTP/1.1 200 OK\nx: y\n\n").is_err(), "bare LF");
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\nx: y\r\n").unwrap(), None);
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "x: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(head_end(many.as_bytes()).is_err());
    }

    fn decode_all(input: &[u8], step: usize) -> io::Result<(Vec<u8>, bool)> {
        let mut chunk = Chunk::Size;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(data) = decode_chunk(&mut chunk, &mut buf)? {
                out.extend_from_slice(&data);
            }
        }
        Ok((out, chunk == Chunk::Trailers(usize::MAX) && buf.is_empty()))
    }

    #[test]
    fn chunked_bodies_decode_in_any_split() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n \r\nA  \r\n0123456789\r\n0\r\nx-t: 1\r\n\r\n";
        for step in 1..body.len() {
            let (out, done) = decode_all(body, step).unwrap();
            assert_eq!(out, b"hello 0123456789", "step {step}");
            assert!(done);
        }
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n",
            b"5\r\nhelloXX",
            b"5 5\r\n",
            b"11111111111111111\r\n",
            b"-1\r\n",
        ] {
            assert!(
                decode_all(bad, bad.len()).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"1;".as_slice(), &[b'x'; MAX_LINE + 10]].concat();
        assert!(decode_all(&long, long.len()).is_err());
    }

    /// A backend answering the requests of one connection with `answers`, in turn, then
    /// closing it; it reports each request head it read.
    async fn backend(
        answers: Vec<&'static [u8]>,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    ) {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            for answer in answers {
                let mut head = Vec::new();
                let mut byte = [0; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    assert_eq!(stream.read(&mut byte).await.unwrap(), 1);
                    head.push(byte[0]);
                }
                tx.send(head).unwrap();
                stream.write_all(answer).await.unwrap();
            }
        });
        (addr, rx)
    }

    async fn body_of(conn: Conn, head: &Head) -> (Vec<u8>, Option<Conn>) {
        let mut body = DirectBody::new(conn, head, Duration::from_secs(300));
        let mut out = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            out.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        assert!(body.is_end_stream());
        (out, body.reusable())
    }

    #[tokio::test]
    async fn exchanges_one_after_another_on_one_connection() {
        let (addr, mut seen) = backend(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\nuntil the end",
        ])
        .await;
        let mut conn = connect(addr, Duration::from_secs(2), &Traffic::default())
            .await
            .unwrap();
        for (method, path, expected, reusable) in [
            (Method::GET, "/one", &b"hello"[..], true),
            (Method::GET, "/two", b"abcde", true),
            (Method::HEAD, "/three", b"", true),
            (Method::DELETE, "/four", b"", true),
            (Method::GET, "/five", b"until the end", false),
        ] {
            let mut request = Request::new(RequestBody::Empty);
            *request.method_mut() = method.clone();
            *request.uri_mut() = path.parse().unwrap();
            request
                .headers_mut()
                .insert("x-n", HeaderValue::from_static("1"));
            let head = conn.exchange(&mut request, &[]).await.unwrap();
            let sent = format!("{method} {path} HTTP/1.1\r\nx-n: 1\r\n\r\n");
            assert_eq!(seen.recv().await.unwrap(), sent.as_bytes());
            assert!(request.headers().is_empty(), "the map went to the response");
            let (body, again) = body_of(conn, &head).await;
            assert_eq!(body, expected, "{path}");
            assert_eq!(again.is_some(), reusable, "{path}");
            match again {
                Some(next) => conn = next,
                None => break,
            }
        }
    }

    #[tokio::test]
    async fn broken_answers_fail_the_exchange() {
        for (answer, kind) in [
            (
                &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"[..],
                "body",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX",
                "body",
            ),
            (b"HTTP/1.1 200 OK\r\nContent", "sent"),
            (b"", "sent"),
            (b"garbage\r\n\r\n", "invalid"),
            (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "invalid"),
        ] {
            let (addr, _seen) = backend(vec![answer]).await;
            let mut conn = connect(addr, Duration::from_secs(2), &Traffic::default())
                .await
                .unwrap();
            let mut request = Request::new(RequestBody::Empty);
            *request.uri_mut() = "/".parse().unwrap();
            request
                .headers_mut()
                .insert("x-n", HeaderValue::from_static("1"));
            let result = conn.exchange(&mut request, &[]).await;
            match (kind, result) {
                ("body", Ok(head)) => {
                    let mut body = DirectBody::new(conn, &head, Duration::from_secs(300));
                    let mut failed = false;
                    while let Some(frame) =
                        std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                    {
                        failed |= frame.is_err();
                    }
                    assert!(failed && body.reusable().is_none(), "{answer:?}");
                }
                ("sent", Err(Error::Sent(_))) => {
                    assert!(!request.headers().is_empty(), "intact for a retry");
                }
                ("invalid", Err(Error::Invalid(_))) => {}
                (kind, result) => panic!("{answer:?}: {kind} {:?}", result.err()),
            }
        }
    }

    /// Arbitrary bytes (from pieces that matter to the parsers) never panic them.
    #[test]
    fn parsers_take_any_bytes() {
        const PIECES: &[&[u8]] = &[
            b"HTTP/1.1 ",
            b"HTTP/1.0 ",
            b"200",
            b"101",
            b"204",
            b" OK",
            b"\r\n",
            b"\n",
            b"\r",
            b":",
            b" ",
            b"\t",
            b"a",
            b"content-length",
            b"transfer-encoding",
            b"connection",
            b"chunked",
            b"close",
            b",",
            b"0",
            b"5",
            b"f",
            b";",
            b"\x00",
            b"\xff",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut parsed = 0;
        let mut names = Vec::new(); // shared by every input, like a connection's
        for _ in 0..20_000 {
            let mut input = Vec::new();
            if next() % 2 == 0 {
                input.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            }
            for _ in 0..next() % 40 {
                input.extend_from_slice(PIECES[(next() % PIECES.len() as u64) as usize]);
            }
            if next() % 2 == 0 {
                input.extend_from_slice(b"\r\n\r\n");
            }
            if let Ok(Some(len)) = head_end(&input) {
                let raw = Bytes::copy_from_slice(&input[..len]);
                if let Ok((version, status)) = parse_status(&raw) {
                    let head = parse_headers(
                        raw,
                        version,
                        status,
                        false,
                        &mut HeaderMap::new(),
                        &mut names,
                    );
                    parsed += usize::from(head.is_ok());
                }
            }
            let _ = decode_all(&input, 1 + (next() % 7) as usize);
        }
        assert!(parsed > 100, "{parsed} heads parsed");
    }

    /// Every seed of the `response` fuzz corpus through a real exchange: `ok-*` answers are
    /// read to their end, `bad-*` ones fail the exchange (a 502 for the client).
    #[tokio::test]
    async fn response_seed_corpus() {
        use tokio::io::AsyncReadExt;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/response");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut wrong = Vec::new();
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("the seed corpus") {
            let path = entry.unwrap().path();
            let input = std::fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let (&flags, answer) = input.split_first().unwrap();
            let answer = answer.to_vec();
            let (proxy_side, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
            let mut backend_side = accepted.unwrap().0;
            let backend = tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 512];
                while !head.ends_with(b"\r\n\r\n") {
                    let n = backend_side.read(&mut byte).await.unwrap();
                    head.extend_from_slice(&byte[..n]);
                }
                backend_side.write_all(&answer).await.unwrap();
                backend_side.shutdown().await.unwrap();
                let _ = backend_side.read_to_end(&mut Vec::new()).await;
            });
            let result = replay_exchange(proxy_side.unwrap(), flags & 1 == 1).await;
            backend.await.unwrap();
            let ok = result.is_ok();
            if name.starts_with("ok-") != ok
                || !(name.starts_with("ok-") || name.starts_with("bad-"))
            {
                wrong.push(format!("{name}: {result:?}"));
            }
            seen += 1;
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
        assert!(seen >= 10, "{seen} seeds in {}", dir.display());
    }

    #[test]
    fn request_heads_go_in_origin_form() {
        let mut request = Request::new(RequestBody::Empty);
        *request.uri_mut() = "http://app.example/a/b?c=d".parse().unwrap();
        request
            .headers_mut()
            .insert(header::HOST, HeaderValue::from_static("app.example"));
        let mut head = b"left from before".to_vec();
        let name = HeaderName::from_static("x-added");
        let value = HeaderValue::from_static("1");
        encode_head(&request, &[(&name, &value)], &mut head);
        assert_eq!(
            head,
            b"GET /a/b?c=d HTTP/1.1\r\nhost: app.example\r\nx-added: 1\r\n\r\n"
        );
        let line = |method: Method, target: &str| {
            let mut request = Request::new(RequestBody::Empty);
            *request.method_mut() = method;
            *request.uri_mut() = target.parse().unwrap();
            let mut head = Vec::new();
            encode_head(&request, &[], &mut head);
            let end = head.iter().position(|&b| b == b'\r').unwrap();
            String::from_utf8(head[..end].to_vec()).unwrap()
        };
        // An absolute form with a query and no path still has a path.
        assert_eq!(
            line(Method::GET, "http://app.example?x=1"),
            "GET /?x=1 HTTP/1.1"
        );
        assert_eq!(line(Method::GET, "http://app.example"), "GET / HTTP/1.1");
        assert_eq!(line(Method::GET, "/s?a=1&b"), "GET /s?a=1&b HTTP/1.1");
        // OPTIONS about the whole server; `http://app.example` parses as `http://app.example/`.
        assert_eq!(line(Method::OPTIONS, "*"), "OPTIONS * HTTP/1.1");
        assert_eq!(
            line(Method::OPTIONS, "http://app.example"),
            "OPTIONS / HTTP/1.1"
        );
        assert_eq!(
            line(Method::OPTIONS, "http://app.example/p"),
            "OPTIONS /p HTTP/1.1"
        );
    }

    /// Connections idle too long are closed when another one comes back, not only when one
    /// is taken (a backend that gets no more requests holds no stale sockets).
    #[tokio::test]
    async fn returned_connections_close_expired_ones() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepting = tokio::spawn(async move {
            let mut kept = Vec::new();
            for _ in 0..3 {
                kept.push(listener.accept().await.unwrap().0);
            }
            kept
        });
        let pool = Pool::default();
        let hour = Duration::from_secs(3600);
        for _ in 0..2 {
            pool.put(
                connect(addr, hour, &Traffic::default()).await.unwrap(),
                hour,
            );
        }
        assert_eq!(pool.idle(), 2);
        // Returned with a zero idle limit: both older ones have expired by it.
        pool.put(
            connect(addr, hour, &Traffic::default()).await.unwrap(),
            Duration::ZERO,
        );
        assert_eq!(pool.idle(), 1);
        drop(accepting.await.unwrap());
    }
}
