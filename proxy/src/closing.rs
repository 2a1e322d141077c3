//! When WebSocket tunnels close during a backend's drain or the proxy's shutdown: one by one
//! across the window, so their clients do not all reconnect at the same instant. It never
//! closes a tunnel after the window's deadline, and costs an idle tunnel no lock.
//!
//! A [`Closer`] announces windows (a backend's drain, withdrawn if the backend comes back; the
//! proxy's shutdown). Each tunnel awaits [`slot`] in its own select: when a window opens it
//! draws its close instant from the window's counter, one atomic add, and sleeps until then.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::sync::watch;
use tokio::time::Instant;

/// A close window: the tunnels open when it began get evenly spaced close instants in it.
pub struct Window {
    start: Instant,
    length: Duration,
    /// Tunnels open when the window began.
    slots: usize,
    taken: AtomicUsize,
}

impl Window {
    pub fn new(start: Instant, length: Duration, slots: usize) -> Self {
        Self {
            start,
            length,
            slots,
            taken: AtomicUsize::new(0),
        }
    }

    pub fn deadline(&self) -> Instant {
        self.start + self.length
    }

    /// The close instant of the tunnel asking: slot k of n closes at start + length·(k+1)/(n+1).
    ///
    /// Even spacing rather than a uniform random instant each: n clients then reconnect at a
    /// steady rate, where 20 random draws put 4 or more into some tenth of the window about
    /// three times in four. No client is always first either: slots go in the order the
    /// tunnels woke, which is arbitrary. A tunnel beyond n (its upgrade finished after the
    /// window began) closes at the deadline.
    pub fn close_at(&self) -> Instant {
        let k = self.taken.fetch_add(1, Ordering::Relaxed);
        if k >= self.slots {
            return self.deadline();
        }
        self.start
            + self
                .length
                .mul_f64((k + 1) as f64 / (self.slots + 1) as f64)
    }
}

/// The current window of a [`Closer`], if one is open.
pub type Windows = watch::Receiver<Option<Arc<Window>>>;

/// Announces close windows to the tunnels that follow it.
#[derive(Default)]
pub struct Closer {
    windows: watch::Sender<Option<Arc<Window>>>,
}

impl Closer {
    /// Opens a window of `length` from now for `slots` tunnels (replacing any open one) and
    /// returns its deadline.
    pub fn open(&self, length: Duration, slots: usize) -> Instant {
        let window = Window::new(Instant::now(), length, slots);
        let deadline = window.deadline();
        self.windows.send_replace(Some(Arc::new(window)));
        deadline
    }

    /// Closes the window early: tunnels that have not closed yet stay open.
    pub fn withdraw(&self) {
        self.windows.send_replace(None);
    }

    /// For one tunnel: a window already open when it subscribes gives it a slot too.
    pub fn follow(&self) -> Windows {
        self.windows.subscribe()
    }
}

