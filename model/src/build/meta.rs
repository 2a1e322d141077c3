//! Names, labels and owner references shared by every object the operator creates.

use crate::api::MeteorApp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// Field manager for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "meteor-operator";
/// `app.kubernetes.io/managed-by` value on everything we create; the controller watches by it.
pub const MANAGED_BY: &str = "meteor-operator";
/// Label selector matching every object the operator creates.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=meteor-operator";
/// Pod-template annotation: checksum of the referenced settings and Mongo URLs, so a change of
/// their data rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "meteorfleet.dev/config-hash";
/// What the operator's cache keeps of a Deployment's pod template, as annotations of the
/// Deployment itself (never written to the API): the first container's image, the template hash
/// and the config hash. The cache drops the template, whose two maps and pod spec cost more than
/// these three values.
pub const CACHED_IMAGE_ANNOTATION: &str = "cache.meteorfleet.dev/image";
pub const CACHED_TEMPLATE_HASH_ANNOTATION: &str = "cache.meteorfleet.dev/template-hash";
pub const CACHED_CONFIG_HASH_ANNOTATION: &str = "cache.meteorfleet.dev/config-hash";
/// Annotation on every child: hash of what the operator last applied.
pub const APPLIED_HASH_ANNOTATION: &str = "meteorfleet.dev/applied-hash";
/// Pod-template label: hash of the template without it. Finds a template's ReplicaSet and pods
/// again (rollback, crash-loop detection) and tells which template a Deployment runs.
pub const TEMPLATE_HASH_LABEL: &str = "meteorfleet.dev/template-hash";

/// A short, stable hash of any serializable value (the JSON of Kubernetes objects is
/// deterministic: struct fields in order, maps sorted).
pub fn content_hash<T: serde::Serialize>(value: &T) -> String {
    use sha2::{Digest, Sha256};
    let bytes = serde_json::to_vec(value).expect("Kubernetes objects serialize to JSON");
    hex::encode(&Sha256::digest(&bytes)[..12])
}

/// The tiers (`app.kubernetes.io/component`) of a MeteorApp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// Processes behind the Service.
    App,
    /// Processes that take no traffic and run background jobs.
    Worker,
    /// The sticky proxy in front of the app tier.
    Proxy,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::App => "app",
            Component::Worker => "worker",
            Component::Proxy => "proxy",
        }
    }

    /// `METEOR_ROLE` given to the processes, so app code can run jobs only on workers.
    pub fn role(self) -> &'static str {
        self.as_str()
    }
}

/// Name of the app-tier Deployment, its Service and its PodDisruptionBudget.
pub fn app_name(app: &MeteorApp) -> String {
    app.name_any()
}

/// Name of the worker-tier Deployment.
pub fn worker_name(app: &MeteorApp) -> String {
    format!("{}-worker", app.name_any())
}

/// Name of the proxy Deployment, its PodDisruptionBudget and its RBAC objects.
pub fn proxy_name(app: &MeteorApp) -> String {
    format!("{}-proxy", app.name_any())
}

/// Name of the Service selecting the app pods only, whose EndpointSlices the proxy follows.
pub fn app_only_service_name(app: &MeteorApp) -> String {
    format!("{}-app", app.name_any())
}

/// Labels that select one tier's pods. Immutable once a Deployment exists, so never change them.
pub fn selector_labels(app: &MeteorApp, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "meteor".to_string()),
        ("app.kubernetes.io/instance".to_string(), app.name_any()),
        (
            "app.kubernetes.io/component".to_string(),
            component.to_string(),
        ),
    ])
}

/// The label selector of a tier in string form (`status.selector`, for the scale subresource).
pub fn selector_string(app: &MeteorApp, component: &str) -> String {
    selector_of(&selector_labels(app, component))
}

/// Equality-based selector `labels` in string form (`key=value,...`), as a LIST's query takes it.
pub fn selector_of(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether an object's `labels` carry every label of `selector`.
pub fn has_labels(
    labels: Option<&BTreeMap<String, String>>,
    selector: &BTreeMap<String, String>,
) -> bool {
    selects(selector, |key| labels?.get(key).map(String::as_str))
}

/// Whether an object whose label `key` is `label(key)` carries every label of `selector`.
pub fn selects<'a>(
    selector: &BTreeMap<String, String>,
    label: impl Fn(&str) -> Option<&'a str>,
) -> bool {
    selector
        .iter()
        .all(|(key, value)| label(key) == Some(value.as_str()))
}

/// The labels of the app tier's pods (and ReplicaSets) of pod template `template_hash`.
pub fn template_selector_labels(app: &MeteorApp, template_hash: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(app, Component::App.as_str());
    labels.insert(TEMPLATE_HASH_LABEL.into(), template_hash.into());
    labels
}

/// [`template_selector_labels`] in string form.
pub fn template_selector(app: &MeteorApp, template_hash: &str) -> String {
    selector_of(&template_selector_labels(app, template_hash))
}

/// The standard labels of every object we create.
pub fn labels(app: &MeteorApp, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(app, component);
    labels.insert(
        "app.kubernetes.io/managed-by".to_string(),
        MANAGED_BY.to_string(),
    );
    labels
}

/// The controller owner reference to `app`, so Kubernetes garbage-collects children with it.
/// (An app not yet stored has no uid; the API assigns it, and only stored apps are applied.)
pub fn owner_reference(app: &MeteorApp) -> OwnerReference {
    OwnerReference {
        api_version: MeteorApp::api_version(&()).into_owned(),
        kind: MeteorApp::kind(&()).into_owned(),
        name: app.name_any(),
        uid: app.uid().unwrap_or_default(),
        controller: Some(true),
        // Setting it would need `update` on meteorapps/finalizers where the
        // OwnerReferencesPermissionEnforcement admission plugin runs; nothing here needs it.
        block_owner_deletion: None,
    }
}

/// Metadata of a child object: name, namespace, standard labels, owner reference.
pub fn child_meta(app: &MeteorApp, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: app.namespace(),
        labels: Some(labels(app, component)),
        owner_references: Some(vec![owner_reference(app)]),
        ..ObjectMeta::default()
    }
}

/// The namespace of `app`, or `default` when a file being rendered does not say.
pub fn namespace_of(app: &MeteorApp) -> String {
    app.meta()
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string())
}
