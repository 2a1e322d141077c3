//! Watch streams that run on every replica but reach the reconciler only once it leads: a
//! standby keeps its caches current, and nothing downstream of a standby's watch can stall it.
//!
//! kube-runtime's shared streams were not used: their broadcast drops deletions (a child deleted
//! by hand would not trigger its re-creation) and an idle subscriber stalls the reflector.

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::Store;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, DefaultBackoff, Event};
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;

/// The retry delays of every watch: from 0.8 s, doubling to 30 s while it keeps failing, and from
/// 0.8 s again after two minutes without a failure.
///
/// kube-runtime's `default_backoff` starts over at every item of the stream, and a watcher sends
/// one (`Init`) before each attempt to list, so a list that always fails (the MeteorApp CRD is
/// missing, RBAC forbids it) would be retried every 0.8 s forever. This is the same backoff
/// without those resets: its own timer starts it over after two quiet minutes.
pub struct WatchBackoff(DefaultBackoff);

pub fn backoff() -> WatchBackoff {
    WatchBackoff(DefaultBackoff::default())
}

impl Iterator for WatchBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        self.0.next()
    }
}

impl Backoff for WatchBackoff {
    /// Called on every item of the stream; only two quiet minutes start the delays over.
    fn reset(&mut self) {}
}

/// Why a watch of `kind` failed, with what to do where the cause is known.
fn explain(kind: &str, error: &watcher::Error) -> String {
    let status = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status.code),
        watcher::Error::WatchError(status) => Some(status.code),
        _ => None,
    };
    match status {
        Some(404) if kind == "MeteorApp" => format!(
            "the MeteorApp CRD (meteorapps.meteorfleet.dev) is not installed: apply crds/ or \
             install the chart ({error})"
        ),
        Some(404) => format!("the API server does not serve {kind} ({error})"),
        Some(403) => {
            format!("the operator may not list or watch {kind}: its ClusterRole lacks it ({error})")
        }
        _ => error.to_string(),
    }
}

/// Objects in flight between a watch and the reconciler; the controller's scheduler drains
/// them at once, so this only smooths bursts.
const BUFFER: usize = 1024;

/// The changes of one kind: the watch runs from [`spawn`] on, and its touched objects (applied,
/// deleted, listed) are dropped until [`Feed::open`].
pub struct Feed<K> {
    open: oneshot::Sender<mpsc::Sender<K>>,
    task: AbortOnDropHandle<()>,
}

/// Drives `events` (a watcher, reflected into its cache or not) in a task of its own.
///
/// With `replay`, opening first sends every object of that cache, so each is reconciled once
/// when this replica starts to lead. Events are forwarded after the reflector stored them, so an
/// object seen before opening is in the cache by then; one that arrived during a re-list is
/// swapped in only when the list completes, which is why a replay also follows that list.
pub fn spawn<K, S>(kind: String, events: S, replay: Option<Store<K>>) -> Feed<K>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
{
    let (open, opened) = oneshot::channel();
    let task = tokio::spawn(forward(kind, events, opened, replay));
    Feed {
        open,
        task: AbortOnDropHandle::new(task),
    }
}

impl<K: Send + 'static> Feed<K> {
    /// From now on, every touched object goes to the returned stream. Dropping the stream stops
    /// the watch.
    pub fn open(self) -> Opened<K> {
        let (sender, receiver) = mpsc::channel(BUFFER);
        // The task only ends when its watch ends, which a watcher never does.
        let _ = self.open.send(sender);
        Opened {
            receiver,
            _task: self.task,
        }
    }
}

/// The stream of an opened [`Feed`], in the shape the kube-runtime `Controller` takes.
pub struct Opened<K> {
    receiver: mpsc::Receiver<K>,
    _task: AbortOnDropHandle<()>,
}

impl<K> Stream for Opened<K> {
    type Item = Result<K, watcher::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx).map(|object| object.map(Ok))
    }
}

async fn forward<K, S>(
    kind: String,
    events: S,
    mut opened: oneshot::Receiver<mpsc::Sender<K>>,
    replay: Option<Store<K>>,
) where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
{
    let mut events = std::pin::pin!(events);
    let mut out: Option<mpsc::Sender<K>> = None;
    let mut waiting = true;
    let mut listing = false;
    let mut replay_after_list = false;
    let mut failures = 0u32;
    loop {
        tokio::select! {
            sender = &mut opened, if waiting => {
                waiting = false;
                let Ok(sender) = sender else { continue };
                if let Some(store) = &replay {
                    send_all(&sender, store).await;
                    replay_after_list = listing;
                }
                out = Some(sender);
            }
            event = events.next() => {
                let touched = match event {
                    None => return,
                    Some(Err(error)) => {
                        failures = failures.saturating_add(1);
                        let error = explain(&kind, &error);
                        tracing::warn!(%kind, %error, failures, "watch failed; retrying with a growing backoff");
                        continue;
                    }

                    Some(Ok(Event::Init)) => {
                        listing = true;
                        continue;
                    }
                    Some(Ok(Event::InitDone)) => {
                        if failures > 0 {
                            tracing::info!(%kind, failures, "watch listed again after failures");
                            failures = 0;
                        }
                        listing = false;
                        if let (true, Some(store), Some(sender)) = (replay_after_list, &replay, &out) {
                            replay_after_list = false;
                            send_all(sender, store).await;
                        }
                        continue;
                    }
                    Some(Ok(Event::InitApply(object) | Event::Apply(object) | Event::Delete(object))) => object,
                };
                if let Some(sender) = &out
                    && sender.send(touched).await.is_err()
                {
                    // The reconciler stopped; the cache stays current for whoever still reads it.
                    out = None;
                }
            }
        }
    }
}

