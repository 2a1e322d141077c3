//! The traffic path: accept loop, routing of each request, forwarding, WebSocket tunnels.
//!
//! Contracts:
//! - Each request is routed by, in order: a valid sticky cookie naming a backend that still
//!   keeps sessions; the SockJS session id in the path; least connections. When the cookie was
//!   missing, invalid or named a dead backend, the response sets a new cookie.
//! - Bodies stream in both directions without buffering; upstream keep-alive connections are
//!   pooled per backend ([`upstream`]). A backend counts as busy from routing until its response body ends (or its tunnel
//!   closes).
//! - An upgrade request with a body gets 400 (the body would be read as tunnel bytes).
//! - WebSocket upgrades get their own upstream connection and become a byte tunnel that closes
//!   after `idle_timeout` without traffic, or at its slot in its backend's drain window or the
//!   proxy's shutdown window ([`super::closing`]: spread over the window, all gone by its
//!   deadline). Tunnels hold no buffer while idle ([`super::tunnel`]). The rebalancer may close
//!   single tunnels of a busy backend, and a WebSocket upgrade whose cookie names such a backend
//!   (or a draining one) goes by least connections instead ([`super::rebalance`]).
//! - A failed upstream connect takes the backend down (passive check) and a request without a
//!   body is retried once on a freshly routed backend. An idempotent request without a body
//!   whose pooled connection closes under it is retried once on a new connection.
//! - At most `max_connections` client connections are served, and at most
//!   `max_connections_per_client` from one client address ([`client`]: the TCP peer, IPv6 by
//!   /64); more are closed unanswered. With `trusted_hops` (an edge in front, whose connections
//!   carry many clients) the per-client cap counts WebSockets by the client address the edge
//!   reported instead, and one over it gets 429.
//! - `X-Forwarded-For` lines are joined in order (RFC 9110 section 5.3) and the peer appended
//!   when `trusted_hops` says an edge is in front (its `X-Forwarded-Proto` and
//!   `X-Forwarded-Host` are kept too); without one, whatever the client sent in them is
//!   replaced. The rate limit counts by the same client address.
//! - A client that does not send a whole request head within `header_timeout` (from the
//!   connection's start or the end of the previous response) is disconnected ([`HeadWatch`]);
//!   oversized heads get 431 from hyper; a client that leaves a response unread for
//!   `write_timeout` is disconnected ([`WriteDeadline`]), which frees the upstream connection.
//!   Each connection keeps its timers for its life: no timer is made per request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backend::{ActiveGuard, Backend, TunnelGuard};
use super::balancer::Balancer;
use super::client::{self, Slot, Slots};
use super::closing::{self, Closer};
use super::config::ProxyArgs;
use super::cookie::{self, CookieSigner};
use super::deadline::{HeadDeadline, HeadWatch, StallBudget, Timer, WriteDeadline};
use super::metrics::{Close, Handshake, Metrics, Reason, Refusal, Traffic, WebSocketMetrics};
use super::ratelimit::RateLimiter;
use super::rebalance;
use super::sockjs;
use super::tls::ReloadingAcceptor;
use super::tunnel::Ended;
use super::upstream::{self, RequestBody};

const X_FORWARDED_FOR: HeaderName = client::X_FORWARDED_FOR;
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Settings of the traffic path.
pub struct Settings {
    pub cookie_name: String,
    pub cookie_max_age: u64,
    pub cookie_secure: bool,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub upstream_idle_timeout: Duration,
    pub header_timeout: Duration,
    pub write_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// Responses stalled by clients that do not read, at most, at once.
    pub max_stalled: usize,
    /// Proxies in front whose X-Forwarded-* are believed (`--trusted-hops`).
    pub trusted_hops: u32,
    pub tls: bool,
}

impl Settings {
    /// The traffic path's settings from the proxy's flags (`tls`: whether it terminates TLS).
    pub fn from_args(args: &ProxyArgs, tls: bool) -> Self {
        let caps = args.connection_caps();
        Settings {
            cookie_name: args.cookie_name.clone(),
            cookie_max_age: args.cookie_max_age,
            cookie_secure: args.cookie_is_secure(),
            idle_timeout: args.idle_timeout,
            connect_timeout: args.connect_timeout,
            upstream_idle_timeout: args.upstream_idle_timeout,
            header_timeout: args.header_timeout,
            write_timeout: args.write_timeout,
            max_header_bytes: args.max_header_bytes,
            max_connections: caps.connections,
            max_connections_per_client: args.max_connections_per_client,
            max_stalled: caps.stalled,
            trusted_hops: args.trusted_hops,
            tls,
        }
    }
}

/// Shared state of the traffic path.
pub struct Proxy {
    balancer: Arc<Balancer>,
    signer: CookieSigner,
    settings: Settings,
    cookie_suffix: String,
    limiter: Option<RateLimiter>,
    metrics: Arc<Metrics>,
    proto: HeaderValue,
    /// Open connections (or, behind an edge, WebSockets) per client address.
    clients: Arc<Slots>,
    /// Client writes waiting at once (stalled responses).
    stalls: Arc<StallBudget>,
    refused_max: Counter,
    refused_client: Counter,
    evicted: Counter,
    /// TLS handshakes by [`Handshake`] (with TLS only).
    handshakes: Option<[Counter; 3]>,
    websockets: Arc<WebSocketMetrics>,
    /// The client connections open (not their tunnels), by address: at the cap, the one that
    /// has waited longest for a request head makes room for a new one.
    open: std::sync::Mutex<std::collections::HashMap<usize, std::sync::Weak<ClientInfo>>>,
    /// Cancelled on SIGTERM: connections finish their current request and close.
    pub shutdown: CancellationToken,
    /// The shutdown window: tunnels close one by one in it.
    closing: Closer,
    /// Cancelled at the shutdown deadline: tunnels left close.
    pub hard_stop: CancellationToken,
    pub tracker: TaskTracker,
}

