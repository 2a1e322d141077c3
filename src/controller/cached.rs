//! The operator's children as their caches hold them. A cache keeps, per object, only what
//! reconcile reads back, in a compact shape: identity and owners, the few labels and annotations
//! under the operator's own prefixes as a boxed list (a `BTreeMap` costs a 540-byte node however
//! few its entries), and per kind the facts the plans read (a Deployment's replicas and status,
//! not the 2.4 KB of an empty `Deployment` struct). A reader gets the trimmed object back as a
//! `k8s-openapi` value ([`Cached::object`]), built when asked: reconciles read a few children,
//! caches hold every child of the fleet.
//!
//! Measured by the scale benchmark (`bytes per object`): docs/scale.md#memory.

use super::apply::Child;
use super::drift;
use crate::build::PodMonitor;
use crate::build::routing::{Certificate, HTTPRoute};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, StatefulSet, StatefulSetSpec,
};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount, ServiceStatus};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;
use kube::runtime::watcher::Event;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Debug;

/// The cache of one kind of child.
pub type Cache<K> = Store<Cached<K>>;

/// A label or annotation map as a cache keeps it: usually one to four entries.
pub(crate) type Entries = Box<[(Box<str>, Box<str>)]>;

/// A child as its cache holds it.
#[derive(Clone, Debug)]
pub struct Cached<K: Compact> {
    /// Identity, version, owners, deletion: no label or annotation map (see `labels`).
    metadata: ObjectMeta,
    labels: Entries,
    annotations: Entries,
    facts: K::Facts,
}

/// A kind whose objects a cache holds as [`Cached`]: what of it the plans read, apart from the
/// metadata, and how to rebuild the trimmed object from that.
pub trait Compact: Child {
    /// What the cache keeps besides the metadata.
    type Facts: Clone + Debug + Send + Sync + 'static;
    /// Splits a child, its metadata already trimmed, into that metadata and the facts kept.
    fn split(self) -> (ObjectMeta, Self::Facts);
    /// The trimmed object again.
    fn join(metadata: ObjectMeta, facts: &Self::Facts) -> Self;
}

impl<K: Compact> Cached<K> {
    /// Of `object` (as the API sends it, or as the operator wrote it), what reconcile reads:
    /// field ownership condensed for drift checks, metadata cut to identity, owners and the
    /// operator's own labels and annotations, and the kind's facts.
    pub fn new(mut object: K) -> Self {
        drift::condense(object.meta_mut());
        let mut taken = std::mem::take(object.meta_mut());
        *object.meta_mut() = ObjectMeta {
            labels: ours(taken.labels.take()),
            annotations: ours(taken.annotations.take()),
            ..identity(taken)
        };
        let (mut metadata, facts) = object.split();
        Self {
            labels: entries(metadata.labels.take()),
            annotations: entries(metadata.annotations.take()),
            metadata,
            facts,
        }
    }

    /// The trimmed object, as the plans and the applier read it.
    pub fn object(&self) -> K {
        let mut metadata = self.metadata.clone();
        metadata.labels = map(&self.labels);
        metadata.annotations = map(&self.annotations);
        K::join(metadata, &self.facts)
    }
}

impl<K: Compact> Resource for Cached<K> {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        K::kind(&())
    }
    fn group(_: &()) -> Cow<'_, str> {
        K::group(&())
    }
    fn version(_: &()) -> Cow<'_, str> {
        K::version(&())
    }
    fn plural(_: &()) -> Cow<'_, str> {
        K::plural(&())
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A watch event of `K` as its cache stores it.
pub fn event<K: Compact>(event: Event<K>) -> Event<Cached<K>> {
    map_event(event, Cached::new)
}

/// A metadata-only watch event of the operator's Secrets as their cache stores it: the cache of
/// Secrets and what stands in for the operator's writes of Secrets are then of one type, and
/// neither holds Secret data.
pub fn secret_event(event: Event<PartialObjectMeta<Secret>>) -> Event<Cached<Secret>> {
    map_event(event, secret)
}

/// A Secret's metadata as the cache of the operator's Secrets keeps it.
pub fn secret(partial: PartialObjectMeta<Secret>) -> Cached<Secret> {
    Cached::new(Secret {
        metadata: partial.metadata,
        ..Secret::default()
    })
}

