//! Children the operator wrote that their cache has not shown yet. A reconcile that starts before
//! the watch delivers the operator's own last write would see the child missing (or as it was)
//! and write it again, or look it up as a possible namesake; it uses the written object instead.
//! An entry leaves when the cache holds that version, when the watch delivers it (or a deletion,
//! or a relist), and after a minute at most, so a lost event cannot pin a stale view.

use super::apply::Child;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use std::any::Any;
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
}

fn key_of<K: Child>(namespace: &str, name: &str) -> Key {
    (K::kind(&()).into_owned(), namespace.into(), name.into())
}

impl Expected {
    /// Records what the API answered to a write of a child.
    pub fn written<K: Child>(&self, answer: &K) {
        let key = key_of::<K>(&answer.namespace().unwrap_or_default(), &answer.name_any());
        let mut written = self.lock();
        written.retain(|_, w| w.at.elapsed() < AT_MOST);
        written.insert(
            key,
            Written {
                version: answer.resource_version(),
                object: Arc::new(answer.clone()),
                at: Instant::now(),
            },
        );
    }

    /// Forgets a child the operator deleted.
    pub fn deleted<K: Child>(&self, namespace: &str, name: &str) {
        self.lock().remove(&key_of::<K>(namespace, name));
    }

    /// The child as the operator last wrote it, while `cache` does not show that write yet;
    /// else the cache's view.
    pub fn observed<K: Child>(
        &self,
        cache: &Store<K>,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<K>> {
        let cached = cache.get(&ObjectRef::new(name).within(namespace));
        let key = key_of::<K>(namespace, name);
        let mut written = self.lock();
        let Some(entry) = written.get(&key) else {
            return cached;
        };
        let caught_up = cached
            .as_ref()
            .is_some_and(|c| c.resource_version() == entry.version);
        if caught_up || entry.at.elapsed() >= AT_MOST {
            written.remove(&key);
            return cached;
        }
        entry.object.clone().downcast::<K>().ok().or(cached)
    }

    /// For `StreamExt::inspect` after the reflector of `K`'s cache: drops entries the watch
    /// delivered (their version, a deletion, or a whole relist).
    pub fn observer<K: Child>(
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
                        .is_some_and(|w| w.version == object.resource_version())
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Written>> {
        self.written.lock().expect("lock is never poisoned")
    }
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
        let (cache, mut writer) = reflector::store::<Service>();
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitApply(service("1")));
        writer.apply_watcher_event(&Event::InitDone);
        assert_eq!(
            version(expected.observed(&cache, "shop", "todos")),
            Some("1".into())
        );

        expected.written(&service("2"));
        assert_eq!(
            version(expected.observed(&cache, "shop", "todos")),
            Some("2".into()),
            "the cache still holds version 1"
        );
        writer.apply_watcher_event(&Event::Apply(service("2")));
        assert_eq!(
            version(expected.observed(&cache, "shop", "todos")),
            Some("2".into())
        );
        // Someone else's later edit is seen as it is: the entry left when the cache caught up.
        writer.apply_watcher_event(&Event::Apply(service("3")));
        assert_eq!(
            version(expected.observed(&cache, "shop", "todos")),
            Some("3".into())
        );
    }

    /// A child created and then deleted by someone else before any reconcile looked: the watch
    /// events clear the entry, so the next reconcile sees it missing and creates it again.
    #[test]
    fn the_watch_clears_an_entry_for_its_version_a_deletion_or_a_relist() {
        let expected = Arc::new(Expected::default());
        let (cache, _writer) = reflector::store::<Service>();
        let mut observe = expected.observer::<Service>();

        expected.written(&service("2"));
        observe(&Ok(Event::Apply(service("1"))));
        assert!(
            expected.observed(&cache, "shop", "todos").is_some(),
            "an older version does not clear it"
        );
        observe(&Ok(Event::Apply(service("2"))));
        assert!(expected.observed(&cache, "shop", "todos").is_none());

        expected.written(&service("4"));
        observe(&Ok(Event::Delete(service("5"))));
        assert!(expected.observed(&cache, "shop", "todos").is_none());

        expected.written(&service("6"));
        observe(&Ok(Event::Init));
        observe(&Ok(Event::InitDone));
        assert!(expected.observed(&cache, "shop", "todos").is_none());
    }
}