impl Proxy {
    pub fn new(
        balancer: Arc<Balancer>,
        signer: CookieSigner,
        settings: Settings,
        limiter: Option<RateLimiter>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let cookie_suffix = format!(
            "; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
            settings.cookie_max_age,
            if settings.cookie_secure {
                "; Secure"
            } else {
                ""
            }
        );
        let proto = HeaderValue::from_static(if settings.tls { "https" } else { "http" });
        let clients = Slots::new(settings.max_connections_per_client);
        let stalls = StallBudget::new(settings.max_stalled, metrics.refused(Refusal::Stalled));
        let refused_max = metrics.refused(Refusal::MaxConnections);
        let refused_client = metrics.refused(Refusal::PerClient);
        let evicted = metrics.refused(Refusal::Evicted);
        let handshakes = settings
            .tls
            .then(|| Handshake::ALL.map(|result| metrics.handshakes(result)));
        let websockets = Arc::new(metrics.websockets());
        Self {
            balancer,
            signer,
            settings,
            cookie_suffix,
            limiter,
            metrics,
            proto,
            clients,
            stalls,
            refused_max,
            refused_client,
            evicted,
            handshakes,
            websockets,
            open: Default::default(),
            shutdown: CancellationToken::new(),
            closing: Closer::default(),
            hard_stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    /// Starts the shutdown: connections stop being accepted and finish their current request,
    /// and the open tunnels close one by one over `window`.
    pub fn begin_shutdown(&self, window: Duration) {
        let open = self.balancer.backends().iter().map(|b| b.tunnels()).sum();
        self.closing.open(window, open);
        self.shutdown.cancel();
    }

    /// Forgets rate-limit buckets of clients gone quiet.
    pub fn prune_rate_limits(&self, now: Instant) {
        if let Some(limiter) = &self.limiter {
            limiter.prune(now);
        }
    }

    /// Accepts connections on `listener` until shutdown.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<Arc<ReloadingAcceptor>>,
    ) {
        let slots = Arc::new(tokio::sync::Semaphore::new(self.settings.max_connections));
        loop {
            let accepted = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Over a cap: closed at once, so the descriptor is back before the next accept.
            // Behind an edge every connection comes from it: its WebSockets are counted by
            // client instead (`handle`).
            let client_slot = if self.settings.trusted_hops == 0 {
                let Some(slot) = self.clients.acquire(client::key(peer.ip())) else {
                    self.refused_client.inc();
                    drop(stream);
                    continue;
                };
                slot
            } else {
                Slot::none()
            };
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => match self.evict_waiting() {
                    Some(slot) => slot,
                    None => {
                        self.refused_max.inc();
                        drop(stream);
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            // Unsent bytes queued in the kernel stay small (the window in flight is not
            // limited): a client that stops reading holds little of the proxy's memory.
            set_unsent_limit(&stream, CLIENT_UNSENT_BYTES);
            let proxy = self.clone();
            let tls = tls.as_ref().map(|t| t.acceptor());
            // Held for the connection's life, and its tunnel's if it upgrades.
            let held = Held(Some((slot, client_slot)));
            self.tracker.spawn(async move {
                match tls {
                    None => proxy.serve_held(stream, peer, held).await,
                    Some(acceptor) => {
                        let handshake = acceptor.accept(stream);
                        let counted = |result: Handshake| {
                            if let Some(counters) = &proxy.handshakes {
                                counters[result as usize].inc(); // `ALL` is in order
                            }
                        };
                        match tokio::time::timeout(proxy.settings.header_timeout, handshake).await {
                            Ok(Ok(stream)) => {
                                counted(Handshake::Ok);
                                proxy.serve_held(stream, peer, held).await
                            }
                            Ok(Err(error)) => {
                                counted(Handshake::Failed);
                                tracing::debug!(%error, %peer, "TLS handshake failed")
                            }
                            Err(_) => {
                                counted(Handshake::TimedOut);
                                tracing::debug!(%peer, "TLS handshake timed out")
                            }
                        }
                    }
                }
            });
        }
    }

    /// Serves one client connection (TCP, TLS, or bytes in memory for `replay`, a layer above).
    pub async fn serve_connection<S>(self: Arc<Self>, stream: S, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_held(stream, peer, Held(None)).await;
    }

    /// Serves one client connection holding `held` of the caps (passed on to its tunnel).
    async fn serve_held<S>(self: Arc<Self>, stream: S, peer: SocketAddr, held: Held)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let evictable = held.0.is_some();
        let mut client = ClientInfo::new(peer, self.settings.header_timeout);
        client.held = std::sync::Mutex::new(held);
        let client = Arc::new(client);
        let key = Arc::as_ptr(&client) as usize;
        if evictable {
            let mut open = self.open.lock().expect("open connections lock");
            open.insert(key, Arc::downgrade(&client));
        }
        // Out of the map when the connection ends, however it ends.
        let _listed = Listed(&self.open, evictable.then_some(key));
        // The first head is due within the header timeout; each next one within it after the
        // previous response ended (hyper's own header timer would be a new timer per request).
        client.head.start();
        let head_timeout = HeadWatch::new(client.head.clone());
        let proxy = self.clone();
        let for_service = client.clone();
        let service = hyper::service::service_fn(move |req| {
            let proxy = proxy.clone();
            let client = for_service.clone();
            async move {
                client.head.stop();
                client
                    .served
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                let response = proxy.handle(req, &client).await;
                Ok::<_, Infallible>(response.map(|body| NextHead { body, client }))
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size(self.settings.max_header_bytes.max(8192))
            // A response head and its (mostly small) body in one buffer: one plain send, as
            // the upstream side does, instead of a writev of two pieces.
            .writev(false);
        let stream = WriteDeadline::new(stream, self.settings.write_timeout, self.stalls.clone());
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut conn = std::pin::pin!(conn);
        let mut head_timeout = std::pin::pin!(head_timeout);
        // Polled only when it fired: its waiter list's lock is shared by every connection.
        let shutdown = closing::PolledOnWake::new(self.shutdown.cancelled());
        // Biased: the head watch is polled after the connection, which may have started a wait.
        tokio::select! {
            biased;
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, %peer, "client connection ended with an error");
                }
                return;
            }
            _ = head_timeout.as_mut() => {
                tracing::debug!(%peer, "request head timed out");
                return;
            }
            _ = shutdown => conn.as_mut().graceful_shutdown(),
        }
        tokio::select! {
            biased;
            _ = conn => {}
            _ = head_timeout => {}
        }
    }

    /// Routes and forwards one request; never fails (errors become 4xx/5xx answers).
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        client: &ClientInfo,
    ) -> Response<ProxyBody> {
        if let Some(limiter) = &self.limiter
            && !limiter.allow(self.client_key(req.headers(), client), Instant::now())
        {
            self.metrics.reject(Reason::RateLimited);
            let mut response = local(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded\n");
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
        if req.method() == Method::CONNECT {
            // A 2xx answer would turn the backend connection into a tunnel; Meteor has no use
            // for one, and a proxy in front of an app is no forward proxy.
            return local(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not served\n");
        }
        let upgrade = is_upgrade(req.headers());
        if upgrade && !req.body().is_end_stream() {
            // The tunnel starts right after the head: a body would reach the backend as the
            // first tunnelled bytes (or, with its length headers, be waited for forever).
            // WebSocket handshakes never have one.
            return local(StatusCode::BAD_REQUEST, "an upgrade request has no body\n");
        }
        if upgrade {
            // Behind an edge a WebSocket is the connection a client holds: counted by the
            // client address the edge reported.
            let slot = if self.settings.trusted_hops > 0 {
                let Some(slot) = self.clients.acquire(self.client_key(req.headers(), client))
                else {
                    self.refused_client.inc();
                    return local(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too many connections from this client\n",
                    );
                };
                slot
            } else {
                Slot::none()
            };
            let hops = self.settings.trusted_hops;
            prepare_headers(req.headers_mut(), client, &self.proto, upgrade, hops);
            let started = Instant::now();
            let Some((backend, set_cookie)) = self.route(&req, client) else {
                self.metrics.reject(Reason::NoBackend);
                return local(StatusCode::SERVICE_UNAVAILABLE, "no backend available\n");
            };
            // A new WebSocket is a session of its own: it need not follow its cookie to a
            // draining backend, or to one holding more than its share after a scale-up.
            let backend = rebalance::steer(&self.balancer, backend, !set_cookie, req.uri().path());
            let outcome = self
                .forward_upgrade(&mut req, backend.enter(), slot, client)
                .await;
            let outcome = outcome.map_err(|f| (f, None));
            return self.finish(outcome, &backend, set_cookie, started);
        }
        // Written by the upstream client after the request's headers, not inserted in the map.
        let hops = self.settings.trusted_hops;
        let added = forwarded(req.headers_mut(), client, &self.proto, false, hops);
        let (parts, body) = req.into_parts();
        // An empty body is sent as such, so the request can be retried after a failed connect.
        let body = if body.is_end_stream() {
            RequestBody::Empty
        } else {
            RequestBody::Stream(body)
        };
        let mut request = Request::from_parts(parts, body);
        let started = Instant::now();
        let mut attempts = 2;
        loop {
            attempts -= 1;
            let Some((backend, set_cookie)) = self.route(&request, client) else {
                self.metrics.reject(Reason::NoBackend);
                return local(StatusCode::SERVICE_UNAVAILABLE, "no backend available\n");
            };
            let guard = backend.enter();
            let outcome = self.forward(request, &added, guard, client, started).await;
            match outcome {
                Err((Failure::Connect, Some(unsent))) if attempts > 0 => {
                    backend.connect_failed();
                    request = unsent;
                }
                outcome => return self.finish(outcome, &backend, set_cookie, started),
            }
        }
    }

    /// Closes the connection that has waited longest for a request head and returns its
    /// place under the cap: one still waiting for its first head (a slowloris, most likely)
    /// before an idle keep-alive connection that was served (its client reconnects); None if
    /// no connection waits for a head (requests in flight and WebSockets are never closed).
    /// Only called at the cap: the scan is over every open connection.
    fn evict_waiting(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let open = self.open.lock().expect("open connections lock");
        let mut oldest: Option<((bool, tokio::time::Instant), Arc<ClientInfo>)> = None;
        for client in open.values().filter_map(std::sync::Weak::upgrade) {
            let served = client.served.load(std::sync::atomic::Ordering::Relaxed);
            if let Some(due) = client.head.due()
                && oldest.as_ref().is_none_or(|(first, _)| (served, due) < *first)
                // Not evicted already (its task has not run since) nor tunnelling.
                && client.held.try_lock().is_ok_and(|held| held.0.is_some())
            {
                oldest = Some(((served, due), client));
            }
        }
        drop(open);
        let (_, victim) = oldest?;
        let (permit, _client_slot) = victim.held.try_lock().ok()?.0.take()?;
        victim.head.evict();
        self.evicted.inc();
        Some(permit)
    }

    /// The rate-limit and connection-cap key of a request's client: its connection's peer, or
    /// behind an edge the address the edge reported ([`client::trusted_ip`]).
    fn client_key(&self, headers: &HeaderMap, client: &ClientInfo) -> std::net::IpAddr {
        match self.settings.trusted_hops {
            0 => client.key,
            hops => client::key(client::trusted_ip(headers, hops, client.peer.ip())),
        }
    }

    /// The answer for a forwarding outcome, with a new sticky cookie if the client needs one.
    /// Counted in the backend's request durations (from `started`) now, unless its body comes
    /// from the backend's connection ([`Direct`], counted when it ends).
    fn finish(
        &self,
        outcome: Result<Response<ProxyBody>, (Failure, Option<Request<RequestBody>>)>,
        backend: &Backend,
        set_cookie: bool,
        started: Instant,
    ) -> Response<ProxyBody> {
        let response = match outcome {
            Ok(mut response) => {
                if set_cookie && let Some(value) = self.sticky_cookie(backend) {
                    response.headers_mut().append(header::SET_COOKIE, value);
                }
                if let ProxyBody::Direct(_) = response.body() {
                    return response;
                }
                response
            }
            Err((Failure::Connect, _)) => {
                backend.connect_failed();
                local(StatusCode::BAD_GATEWAY, "backend unavailable\n")
            }
            Err((Failure::Upstream, _)) => {
                backend.metrics.upstream_errors.inc();
                local(StatusCode::BAD_GATEWAY, "backend error\n")
            }
            Err((Failure::Timeout, _)) => {
                backend.metrics.upstream_errors.inc();
                local(StatusCode::GATEWAY_TIMEOUT, "backend timed out\n")
            }
        };
        let status = response.status().as_u16();
        backend.metrics.answered(status, started.elapsed());
        response
    }

    /// The `Set-Cookie` value naming `backend`, signed at most once a second per backend.
    fn sticky_cookie(&self, backend: &Backend) -> Option<HeaderValue> {
        let now = unix_now();
        let mut cache = backend.cookie_cache.lock().expect("cookie cache lock");
        if let Some((signed, value)) = cache.as_ref()
            && *signed == now
        {
            return Some(value.clone());
        }
        let value = HeaderValue::try_from(format!(
            "{}={}{}",
            self.settings.cookie_name,
            self.signer.sign(&backend.id, now),
            self.cookie_suffix
        ))
        .ok()?;
        *cache = Some((now, value.clone()));
        Some(value)
    }

    /// The backend for `req`, and whether the client needs a (new) sticky cookie.
    fn route<B>(&self, req: &Request<B>, client: &ClientInfo) -> Option<(Arc<Backend>, bool)> {
        let session = sockjs::session_id(req.uri().path());
        let from_cookie = req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| cookie::find(v, &self.settings.cookie_name))
            .and_then(|v| {
                self.signer
                    .verify_cached(&client.cookie, v, unix_now(), |id| {
                        self.balancer.existing(id)
                    })
            });
        if let Some(backend) = from_cookie {
            if let Some(session) = session {
                self.balancer.remember(session, &backend.id, Instant::now());
            }
            return Some((backend, false));
        }
        let backend = match session {
            Some(session) => self.balancer.for_session(session, Instant::now()),
            None => self.balancer.pick(),
        }?;
        Some((backend, true))
    }

    /// Sends `request` on a pooled (or new) connection to the guard's backend. A request that
    /// was never sent comes back with the failure, for a retry elsewhere.
    async fn forward(
        &self,
        mut request: Request<RequestBody>,
        added: &Forwarded,
        guard: ActiveGuard,
        client: &ClientInfo,
        started: Instant,
    ) -> Result<Response<ProxyBody>, (Failure, Option<Request<RequestBody>>)> {
        let backend = &guard.0;
        let (added, count) = added.headers();
        let added = &added[..count];
        // Set once a pooled connection closed under a sent request: retry on a new one.
        let mut fresh = false;
        loop {
            let pooled = if fresh {
                None
            } else {
                backend.pool.take(self.settings.upstream_idle_timeout)
            };
            let (mut conn, idle) = match pooled {
                Some((conn, idle)) => (conn, Some(idle)),
                None => {
                    let timeout = self.settings.connect_timeout;
                    let traffic = &backend.metrics.traffic;
                    match upstream::connect(backend.addr, timeout, traffic).await {
                        Ok(conn) => (conn, None),
                        Err(_) => return Err((Failure::Connect, Some(request))),
                    }
                }
            };
            let reused = idle.is_some();
            let retry = idle.is_some_and(|idle| idle >= upstream::RETRY_AFTER_IDLE)
                && upstream::retryable(&request);
            // The exchange runs here, in the client's task: no task or channel per request.
            let due = tokio::time::Instant::now() + self.settings.idle_timeout;
            let exchanged = client
                .response_timer
                .run(due, conn.exchange(&mut request, added))
                .await
                .ok_or((Failure::Timeout, None))?;
            match exchanged {
                Ok(head) => {
                    let body = upstream::DirectBody::new(conn, &head, self.settings.idle_timeout);
                    let max_idle = self.settings.upstream_idle_timeout;
                    let direct = Direct {
                        body,
                        guard,
                        max_idle,
                        started,
                        status: head.status.as_u16(),
                    };
                    let mut response = Response::new(ProxyBody::Direct(direct));
                    *response.status_mut() = head.status;
                    *response.version_mut() = head.version;
                    *response.headers_mut() = head.headers; // hop-by-hop headers left out
                    return Ok(response);
                }
                // A pooled connection the backend had closed: try another one.
                Err(upstream::Error::Unsent(_)) if reused => {}
                Err(upstream::Error::Unsent(_)) => return Err((Failure::Connect, Some(request))),
                // Closed as the request went out (a backend's keep-alive timeout).
                Err(upstream::Error::Sent(error)) if retry => {
                    tracing::debug!(%error, backend = %backend.id, "pooled connection closed under a request; retrying");
                    fresh = true;
                }
                Err(upstream::Error::Sent(error) | upstream::Error::Invalid(error)) => {
                    tracing::debug!(%error, backend = %backend.id, "upstream request failed");
                    return Err((Failure::Upstream, None));
                }
            }
        }
    }

    /// Forwards a WebSocket (or other) upgrade on a dedicated upstream connection; on 101,
    /// tunnels bytes both ways in a task of its own.
    async fn forward_upgrade(
        &self,
        req: &mut Request<Incoming>,
        guard: ActiveGuard,
        slot: Slot,
        client: &ClientInfo,
    ) -> Result<Response<ProxyBody>, Failure> {
        let backend = guard.0.clone();
        let stream = upstream::open(backend.addr, self.settings.connect_timeout)
            .await
            .map_err(|_| Failure::Connect)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| Failure::Connect)?;
        tokio::spawn(conn.with_upgrades());
        let mut upstream = Request::new(RequestBody::Empty);
        *upstream.method_mut() = req.method().clone();
        *upstream.uri_mut() = req
            .uri()
            .path_and_query()
            .map(|pq| Uri::from(pq.clone()))
            .unwrap_or_else(|| Uri::from_static("/"));
        *upstream.headers_mut() = std::mem::take(req.headers_mut());
        // Only an empty body gets here (see `handle`); say so exactly.
        upstream.headers_mut().remove(header::CONTENT_LENGTH);
        upstream.headers_mut().remove(header::TRANSFER_ENCODING);
        let mut response =
            tokio::time::timeout(self.settings.idle_timeout, sender.send_request(upstream))
                .await
                .map_err(|_| Failure::Timeout)?
                .map_err(|_| Failure::Upstream)?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            let (mut parts, body) = response.into_parts();
            strip_hop_headers(&mut parts.headers);
            let body = ProxyBody::Upstream(Upstream {
                body,
                sender: None,
                finished: false,
                guard,
            });
            return Ok(Response::from_parts(parts, body));
        }
        let from_client = hyper::upgrade::on(req);
        let from_backend = hyper::upgrade::on(&mut response);
        // The client connection becomes the tunnel: it keeps counting against the caps.
        let held = std::mem::take(&mut *client.held.lock().expect("held lock"));
        let idle = self.settings.idle_timeout;
        let hard_stop = self.hard_stop.clone();
        let windows = [backend.closing.follow(), self.closing.follow()];
        let websockets = self.websockets.clone();
        self.tracker.spawn(async move {
            let (Ok(client), Ok(upstream)) = tokio::join!(from_client, from_backend) else {
                return;
            };
            websockets.opened.inc();
            let mut open = TunnelGuard::new(&backend);
            let closed = async {
                tokio::select! {
                    window = closing::slot(windows) => {
                        if window == 0 { Close::Drain } else { Close::Shutdown }
                    }
                    // Whatever is left at a deadline (slots end by it; these are the backstop).
                    () = backend.drained.cancelled() => Close::Drain,
                    () = hard_stop.cancelled() => Close::Shutdown,
                    // Chosen to move to an emptier backend (`rebalance`).
                    () = open.moved() => Close::Rebalance,
                }
            };
            let traffic = &backend.metrics.traffic;
            let reason = tokio::select! {
                ended = tunnel(client, upstream, idle, traffic) => ended,
                reason = closing::PolledOnWake::new(closed) => reason,
            };
            websockets.closed(reason);
            drop((guard, slot, held));
        });
        let (parts, _) = response.into_parts();
        Ok(Response::from_parts(
            parts,
            ProxyBody::Local(Full::default()),
        ))
    }
}

/// Answers every request on `listener` with a permanent redirect to the same URL over HTTPS.
pub async fn serve_redirect(listener: TcpListener, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                Ok::<_, Infallible>(redirect_to_https(&req))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn redirect_to_https<B>(req: &Request<B>) -> Response<ProxyBody> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| match h.strip_prefix('[') {
            // An IPv6 literal keeps its brackets; any port goes (HTTPS uses the default).
            Some(rest) => rest.split_once(']').map_or(h, |(ip, _)| &h[..ip.len() + 2]),
            None => h.split(':').next().unwrap_or(h),
        });
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return local(StatusCode::BAD_REQUEST, "missing Host\n");
    };
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    match HeaderValue::try_from(format!("https://{host}{path}")) {
        Ok(location) => {
            let mut response = local(StatusCode::MOVED_PERMANENTLY, "moved to https\n");
            response.headers_mut().insert(header::LOCATION, location);
            response
        }
        Err(_) => local(StatusCode::BAD_REQUEST, "bad Host\n"),
    }
}

