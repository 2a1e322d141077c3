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

/// One MeteorApp from the API: parsed, or why not (naming the field) with what could still be
/// read. A parsed app carries its own metadata and status, so nothing is held twice.
#[derive(Clone, Debug)]
pub struct ListedApp {
    pub parsed: Result<Arc<MeteorApp>, Box<Unparsed>>,
}

/// A MeteorApp that did not deserialize: the error, and the metadata and status that did.
#[derive(Clone, Debug)]
pub struct Unparsed {
    pub message: String,
    pub metadata: ObjectMeta,
    pub status: Option<MeteorAppStatus>,
}

impl ListedApp {
    /// Parses one object, never failing for its spec.
    pub fn from_value(value: serde_json::Value) -> Self {
        let metadata = value
            .get("metadata")
            .and_then(|m| ObjectMeta::deserialize(m).ok())
            .unwrap_or_default();
        let status = value
            .get("status")
            .and_then(|s| MeteorAppStatus::deserialize(s).ok());
        let parsed = serde_path_to_error::deserialize::<_, MeteorApp>(value)
            .map(Arc::new)
            .map_err(|error| {
                Box::new(Unparsed {
                    message: format!("{}: {}", error.path(), error.inner()),
                    metadata,
                    status,
                })
            });
        Self { parsed }
    }
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
        match &self.parsed {
            Ok(app) => &app.metadata,
            Err(unparsed) => &unparsed.metadata,
        }
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match &mut self.parsed {
            Ok(app) => &mut Arc::make_mut(app).metadata,
            Err(unparsed) => &mut unparsed.metadata,
        }
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
        let error = listed.parsed.unwrap_err().message;
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
        assert!(list[0].parsed.is_err());
        assert_eq!(list[1].parsed.as_ref().unwrap().spec.replicas, 2);
    }
}