/// Resolves at the tunnel's close instant: its slot in the earliest-closing window open on
/// `followed` (its backend's drain, the proxy's shutdown), with the index in `followed` of
/// that window. A withdrawn window releases it.
pub async fn slot(mut followed: [Windows; 2]) -> usize {
    // Per followed closer: the slot drawn and the window it came from, so one window gives
    // one slot however often the tunnel looks.
    let mut drawn: [Option<(Instant, Arc<Window>)>; 2] = [None, None];
    loop {
        for (windows, drawn) in followed.iter_mut().zip(&mut drawn) {
            let current = windows.borrow_and_update().clone();
            if current.as_ref().map(Arc::as_ptr) != drawn.as_ref().map(|(_, w)| Arc::as_ptr(w)) {
                *drawn = current.map(|w| (w.close_at(), w));
            }
        }
        let earliest = drawn
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.as_ref().map(|(at, _)| (*at, i)))
            .min();
        let [drain, shutdown] = &mut followed;
        tokio::select! {
            () = sleep_until(earliest.map(|(at, _)| at)) => return earliest.map_or(0, |(_, i)| i),
            () = changed(drain) => {}
            () = changed(shutdown) => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves when `windows` changes; never once its [`Closer`] is gone.
async fn changed(windows: &mut Windows) {
    if windows.changed().await.is_err() {
        std::future::pending().await
    }
}

pin_project_lite::pin_project! {
    /// `signal`, polled only when its own waker fired. A tunnel's task wakes for every read
    /// and write, and each poll of a waiting close signal (a `Notify` inside watch channels and
    /// cancellation tokens) takes that signal's mutex, which every tunnel of a backend, or of
    /// the proxy, shares. (A struct, not an `async fn`: that would hold `signal` twice.)
    pub struct PolledOnWake<F> {
        #[pin]
        signal: F,
        flag: Arc<WakeFlag>,
        waker: Waker,
    }
}

impl<F: Future> PolledOnWake<F> {
    pub fn new(signal: F) -> Self {
        let flag = Arc::new(WakeFlag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(flag.clone());
        Self {
            signal,
            flag,
            waker,
        }
    }
}

impl<F: Future> Future for PolledOnWake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        this.flag.task.register(cx.waker());
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.signal.poll(&mut Context::from_waker(this.waker))
    }
}

/// Set by the signal's waker; the task's own waker is passed the wake-up.
pub struct WakeFlag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn slots_are_evenly_spaced_and_extras_close_at_the_deadline() {
        let start = Instant::now();
        let window = Window::new(start, 10 * SECOND, 4);
        let offsets: Vec<_> = (0..6).map(|_| window.close_at() - start).collect();
        let expected = [2, 4, 6, 8, 10, 10].map(|s| s * SECOND);
        assert_eq!(offsets, expected);
    }

    /// Starts `n` tunnels' close waits; the returned task yields the second each one closed.
    fn tunnels(n: usize, drain: &Closer, shutdown: &Closer) -> tokio::task::JoinHandle<Vec<u64>> {
        let start = Instant::now();
        let waits: Vec<_> = (0..n)
            .map(|_| slot([drain.follow(), shutdown.follow()]))
            .collect();
        tokio::spawn(async move {
            let mut closed = Vec::new();
            for wait in waits {
                wait.await;
                closed.push((Instant::now() - start).as_secs());
            }
            closed
        })
    }

    /// A tunnel learns which window closed it: its backend's drain (0) or the shutdown (1).
    #[tokio::test(start_paused = true)]
    async fn the_window_that_closes_a_tunnel_is_named() {
        for (drain_length, shutdown_length, which) in [(2, 60, 0), (60, 2, 1)] {
            let (drain, shutdown) = (Closer::default(), Closer::default());
            let wait = tokio::spawn(slot([drain.follow(), shutdown.follow()]));
            tokio::task::yield_now().await;
            drain.open(drain_length * SECOND, 1);
            shutdown.open(shutdown_length * SECOND, 1);
            assert_eq!(wait.await.unwrap(), which);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_closes_its_tunnels_one_by_one() {
        let (drain, shutdown) = (Closer::default(), Closer::default());
        let closed = tunnels(3, &drain, &shutdown);
        tokio::task::yield_now().await;
        drain.open(8 * SECOND, 3);
        let mut closed = closed.await.unwrap();
        closed.sort();
        assert_eq!(closed, [2, 4, 6]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_withdrawn_drain_keeps_tunnels_open_and_the_earlier_window_wins() {
        let (drain, shutdown) = (Closer::default(), Closer::default());
        let closed = tunnels(1, &drain, &shutdown);
        drain.open(4 * SECOND, 1);
        tokio::time::sleep(SECOND).await;
        drain.withdraw(); // the backend came back before the slot at 2 s
        tokio::time::sleep(10 * SECOND).await;
        assert!(
            !closed.is_finished(),
            "closed although the drain was withdrawn"
        );
        // Both open: the shutdown's slot (11 + 1 s) comes before the drain's (11 + 30 s).
        drain.open(60 * SECOND, 1);
        shutdown.open(2 * SECOND, 1);
        assert_eq!(closed.await.unwrap(), [12]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tunnel_arriving_in_an_open_window_closes_by_its_deadline() {
        let (drain, shutdown) = (Closer::default(), Closer::default());
        drain.open(5 * SECOND, 0);
        assert_eq!(tunnels(1, &drain, &shutdown).await.unwrap(), [5]);
    }

    /// Counts its polls; ready once its waker was woken.
    struct Signal {
        polls: Arc<AtomicUsize>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
        fired: Arc<AtomicBool>,
    }

    impl Future for Signal {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            if self.fired.load(Ordering::Relaxed) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn the_signal_is_polled_only_when_it_woke() {
        let signal = Signal {
            polls: Arc::default(),
            waker: Arc::default(),
            fired: Arc::default(),
        };
        let (polls, waker, fired) = (
            signal.polls.clone(),
            signal.waker.clone(),
            signal.fired.clone(),
        );
        let mut gated = Box::pin(PolledOnWake::new(signal));
        let mut cx = Context::from_waker(Waker::noop());
        // The task polls it for its other work (tunnel bytes): the signal is not polled again.
        for _ in 0..100 {
            assert!(gated.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        fired.store(true, Ordering::Relaxed);
        waker.lock().unwrap().take().unwrap().wake();
        assert!(gated.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }
}