/// What went wrong talking to a backend.
enum Failure {
    /// Could not connect: nothing was sent, the request may be retried elsewhere.
    Connect,
    Upstream,
    Timeout,
}

/// Per client connection: the peer, its pre-rendered `X-Forwarded-For` element, the last
/// sticky cookie it sent and its deadlines.
pub struct ClientInfo {
    peer: SocketAddr,
    /// The peer's rate-limit and connection-cap key ([`client::key`]).
    key: std::net::IpAddr,
    ip: HeaderValue,
    cookie: cookie::LastCookie,
    /// The caps' slots the connection holds (passed on to its tunnel when it upgrades).
    held: std::sync::Mutex<Held>,
    /// A request head has arrived on the connection.
    served: std::sync::atomic::AtomicBool,
    /// When the next request head is due.
    head: Arc<HeadDeadline>,
    /// The wait for each response head (`idle_timeout`).
    response_timer: Timer,
}

impl ClientInfo {
    pub fn new(peer: SocketAddr, header_timeout: Duration) -> Self {
        let ip = HeaderValue::try_from(peer.ip().to_string()).expect("an IP is a header value");
        Self {
            peer,
            key: client::key(peer.ip()),
            ip,
            held: std::sync::Mutex::new(Held(None)),
            served: Default::default(),
            cookie: Default::default(),
            head: Arc::new(HeadDeadline::new(header_timeout)),
            response_timer: Timer::default(),
        }
    }
}

