//! Kinds whose CRDs a cluster may lack: Gateway API's HTTPRoute and cert-manager's Certificate.
//! A watch of that one CRD (by name, metadata only) says whether the kind is installed; the
//! kind's own watch starts once it is. So the operator starts and works on a cluster without
//! them, notices when they are installed later (every app is then reconciled once, so one that
//! waited for the kind gets it at once), and polls nothing meanwhile.

use super::cached::{self, Cache, Cached, Compact};
use super::expected::Expected;
use super::feed::{self, Feed};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector;
use kube::runtime::watcher::{self, Event, watcher};
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

/// How soon to look again while an optional kind's cache is still listing.
pub const WHILE_LISTING: std::time::Duration = std::time::Duration::from_secs(2);

/// The cache of an optional kind and whether its CRD is installed.
#[derive(Clone)]
pub struct Optional<K: Compact> {
    pub store: Cache<K>,
    installed: watch::Receiver<bool>,
    /// How many times the CRD appeared after the operator's first look at it.
    installs: watch::Receiver<u64>,
    /// Keeps the CRD watch running while any copy lives.
    _crd_watch: Option<Arc<AbortOnDropHandle<()>>>,
}

impl<K: Compact> Optional<K> {
    /// Not installed (a cluster without the CRD; the default of a test context).
    pub fn absent() -> Self {
        Self::fixed(false, super::empty_store())
    }

    /// Installed, with `store` as its cache (tests).
    pub fn installed_with(store: Cache<K>) -> Self {
        Self::fixed(true, store)
    }

    fn fixed(installed: bool, store: Cache<K>) -> Self {
        let (sender, installed) = watch::channel(installed);
        let (_, installs) = watch::channel(0);
        // A receiver keeps the last value once the sender is gone.
        drop(sender);
        Self {
            store,
            installed,
            installs,
            _crd_watch: None,
        }
    }

    /// One item each time the CRD appears after the operator first looked (not for a CRD that
    /// was there at start-up: every app is reconciled then anyway). Ends when the CRD watch does.
    pub fn installed_later(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        let mut installs = self.installs.clone();
        installs.mark_unchanged();
        futures::stream::unfold(installs, |mut installs| async move {
            installs.changed().await.ok()?;
            Some(((), installs))
        })
    }

    /// `desired` where the cluster serves the kind: a name of a kind the cluster lacks cannot be
    /// taken.
    pub fn if_installed<'a>(&self, desired: Option<&'a K>) -> Option<&'a K> {
        desired.filter(|_| self.installed())
    }

    /// Whether the cluster serves the kind (its CRD exists).
    pub fn installed(&self) -> bool {
        *self.installed.borrow()
    }

    /// Whether the cache has listed, so a missing object is really missing.
    pub fn listed(&self) -> bool {
        use futures::FutureExt;
        matches!(self.store.wait_until_ready().now_or_never(), Some(Ok(())))
    }
}

/// Watches CRD `crd_name`, and once it exists, `K` objects selected by `selector` into the
/// returned cache; each stored event also clears what `expected` held for it.
pub fn start<K: Compact>(
    client: &Client,
    namespace: Option<&str>,
    crd_name: &str,
    selector: &str,
    expected: &Arc<Expected>,
) -> (Optional<K>, Feed<Cached<K>>) {
    let (present, installed) = watch::channel(false);
    let (later, installs) = watch::channel(0);
    let crds: Api<PartialObjectMeta<CustomResourceDefinition>> = Api::all(client.clone());
    let crd_events = watcher(
        crds,
        watcher::Config::default().fields(&format!("metadata.name={crd_name}")),
    )
    .backoff(feed::backoff());
    let crd_watch = tokio::spawn(follow_crd(crd_events, present, later));

    let (store, writer) = reflector::store();
    let api = super::scoped_api::<K>(client, namespace);
    let config = super::watch_config().labels(selector);
    let observer = expected.observer::<Cached<K>>();
    let mut wait = installed.clone();
    let events = futures::stream::once(async move {
        // Until the CRD exists, a LIST would only answer 404.
        let _ = wait.wait_for(|installed| *installed).await;
        watcher(api, config)
            .backoff(feed::backoff())
            .map_ok(cached::event)
            .reflect(writer)
            .inspect(observer)
    })
    .flatten();
    let feed = feed::spawn(K::kind(&()).into_owned(), events, None);
    (
        Optional {
            store,
            installed,
            installs,
            _crd_watch: Some(Arc::new(AbortOnDropHandle::new(crd_watch))),
        },
        feed,
    )
}

/// Keeps `present` equal to "the CRD exists" from its watch events, and counts in `later` each
/// time it comes to exist after the first listing.
async fn follow_crd<S>(events: S, present: watch::Sender<bool>, later: watch::Sender<u64>)
where
    S: futures::Stream<
            Item = Result<Event<PartialObjectMeta<CustomResourceDefinition>>, watcher::Error>,
        >,
{
    let mut events = std::pin::pin!(events);
    let mut listed = false;
    let mut first_listing = true;
    let set = |exists: bool, first_listing: bool| {
        let appeared = present.send_if_modified(|was| {
            let changed = *was != exists;
            *was = exists;
            changed
        }) && exists;
        if appeared && !first_listing {
            later.send_modify(|count| *count += 1);
        }
    };
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listed = false,
            Ok(Event::InitApply(_)) => listed = true,
            Ok(Event::InitDone) => {
                set(listed, first_listing);
                first_listing = false;
            }
            Ok(Event::Apply(_)) => set(true, first_listing),
            Ok(Event::Delete(_)) => set(false, first_listing),
            // The backoff retries; the last known answer stands meanwhile.
            Err(error) => tracing::debug!(%error, "watching a CRD"),
        }
    }
}

