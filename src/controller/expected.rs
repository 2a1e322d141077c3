//! Children the operator wrote that their cache has not shown yet. A reconcile that starts before
//! the watch delivers the operator's own last write would see the child missing (or as it was)
//! and write it again, or look it up as a possible namesake; it uses the written object instead.
//! An entry leaves when the cache holds that version or a later one, when the watch delivers
//! such a version (or a deletion, or a relist), and after a minute at most, so a lost event cannot
//! pin a stale view.
//!
//! "Or a later one" matters on a real cluster: the Deployment controller writes a Deployment's
//! status right after the operator's write, and the watch may deliver both before the operator
//! has the API's answer in hand. Had the entry waited for exactly the written version, it would
//! stand in for the cache (with no status) for its whole minute, and `Ready` would come a minute
//! late. Resource versions of one resource compare as integers (KEP-5504, stable in Kubernetes
//! 1.35, and true of every etcd-backed API server); where one does not parse, only equality
//! counts.

use super::cached::{Cache, Cached, Compact};
use crate::api::{MeteorApp, MeteorAppStatus};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, Event};
use kube::{Resource, ResourceExt};
use std::any::Any;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest an entry is trusted over the cache.
const AT_MOST: Duration = Duration::from_secs(60);

/// Kind, namespace, name.
type Key = (String, String, String);

struct Written {
    version: Option<String>,
    object: Arc<dyn Any + Send + Sync>,
    at: Instant,
}

#[derive(Default)]
pub struct Expected {
    written: Mutex<HashMap<Key, Written>>,
    /// The MeteorApp status last written per app, with the version the API answered: status
    /// writes trigger no reconcile, but a Deployment event can start one before the MeteorApp
    /// watch delivers the write, and it would compare against the older status and write again.
    statuses: Mutex<HashMap<(String, String), WrittenStatus>>,
}

struct WrittenStatus {
    version: Option<String>,
    status: MeteorAppStatus,
    at: Instant,
}

/// Drops the entries older than `horizon` and returns the time of the sweep: one clock read per
/// write, not one per entry (a fleet's worth of entries are swept on every write).
pub(super) fn sweep<K, V>(
    map: &mut HashMap<K, V>,
    horizon: Duration,
    at: impl Fn(&V) -> Instant,
) -> Instant {
    let now = Instant::now();
    map.retain(|_, entry| now.duration_since(at(entry)) < horizon);
    now
}

fn key_of<K: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> Key {
    (K::kind(&()).into_owned(), namespace.into(), name.into())
}

impl Expected {
    /// Records what the API answered to a write of a child, kept as its cache would keep it.
    pub fn written<K: Compact>(&self, answer: K) {
        let key = key_of::<K>(&answer.namespace().unwrap_or_default(), &answer.name_any());
        let version = answer.resource_version();
        let mut written = self.lock();
        let now = sweep(&mut written, AT_MOST, |w| w.at);
        written.insert(
            key,
            Written {
                version,
                object: Arc::new(Cached::new(answer)),
                at: now,
            },
        );
    }

    /// Forgets a child the operator deleted.
    pub fn deleted<K: Resource<DynamicType = ()>>(&self, namespace: &str, name: &str) {
        self.lock().remove(&key_of::<K>(namespace, name));
    }

