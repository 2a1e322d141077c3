//! Kinds whose CRDs a cluster may lack: Gateway API's HTTPRoute and cert-manager's Certificate.
//! A watch of that one CRD (by name, metadata only) says whether the kind is installed; the
//! kind's own watch starts once it is. So the operator starts and works on a cluster without
//! them, notices when they are installed later, and polls nothing meanwhile.

use super::apply::Child;
use super::expected::Expected;
use super::feed::{self, Feed};
use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event, watcher};
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

/// How soon to look again while an optional kind's cache is still listing.
pub const WHILE_LISTING: std::time::Duration = std::time::Duration::from_secs(2);

/// The cache of an optional kind and whether its CRD is installed.
#[derive(Clone)]
pub struct Optional<K: Child> {
    pub store: Store<K>,
    installed: watch::Receiver<bool>,
    /// Keeps the CRD watch running while any copy lives.
    _crd_watch: Option<Arc<AbortOnDropHandle<()>>>,
}

impl<K: Child> Optional<K> {
    /// Not installed (a cluster without the CRD; the default of a test context).
    pub fn absent() -> Self {
        Self::fixed(false, super::empty_store())
    }

    /// Installed, with `store` as its cache (tests).
    pub fn installed_with(store: Store<K>) -> Self {
        Self::fixed(true, store)
    }

    fn fixed(installed: bool, store: Store<K>) -> Self {
        let (sender, installed) = watch::channel(installed);
        // A receiver keeps the last value once the sender is gone.
        drop(sender);
        Self {
            store,
            installed,
            _crd_watch: None,
        }
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

/// Watches CRD `crd_name`, and once it exists, `K` objects selected by `selector`, trimmed by
/// `trim` into the returned cache; each stored event also clears what `expected` held for it.
pub fn start<K: Child>(
    client: &Client,
    namespace: Option<&str>,
    crd_name: &str,
    selector: &str,
    trim: impl Fn(&mut K) + Send + 'static,
    expected: &Arc<Expected>,
) -> (Optional<K>, Feed<K>) {
    let (present, installed) = watch::channel(false);
    let crds: Api<PartialObjectMeta<CustomResourceDefinition>> = Api::all(client.clone());
    let crd_events = watcher(
        crds,
        watcher::Config::default().fields(&format!("metadata.name={crd_name}")),
    )
    .backoff(feed::backoff());
    let crd_watch = tokio::spawn(follow_crd(crd_events, present));

    let (store, writer) = reflector::store();
    let api = super::scoped_api::<K>(client, namespace);
    let config = super::watch_config().labels(selector);
    let observer = expected.observer::<K>();
    let mut wait = installed.clone();
    let events = futures::stream::once(async move {
        // Until the CRD exists, a LIST would only answer 404.
        let _ = wait.wait_for(|installed| *installed).await;
        watcher(api, config)
            .backoff(feed::backoff())
            .modify(trim)
            .reflect(writer)
            .inspect(observer)
    })
    .flatten();
    let feed = feed::spawn(K::kind(&()).into_owned(), events, None);
    (
        Optional {
            store,
            installed,
            _crd_watch: Some(Arc::new(AbortOnDropHandle::new(crd_watch))),
        },
        feed,
    )
}

/// Keeps `present` equal to "the CRD exists" from its watch events.
async fn follow_crd<S>(events: S, present: watch::Sender<bool>)
where
    S: futures::Stream<
            Item = Result<Event<PartialObjectMeta<CustomResourceDefinition>>, watcher::Error>,
        >,
{
    let mut events = std::pin::pin!(events);
    let mut listed = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listed = false,
            Ok(Event::InitApply(_)) => listed = true,
            Ok(Event::InitDone) => {
                present.send_replace(listed);
            }
            Ok(Event::Apply(_)) => {
                present.send_replace(true);
            }
            Ok(Event::Delete(_)) => {
                present.send_replace(false);
            }
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
    pub listing: bool,
}

/// Applies `desired` (or deletes ours, named `name`, when not wanted) where the cluster has the
/// kind.
pub(super) async fn apply_or_delete<K: Child>(
    ctx: &super::Context,
    app: &crate::api::MeteorApp,
    namespace: &str,
    kind: &Optional<K>,
    name: &str,
    desired: Option<K>,
) -> Result<OptionalOutcome<K>, kube::Error> {
    let outcome = |state, writes| OptionalOutcome {
        listing: matches!(state, Optionally::Listing),
        state,
        writes,
    };
    if !kind.installed() {
        let state = if desired.is_some() {
            Optionally::NotInstalled
        } else {
            Optionally::NotWanted
        };
        return Ok(outcome(state, 0));
    }
    if !kind.listed() {
        let state = if desired.is_some() {
            Optionally::Listing
        } else {
            Optionally::NotWanted
        };
        return Ok(outcome(state, 0));
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