/// Takes a connection out of [`Proxy`]'s open connections when dropped.
struct Listed<'a>(
    &'a std::sync::Mutex<std::collections::HashMap<usize, std::sync::Weak<ClientInfo>>>,
    Option<usize>,
);

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.1 {
            self.0.lock().expect("open connections lock").remove(&key);
        }
    }
}

/// A client connection's places under `--max-connections` and `--max-connections-per-client`.
#[derive(Default)]
struct Held(
    #[allow(dead_code)] // held for their drops: the places free with the connection
    Option<(tokio::sync::OwnedSemaphorePermit, Slot)>,
);

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Drops hop-by-hop headers (keeping the upgrade pair when upgrading) and adds X-Forwarded-*.
fn prepare_headers(
    headers: &mut HeaderMap,
    client: &ClientInfo,
    proto: &HeaderValue,
    upgrade: bool,
    hops: u32,
) {
    let added = forwarded(headers, client, proto, upgrade, hops);
    headers.insert(X_FORWARDED_FOR, added.for_);
    headers.insert(X_FORWARDED_PROTO, added.proto);
    if let Some(host) = added.host {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

/// The X-Forwarded-* values the proxy sends with a request.
struct Forwarded {
    for_: HeaderValue,
    proto: HeaderValue,
    host: Option<HeaderValue>,
}

impl Forwarded {
    /// As headers for the upstream client to write after the request's own.
    fn headers(&self) -> ([(&'static HeaderName, &HeaderValue); 3], usize) {
        static NAMES: [HeaderName; 3] = [X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST];
        let host = self.host.as_ref().unwrap_or(&self.proto);
        let all = [
            (&NAMES[0], &self.for_),
            (&NAMES[1], &self.proto),
            (&NAMES[2], host),
        ];
        (all, if self.host.is_some() { 3 } else { 2 })
    }
}

/// Drops hop-by-hop headers (keeping the upgrade pair when upgrading) and every X-Forwarded-*
/// line, and returns the values to send instead. With `hops` trusted proxies in front:
/// `X-Forwarded-For` is every earlier line joined in order (RFC 9110 section 5.3: a proxy like
/// HAProxy adds a line of its own) with the peer appended, and the edge's `X-Forwarded-Proto`
/// and `X-Forwarded-Host` are kept. With none, what the client sent is not believed: the peer,
/// the protocol the client used, the `Host`.
fn forwarded(
    headers: &mut HeaderMap,
    client: &ClientInfo,
    proto: &HeaderValue,
    upgrade: bool,
    hops: u32,
) -> Forwarded {
    // One pass over the names finds what is there: a request rarely carries a hop-by-hop or
    // X-Forwarded-* header, and a lookup or removal of an absent name costs a hash and a
    // probe each.
    let mut hop = Hop::default();
    let mut host = None;
    let (mut earlier, mut old_proto, mut old_host) = (false, false, false);
    for (name, value) in headers.iter() {
        if name == header::HOST {
            host = Some(value.clone());
        } else if name == X_FORWARDED_FOR {
            earlier = true;
        } else if name == X_FORWARDED_PROTO {
            old_proto = true;
        } else if name == X_FORWARDED_HOST {
            old_host = true;
        } else {
            hop.see(name);
        }
    }
    if upgrade {
        // The upgrade pair is the point of the request; the other hop-by-hop headers go.
        hop.connection = false;
        hop.upgrade = false;
        hop.trailer = false;
    }
    hop.strip(headers);
    let mut added = Forwarded {
        for_: client.ip.clone(),
        proto: proto.clone(),
        host,
    };
    if hops > 0 {
        if earlier {
            added.for_ = joined_for(headers, &client.ip);
        }
        if old_proto && let Some(edge) = edge_proto(headers) {
            added.proto = edge;
        }
        if old_host && let Some(edge) = last_element(headers, &X_FORWARDED_HOST) {
            added.host = Some(edge);
        }
    }
    for (present, name) in [
        (earlier, &X_FORWARDED_FOR),
        (old_proto, &X_FORWARDED_PROTO),
        (old_host, &X_FORWARDED_HOST),
    ] {
        if present {
            headers.remove(name);
        }
    }
    added
}

/// Every `X-Forwarded-For` line of `headers`, in order, joined by `, ` with `ip` appended (as
/// Node joins repeated lines, so Meteor counts the same elements); `ip` alone when they hold
/// nothing.
fn joined_for(headers: &HeaderMap, ip: &HeaderValue) -> HeaderValue {
    let lines = headers.get_all(X_FORWARDED_FOR);
    let size = lines.iter().map(|l| l.len() + 2).sum::<usize>() + ip.len();
    let mut value = Vec::with_capacity(size);
    for line in lines {
        if !value.is_empty() {
            value.extend_from_slice(b", ");
        }
        value.extend_from_slice(line.as_bytes());
    }
    if value.trim_ascii().is_empty() {
        return ip.clone();
    }
    value.extend_from_slice(b", ");
    value.extend_from_slice(ip.as_bytes());
    HeaderValue::from_maybe_shared(Bytes::from(value)).unwrap_or_else(|_| ip.clone())
}

/// The last element of the last `name` line: what the nearest proxy wrote.
fn last_element(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let line = headers.get_all(name).iter().next_back()?;
    let last = line.as_bytes().rsplit(|&b| b == b',').next()?.trim_ascii();
    (!last.is_empty())
        .then(|| HeaderValue::from_bytes(last).ok())
        .flatten()
}

/// The edge's `X-Forwarded-Proto`, if it is `http` or `https`.
fn edge_proto(headers: &HeaderMap) -> Option<HeaderValue> {
    let last = last_element(headers, &X_FORWARDED_PROTO)?;
    let bytes = last.as_bytes();
    if bytes.eq_ignore_ascii_case(b"https") {
        Some(HeaderValue::from_static("https"))
    } else if bytes.eq_ignore_ascii_case(b"http") {
        Some(HeaderValue::from_static("http"))
    } else {
        None
    }
}

fn strip_hop_headers(headers: &mut HeaderMap) {
    let mut hop = Hop::scan(headers);
    hop.te = false; // a request header
    hop.strip(headers);
}

/// Which hop-by-hop headers a message carries.
#[derive(Default)]
struct Hop {
    connection: bool,
    keep_alive: bool,
    proxy_connection: bool,
    upgrade: bool,
    trailer: bool,
    te: bool,
    /// Proxy-Authorization or Proxy-Authenticate: meant for a proxy, and this one asks for
    /// none (a backend is not to see a client's proxy credentials).
    proxy_auth: bool,
}

impl Hop {
    fn scan(headers: &HeaderMap) -> Self {
        let mut hop = Hop::default();
        for name in headers.keys() {
            hop.see(name);
        }
        hop
    }

    fn see(&mut self, name: &HeaderName) {
        if name == header::CONNECTION {
            self.connection = true;
        } else if name == KEEP_ALIVE {
            self.keep_alive = true;
        } else if name == PROXY_CONNECTION {
            self.proxy_connection = true;
        } else if name == header::UPGRADE {
            self.upgrade = true;
        } else if name == header::TRAILER {
            self.trailer = true;
        } else if name == header::TE {
            self.te = true;
        } else if name == header::PROXY_AUTHORIZATION || name == header::PROXY_AUTHENTICATE {
            self.proxy_auth = true;
        }
    }

    /// Removes the headers found (with `connection`, also those it names).
    fn strip(&self, headers: &mut HeaderMap) {
        if self.connection {
            // Headers named on any Connection line are hop-by-hop too (each looked up by
            // `&str`: no allocation for the name; a name that is no header name matches none).
            let mut named = Vec::new();
            for line in headers.get_all(header::CONNECTION) {
                for name in line.as_bytes().split(|&b| b == b',') {
                    let name = name.trim_ascii();
                    if !(name.eq_ignore_ascii_case(b"keep-alive")
                        || name.eq_ignore_ascii_case(b"close")
                        || name.is_empty())
                        && let Ok(name) = std::str::from_utf8(name)
                    {
                        named.push(name.to_owned());
                    }
                }
            }
            headers.remove(header::CONNECTION);
            for name in named {
                headers.remove(name.as_str());
            }
        }
        for (present, name) in [
            (self.keep_alive, &KEEP_ALIVE),
            (self.proxy_connection, &PROXY_CONNECTION),
            (self.upgrade, &header::UPGRADE),
            (self.trailer, &header::TRAILER),
            (self.te, &header::TE),
            (self.proxy_auth, &header::PROXY_AUTHORIZATION),
            (self.proxy_auth, &header::PROXY_AUTHENTICATE),
        ] {
            if present {
                headers.remove(name);
            }
        }
    }
}

/// Unsent bytes a client socket may queue in the kernel (`TCP_NOTSENT_LOWAT`); the bytes in
/// flight, up to the client's window, come on top.
const CLIENT_UNSENT_BYTES: u32 = 16 * 1024;

/// Sets `TCP_NOTSENT_LOWAT`: a write waits while the socket holds `bytes` not yet sent, so a
/// client that stops reading stalls its response with little queued for it.
fn set_unsent_limit(stream: &TcpStream, bytes: u32) {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes at the pointer, a live `c_int`.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A response made by the proxy itself.
pub fn local(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Local(Full::new(Bytes::from_static(
        text.as_bytes(),
    ))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Copies bytes both ways until both sides close or `idle` passes with no traffic, counting
/// them in `traffic`; returns why it ended.
async fn tunnel(
    client: hyper::upgrade::Upgraded,
    upstream: hyper::upgrade::Upgraded,
    idle: Duration,
    traffic: &Traffic,
) -> Close {
    // The upstream side is always the plain TCP connection made in `forward_upgrade`.
    let Ok(upstream) = upstream.downcast::<TokioIo<TcpStream>>() else {
        tracing::error!("upgraded upstream connection is not TCP");
        return Close::Backend;
    };
    let (upstream, upstream_pending) = (upstream.io.into_inner(), upstream.read_buf);
    let result = match client.downcast::<TokioIo<WriteDeadline<TcpStream>>>() {
        // Plain TCP: read straight from the socket (bytes hyper read ahead go first).
        Ok(client) => {
            let client_pending = client.read_buf;
            // Its writes keep their deadline and count against the stall budget.
            let client = client.io.into_inner();
            let (pending, up_pending) = (client_pending, upstream_pending);
            super::tunnel::splice(client, pending, upstream, up_pending, idle, traffic).await
        }
        // TLS clients: through hyper's upgraded stream.
        Err(client) => {
            let client = TokioIo::new(client);
            let pending = upstream_pending;
            super::tunnel::splice(client, Bytes::new(), upstream, pending, idle, traffic).await
        }
    };
    let (reason, error) = match result {
        Ended::Client(error) => (Close::Client, error),
        Ended::Backend(error) => (Close::Backend, error),
        Ended::Idle => (Close::Idle, None),
    };
    if let Some(error) = error {
        tracing::debug!(%error, "tunnel ended with an error");
    }
    reason
}

/// The body of a response to the client: streamed from a backend or made locally.
pub enum ProxyBody {
    /// Read from its connection in the client's task ([`upstream::DirectBody`]).
    Direct(Direct),
    /// Through hyper's client (the answer to an upgrade request that was not upgraded).
    Upstream(Upstream),
    Local(Full<Bytes>),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A backend's response body in flight. Keeps the backend counted as busy until it ends, then
/// returns its connection to the pool (a body abandoned half-way takes its connection along).
pub struct Direct {
    body: upstream::DirectBody,
    guard: ActiveGuard,
    /// `--upstream-idle-timeout`: the pool closes connections idle this long.
    max_idle: Duration,
    /// When the request was routed, and the response's status: its request duration.
    started: Instant,
    status: u16,
}

impl Drop for Direct {
    fn drop(&mut self) {
        let metrics = &self.guard.0.metrics;
        metrics.answered(self.status, self.started.elapsed());
        if let Some(conn) = self.body.reusable() {
            self.guard.0.pool.put(conn, self.max_idle);
        }
    }
}

/// A response through hyper's client, on a connection of its own: closed with it. Keeps the
/// backend counted as busy until it ends.
pub struct Upstream {
    body: Incoming,
    sender: Option<upstream::Sender>,
    finished: bool,
    #[allow(dead_code)] // held for its drop: the backend counts as busy until then
    guard: ActiveGuard,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // Dedicated to one exchange (an upgrade request): not pooled.
        drop(self.sender.take());
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Direct(direct) => Pin::new(&mut direct.body)
                .poll_frame(cx)
                .map_err(Into::into),
            ProxyBody::Upstream(up) => {
                let frame = Pin::new(&mut up.body).poll_frame(cx);
                if let Poll::Ready(None) = frame {
                    up.finished = true;
                }
                frame.map_err(Into::into)
            }
            ProxyBody::Local(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Direct(direct) => direct.body.is_end_stream(),
            ProxyBody::Upstream(up) => up.finished || up.body.is_end_stream(),
            ProxyBody::Local(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Direct(direct) => direct.body.size_hint(),
            ProxyBody::Upstream(up) => up.body.size_hint(),
            ProxyBody::Local(full) => full.size_hint(),
        }
    }
}

/// A response body as hyper sends it: when hyper is done with it, the client connection's
/// next request head is due within the header timeout.
pub struct NextHead {
    body: ProxyBody,
    client: Arc<ClientInfo>,
}

impl Drop for NextHead {
    fn drop(&mut self) {
        self.client.head.start();
    }
}

impl Body for NextHead {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_headers_are_added_and_hop_headers_dropped() {
        let client = ClientInfo::new("192.0.2.7:5555".parse().unwrap(), Duration::from_secs(10));
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("app.example"));
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.1"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        prepare_headers(
            &mut h,
            &client,
            &HeaderValue::from_static("https"),
            false,
            1,
        );
        assert_eq!(h[X_FORWARDED_FOR], "198.51.100.1, 192.0.2.7");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_FORWARDED_HOST], "app.example");
        assert!(!h.contains_key(header::CONNECTION));
        assert!(!h.contains_key("x-secret"));
    }

    /// With nothing trusted in front (the proxy's own LoadBalancer), a client's X-Forwarded-*
    /// are not believed: the peer, the protocol it used and its `Host` replace them.
    #[test]
    fn forwarded_values_replace_the_clients() {
        let client = ClientInfo::new("192.0.2.7:5555".parse().unwrap(), Duration::from_secs(10));
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("app.example"));
        h.append(
            X_FORWARDED_FOR,
            HeaderValue::from_static("198.51.100.1, 10.0.0.1"),
        );
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.2"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(X_FORWARDED_HOST, HeaderValue::from_static("spoofed"));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        let added = forwarded(&mut h, &client, &HeaderValue::from_static("http"), false, 0);
        assert_eq!(h.len(), 1, "only Host is left: {h:?}");
        assert_eq!(added.for_, "192.0.2.7");
        assert_eq!(added.proto, "http");
        assert_eq!(added.host.as_ref().unwrap(), "app.example");
        let (headers, count) = added.headers();
        let names: Vec<_> = headers[..count].iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]
        );
    }

    /// Behind a trusted edge (issue 18, item 2): every X-Forwarded-For line counts, in order
    /// (HAProxy's `option forwardfor` adds a line of its own after the client's), and the
    /// edge's X-Forwarded-Proto (TLS ended there) and -Host are kept.
    #[test]
    fn behind_a_trusted_edge_every_forwarded_line_counts() {
        let client = ClientInfo::new("127.0.0.1:5555".parse().unwrap(), Duration::from_secs(10));
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("app.internal"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("10.1.2.3"));
        h.append(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        h.append(X_FORWARDED_PROTO, HeaderValue::from_static("HTTPS"));
        h.insert(X_FORWARDED_HOST, HeaderValue::from_static("app.example"));
        let added = forwarded(&mut h, &client, &HeaderValue::from_static("http"), false, 1);
        assert_eq!(added.for_, "6.6.6.6, 10.1.2.3, 127.0.0.1");
        assert_eq!(added.proto, "https");
        assert_eq!(added.host.as_ref().unwrap(), "app.example");
        assert_eq!(h.len(), 1, "the old lines are gone: {h:?}");
        // Meteor's clientAddress with HTTP_FORWARDED_COUNT = 2 is the edge's element, and so
        // is the proxy's own idea of the client.
        let elements: Vec<&str> = added.for_.to_str().unwrap().split(", ").collect();
        assert_eq!(elements[elements.len() - 2], "10.1.2.3");
        let mut lines = HeaderMap::new();
        lines.append(X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        lines.append(X_FORWARDED_FOR, HeaderValue::from_static("10.1.2.3"));
        let peer = client.peer.ip();
        assert_eq!(client::trusted_ip(&lines, 1, peer).to_string(), "10.1.2.3");
        // A protocol that is neither, or no line at all: the proxy's own.
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("gopher"));
        let added = forwarded(&mut h, &client, &HeaderValue::from_static("http"), false, 1);
        assert_eq!(
            (added.for_.to_str().unwrap(), added.proto.to_str().unwrap()),
            ("127.0.0.1", "http")
        );
    }

    #[test]
    fn hop_headers_named_in_connection_go_in_any_case() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, X-Hop, close"),
        );
        h.insert(KEEP_ALIVE, HeaderValue::from_static("timeout=5"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert(header::TRAILER, HeaderValue::from_static("x-t"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        strip_hop_headers(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::CONTENT_LENGTH));
        // A request: TE and Proxy-Connection go too, without a Connection header.
        let client = ClientInfo::new("127.0.0.1:1".parse().unwrap(), Duration::from_secs(10));
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(PROXY_CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic cHJveHk6c2VjcmV0"),
        );
        // Names listed on a second Connection line go too.
        h.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.append(header::CONNECTION, HeaderValue::from_static("X-Second"));
        h.insert("x-second", HeaderValue::from_static("1"));
        prepare_headers(&mut h, &client, &HeaderValue::from_static("http"), false, 0);
        assert_eq!(h.len(), 2, "{h:?}"); // X-Forwarded-For and -Proto
        assert_eq!(h[X_FORWARDED_FOR], "127.0.0.1");
        assert!(
            !h.contains_key(X_FORWARDED_HOST),
            "no Host, no X-Forwarded-Host"
        );
    }

    /// The header timeout counts from the connection's start and from the end of each response,
    /// and only while a head is awaited.
    #[tokio::test(start_paused = true)]
    async fn heads_are_due_within_the_header_timeout_of_each_wait() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // The flags' defaults (header timeout 10 s) and no backend: every request gets a 503.
        let metrics = Arc::new(Metrics::default());
        let balancer = Arc::new(Balancer::new(2, 2, metrics.clone()));
        let settings = Settings::from_args(&ProxyArgs::defaults(), false);
        let signer = CookieSigner::new(b"a key of sixteen bytes or more", 86_400);
        let proxy = Arc::new(Proxy::new(balancer, signer, settings, None, metrics));
        for (input, answers) in [
            (&b""[..], 0),
            (b"GET / HTTP/1.1\r\nHost: x\r\n", 0),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n", 1),
        ] {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let peer = SocketAddr::from(([192, 0, 2, 1], 40_000));
            let serving = tokio::spawn(proxy.clone().serve_connection(server, peer));
            let started = tokio::time::Instant::now();
            tokio::time::sleep(Duration::from_secs(5)).await;
            client.write_all(input).await.unwrap();
            let mut answer = Vec::new();
            tokio::time::timeout(Duration::from_secs(60), client.read_to_end(&mut answer))
                .await
                .expect("the proxy closes the connection")
                .unwrap();
            let waited = started.elapsed();
            let text = String::from_utf8_lossy(&answer);
            assert_eq!(text.matches("HTTP/1.1 503").count(), answers, "{text}");
            // Unanswered: 10 s from the start; answered at 5 s: 10 s after that.
            let due = Duration::from_secs(if answers == 0 { 10 } else { 15 });
            assert!(
                waited >= due && waited < due + Duration::from_millis(100),
                "{input:?}: closed after {waited:?}"
            );
            serving.await.unwrap();
        }
    }

    /// A proxy in front of the one backend at `addr`.
    fn proxy_to(addr: SocketAddr, idle_timeout: Duration) -> Arc<Proxy> {
        use super::super::backend::BackendSpec;
        let metrics = Arc::new(Metrics::default());
        let balancer = Arc::new(Balancer::new(2, 2, metrics.clone()));
        balancer.update(&[BackendSpec::ready(addr)]);
        let settings = Settings {
            idle_timeout,
            ..Settings::from_args(&ProxyArgs::defaults(), false)
        };
        let signer = CookieSigner::new(b"a key of sixteen bytes or more", 86_400);
        Arc::new(Proxy::new(balancer, signer, settings, None, metrics))
    }

    /// Request bodies reach the backend framed as the client framed them (chunked re-encoded
    /// chunk by chunk), responses come back whole, on one pooled backend connection.
    #[tokio::test]
    async fn request_bodies_go_through_framed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A backend that echoes everything it read of a request (head and body) as the body of
        // its answer, once the request ends ("\r\n\r\n" twice, or "0\r\n\r\n").
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut byte = [0; 1];
                    while stream.read(&mut byte).await.unwrap_or(0) == 1 {
                        seen.push(byte[0]);
                        let text = String::from_utf8_lossy(&seen);
                        let head_end = text.find("\r\n\r\n").map(|i| i + 4);
                        let done = head_end.is_some_and(|end| {
                            let body = &text[end..];
                            if text.contains("content-length: 5") {
                                body.len() == 5
                            } else {
                                body.ends_with("0\r\n\r\n")
                            }
                        });
                        if done {
                            let answer = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
                                seen.len()
                            );
                            stream.write_all(answer.as_bytes()).await.unwrap();
                            seen.clear();
                        }
                    }
                });
            }
        });
        let proxy = proxy_to(addr, Duration::from_secs(5));
        let (client, server) = tokio::io::duplex(64 * 1024);
        let peer = SocketAddr::from(([192, 0, 2, 1], 40_000));
        tokio::spawn(proxy.serve_connection(server, peer));
        let (mut reader, mut writer) = tokio::io::split(client);
        let requests: [&[u8]; 2] = [
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        ];
        let mut answers = String::new();
        for (request, tail) in requests.into_iter().zip(["hello", "0\r\n\r\n"]) {
            writer.write_all(request).await.unwrap();
            let mut answer = Vec::new();
            while !answer.ends_with(tail.as_bytes()) {
                let mut buf = vec![0; 4096];
                let n = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                assert!(n > 0, "{}", String::from_utf8_lossy(&answer));
                answer.extend_from_slice(&buf[..n]);
            }
            answers.push_str(&String::from_utf8_lossy(&answer));
        }
        assert!(answers.contains("POST /a HTTP/1.1\r\n"), "{answers}");
        assert!(answers.contains("content-length: 5\r\n"), "{answers}");
        assert!(answers.contains("\r\n\r\nhello"), "{answers}");
        assert!(answers.contains("POST /b HTTP/1.1\r\n"), "{answers}");
        assert!(
            answers.contains("transfer-encoding: chunked\r\n"),
            "{answers}"
        );
        assert!(
            answers.contains("\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
            "{answers}"
        );
        assert!(
            answers.contains("x-forwarded-for: 192.0.2.1\r\n"),
            "{answers}"
        );
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "one pooled connection"
        );
    }

    /// Each response head is awaited for `idle_timeout` (then 504), on one timer per connection
    /// that serves one wait after another.
    #[tokio::test]
    async fn response_heads_are_awaited_for_the_idle_timeout() {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        // A backend that answers `/` at once and `/slow` never.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    let (mut line, mut slow) = (String::new(), false);
                    while stream.read_line(&mut line).await.unwrap_or(0) > 0 {
                        if line.starts_with("GET ") {
                            slow = line.starts_with("GET /slow ");
                        } else if line == "\r\n" && slow {
                            std::future::pending::<()>().await;
                        } else if line == "\r\n" {
                            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            stream.get_mut().write_all(ok).await.unwrap();
                        }
                        line.clear();
                    }
                });
            }
        });
        let proxy = proxy_to(addr, Duration::from_millis(300));
        let (client, server) = tokio::io::duplex(64 * 1024);
        let peer = SocketAddr::from(([192, 0, 2, 1], 40_000));
        tokio::spawn(proxy.serve_connection(server, peer));
        let mut client = BufReader::new(client);
        for (path, status) in [
            ("/slow", "504"),
            ("/", "200"),
            ("/slow", "504"),
            ("/", "200"),
        ] {
            let started = Instant::now();
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            client
                .get_mut()
                .write_all(request.as_bytes())
                .await
                .unwrap();
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                client.read_line(&mut line).await.unwrap();
                if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length: ") {
                    length = n.trim().parse().unwrap();
                }
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            client.read_exact(&mut body).await.unwrap();
            let took = started.elapsed();
            assert!(
                head.starts_with(&format!("HTTP/1.1 {status}")),
                "{path}: {head}"
            );
            if status == "504" {
                assert!(took >= Duration::from_millis(300), "{path}: {took:?}");
            }
            assert!(took < Duration::from_secs(2), "{path}: {took:?}");
        }
    }

    /// A backend that goes silent inside a response body is given up after `idle_timeout` of
    /// silence: the client's connection closes (its body cut short), nothing hangs. A body that
    /// keeps coming, however slowly, is not cut.
    #[tokio::test]
    async fn a_backend_silent_inside_a_body_is_given_up() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0; 1024];
                    let n = stream.read(&mut request).await.unwrap();
                    let slow = request[..n].starts_with(b"GET /trickle ");
                    let head = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nab";
                    stream.write_all(head).await.unwrap();
                    if slow {
                        // 200 ms between pieces: each wait under the 300 ms idle timeout,
                        // the whole body over it.
                        for piece in [b"cd", b"ef"] {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            stream.write_all(piece).await.unwrap();
                        }
                    }
                    std::future::pending::<()>().await;
                });
            }
        });
        let proxy = proxy_to(addr, Duration::from_millis(300));
        for (path, whole) in [("/stall", false), ("/trickle", true)] {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let peer = SocketAddr::from(([192, 0, 2, 1], 40_000));
            tokio::spawn(proxy.clone().serve_connection(server, peer));
            let started = Instant::now();
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            client.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            let mut piece = [0; 1024];
            let read = async {
                loop {
                    match client.read(&mut piece).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => answer.extend_from_slice(&piece[..n]),
                    }
                    if answer.ends_with(b"abcdef") {
                        break;
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(5), read)
                .await
                .expect("the answer ends");
            let took = started.elapsed();
            let text = String::from_utf8_lossy(&answer).into_owned();
            assert!(text.starts_with("HTTP/1.1 200"), "{path}: {text}");
            assert_eq!(text.ends_with("abcdef"), whole, "{path}: {text}");
            if !whole {
                assert!(text.ends_with("ab"), "{path}: {text}");
                assert!(took >= Duration::from_millis(300), "{path}: {took:?}");
            }
        }
    }

    #[test]
    fn redirects_to_https() {
        let req = Request::get("/sockjs/info?cb=1")
            .header(header::HOST, "app.example:80")
            .body(())
            .unwrap();
        let response = redirect_to_https(&req);
        assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(
            response.headers()[header::LOCATION],
            "https://app.example/sockjs/info?cb=1"
        );
        let no_host = Request::get("/").body(()).unwrap();
        assert_eq!(
            redirect_to_https(&no_host).status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn upgrades_keep_their_headers() {
        let client = ClientInfo::new("127.0.0.1:1".parse().unwrap(), Duration::from_secs(10));
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        prepare_headers(&mut h, &client, &HeaderValue::from_static("http"), true, 0);
        assert!(h.contains_key(header::UPGRADE));
        assert!(h.contains_key(header::CONNECTION));
        let mut plain = HeaderMap::new();
        plain.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!is_upgrade(&plain), "Upgrade without Connection: upgrade");
    }

    /// The value of the series `series` (name and labels, as printed) in `metrics`' registry.
    fn series(metrics: &Metrics, series: &str) -> Option<f64> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry()).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Waits (5 s at most) until `series` reads `value`.
    async fn until_series(metrics: &Metrics, series_name: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while series(metrics, series_name) != Some(value) {
            assert!(
                Instant::now() < deadline,
                "{series_name} is {:?}, not {value}",
                series(metrics, series_name)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Reads one response (head and `content-length` body) from `client`.
    async fn read_response<R: tokio::io::AsyncBufRead + Unpin>(client: &mut R) -> String {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        let mut head = String::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout(Duration::from_secs(5), client.read_line(&mut line));
            assert!(read.await.unwrap().unwrap() > 0, "cut short: {head}");
            if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length: ") {
                length = n.trim().parse().unwrap();
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        client.read_exact(&mut body).await.unwrap();
        head
    }

    /// Every answer counts in its backend's duration histogram under its status class (the
    /// proxy's own 502 included), and the bytes each way are exactly what the backend read and
    /// wrote.
    #[tokio::test]
    async fn answers_are_counted_by_backend_and_status_class_with_their_bytes() {
        use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        // `/missing` gets 404, `/moved` 301, `/broken` a closed connection, the rest 200.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (read, written) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (r, w) = (read.clone(), written.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (r, w) = (r.clone(), w.clone());
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    let (mut line, mut path) = (String::new(), String::new());
                    while let Ok(n @ 1..) = stream.read_line(&mut line).await {
                        r.fetch_add(n as u64, Relaxed);
                        if let Some(rest) = line.strip_prefix("GET ") {
                            path = rest.split(' ').next().unwrap().to_string();
                        } else if line == "\r\n" {
                            let answer: &[u8] = match path.as_str() {
                                "/broken" => return,
                                "/missing" => b"HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\n\r\nnope",
                                "/moved" => b"HTTP/1.1 301 Moved\r\nlocation: /\r\ncontent-length: 0\r\n\r\n",
                                _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                            };
                            stream.get_mut().write_all(answer).await.unwrap();
                            w.fetch_add(answer.len() as u64, Relaxed);
                        }
                        line.clear();
                    }
                });
            }
        });
        let proxy = proxy_to(addr, Duration::from_secs(5));
        let (client, server) = tokio::io::duplex(64 * 1024);
        let peer = SocketAddr::from(([192, 0, 2, 1], 40_000));
        tokio::spawn(proxy.clone().serve_connection(server, peer));
        let mut client = BufReader::new(client);
        for (path, status) in [
            ("/", "200"),
            ("/missing", "404"),
            ("/", "200"),
            ("/moved", "301"),
            ("/broken", "502"),
        ] {
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            client
                .get_mut()
                .write_all(request.as_bytes())
                .await
                .unwrap();
            let head = read_response(&mut client).await;
            assert!(
                head.starts_with(&format!("HTTP/1.1 {status}")),
                "{path}: {head}"
            );
        }
        let metrics = &proxy.metrics;
        let duration = |class, part| {
            format!(
                "meteor_proxy_request_duration_seconds_{part}{{backend=\"{addr}\",class=\"{class}\"}}"
            )
        };
        for (class, count) in [
            ("1xx", 0.0),
            ("2xx", 2.0),
            ("3xx", 1.0),
            ("4xx", 1.0),
            ("5xx", 1.0),
        ] {
            until_series(metrics, &duration(class, "count"), count).await;
        }
        let inf = format!(
            "meteor_proxy_request_duration_seconds_bucket{{le=\"+Inf\",backend=\"{addr}\",class=\"2xx\"}}"
        );
        let fast = inf.replace("+Inf", "5.0");
        assert_eq!(series(metrics, &inf), Some(2.0));
        assert_eq!(
            series(metrics, &fast),
            Some(2.0),
            "a loopback answer takes under 5 s"
        );
        let sum = series(metrics, &duration("2xx", "sum")).unwrap();
        assert!(sum > 0.0 && sum < 10.0, "{sum}");
        let sent = format!("meteor_proxy_backend_sent_bytes_total{{backend=\"{addr}\"}}");
        let received = format!("meteor_proxy_backend_received_bytes_total{{backend=\"{addr}\"}}");
        assert_eq!(series(metrics, &sent), Some(read.load(Relaxed) as f64));
        assert_eq!(
            series(metrics, &received),
            Some(written.load(Relaxed) as f64)
        );
        assert!(written.load(Relaxed) > 0);
        // A backend that left and drained takes its series along.
        let backend = proxy.balancer.backends()[0].clone();
        proxy.balancer.update(&[]);
        proxy.balancer.finish_drain(&backend);
        assert_eq!(series(metrics, &duration("2xx", "count")), None);
        assert_eq!(series(metrics, &sent), None);
    }

    /// Each WebSocket tunnel counts when it opens, and when it closes under the reason that
    /// closed it.
    #[tokio::test]
    async fn websocket_closes_are_counted_by_reason() {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        // Upgrades everything; on `/backend-closes` it then says "bye" and closes, otherwise it
        // echoes until the proxy closes.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    let (mut line, mut path) = (String::new(), String::new());
                    while stream.read_line(&mut line).await.unwrap_or(0) > 0 && line != "\r\n" {
                        if let Some(rest) = line.strip_prefix("GET ") {
                            path = rest.split(' ').next().unwrap().to_string();
                        }
                        line.clear();
                    }
                    let switch = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
                    stream.get_mut().write_all(switch).await.unwrap();
                    if path == "/backend-closes" {
                        stream.get_mut().write_all(b"bye").await.unwrap();
                        return;
                    }
                    let mut buf = [0; 1024];
                    while let Ok(n @ 1..) = stream.read(&mut buf).await {
                        stream.get_mut().write_all(&buf[..n]).await.unwrap();
                    }
                });
            }
        });
        let proxy = proxy_to(addr, Duration::from_secs(1));
        let backend = proxy.balancer.backends()[0].clone();
        // A client connection upgraded to a WebSocket on `path`.
        let open = |path: &'static str| {
            let proxy = proxy.clone();
            async move {
                let (client, server) = tokio::io::duplex(64 * 1024);
                let peer = SocketAddr::from(([192, 0, 2, 1], 40_000));
                tokio::spawn(proxy.serve_connection(server, peer));
                let mut client = BufReader::new(client);
                let request = format!(
                    "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                );
                client
                    .get_mut()
                    .write_all(request.as_bytes())
                    .await
                    .unwrap();
                let head = read_response(&mut client).await;
                assert!(head.starts_with("HTTP/1.1 101"), "{head}");
                client
            }
        };
        let closed =
            |reason| format!("meteor_proxy_websockets_closed_total{{reason=\"{reason}\"}}");
        let metrics = &proxy.metrics;
        // The backend says goodbye and closes.
        let mut client = open("/backend-closes").await;
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"bye");
        client.get_mut().shutdown().await.unwrap();
        until_series(metrics, &closed("backend"), 1.0).await;
        // The client closes.
        let mut client = open("/echo").await;
        client.get_mut().shutdown().await.unwrap();
        client.read_to_end(&mut rest).await.unwrap();
        until_series(metrics, &closed("client"), 1.0).await;
        // The rebalancer picks it.
        let _client = open("/echo").await;
        until_series(metrics, "meteor_proxy_websockets_opened_total", 3.0).await;
        assert!(
            backend
                .movable
                .close_oldest(tokio::time::Instant::now(), Duration::ZERO)
        );
        until_series(metrics, &closed("rebalance"), 1.0).await;
        // Its backend drains.
        let _client = open("/echo").await;
        until_series(metrics, "meteor_proxy_websockets_opened_total", 4.0).await;
        backend.closing.open(Duration::from_millis(100), 1);
        until_series(metrics, &closed("drain"), 1.0).await;
        backend.closing.withdraw();
        // Nothing passes for the idle timeout (1 s).
        let _client = open("/echo").await;
        until_series(metrics, &closed("idle"), 1.0).await;
        // The proxy shuts down.
        let _client = open("/echo").await;
        until_series(metrics, "meteor_proxy_websockets_opened_total", 6.0).await;
        proxy.begin_shutdown(Duration::from_millis(100));
        until_series(metrics, &closed("shutdown"), 1.0).await;
        for reason in [
            "client",
            "backend",
            "idle",
            "drain",
            "rebalance",
            "shutdown",
        ] {
            assert_eq!(series(metrics, &closed(reason)), Some(1.0), "{reason}");
        }
        // Each upgrade counts as an answer of class 1xx.
        let upgrades = format!(
            "meteor_proxy_request_duration_seconds_count{{backend=\"{addr}\",class=\"1xx\"}}"
        );
        assert_eq!(series(metrics, &upgrades), Some(6.0));
    }

    /// TLS handshakes count as ok, failed (not TLS) or timed out (nothing within the header
    /// timeout).
    #[tokio::test]
    async fn tls_handshakes_are_counted_by_result() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_rustls::rustls;
        let peers = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/tls");
        let (cert, key) = (peers.join("cert.pem"), peers.join("key.pem"));
        let acceptor = ReloadingAcceptor::new(cert, key).unwrap();
        let metrics = Arc::new(Metrics::default());
        let balancer = Arc::new(Balancer::new(2, 2, metrics.clone()));
        let settings = Settings {
            header_timeout: Duration::from_millis(300),
            ..Settings::from_args(&ProxyArgs::defaults(), true)
        };
        let signer = CookieSigner::new(b"a key of sixteen bytes or more", 86_400);
        let proxy = Arc::new(Proxy::new(
            balancer,
            signer,
            settings,
            None,
            metrics.clone(),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(proxy.clone().serve(listener, Some(acceptor)));
        let handshakes =
            |result| format!("meteor_proxy_tls_handshakes_total{{result=\"{result}\"}}");
        // A TLS client (that takes any certificate: the test one is its own CA): ok, and 503
        // (no backend).
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        assert!(answer.starts_with(b"HTTP/1.1 503"), "{answer:?}");
        until_series(&metrics, &handshakes("ok"), 1.0).await;
        // Plain HTTP on the TLS port: failed.
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let _ = plain.read_to_end(&mut answer).await;
        until_series(&metrics, &handshakes("failed"), 1.0).await;
        // Silence: timed out.
        let _silent = TcpStream::connect(addr).await.unwrap();
        until_series(&metrics, &handshakes("timeout"), 1.0).await;
        assert_eq!(series(&metrics, &handshakes("ok")), Some(1.0));
        assert_eq!(series(&metrics, &handshakes("failed")), Some(1.0));
    }

    /// A certificate verifier that takes any certificate (signatures still checked).
    #[derive(Debug)]
    struct AnyCertificate(Arc<tokio_rustls::rustls::crypto::CryptoProvider>);

    impl tokio_rustls::rustls::client::danger::ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &[rustls_pki_types::CertificateDer<'_>],
            _: &rustls_pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<
            tokio_rustls::rustls::client::danger::ServerCertVerified,
            tokio_rustls::rustls::Error,
        > {
            Ok(tokio_rustls::rustls::client::danger::ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &tokio_rustls::rustls::DigitallySignedStruct,
        ) -> Result<
            tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
            tokio_rustls::rustls::Error,
        > {
            let algorithms = &self.0.signature_verification_algorithms;
            tokio_rustls::rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &tokio_rustls::rustls::DigitallySignedStruct,
        ) -> Result<
            tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
            tokio_rustls::rustls::Error,
        > {
            let algorithms = &self.0.signature_verification_algorithms;
            tokio_rustls::rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}
