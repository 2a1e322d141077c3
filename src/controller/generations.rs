//! How long a spec change waits: the moment the operator's MeteorApp watch first delivers a new
//! `metadata.generation`, until a status write reports that generation as observed. Measured
//! from the watch (not from the reconcile's start), so time spent queued behind other apps
//! counts: this is the lag a user sees between `kubectl apply` and `observedGeneration`.

use super::ListedApp;
use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, Event};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Each waiting app's newest generation and when the watch first delivered a waiting one.
type Waiting = HashMap<ObjectRef<ListedApp>, (i64, Instant)>;

/// When each app's newest generation was first seen, until it is observed (bounded by the
/// number of apps: one entry each, removed on deletion or once observed).
#[derive(Clone, Default)]
pub struct Generations(Arc<Mutex<Waiting>>);

impl Generations {
    /// Follows the MeteorApp watch (`.inspect(generations.observer())`).
    pub fn observer(
        &self,
    ) -> impl FnMut(&Result<Event<ListedApp>, watcher::Error>) + Send + 'static {
        let this = self.clone();
        move |item| match item {
            Ok(Event::Apply(app) | Event::InitApply(app)) => this.seen(app),
            Ok(Event::Delete(app)) => {
                this.lock().remove(&ObjectRef::from_obj(app));
            }
            _ => {}
        }
    }

    fn seen(&self, app: &ListedApp) {
        let meta = app.meta();
        let Some(generation) = meta.generation else {
            return;
        };
        let observed = app.observed_generation();
        if observed.is_some_and(|o| o >= generation) {
            return;
        }
        let mut seen = self.lock();
        let entry = seen
            .entry(ObjectRef::from_obj(app))
            .or_insert((generation, Instant::now()));
        // A newer generation before the last was observed: the user waits since the older one.
        entry.0 = entry.0.max(generation);
    }

    /// A status reporting `generation` of `app` as observed was written: how long that
    /// generation waited since the watch delivered it, once (`None` when nothing waited).
    pub fn observed(&self, app: &ObjectRef<ListedApp>, generation: i64) -> Option<Duration> {
        let mut seen = self.lock();
        let (newest, since) = *seen.get(app)?;
        (newest <= generation).then(|| {
            seen.remove(app);
            since.elapsed()
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.0.lock().expect("lock is never poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(generation: i64, observed: Option<i64>) -> ListedApp {
        ListedApp::from_value(serde_json::json!({
            "apiVersion": "meteorfleet.dev/v1alpha1", "kind": "MeteorApp",
            "metadata": {"name": "todos", "namespace": "default", "generation": generation},
            "spec": {"image": "todos:1", "rootUrl": "https://todos.example.com",
                     "mongo": {"external": {"url": {"name": "m", "key": "u"}}}},
            "status": {"observedGeneration": observed},
        }))
    }

    #[test]
    fn a_generation_waits_from_its_first_watch_event_until_observed() {
        let generations = Generations::default();
        let mut observe = generations.observer();
        let key = ObjectRef::<ListedApp>::new("todos").within("default");
        // Already observed: nothing waits.
        observe(&Ok(Event::Apply(listed(1, Some(1)))));
        assert_eq!(generations.observed(&key, 1), None);
        // Generation 2 arrives, then 3 before 2 was observed: the wait runs from 2's arrival.
        observe(&Ok(Event::Apply(listed(2, Some(1)))));
        std::thread::sleep(Duration::from_millis(20));
        observe(&Ok(Event::Apply(listed(3, Some(1)))));
        assert_eq!(generations.observed(&key, 2), None, "3 is still waiting");
        let waited = generations.observed(&key, 3).expect("3 observed");
        assert!(waited >= Duration::from_millis(20), "{waited:?}");
        assert_eq!(generations.observed(&key, 3), None, "counted once");
        // A deleted app leaves nothing behind.
        observe(&Ok(Event::Apply(listed(4, Some(3)))));
        observe(&Ok(Event::Delete(listed(4, Some(3)))));
        assert_eq!(generations.observed(&key, 4), None);
    }
}
