//! One backend and its live state: what discovery says of it, its health (the rise/fall state
//! machine), its open tunnels and drain window, its metric handles and idle connections. Data
//! only: nothing here opens a connection or starts a task.
//!
//! Contracts:
//! - A backend is identified by a stable id (`ip:port`), the value the sticky cookie names.
//! - Each backend counts its open tunnels and announces its drain window to them
//!   ([`crate::closing`]), so they close one by one rather than all at its deadline.
//! - Each backend keeps its open tunnels oldest first ([`Movable`]), so the rebalancer
//!   (`rebalance`, a layer above) can close single ones on a busy backend.
//! - Health: a backend starts up (EndpointSlices only list pods that passed their readiness
//!   probe), goes down after `fall` consecutive failed checks or at once on a failed connect, and
//!   comes back after `rise` consecutive successful checks ([`HealthState`]; the checks
//!   themselves are the `health` module's, a layer above).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::closing::Closer;
use crate::metrics::{BackendMetrics, Metrics};
use crate::pool::Pool;

/// A backend as discovery reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    pub id: String,
    pub addr: SocketAddr,
    /// Ready for new sessions (EndpointSlice `ready`).
    pub ready: bool,
    /// Shutting down (EndpointSlice `terminating`): keeps sessions until the drain deadline.
    pub terminating: bool,
    /// The pod behind the endpoint (EndpointSlice `targetRef`), for per-pod metrics.
    pub pod: Option<PodRef>,
}

/// A backend's pod: the `pod` and `namespace` labels of its session gauge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl BackendSpec {
    /// A ready backend at `addr`, named by it.
    pub fn ready(addr: SocketAddr) -> Self {
        Self {
            id: addr.to_string(),
            addr,
            ready: true,
            terminating: false,
            pod: None,
        }
    }
}

/// One backend and its live state.
pub struct Backend {
    pub id: Arc<str>,
    pub addr: SocketAddr,
    /// Its pod, when discovery knows it.
    pub pod: Option<PodRef>,
    /// `addr` as a URI authority, for upstream request URIs.
    pub authority: http::uri::Authority,
    ready: AtomicBool,
    terminating: AtomicBool,
    removed: AtomicBool,
    up: AtomicBool,
    health: Mutex<HealthState>,
    /// Cancelled when the drain deadline passes: open tunnels to this backend close.
    pub drained: CancellationToken,
    /// The drain window its tunnels follow, to close one by one before `drained`.
    pub closing: Closer,
    /// Open tunnels: the slots of a drain window.
    tunnels: AtomicUsize,
    /// The open tunnels, oldest first, each closable on its own.
    pub movable: Movable,
    pub metrics: BackendMetrics,
    /// Idle keep-alive connections to this backend.
    pub pool: Pool,
    /// The last `Set-Cookie` value naming this backend and the second it was signed in, so
    /// a busy backend signs once a second rather than once a response.
    pub cookie_cache: Mutex<Option<(u64, http::HeaderValue)>>,
}

impl Backend {
    pub(crate) fn new(spec: &BackendSpec, health: HealthState, metrics: &Metrics) -> Self {
        Self {
            id: spec.id.as_str().into(),
            addr: spec.addr,
            pod: spec.pod.clone(),
            authority: spec
                .addr
                .to_string()
                .parse()
                .expect("a socket address is a URI authority"),
            ready: AtomicBool::new(spec.ready),
            terminating: AtomicBool::new(spec.terminating),
            removed: AtomicBool::new(false),
            up: AtomicBool::new(health.is_up()),
            health: Mutex::new(health),
            drained: CancellationToken::new(),
            closing: Closer::default(),
            tunnels: AtomicUsize::new(0),
            movable: Movable::default(),
            metrics: metrics.backend(&spec.id),
            pool: Default::default(),
            cookie_cache: Mutex::new(None),
        }
    }

    /// Open requests and tunnels.
    pub fn active(&self) -> i64 {
        self.metrics.active.get()
    }
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    pub fn is_terminating(&self) -> bool {
        self.terminating.load(Ordering::Relaxed)
    }
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }
    pub fn tunnels(&self) -> usize {
        self.tunnels.load(Ordering::Relaxed)
    }

    /// Takes new sessions.
    pub fn accepts_new(&self) -> bool {
        self.is_ready() && !self.is_terminating() && !self.is_removed() && self.is_up()
    }

    /// Keeps existing sessions.
    pub(crate) fn keeps_existing(&self) -> bool {
        self.is_up() && !self.drained.is_cancelled()
    }

    /// Feeds one active health check result into the rise/fall state.
    pub fn observe_health(&self, ok: bool) {
        let changed = self.health.lock().expect("health lock").observe(ok);
        self.apply_health(changed);
    }

    /// A failed connect (passive detection): down at once, until active checks see it rise.
    pub fn connect_failed(&self) {
        self.metrics.upstream_errors.inc();
        let changed = self.health.lock().expect("health lock").fail_now();
        self.apply_health(changed);
    }

    fn apply_health(&self, changed: Option<bool>) {
        if let Some(up) = changed {
            self.up.store(up, Ordering::Relaxed);
            if up {
                self.metrics.went_up.inc();
                tracing::info!(backend = %self.id, "backend up");
            } else {
                self.metrics.went_down.inc();
                tracing::warn!(backend = %self.id, "backend down");
            }
        }
    }

    /// Takes what discovery now says of a known backend, listed again; true when it started
    /// terminating with this list.
    pub(crate) fn relisted(&self, spec: &BackendSpec) -> bool {
        self.ready.store(spec.ready, Ordering::Relaxed);
        self.removed.store(false, Ordering::Relaxed);
        let was = self.terminating.swap(spec.terminating, Ordering::Relaxed);
        spec.terminating && !was
    }

    /// Marks a backend gone from discovery's list; true when it was still listed before.
    pub(crate) fn unlisted(&self) -> bool {
        !self.removed.swap(true, Ordering::Relaxed)
    }

    /// Counts one connection as active until the guard drops.
    pub fn enter(self: &Arc<Self>) -> ActiveGuard {
        self.metrics.active.inc();
        self.metrics.requests.inc();
        ActiveGuard(self.clone())
    }
}