fn map_event<A, B>(event: Event<A>, f: impl Fn(A) -> B) -> Event<B> {
    match event {
        Event::Apply(object) => Event::Apply(f(object)),
        Event::Delete(object) => Event::Delete(f(object)),
        Event::Init => Event::Init,
        Event::InitApply(object) => Event::InitApply(f(object)),
        Event::InitDone => Event::InitDone,
    }
}

pub(crate) fn entries(map: Option<BTreeMap<String, String>>) -> Entries {
    map.into_iter()
        .flatten()
        .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
        .collect()
}

/// The value of `key` in `entries`.
pub(crate) fn entry<'a>(entries: &'a Entries, key: &str) -> Option<&'a str> {
    entries.iter().find(|(k, _)| &**k == key).map(|(_, v)| &**v)
}

fn map(entries: &Entries) -> Option<BTreeMap<String, String>> {
    (!entries.is_empty()).then(|| {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

/// Of an object's metadata, what every cache keeps: identity, version, generation, deletion and
/// owners; no label or annotation map (each cache keeps its own few entries).
pub(crate) fn identity(meta: ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        generation: meta.generation,
        deletion_timestamp: meta.deletion_timestamp,
        owner_references: meta.owner_references,
        ..ObjectMeta::default()
    }
}

/// The entries of a label or annotation map under the operator's own prefixes.
fn ours(map: Option<BTreeMap<String, String>>) -> Option<BTreeMap<String, String>> {
    let kept: BTreeMap<_, _> = map?
        .into_iter()
        .filter(|(key, _)| key.contains("meteorfleet.dev/"))
        .collect();
    (!kept.is_empty()).then_some(kept)
}

/// Of a Deployment, what the rollout plan and the status read: replicas, the counts and a
/// stalled rollout's condition.
#[derive(Clone, Debug)]
pub struct DeploymentFacts {
    replicas: Option<i32>,
    status: Option<DeploymentStatus>,
}

/// Of the pod template only its hash, config hash and first image are kept, as cache-only
/// annotations (a pod spec costs kilobytes even when empty, and the template's label and
/// annotation maps a B-tree node each). Of the conditions only a stalled rollout's
/// (`Progressing` False, with its reason: `ProgressDeadlineExceeded` is a stuck one), without
/// message or times: the plans read nothing else, and two healthy conditions cost half a
/// kilobyte.
impl Compact for Deployment {
    type Facts = DeploymentFacts;

    fn split(self) -> (ObjectMeta, DeploymentFacts) {
        use crate::build::meta::{
            CACHED_CONFIG_HASH_ANNOTATION, CACHED_IMAGE_ANNOTATION,
            CACHED_TEMPLATE_HASH_ANNOTATION, CONFIG_HASH_ANNOTATION, TEMPLATE_HASH_LABEL,
        };
        let mut metadata = self.metadata;
        let spec = self.spec.unwrap_or_default();
        let template = spec.template.metadata.unwrap_or_default();
        let kept = [
            (
                CACHED_IMAGE_ANNOTATION,
                spec.template
                    .spec
                    .and_then(|pod| pod.containers.into_iter().next()?.image),
            ),
            (
                CACHED_TEMPLATE_HASH_ANNOTATION,
                template
                    .labels
                    .and_then(|mut labels| labels.remove(TEMPLATE_HASH_LABEL)),
            ),
            (
                CACHED_CONFIG_HASH_ANNOTATION,
                template
                    .annotations
                    .and_then(|mut annotations| annotations.remove(CONFIG_HASH_ANNOTATION)),
            ),
        ];
        for (key, value) in kept {
            if let Some(value) = value {
                metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(key.into(), value);
            }
        }
        let status = self.status.map(|mut status| {
            status.conditions = status.conditions.take().and_then(|conditions| {
                let stalled: Vec<_> = conditions
                    .into_iter()
                    .filter(|c| c.type_ == "Progressing" && c.status == "False")
                    .map(|c| DeploymentCondition {
                        type_: c.type_,
                        status: c.status,
                        reason: c.reason,
                        ..DeploymentCondition::default()
                    })
                    .collect();
                (!stalled.is_empty()).then_some(stalled)
            });
            status
        });
        let facts = DeploymentFacts {
            replicas: spec.replicas,
            status,
        };
        (metadata, facts)
    }

    fn join(metadata: ObjectMeta, facts: &DeploymentFacts) -> Self {
        Deployment {
            metadata,
            spec: Some(DeploymentSpec {
                replicas: facts.replicas,
                ..DeploymentSpec::default()
            }),
            status: facts.status.clone(),
        }
    }
}

/// Keeps the load balancer's address (`status.routing.address`), when it has one.
impl Compact for Service {
    type Facts = Option<Box<ServiceStatus>>;

    fn split(self) -> (ObjectMeta, Self::Facts) {
        let status = self
            .status
            .and_then(|s| s.load_balancer)
            .filter(|lb| lb.ingress.as_ref().is_some_and(|i| !i.is_empty()))
            .map(|lb| {
                Box::new(ServiceStatus {
                    load_balancer: Some(lb),
                    conditions: None,
                })
            });
        (self.metadata, status)
    }

    fn join(metadata: ObjectMeta, status: &Self::Facts) -> Self {
        Service {
            metadata,
            spec: None,
            status: status.as_deref().cloned(),
        }
    }
}

/// A proxy's RoleBinding keeps its `roleRef`, which cannot change in place.
impl Compact for RoleBinding {
    type Facts = RoleRef;

    fn split(self) -> (ObjectMeta, RoleRef) {
        (self.metadata, self.role_ref)
    }

    fn join(metadata: ObjectMeta, role_ref: &RoleRef) -> Self {
        RoleBinding {
            metadata,
            role_ref: role_ref.clone(),
            subjects: None,
        }
    }
}

/// A managed set keeps its replicas and claim templates (pinned on every apply: they cannot
/// change).
impl Compact for StatefulSet {
    type Facts = (
        Option<i32>,
        Option<Vec<k8s_openapi::api::core::v1::PersistentVolumeClaim>>,
    );

    fn split(self) -> (ObjectMeta, Self::Facts) {
        let spec = self.spec.unwrap_or_default();
        (self.metadata, (spec.replicas, spec.volume_claim_templates))
    }

    fn join(metadata: ObjectMeta, (replicas, claims): &Self::Facts) -> Self {
        StatefulSet {
            metadata,
            spec: Some(StatefulSetSpec {
                replicas: *replicas,
                volume_claim_templates: claims.clone(),
                ..StatefulSetSpec::default()
            }),
            status: None,
        }
    }
}

/// Kinds of which the metadata alone is kept: the applier needs identity, hash and field
/// ownership, and nothing reads their spec back.
macro_rules! metadata_only {
    ($($kind:ty),* $(,)?) => {$(
        impl Compact for $kind {
            type Facts = ();

            fn split(self) -> (ObjectMeta, ()) {
                (self.metadata, ())
            }

            fn join(metadata: ObjectMeta, _: &()) -> Self {
                Self {
                    metadata,
                    ..Self::default()
                }
            }
        }
    )*};
}

metadata_only!(
    // No Secret data is held in memory (see `secret_event`).
    Secret,
    PodDisruptionBudget,
    ServiceAccount,
    NetworkPolicy,
);

/// Kinds kept with their spec or status (an Ingress's address, an HPA's status, an HTTPRoute's
/// spec and its Gateways' answers, a Certificate's conditions), which the trim below cuts to
/// what is read. At most one of each per app, where the app asks for it.
macro_rules! kept_whole {
    ($($kind:ty => $trim:expr),* $(,)?) => {$(
        impl Compact for $kind {
            type Facts = Box<$kind>;

            fn split(mut self) -> (ObjectMeta, Box<$kind>) {
                let trim: fn(&mut $kind) = $trim;
                trim(&mut self);
                (std::mem::take(&mut self.metadata), Box::new(self))
            }

            fn join(metadata: ObjectMeta, kept: &Box<$kind>) -> Self {
                Self {
                    metadata,
                    ..(**kept).clone()
                }
            }
        }
    )*};
}

kept_whole!(
    Ingress => |ingress| ingress.spec = None,
    HorizontalPodAutoscaler => |autoscaler| autoscaler.spec = None,
    HTTPRoute => |_| {},
    Certificate => |certificate| certificate.spec = Default::default(),
    PodMonitor => |monitor| monitor.spec = Default::default(),
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::meta::{
        APPLIED_HASH_ANNOTATION, CACHED_IMAGE_ANNOTATION, CACHED_TEMPLATE_HASH_ANNOTATION,
    };

    fn deployment() -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "todos", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                "labels": { "app.kubernetes.io/name": "meteor", "meteorfleet.dev/tier": "app" },
                "annotations": {
                    "meteorfleet.dev/applied-hash": "h1",
                    "deployment.kubernetes.io/revision": "3",
                },
                "ownerReferences": [{ "apiVersion": "meteorfleet.dev/v1alpha1",
                    "kind": "MeteorApp", "name": "todos", "uid": "app-uid", "controller": true }],
                "managedFields": [{ "manager": "kubectl", "operation": "Update",
                    "fieldsV1": { "f:spec": { "f:replicas": {} } } }],
            },
            "spec": {
                "replicas": 3,
                "selector": { "matchLabels": { "a": "b" } },
                "template": {
                    "metadata": { "labels": { "meteorfleet.dev/template-hash": "t1" } },
                    "spec": { "containers": [{ "name": "meteor", "image": "todos:2" }] },
                },
            },
            "status": {
                "replicas": 3, "readyReplicas": 2,
                "conditions": [
                    { "type": "Available", "status": "True", "message": "long" },
                    { "type": "Progressing", "status": "False",
                      "reason": "ProgressDeadlineExceeded", "message": "long" },
                ],
            },
        }))
        .unwrap()
    }

    /// What the plans read survives the round trip; what they do not is gone.
    #[test]
    fn a_deployment_keeps_what_the_plans_read() {
        let object = Cached::new(deployment()).object();
        let annotations = object.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[APPLIED_HASH_ANNOTATION], "h1");
        assert_eq!(annotations[CACHED_IMAGE_ANNOTATION], "todos:2");
        assert_eq!(annotations[CACHED_TEMPLATE_HASH_ANNOTATION], "t1");
        assert!(!annotations.contains_key("deployment.kubernetes.io/revision"));
        assert!(
            annotations.contains_key(drift::FOREIGN_SPEC),
            "kubectl owns spec.replicas"
        );
        let labels = object.metadata.labels.as_ref().unwrap();
        assert_eq!(
            labels.len(),
            1,
            "only the operator's own labels: {labels:?}"
        );
        assert_eq!(
            object.metadata.owner_references.as_ref().unwrap()[0].uid,
            "app-uid"
        );
        assert!(object.metadata.managed_fields.is_none());
        assert_eq!(object.spec.as_ref().unwrap().replicas, Some(3));
        let status = object.status.as_ref().unwrap();
        assert_eq!(status.ready_replicas, Some(2));
        let conditions = status.conditions.as_ref().unwrap();
        assert_eq!(conditions.len(), 1);
        assert_eq!(
            conditions[0].reason.as_deref(),
            Some("ProgressDeadlineExceeded")
        );
        assert!(conditions[0].message.is_none());
        let facts = crate::plan::TierFacts::of(&object);
        assert_eq!(facts.template.as_deref(), Some("t1"));
        assert_eq!(facts.image.as_deref(), Some("todos:2"));
        assert!(facts.stuck);
    }

    /// A cached child answers to its kind's name and path, so a watch of it and the controller's
    /// owner lookups treat it as the kind itself.
    #[test]
    fn a_cached_child_is_its_kind() {
        assert_eq!(Cached::<Deployment>::kind(&()), "Deployment");
        assert_eq!(Cached::<Deployment>::api_version(&()), "apps/v1");
        assert_eq!(Cached::<Deployment>::plural(&()), "deployments");
        assert_eq!(Cached::<Secret>::plural(&()), "secrets");
    }

    /// The heap a cached child costs, against the trimmed `k8s-openapi` object it stands for.
    #[test]
    fn a_cached_child_is_smaller_than_the_object() {
        assert!(std::mem::size_of::<Cached<Deployment>>() * 3 < std::mem::size_of::<Deployment>());
        assert!(
            std::mem::size_of::<Cached<Service>>() < std::mem::size_of::<Service>(),
            "{} vs {}",
            std::mem::size_of::<Cached<Service>>(),
            std::mem::size_of::<Service>()
        );
    }
}
