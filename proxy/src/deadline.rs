//! Deadlines of client connections, with no timer made or dropped per request.
//!
//! - [`WriteDeadline`]: a client that stops reading is disconnected. Without it a response to a
//!   client that never reads would pin its upstream connection (and count as busy on its
//!   backend) forever. The timer is armed only while a write waits, so a client that keeps up
//!   costs no timer operations. A waiting write holds a stalled response (kernel queues on both
//!   sides, a backend connection): at most [`StallBudget`]'s cap of them wait at once, and a
//!   write that would wait beyond it fails at once, closing its connection.
//! - [`HeadDeadline`] and [`HeadWatch`]: a client that does not send a whole request head within
//!   the header timeout (from the connection's start or the end of the previous response) is
//!   disconnected. One timer per connection, moved on for each head.
//! - [`Timer`]: one timer per connection for the wait for each response head.
//!
//! Moving a tokio timer's deadline later is an atomic store; a new timer per request costs an
//! allocation, an insertion into the runtime's timer wheel and a removal under its lock.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How many client writes may wait at once (responses stalled by clients that do not read).
pub struct StallBudget {
    cap: usize,
    stalled: AtomicUsize,
    /// Connections closed because their write would have waited beyond the cap.
    refused: prometheus_client::metrics::counter::Counter,
}

impl StallBudget {
    pub fn new(cap: usize, refused: prometheus_client::metrics::counter::Counter) -> Arc<Self> {
        Arc::new(Self {
            cap,
            stalled: AtomicUsize::new(0),
            refused,
        })
    }

    /// Writes waiting now.
    pub fn stalled(&self) -> usize {
        self.stalled.load(Ordering::Relaxed)
    }

    /// One more waiting write, if the cap allows it.
    fn enter(self: &Arc<Self>) -> Option<Stalled> {
        if self.stalled.fetch_add(1, Ordering::Relaxed) >= self.cap {
            self.stalled.fetch_sub(1, Ordering::Relaxed);
            self.refused.inc();
            return None;
        }
        Some(Stalled(self.clone()))
    }
}

/// A write waiting, counted in its [`StallBudget`] until dropped.
struct Stalled(Arc<StallBudget>);

impl Drop for Stalled {
    fn drop(&mut self) {
        self.0.stalled.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `inner`, whose writes fail with `TimedOut` after waiting `timeout` without progress, or at
/// once when `budget` has no room for one more waiting write.
pub struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    budget: Arc<StallBudget>,
    /// Made the first time a write waits (most connections never need it).
    timer: Option<Pin<Box<Sleep>>>,
    /// Set while a write waits (the timer is armed).
    stalled: Option<Stalled>,
}

impl<S> WriteDeadline<S> {
    pub fn new(inner: S, timeout: Duration, budget: Arc<StallBudget>) -> Self {
        Self {
            inner,
            timeout,
            budget,
            timer: None,
            stalled: None,
        }
    }

    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Passes a write's outcome on, timing how long it has been waiting.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if outcome.is_ready() {
            self.stalled = None;
            return outcome;
        }
        let deadline = Instant::now() + self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if self.stalled.is_none() {
            let Some(stalled) = self.budget.enter() else {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "too many responses stalled by clients that do not read",
                )));
            };
            timer.as_mut().reset(deadline);
            self.stalled = Some(stalled);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.inner).poll_write(cx, data);
        this.watch(cx, outcome)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.inner).poll_write_vectored(cx, data);
        this.watch(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, outcome)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, outcome)
    }
}

/// When a client connection's next request head is due, shared by the connection's request
/// path (which starts and stops the wait) and its [`HeadWatch`]. [`evict`](Self::evict) ends
/// the wait (and the connection) at once.
pub struct HeadDeadline {
    base: Instant,
    timeout: Duration,
    /// Microseconds after `base` the head is due; 0 while none is awaited.
    due: AtomicU64,
    evicted: std::sync::atomic::AtomicBool,
    /// The connection's task, once its watch waits for a head.
    waker: futures::task::AtomicWaker,
}

impl HeadDeadline {
    pub fn new(timeout: Duration) -> Self {
        Self {
            base: Instant::now(),
            timeout,
            due: AtomicU64::new(0),
            evicted: std::sync::atomic::AtomicBool::new(false),
            waker: futures::task::AtomicWaker::new(),
        }
    }

    /// When the awaited head is due (microseconds after the connection's start, comparable
    /// between connections only roughly), or None while no head is awaited.
    pub fn due(&self) -> Option<Instant> {
        match self.due.load(Ordering::Relaxed) {
            0 => None,
            due => Some(self.base + Duration::from_micros(due)),
        }
    }

    /// Ends the wait now: the connection's [`HeadWatch`] completes (its connection closes).
    pub fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// A head is awaited from now on (the connection started or a response ended).
    pub fn start(&self) {
        let due = (self.base.elapsed() + self.timeout).as_micros();
        self.due.store(
            u64::try_from(due).unwrap_or(u64::MAX).max(1),
            Ordering::Relaxed,
        );
    }