async fn send_all<K>(sender: &mpsc::Sender<K>, store: &Store<K>)
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    for object in store.state() {
        if sender.send(object.as_ref().clone()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector;
    use kube::runtime::{WatchStreamExt, reflector::ObjectRef};
    use std::time::Duration;

    fn config_map(name: &str) -> ConfigMap {
        let mut object = ConfigMap::default();
        object.metadata.name = Some(name.into());
        object.metadata.namespace = Some("default".into());
        object
    }

    async fn next_name(opened: &mut Opened<ConfigMap>) -> String {
        tokio::time::timeout(Duration::from_secs(5), opened.next())
            .await
            .expect("an object in time")
            .expect("the stream is open")
            .expect("no error")
            .metadata
            .name
            .unwrap()
    }

    /// A standby's watch is never held back by the closed feed (far more events than the
    /// buffer pass), its cache stays current, and opening replays the cache before new events.
    #[tokio::test]
    async fn a_closed_feed_never_stalls_the_cache_and_opening_replays_it() {
        let (events_tx, events_rx) = mpsc::unbounded_channel::<Event<ConfigMap>>();
        let events = tokio_stream_of(events_rx);
        let (store, writer) = reflector::store();
        let feed = spawn(
            "ConfigMap".into(),
            events.reflect(writer),
            Some(store.clone()),
        );
        events_tx.send(Event::Init).unwrap();
        events_tx.send(Event::InitDone).unwrap();
        let many = BUFFER * 3;
        for i in 0..many {
            events_tx
                .send(Event::Apply(config_map(&format!("cm-{i}"))))
                .unwrap();
        }
        let last = ObjectRef::new(&format!("cm-{}", many - 1)).within("default");
        tokio::time::timeout(Duration::from_secs(10), async {
            while store.get(&last).is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the cache took every event while the feed was closed");

        let mut opened = feed.open();
        let mut replayed: Vec<String> = Vec::new();
        for _ in 0..many {
            replayed.push(next_name(&mut opened).await);
        }
        replayed.sort();
        let mut want: Vec<String> = (0..many).map(|i| format!("cm-{i}")).collect();
        want.sort();
        assert_eq!(replayed, want);
        events_tx.send(Event::Delete(config_map("cm-0"))).unwrap();
        assert_eq!(
            next_name(&mut opened).await,
            "cm-0",
            "deletions are forwarded"
        );
    }

    /// Opened in the middle of a re-list, the feed replays again when the list completes, so an
    /// object listed before opening (not yet in the cache then) is not missed.
    #[tokio::test]
    async fn opened_during_a_list_replays_when_it_completes() {
        let (events_tx, events_rx) = mpsc::unbounded_channel::<Event<ConfigMap>>();
        let (store, writer) = reflector::store();
        let feed = spawn(
            "ConfigMap".into(),
            tokio_stream_of(events_rx).reflect(writer),
            Some(store.clone()),
        );
        events_tx.send(Event::Init).unwrap();
        events_tx
            .send(Event::InitApply(config_map("early")))
            .unwrap();
        // Let the task take both before opening.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut opened = feed.open();
        tokio::time::sleep(Duration::from_millis(100)).await;
        events_tx.send(Event::InitDone).unwrap();
        assert_eq!(next_name(&mut opened).await, "early");
    }

    /// The watcher's `Init` before each list resets the backoff it is given; ours still grows.
    #[test]
    fn the_watch_backoff_grows_through_the_resets_of_a_failing_watch() {
        let mut backoff = backoff();
        let mut delays = Vec::new();
        for _ in 0..6 {
            backoff.reset();
            delays.push(backoff.next().expect("never gives up"));
        }
        assert!(delays[0] < Duration::from_secs(2), "{delays:?}");
        assert!(delays[4] >= Duration::from_millis(12_800), "{delays:?}");
        assert!(delays[5] >= Duration::from_secs(25), "{delays:?}");
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(60)),
            "{delays:?}"
        );
    }

    fn tokio_stream_of<K: Send + 'static>(
        mut receiver: mpsc::UnboundedReceiver<Event<K>>,
    ) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static {
        futures::stream::poll_fn(move |cx| receiver.poll_recv(cx).map(|e| e.map(Ok)))
    }
}
