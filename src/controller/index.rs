//! Which MeteorApps reference each Secret and ConfigMap, kept up to date from the MeteorApp watch
//! events, so a changed Secret finds its apps without scanning every app; and what each app's
//! references resolved to last time, at which resource versions, so an app whose references did
//! not change is not fetched again. Bookkeeping only: it never does I/O and never decides what a
//! reconcile does.

use super::ListedApp;
use crate::problem::Problem;
use crate::references::{SourceKind, references};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, Event};
use kube::{Resource, ResourceExt};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// A referenced object: kind, namespace, name.
pub type Source = (SourceKind, String, String);

/// What an app's references resolved to (its config hash, or the problem with them), read at
/// these resource versions of the referenced objects (`None`: the object did not exist).
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// The app's `metadata.generation` it was computed for: a new spec may reference more.
    pub generation: Option<i64>,
    pub versions: Vec<(Source, Option<String>)>,
    pub result: Result<String, Problem>,
}

/// Referenced object → the apps that reference it, and the reverse to undo an app's entries.
#[derive(Default, Debug)]
pub struct ReferenceIndex {
    apps: HashMap<Source, HashSet<ObjectRef<ListedApp>>>,
    sources: HashMap<ObjectRef<ListedApp>, HashSet<Source>>,
    /// Only for apps in `sources`, so a deleted app leaves nothing behind.
    resolved: HashMap<ObjectRef<ListedApp>, Resolved>,
    /// Apps listed since the watcher's last `Init`; `None` outside a relist.
    relisted: Option<HashSet<ObjectRef<ListedApp>>>,
}

impl ReferenceIndex {
    /// Follows one MeteorApp watch event. On a relist, apps not listed again by `InitDone` are
    /// gone (deleted while the watch was down) and leave the index.
    pub fn apply(&mut self, event: &Event<ListedApp>) {
        match event {
            Event::Apply(app) | Event::InitApply(app) => self.upsert(app),
            Event::Delete(app) => self.remove(&ObjectRef::from_obj(app)),
            Event::Init => self.relisted = Some(HashSet::new()),
            Event::InitDone => {
                // Without an Init there is no complete list to compare with.
                let Some(listed) = self.relisted.take() else {
                    return;
                };
                let gone: Vec<_> = self
                    .sources
                    .keys()
                    .filter(|app| !listed.contains(*app))
                    .cloned()
                    .collect();
                for app in gone {
                    self.remove(&app);
                }
            }
        }
    }