/// An optional kind's child, as far as the cluster allows.
pub(super) enum Optionally<K> {
    NotWanted,
    NotInstalled,
    /// Installed, but its cache has not listed yet.
    Listing,
    Seen(std::sync::Arc<K>),
}

pub(super) struct OptionalOutcome<K> {
    pub state: Optionally<K>,
    pub writes: u64,
}

impl<K> OptionalOutcome<K> {
    /// Installed, but its cache has not listed yet: worth another look soon.
    pub fn listing(&self) -> bool {
        matches!(self.state, Optionally::Listing)
    }
}

/// Applies `desired` (or deletes ours, named `name`, when not wanted) where the cluster has the
/// kind.
pub(super) async fn apply_or_delete<K: Compact>(
    ctx: &super::Context,
    app: &crate::api::MeteorApp,
    namespace: &str,
    kind: &Optional<K>,
    name: &str,
    desired: Option<K>,
) -> Result<OptionalOutcome<K>, kube::Error> {
    let outcome = |state, writes| OptionalOutcome { state, writes };
    // Nothing to write yet: what the status says, if the spec wants one.
    let unwritten = |why| {
        let state = if desired.is_some() {
            why
        } else {
            Optionally::NotWanted
        };
        Ok(outcome(state, 0))
    };
    if !kind.installed() {
        return unwritten(Optionally::NotInstalled);
    }
    if !kind.listed() {
        return unwritten(Optionally::Listing);
    }
    let applier = &ctx.applier;
    match desired {
        Some(desired) => {
            let applied = applier.apply_cached(&kind.store, desired).await?;
            let writes = applied.writes();
            let current = applied
                .written()
                .map(std::sync::Arc::new)
                .or_else(|| ctx.observed(&kind.store, namespace, name));
            let state = current.map_or(Optionally::NotWanted, Optionally::Seen);
            Ok(outcome(state, writes))
        }
        None => {
            let observed = ctx.observed(&kind.store, namespace, name);
            let writes = u64::from(
                applier
                    .delete(super::reconcile::owned(app, observed))
                    .await?,
            );
            Ok(outcome(Optionally::NotWanted, writes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type CrdEvent = Result<Event<PartialObjectMeta<CustomResourceDefinition>>, watcher::Error>;

    fn crd() -> PartialObjectMeta<CustomResourceDefinition> {
        PartialObjectMeta::default()
    }

    /// What `follow_crd` leaves after `events`: whether the kind is installed, and how many
    /// times it appeared after the first listing.
    async fn follow(events: Vec<CrdEvent>) -> (bool, u64) {
        let (present, installed) = watch::channel(false);
        let (later, installs) = watch::channel(0);
        follow_crd(futures::stream::iter(events), present, later).await;
        (*installed.borrow(), *installs.borrow())
    }

    fn listing(present: bool) -> Vec<CrdEvent> {
        let mut events = vec![Ok(Event::Init)];
        if present {
            events.push(Ok(Event::InitApply(crd())));
        }
        events.push(Ok(Event::InitDone));
        events
    }

    #[tokio::test]
    async fn a_crd_there_at_start_up_is_installed_but_not_installed_later() {
        assert_eq!(follow(listing(true)).await, (true, 0));
        // Its updates and a relist that finds it again change nothing.
        let mut events = listing(true);
        events.push(Ok(Event::Apply(crd())));
        events.extend(listing(true));
        assert_eq!(follow(events).await, (true, 0));
    }

    #[tokio::test]
    async fn a_crd_created_while_the_operator_runs_counts_each_time_it_appears() {
        assert_eq!(follow(listing(false)).await, (false, 0));
        let created = || {
            let mut events = listing(false);
            events.push(Ok(Event::Apply(crd())));
            events
        };
        assert_eq!(follow(created()).await, (true, 1));
        // Deleted, then found again by a relist: a second appearance.
        let mut events = created();
        events.push(Ok(Event::Delete(crd())));
        events.extend(listing(true));
        assert_eq!(follow(events).await, (true, 2));
    }

    #[tokio::test]
    async fn installed_later_yields_once_per_appearance_and_ends_with_the_watch() {
        let (present, installed) = watch::channel(false);
        let (later, installs) = watch::channel(0);
        let optional = Optional::<k8s_openapi::api::core::v1::Service> {
            store: super::super::empty_store(),
            installed,
            installs,
            _crd_watch: None,
        };
        let appearances = optional.installed_later();
        let mut events = listing(false);
        events.push(Ok(Event::Apply(crd())));
        follow_crd(futures::stream::iter(events), present, later).await;
        // The watch ended (its sender dropped): one item, then the end.
        let seen: Vec<()> = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            appearances.collect::<Vec<_>>(),
        )
        .await
        .expect("the stream ends with the CRD watch");
        assert_eq!(seen.len(), 1);
    }
}