    /// A head arrived.
    pub fn stop(&self) {
        self.due.store(0, Ordering::Relaxed);
    }
}

/// Completes when a [`HeadDeadline`] passes while its head is still awaited. Poll it after the
/// connection in the same task (`select!` with `biased;`): a wait started while the connection
/// was polled is seen before the task sleeps again.
///
/// The timer is never moved earlier than needed, nor later per head: set for an earlier head, it
/// fires before the current one is due and is moved on then (once per header timeout at most).
/// Between firings a poll touches no timer: the task's waker is registered with it already (the
/// same task polls it every time).
pub struct HeadWatch {
    deadline: Arc<HeadDeadline>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The timer is registered, with this task's waker, for a time at or before the head due.
    registered: bool,
}

impl HeadWatch {
    pub fn new(deadline: Arc<HeadDeadline>) -> Self {
        Self {
            deadline,
            sleep: None,
            registered: false,
        }
    }
}

impl Future for HeadWatch {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.deadline.evicted.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let due = this.deadline.due.load(Ordering::Relaxed);
        if due == 0 {
            // No head awaited: the timer may still fire once (a spurious wake-up), nothing
            // more.
            return Poll::Pending;
        }
        let at = this.deadline.base + Duration::from_micros(due);
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if sleep.deadline() > at {
            sleep.as_mut().reset(at);
            this.registered = false;
        }
        let was = this.registered;
        let polled = poll_lazily(sleep, &mut this.registered, at, cx);
        if this.registered && !was {
            // Where the timer wakes the task, an eviction does too (the same task polls the
            // watch every time, so its waker stays valid while registered).
            this.deadline.waker.register(cx.waker());
            if this.deadline.evicted.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
        }
        polled
    }
}

/// Polls `sleep` for `at` (its deadline is at `at` or before it): ready once `at` passed.
/// Skips the poll while `registered` (and the timer has not fired); moves the timer on to `at`
/// when it fires early.
fn poll_lazily(
    sleep: &mut Pin<Box<Sleep>>,
    registered: &mut bool,
    at: Instant,
    cx: &mut Context<'_>,
) -> Poll<()> {
    if *registered && !sleep.is_elapsed() {
        return Poll::Pending;
    }
    loop {
        match sleep.as_mut().poll(cx) {
            Poll::Pending => {
                *registered = true;
                return Poll::Pending;
            }
            Poll::Ready(()) => {
                *registered = false;
                if sleep.deadline() >= at || Instant::now() >= at {
                    return Poll::Ready(());
                }
                sleep.as_mut().reset(at);
            }
        }
    }
}

/// A timer kept for a connection's life, for one wait at a time, all in one task (see
/// [`HeadWatch`] for how it is moved).
#[derive(Default)]
pub struct Timer {
    sleep: Mutex<Option<(Pin<Box<Sleep>>, bool)>>,
}

impl Timer {
    /// The output of `fut`, or `None` if `deadline` passes first.
    pub async fn run<F: Future>(&self, deadline: Instant, fut: F) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            let mut slot = self.sleep.lock().expect("timer lock");
            let (sleep, registered) =
                slot.get_or_insert_with(|| (Box::pin(tokio::time::sleep_until(deadline)), false));
            if sleep.deadline() > deadline {
                sleep.as_mut().reset(deadline);
                *registered = false;
            }
            poll_lazily(sleep, registered, deadline, cx).map(|()| None)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn head_watch_fires_only_while_a_head_is_awaited() {
        let deadline = Arc::new(HeadDeadline::new(Duration::from_secs(10)));
        let mut watch = std::pin::pin!(HeadWatch::new(deadline.clone()));
        let pending =
            |watch: Pin<&mut HeadWatch>| futures::FutureExt::now_or_never(watch).is_none();
        deadline.start();
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(pending(watch.as_mut()));
        deadline.stop(); // a head came; its response takes long
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(pending(watch.as_mut()));
        deadline.start(); // the response ended
        assert!(pending(watch.as_mut()));
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(pending(watch.as_mut()));
        tokio::time::timeout(Duration::from_secs(2), watch.as_mut())
            .await
            .expect("fires 10 s after the wait started");
    }

    #[tokio::test(start_paused = true)]
    async fn timer_serves_one_wait_after_another() {
        let timer = Timer::default();
        let soon = Instant::now() + Duration::from_secs(5);
        assert_eq!(timer.run(soon, async { 1 }).await, Some(1));
        let late = tokio::time::sleep(Duration::from_secs(6));
        assert_eq!(timer.run(soon, late).await, None);
        // Later deadlines, then an earlier one than the timer's.
        let later = Instant::now() + Duration::from_secs(300);
        let quick = tokio::time::sleep(Duration::from_secs(1));
        assert_eq!(timer.run(later, quick).await, Some(()));
        let earlier = Instant::now() + Duration::from_secs(1);
        let slow = tokio::time::sleep(Duration::from_secs(2));
        let started = Instant::now();
        assert_eq!(timer.run(earlier, slow).await, None);
        assert!(started.elapsed() < Duration::from_millis(1100));
    }
}