    /// The apps that reference `kind` `namespace`/`name`.
    pub fn apps(&self, kind: SourceKind, namespace: &str, name: &str) -> Vec<ObjectRef<ListedApp>> {
        self.apps
            .get(&(kind, namespace.to_string(), name.to_string()))
            .map(|apps| apps.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// What `app`'s references resolved to last time, if remembered.
    pub fn resolved(&self, app: &ObjectRef<ListedApp>) -> Option<&Resolved> {
        self.resolved.get(app)
    }

    /// Remembers what `app`'s references resolved to, while the index knows the app.
    pub fn remember(&mut self, app: &ObjectRef<ListedApp>, resolved: Resolved) {
        if self.sources.contains_key(app) {
            self.resolved.insert(app.clone(), resolved);
        }
    }

    fn upsert(&mut self, app: &ListedApp) {
        let key = ObjectRef::from_obj(app);
        if let Some(listed) = &mut self.relisted {
            listed.insert(key.clone());
        }
        // A status write or label change keeps what the same spec resolved to.
        let kept = self
            .resolved
            .remove(&key)
            .filter(|r| r.generation == app.meta().generation);
        self.remove(&key);
        // An app that does not parse reads nothing (it is only reported).
        let (Ok(parsed), Some(namespace)) = (app.parsed(), app.namespace()) else {
            return;
        };
        let mut sources: HashSet<Source> = references(&parsed)
            .into_iter()
            .map(|r| (r.kind, namespace.clone(), r.name))
            .collect();
        // The TLS Secret is not hashed into the pods (a renewed certificate restarts nothing),
        // but a change of it must reach the app's Routed condition.
        if let Some(tls) = crate::build::routing::tls_secret_name(&parsed) {
            sources.insert((SourceKind::Secret, namespace.clone(), tls));
        }
        for source in &sources {
            self.apps
                .entry(source.clone())
                .or_default()
                .insert(key.clone());
        }
        if !sources.is_empty() {
            self.sources.insert(key.clone(), sources);
            if let Some(kept) = kept {
                self.resolved.insert(key, kept);
            }
        }
    }

    fn remove(&mut self, app: &ObjectRef<ListedApp>) {
        self.resolved.remove(app);
        for source in self.sources.remove(app).unwrap_or_default() {
            if let Entry::Occupied(mut apps) = self.apps.entry(source) {
                apps.get_mut().remove(app);
                if apps.get().is_empty() {
                    apps.remove();
                }
            }
        }
    }
}

/// The index shared by the MeteorApp watch stream (writer) and the Secret/ConfigMap mappers.
#[derive(Clone, Default)]
pub struct SharedIndex(Arc<Mutex<ReferenceIndex>>);

impl SharedIndex {
    /// For `StreamExt::inspect` on the MeteorApp watch stream.
    pub fn observer(
        &self,
    ) -> impl FnMut(&Result<Event<ListedApp>, watcher::Error>) + Send + 'static {
        let index = self.clone();
        move |item| {
            if let Ok(event) = item {
                index.lock().apply(event);
            }
        }
    }

    pub fn apps(&self, kind: SourceKind, namespace: &str, name: &str) -> Vec<ObjectRef<ListedApp>> {
        self.lock().apps(kind, namespace, name)
    }

    pub fn resolved(&self, app: &ObjectRef<ListedApp>) -> Option<Resolved> {
        self.lock().resolved(app).cloned()
    }

    pub fn remember(&self, app: &ObjectRef<ListedApp>, resolved: Resolved) {
        self.lock().remember(app, resolved);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReferenceIndex> {
        self.0.lock().expect("lock is never poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SourceKind::{ConfigMap, Secret};
    use serde_json::json;

    /// A MeteorApp in `namespace` whose Mongo URL is in Secret `mongo` and whose env reads
    /// `env_secret` (when given).
    fn app(namespace: &str, name: &str, mongo: &str, env_secret: Option<&str>) -> ListedApp {
        let env: Vec<_> = env_secret
            .map(|secret| json!({"name": "T", "valueFrom": {"secretKeyRef": {"name": secret, "key": "t"}}}))
            .into_iter()
            .collect();
        ListedApp::from_value(json!({
            "apiVersion": "meteorfleet.dev/v1alpha1", "kind": "MeteorApp",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "image": "x", "rootUrl": "https://x.example.com",
                "mongo": {"external": {"url": {"name": mongo, "key": "MONGO_URL"}}},
                "env": env,
                "envFrom": [{"configMapRef": {"name": format!("{name}-config"), "optional": true}}],
            },
        }))
    }

    fn names(mut apps: Vec<ObjectRef<ListedApp>>) -> Vec<String> {
        apps.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        apps.into_iter()
            .map(|a| format!("{}/{}", a.namespace.unwrap_or_default(), a.name))
            .collect()
    }

    fn found(index: &ReferenceIndex, kind: SourceKind, namespace: &str, name: &str) -> Vec<String> {
        names(index.apps(kind, namespace, name))
    }

    #[test]
    fn an_applied_app_is_found_through_each_object_it_references_in_its_namespace() {
        let mut index = ReferenceIndex::default();
        index.apply(&Event::Apply(app("shop", "todos", "mongo", Some("api"))));
        assert_eq!(found(&index, Secret, "shop", "mongo"), ["shop/todos"]);
        assert_eq!(found(&index, Secret, "shop", "api"), ["shop/todos"]);
        assert_eq!(
            found(&index, ConfigMap, "shop", "todos-config"),
            ["shop/todos"]
        );
        // Same name, other kind or namespace: not referenced.
        assert!(found(&index, ConfigMap, "shop", "api").is_empty());
        assert!(found(&index, Secret, "other", "api").is_empty());
    }

    #[test]
    fn changed_references_move_the_app_and_shared_objects_keep_the_others() {
        let mut index = ReferenceIndex::default();
        index.apply(&Event::Apply(app("shop", "a", "mongo", Some("api"))));
        index.apply(&Event::Apply(app("shop", "b", "mongo", None)));
        assert_eq!(found(&index, Secret, "shop", "mongo"), ["shop/a", "shop/b"]);

        // a now reads api-v2 instead of api.
        index.apply(&Event::Apply(app("shop", "a", "mongo", Some("api-v2"))));
        assert!(found(&index, Secret, "shop", "api").is_empty());
        assert_eq!(found(&index, Secret, "shop", "api-v2"), ["shop/a"]);
        assert_eq!(found(&index, Secret, "shop", "mongo"), ["shop/a", "shop/b"]);

        index.apply(&Event::Delete(app("shop", "a", "mongo", Some("api-v2"))));
        assert!(found(&index, Secret, "shop", "api-v2").is_empty());
        assert_eq!(found(&index, Secret, "shop", "mongo"), ["shop/b"]);

        index.apply(&Event::Delete(app("shop", "b", "mongo", None)));
        assert!(found(&index, Secret, "shop", "mongo").is_empty());
        // Nothing is left behind for deleted apps.
        assert!(
            index.apps.is_empty() && index.sources.is_empty(),
            "{index:?}"
        );
    }

    #[test]
    fn an_app_that_stops_parsing_leaves_the_index() {
        let mut index = ReferenceIndex::default();
        index.apply(&Event::Apply(app("shop", "a", "mongo", None)));
        let broken = ListedApp::from_value(json!({
            "metadata": {"name": "a", "namespace": "shop"}, "spec": {"image": 7},
        }));
        index.apply(&Event::Apply(broken));
        assert!(found(&index, Secret, "shop", "mongo").is_empty());
        assert!(index.sources.is_empty());
    }

    #[test]
    fn a_relist_drops_the_apps_it_did_not_list_again_and_takes_the_new_references() {
        let mut index = ReferenceIndex::default();
        index.apply(&Event::Apply(app("shop", "kept", "mongo", Some("api"))));
        index.apply(&Event::Apply(app(
            "shop",
            "gone",
            "mongo",
            Some("gone-api"),
        )));

        // The watch restarted; meanwhile "gone" was deleted and "kept" changed its env Secret.
        index.apply(&Event::Init);
        index.apply(&Event::InitApply(app(
            "shop",
            "kept",
            "mongo",
            Some("api-v2"),
        )));
        // Until the list is complete, an unlisted app may still come: it is kept.
        assert_eq!(found(&index, Secret, "shop", "gone-api"), ["shop/gone"]);
        index.apply(&Event::InitDone);

        assert!(found(&index, Secret, "shop", "gone-api").is_empty());
        assert!(found(&index, Secret, "shop", "api").is_empty());
        assert_eq!(found(&index, Secret, "shop", "api-v2"), ["shop/kept"]);
        assert_eq!(found(&index, Secret, "shop", "mongo"), ["shop/kept"]);

        // A later relist listing nothing empties it; an InitDone without Init changes nothing.
        index.apply(&Event::Apply(app("shop", "new", "mongo", None)));
        index.apply(&Event::InitDone);
        assert_eq!(
            found(&index, Secret, "shop", "mongo"),
            ["shop/kept", "shop/new"]
        );
        index.apply(&Event::Init);
        index.apply(&Event::InitDone);
        assert!(
            index.apps.is_empty() && index.sources.is_empty(),
            "{index:?}"
        );
    }

    #[test]
    fn the_shared_index_follows_the_stream_and_skips_its_errors() {
        let shared = SharedIndex::default();
        let mut observe = shared.observer();
        observe(&Ok(Event::Apply(app("shop", "a", "mongo", Some("api")))));
        observe(&Err(watcher::Error::NoResourceVersion));
        assert_eq!(names(shared.apps(Secret, "shop", "api")), ["shop/a"]);
        observe(&Ok(Event::Delete(app("shop", "a", "mongo", Some("api")))));
        assert!(shared.apps(Secret, "shop", "api").is_empty());
    }

    /// The mapper the controller gives to the Secret and ConfigMap watches.
    #[test]
    fn a_changed_secret_or_config_map_maps_to_its_apps_through_the_index() {
        use k8s_openapi::api::core::v1::{ConfigMap as ConfigMapObject, Secret as SecretObject};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        use kube::core::{PartialObjectMeta, PartialObjectMetaExt};
        fn meta<K>(namespace: &str, name: &str) -> PartialObjectMeta<K> {
            ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            }
            .into_response_partial()
        }
        let shared = SharedIndex::default();
        let mut observe = shared.observer();
        observe(&Ok(Event::Apply(app("shop", "a", "mongo", Some("api")))));
        observe(&Ok(Event::Apply(app("other", "b", "mongo", None))));
        let secrets = super::super::referencing_apps::<PartialObjectMeta<SecretObject>>(
            shared.clone(),
            Secret,
        );
        let config_maps =
            super::super::referencing_apps::<PartialObjectMeta<ConfigMapObject>>(shared, ConfigMap);
        assert_eq!(names(secrets(meta("shop", "api"))), ["shop/a"]);
        assert_eq!(names(secrets(meta("other", "mongo"))), ["other/b"]);
        assert!(
            secrets(meta("shop", "a-config")).is_empty(),
            "a ConfigMap name, as a Secret"
        );
        assert_eq!(names(config_maps(meta("shop", "a-config"))), ["shop/a"]);
    }
}