    /// The child as the operator last wrote it, while `cache` does not show that write yet;
    /// else the cache's view.
    pub fn observed<K: Compact>(
        &self,
        cache: &Cache<K>,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<K>> {
        let cached = self.observed_cached(cache, namespace, name)?;
        Some(Arc::new(cached.object()))
    }

    /// [`Expected::observed`] as the cache keeps it.
    pub fn observed_cached<K: Compact>(
        &self,
        cache: &Cache<K>,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<Cached<K>>> {
        let cached = cache.get(&ObjectRef::new(name).within(namespace));
        let key = key_of::<K>(namespace, name);
        let mut written = self.lock();
        let Some(entry) = written.get(&key) else {
            return cached;
        };
        let caught_up = cached
            .as_ref()
            .is_some_and(|c| at_least(c.resource_version(), &entry.version));
        if caught_up || entry.at.elapsed() >= AT_MOST {
            written.remove(&key);
            return cached;
        }
        entry.object.clone().downcast::<Cached<K>>().ok().or(cached)
    }

    /// For `StreamExt::inspect` after the reflector of `K`'s cache: drops entries the watch
    /// delivered (their version, a deletion, or a whole relist).
    pub fn observer<K: Resource<DynamicType = ()>>(
        self: &Arc<Self>,
    ) -> impl FnMut(&Result<Event<K>, watcher::Error>) + Send + 'static {
        let expected = self.clone();
        move |item| {
            let Ok(event) = item else { return };
            let mut written = expected.lock();
            match event {
                Event::Apply(object) | Event::InitApply(object) => {
                    let key =
                        key_of::<K>(&object.namespace().unwrap_or_default(), &object.name_any());
                    if written
                        .get(&key)
                        .is_some_and(|w| at_least(object.resource_version(), &w.version))
                    {
                        written.remove(&key);
                    }
                }
                Event::Delete(object) => {
                    written.remove(&key_of::<K>(
                        &object.namespace().unwrap_or_default(),
                        &object.name_any(),
                    ));
                }
                Event::InitDone => {
                    let kind = K::kind(&());
                    written.retain(|(k, _, _), _| *k != kind);
                }
                Event::Init => {}
            }
        }
    }

    /// Records the API's answer to a status write of a MeteorApp.
    pub fn status_written(&self, answer: &MeteorApp) {
        let Some(status) = answer.status.clone() else {
            return;
        };
        let mut statuses = self.statuses.lock().expect("lock is never poisoned");
        let now = sweep(&mut statuses, AT_MOST, |w| w.at);
        statuses.insert(
            (answer.namespace().unwrap_or_default(), answer.name_any()),
            WrittenStatus {
                version: answer.resource_version(),
                status,
                at: now,
            },
        );
    }

    /// `app` with the status last written, when its cached version predates that write.
    pub fn with_written_status(&self, app: Arc<MeteorApp>) -> Arc<MeteorApp> {
        let key = (app.namespace().unwrap_or_default(), app.name_any());
        let mut statuses = self.statuses.lock().expect("lock is never poisoned");
        let Some(written) = statuses.get(&key) else {
            return app;
        };
        if written.at.elapsed() >= AT_MOST || at_least(app.resource_version(), &written.version) {
            statuses.remove(&key);
            return app;
        }
        let mut fresher = (*app).clone();
        fresher.status = Some(written.status.clone());
        Arc::new(fresher)
    }

    /// Drops what is older than `horizon` (the writes' own sweep runs only on the next write:
    /// at rest, the last burst's entries would otherwise stay, a status per app).
    pub fn forget_older_than(&self, horizon: Duration) {
        sweep(&mut self.lock(), horizon, |w| w.at);
        let mut statuses = self.statuses.lock().expect("lock is never poisoned");
        sweep(&mut statuses, horizon, |w| w.at);
    }

    /// [`Expected::forget_older_than`] the longest an entry is trusted.
    pub fn forget_expired(&self) {
        self.forget_older_than(AT_MOST);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Written>> {
        self.written.lock().expect("lock is never poisoned")
    }
}

/// Whether `seen` is the version `written` or a later one.
fn at_least(seen: Option<String>, written: &Option<String>) -> bool {
    match (seen.as_deref(), written.as_deref()) {
        (Some(seen), Some(written)) => match (revision(seen), revision(written)) {
            (Some(seen), Some(written)) => seen.cmp(&written) != Ordering::Less,
            _ => seen == written,
        },
        (seen, written) => seen == written,
    }
}

/// A resource version as a comparable revision: a positive integer of any length, without
/// leading zeros (`k8s.io/apimachinery/pkg/util/resourceversion`), ordered by length, then
/// digits.
fn revision(version: &str) -> Option<(usize, &str)> {
    let digits = version.bytes().all(|b| b.is_ascii_digit());
    (digits && !version.is_empty() && !version.starts_with('0')).then_some((version.len(), version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use kube::runtime::reflector;

    fn service(version: &str) -> Service {
        let mut service = Service::default();
        service.metadata.name = Some("todos".into());
        service.metadata.namespace = Some("shop".into());
        service.metadata.resource_version = Some(version.into());
        service
    }

    fn version(observed: Option<Arc<Service>>) -> Option<String> {
        observed.and_then(|s| s.resource_version())
    }

    /// Until the cache shows the write, the written object stands in for it; then the cache.
    #[test]
    fn a_write_stands_in_for_the_cache_until_the_cache_holds_it() {
        let expected = Arc::new(Expected::default());
        let (cache, mut writer) = reflector::store::<Cached<Service>>();
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitApply(Cached::new(service("1"))));
        writer.apply_watcher_event(&Event::InitDone);
        assert_eq!(
            version(expected.observed(&cache, "shop", "todos")),
            Some("1".into())
        );

        expected.written(service("2"));
        assert_eq!(
            version(expected.observed(&cache, "shop", "todos")),
            Some("2".into()),
            "the cache still holds version 1"
        );
        writer.apply_watcher_event(&Event::Apply(Cached::new(service("2"))));
        assert_eq!(
            version(expected.observed(&cache, "shop", "todos")),
            Some("2".into())
        );
        // Someone else's later edit is seen as it is: the entry left when the cache caught up.
        writer.apply_watcher_event(&Event::Apply(Cached::new(service("3"))));
        assert_eq!(
            version(expected.observed(&cache, "shop", "todos")),
            Some("3".into())
        );
    }

    /// On a real cluster the Deployment controller writes status right after the operator's
    /// write, and the watch can deliver both before the write's answer is recorded: the cache,
    /// already past the written version, is what a reconcile must see (with the status).
    #[test]
    fn a_written_status_stands_in_until_the_cached_app_reaches_it() {
        let app = |version: &str, ready: i32| {
            let mut app: MeteorApp = serde_json::from_value(serde_json::json!({
                "apiVersion": "meteorfleet.dev/v1alpha1", "kind": "MeteorApp",
                "metadata": {"name": "todos", "namespace": "default", "resourceVersion": version},
                "spec": {"image": "todos:1", "rootUrl": "https://todos.example.com",
                         "mongo": {"external": {"url": {"name": "m", "key": "u"}}}},
            }))
            .unwrap();
            app.status = (ready >= 0).then(|| MeteorAppStatus {
                ready_replicas: ready,
                ..MeteorAppStatus::default()
            });
            Arc::new(app)
        };
        let expected = Expected::default();
        // Nothing written: the cached app as it is.
        assert_eq!(expected.with_written_status(app("10", -1)).status, None);
        expected.status_written(&app("12", 1));
        // The cache still holds version 10 (no status yet): the written status stands in.
        let seen = expected.with_written_status(app("10", -1));
        assert_eq!(seen.status.as_ref().map(|s| s.ready_replicas), Some(1));
        // The watch delivered version 13 (the write and a later change): the cache wins.
        let seen = expected.with_written_status(app("13", 2));
        assert_eq!(seen.status.as_ref().map(|s| s.ready_replicas), Some(2));
        // And the entry is gone.
        assert_eq!(expected.with_written_status(app("10", -1)).status, None);
    }

    #[test]
    fn a_cache_already_past_the_write_is_seen_at_once() {
        let expected = Arc::new(Expected::default());
        let (cache, mut writer) = reflector::store::<Cached<Service>>();
        let mut observe = expected.observer::<Cached<Service>>();
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitDone);
        for version in ["7", "8"] {
            writer.apply_watcher_event(&Event::Apply(Cached::new(service(version))));
            observe(&Ok(Event::Apply(Cached::new(service(version)))));
        }
        expected.written(service("7"));
        assert_eq!(
            version(expected.observed(&cache, "shop", "todos")),
            Some("8".into())
        );

        // Before the cache catches up the write stands in; a later event clears it.
        expected.written(service("10"));
        assert_eq!(
            version(expected.observed(&cache, "shop", "todos")),
            Some("10".into())
        );
        observe(&Ok(Event::Apply(Cached::new(service("11")))));
        writer.apply_watcher_event(&Event::Apply(Cached::new(service("11"))));
        assert_eq!(
            version(expected.observed(&cache, "shop", "todos")),
            Some("11".into())
        );
    }

    /// At rest no write sweeps the memories: the periodic pass does, keeping what is recent.
    #[test]
    fn entries_past_the_horizon_are_forgotten_without_a_write() {
        let expected = Arc::new(Expected::default());
        let (cache, _writer) = reflector::store::<Cached<Service>>();
        let app: MeteorApp = serde_json::from_value(serde_json::json!({
            "apiVersion": "meteorfleet.dev/v1alpha1", "kind": "MeteorApp",
            "metadata": {"name": "todos", "namespace": "shop", "resourceVersion": "2"},
            "spec": {"image": "todos:1", "rootUrl": "https://todos.example.com",
                     "mongo": {"external": {"url": {"name": "m", "key": "u"}}}},
            "status": {"readyReplicas": 1},
        }))
        .unwrap();
        expected.written(service("2"));
        expected.status_written(&app);
        expected.forget_older_than(Duration::from_secs(60));
        assert!(
            expected.observed(&cache, "shop", "todos").is_some(),
            "recent"
        );
        assert_eq!(expected.statuses.lock().unwrap().len(), 1, "recent");
        expected.forget_older_than(Duration::ZERO);
        assert!(expected.observed(&cache, "shop", "todos").is_none());
        assert!(expected.statuses.lock().unwrap().is_empty());
    }

    #[test]
    fn versions_compare_as_revisions_and_otherwise_only_by_equality() {
        let v = |s: &str| Some(s.to_string());
        assert!(at_least(v("10"), &v("9")), "by value, not as text");
        assert!(at_least(v("9"), &v("9")));
        assert!(!at_least(v("9"), &v("10")));
        assert!(!at_least(
            v("123456789012345678901"),
            &v("123456789012345678902")
        ));
        assert!(!at_least(v("09"), &v("8")), "a leading zero is no revision");
        assert!(at_least(v("abc"), &v("abc")));
        assert!(!at_least(v("abd"), &v("abc")));
        assert!(!at_least(None, &v("1")));
    }

    /// A child created and then deleted by someone else before any reconcile looked: the watch
    /// events clear the entry, so the next reconcile sees it missing and creates it again.
    #[test]
    fn the_watch_clears_an_entry_for_its_version_a_deletion_or_a_relist() {
        let expected = Arc::new(Expected::default());
        let (cache, _writer) = reflector::store::<Cached<Service>>();
        let mut observe = expected.observer::<Cached<Service>>();

        expected.written(service("2"));
        observe(&Ok(Event::Apply(Cached::new(service("1")))));
        assert!(
            expected.observed(&cache, "shop", "todos").is_some(),
            "an older version does not clear it"
        );
        observe(&Ok(Event::Apply(Cached::new(service("2")))));
        assert!(expected.observed(&cache, "shop", "todos").is_none());

        expected.written(service("4"));
        observe(&Ok(Event::Delete(Cached::new(service("5")))));
        assert!(expected.observed(&cache, "shop", "todos").is_none());

        expected.written(service("6"));
        observe(&Ok(Event::Init));
        observe(&Ok(Event::InitDone));
        assert!(expected.observed(&cache, "shop", "todos").is_none());
    }
}
