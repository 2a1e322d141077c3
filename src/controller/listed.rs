//! MeteorApps as the controller lists and watches them: each object is parsed on its own, so one
//! that does not deserialize (stored under an older CRD, or a value the schema let through)
//! cannot fail the list that every other app arrives in. It is reported on its own status.

use crate::api::{MeteorApp, MeteorAppStatus};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Deserializer};
use std::borrow::Cow;
use std::sync::Arc;

/// One MeteorApp from the API, as the cache holds it: its identity, and the object itself as
/// compact JSON, parsed for each reconcile ([`ListedApp::parsed`]). Parsed, a MeteorApp costs
/// kilobytes more than its JSON: every `resources` block is two B-tree maps of 540-byte nodes,
/// and its spec struct is 2.7 KB before any data (measured: 8.8 KB per app parsed, on the
/// loopback control plane at 1,000 apps); a parse is tens of microseconds, and a reconcile
/// parses one app.
#[derive(Clone, Debug)]
pub struct ListedApp {
    /// Name, namespace, uid, resource version and generation: what the controller, the caches
    /// and the reference index key on.
    metadata: ObjectMeta,
    /// `status.observedGeneration`, read on every event of the app (see `generations`) without
    /// parsing it.
    observed_generation: Option<i64>,
    /// The object without `managedFields` and kubectl's last-applied copy, which nothing reads
    /// and which are often most of its bytes.
    json: Box<str>,
}

/// A MeteorApp that did not deserialize: the error, and the metadata and status that did.
#[derive(Clone, Debug)]
pub struct Unparsed {
    pub message: String,
    pub metadata: ObjectMeta,
    pub status: Option<MeteorAppStatus>,
}

impl ListedApp {
    /// Keeps one object as the API sent it, never failing for its spec.
    pub fn from_value(mut value: serde_json::Value) -> Self {
        if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.remove("managedFields");
            if let Some(annotations) = meta.get_mut("annotations").and_then(|a| a.as_object_mut()) {
                annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
            }
        }
        let meta = metadata_of(&value);
        Self {
            observed_generation: value
                .pointer("/status/observedGeneration")
                .and_then(serde_json::Value::as_i64),
            metadata: ObjectMeta {
                name: meta.name,
                namespace: meta.namespace,
                uid: meta.uid,
                resource_version: meta.resource_version,
                generation: meta.generation,
                ..ObjectMeta::default()
            },
            json: value.to_string().into_boxed_str(),
        }
    }

    /// Its `status.observedGeneration`.
    pub fn observed_generation(&self) -> Option<i64> {
        self.observed_generation
    }

    /// The app, parsed; or why it does not parse (naming the field), with what could still be
    /// read.
    pub fn parsed(&self) -> Result<Arc<MeteorApp>, Box<Unparsed>> {
        let mut json = serde_json::Deserializer::from_str(&self.json);
        serde_path_to_error::deserialize::<_, MeteorApp>(&mut json)
            .map(Arc::new)
            .map_err(|error| {
                let value: serde_json::Value = serde_json::from_str(&self.json).unwrap_or_default();
                Box::new(Unparsed {
                    message: format!("{}: {}", error.path(), error.inner()),
                    metadata: metadata_of(&value),
                    status: value
                        .get("status")
                        .and_then(|s| MeteorAppStatus::deserialize(s).ok()),
                })
            })
    }
}

fn metadata_of(value: &serde_json::Value) -> ObjectMeta {
    value
        .get("metadata")
        .and_then(|m| ObjectMeta::deserialize(m).ok())
        .unwrap_or_default()
}

impl<'de> Deserialize<'de> for ListedApp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(deserializer).map(Self::from_value)
    }
}

impl Resource for ListedApp {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        MeteorApp::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        MeteorApp::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        MeteorApp::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        MeteorApp::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_spec_keeps_its_identity_and_names_the_field() {
        let listed = ListedApp::from_value(serde_json::json!({
            "apiVersion": "meteorfleet.dev/v1alpha1", "kind": "MeteorApp",
            "metadata": {"name": "old", "namespace": "shop", "generation": 3},
            "spec": {"image": "x", "rootUrl": "https://x.example.com", "replicas": 99999999999u64,
                     "mongo": {"external": {"url": {"name": "m", "key": "u"}}}},
        }));
        assert_eq!(listed.meta().name.as_deref(), Some("old"));
        let error = listed.parsed().unwrap_err().message;
        assert!(error.starts_with("spec.replicas: "), "{error}");
    }

    #[test]
    fn a_list_with_one_malformed_app_still_yields_the_others() {
        let list: Vec<ListedApp> = serde_json::from_value(serde_json::json!([
            {"metadata": {"name": "bad"}, "spec": {"image": 7}},
            {"metadata": {"name": "good"}, "spec": {"image": "x", "rootUrl": "https://x.example.com",
                     "mongo": {"external": {"url": {"name": "m", "key": "u"}}}}},
        ]))
        .expect("the list parses");
        assert!(list[0].parsed().is_err());
        assert_eq!(list[1].parsed().unwrap().spec.replicas, 2);
    }

    /// What nothing reads is not kept; the rest parses back whole.
    #[test]
    fn a_listed_app_keeps_its_json_without_managed_fields() {
        let listed = ListedApp::from_value(serde_json::json!({
            "apiVersion": "meteorfleet.dev/v1alpha1", "kind": "MeteorApp",
            "metadata": {"name": "todos", "namespace": "shop", "generation": 2,
                "resourceVersion": "9", "labels": {"team": "blue"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "a": "b"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {"image": "todos:2", "rootUrl": "https://todos.example.com",
                "resources": {"requests": {"cpu": "250m"}},
                "mongo": {"external": {"url": {"name": "m", "key": "u"}}}},
            "status": {"observedGeneration": 1},
        }));
        assert_eq!(listed.meta().generation, Some(2));
        assert_eq!(listed.meta().resource_version.as_deref(), Some("9"));
        let app = listed.parsed().unwrap();
        assert!(app.metadata.managed_fields.is_none());
        let annotations = app.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations.len(), 1, "{annotations:?}");
        assert_eq!(app.metadata.labels.as_ref().unwrap()["team"], "blue");
        assert_eq!(app.spec.image, "todos:2");
        assert_eq!(app.status.as_ref().unwrap().observed_generation, Some(1));
        assert_eq!(listed.observed_generation(), Some(1));
    }
}