/// Counts one open tunnel to `backend` until dropped, and lets the rebalancer close it.
pub struct TunnelGuard<'a> {
    backend: &'a Backend,
    moved: Moved,
}

impl<'a> TunnelGuard<'a> {
    pub fn new(backend: &'a Backend) -> Self {
        backend.tunnels.fetch_add(1, Ordering::Relaxed);
        let moved = backend.movable.register();
        Self { backend, moved }
    }

    /// Resolves when the rebalancer chose this tunnel to close (never otherwise).
    pub async fn moved(&mut self) {
        self.moved.wait().await
    }
}

impl Drop for TunnelGuard<'_> {
    fn drop(&mut self) {
        self.backend.tunnels.fetch_sub(1, Ordering::Relaxed);
        self.backend.movable.unregister(&self.moved);
    }
}

/// Keeps a backend's active count raised while alive.
pub struct ActiveGuard(pub Arc<Backend>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.metrics.active.dec();
    }
}

/// The rise/fall counter of one backend.
#[derive(Debug, Clone)]
pub struct HealthState {
    up: bool,
    streak: u32,
    rise: u32,
    fall: u32,
}

impl HealthState {
    /// A state that starts up.
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            up: true,
            streak: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    /// Whether the backend is up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// A passive failure that is conclusive (the backend refused or timed out a connection):
    /// down at once; active checks must then see `rise` successes. Returns Some(false) if it
    /// was up.
    pub fn fail_now(&mut self) -> Option<bool> {
        self.streak = 0;
        std::mem::replace(&mut self.up, false).then_some(false)
    }

    /// Records one observation; returns the new state if it changed.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak >= needed {
            self.up = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }
}

/// Tunnel ids, increasing with time: the smallest open one is the oldest.
static NEXT_TUNNEL: AtomicU64 = AtomicU64::new(0);

/// A backend's open tunnels, oldest first, each with the signal that closes it.
#[derive(Default)]
pub struct Movable {
    open: Mutex<BTreeMap<u64, (Instant, oneshot::Sender<()>)>>,
}

/// One tunnel's place in [`Movable`].
pub struct Moved {
    id: u64,
    signal: oneshot::Receiver<()>,
}

impl Moved {
    /// Resolves when the tunnel was chosen to close; never if its entry went without.
    pub async fn wait(&mut self) {
        if (&mut self.signal).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Movable {
    /// Adds a tunnel opening now.
    pub fn register(&self) -> Moved {
        let id = NEXT_TUNNEL.fetch_add(1, Ordering::Relaxed);
        let (close, signal) = oneshot::channel();
        self.lock().insert(id, (Instant::now(), close));
        Moved { id, signal }
    }

    /// Removes a tunnel that ended (or was already chosen).
    pub fn unregister(&self, moved: &Moved) {
        self.lock().remove(&moved.id);
    }

    /// Open tunnels not yet chosen to close.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Signals the oldest tunnel open for at least `min_age` to close; false if there is none.
    pub fn close_oldest(&self, now: Instant, min_age: Duration) -> bool {
        let mut open = self.lock();
        while let Some(oldest) = open.first_entry() {
            if now.saturating_duration_since(oldest.get().0) < min_age {
                return false;
            }
            let (_, close) = oldest.remove();
            if close.send(()).is_ok() {
                return true;
            }
        }
        false
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (Instant, oneshot::Sender<()>)>> {
        self.open.lock().expect("movable tunnels lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_after_fall_failures_and_rises_after_rise_successes() {
        let mut h = HealthState::new(2, 3);
        assert!(h.is_up());
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), Some(false));
        assert!(!h.is_up());
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(true));
        assert!(h.is_up());
    }

    #[test]
    fn a_conclusive_failure_takes_it_down_at_once() {
        let mut h = HealthState::new(2, 2);
        assert_eq!(h.fail_now(), Some(false));
        assert_eq!(h.fail_now(), None);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(true));
    }

    #[test]
    fn a_success_resets_the_failure_streak() {
        let mut h = HealthState::new(2, 2);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(false), None, "streak was reset");
        assert_eq!(h.observe(false), Some(false));
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None);
        assert!(!h.is_up(), "needs two successes in a row");
    }
}
