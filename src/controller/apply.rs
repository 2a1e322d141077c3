//! Writes to the API: server-side apply of children (skipped when nothing changed), deletion of
//! children the spec no longer wants, and the status patch.
//!
//! "Nothing changed" is decided by a hash of the desired object stamped on the child
//! (`meteorfleet.dev/applied-hash`) and by the field ownership `drift` tracks, so a resync of an
//! unchanged app makes no write request and an edit by someone else is put back.

use super::cached::{Cache, Compact};
use super::drift::Baselines;
use super::expected::Expected;
use crate::build::meta::FIELD_MANAGER;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;

/// A namespaced Kubernetes object the operator reads, caches and writes (every k8s-openapi
/// namespaced kind qualifies): one name for the bounds the API, caches and watches need.
pub trait Child:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Serialize
    + DeserializeOwned
    + Clone
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Child for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug
        + Send
        + Sync
        + 'static
{
}

pub use crate::build::meta::APPLIED_HASH_ANNOTATION;

/// What `apply` did.
pub enum Applied<K> {
    /// The child already matched; no request was made.
    Unchanged,
    /// The child was written; the API's answer.
    Written(K),
}

impl<K> Applied<K> {
    /// Requests made: 1 for a write.
    pub fn writes(&self) -> u64 {
        u64::from(matches!(self, Applied::Written(_)))
    }

    /// The API's answer, if written.
    pub fn written(self) -> Option<K> {
        match self {
            Applied::Written(object) => Some(object),
            Applied::Unchanged => None,
        }
    }
}

/// Hash of a desired object (before the hash annotation is added).
pub fn desired_hash<K: Serialize>(desired: &K) -> String {
    crate::build::meta::content_hash(desired)
}

/// `desired` with its hash annotation: exactly the object that is applied.
pub fn stamped<K: Resource + Serialize>(desired: K) -> K {
    let hash = desired_hash(&desired);
    stamped_with(desired, hash)
}

fn stamped_with<K: Resource>(mut object: K, hash: String) -> K {
    object
        .annotations_mut()
        .insert(APPLIED_HASH_ANNOTATION.into(), hash);
    object
}

/// The one writer of children: server-side apply under the operator's field manager, skipped
/// when the child carries the desired hash and nobody else changed it since (see `drift`).
pub struct Applier {
    client: Client,
    baselines: Baselines,
    expected: Arc<Expected>,
}

impl Applier {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            baselines: Baselines::default(),
            expected: Arc::default(),
        }
    }

    /// Sharing `expected` with the watches that clear it.
    pub fn expecting(mut self, expected: Arc<Expected>) -> Self {
        self.expected = expected;
        self
    }

    /// Writes the caches have not shown yet.
    pub fn expected(&self) -> &Expected {
        &self.expected
    }

    /// What the applier remembers of each child's field ownership.
    pub fn baselines(&self) -> &Baselines {
        &self.baselines
    }

    /// Whether a child whose desired hash is `hash` must be written over `observed`.
    pub fn needs_write<K: Resource>(&self, hash: &str, observed: Option<&K>) -> bool {
        let Some(observed) = observed else {
            return true;
        };
        observed
            .annotations()
            .get(APPLIED_HASH_ANNOTATION)
            .map(String::as_str)
            != Some(hash)
            || self.baselines.drifted(observed.meta())
    }

    /// Server-side applies `desired` unless `observed` already matches it.
    pub async fn apply<K: Compact>(
        &self,
        desired: K,
        observed: Option<&K>,
    ) -> Result<Applied<K>, kube::Error> {
        let hash = desired_hash(&desired);
        if !self.needs_write(&hash, observed) {
            return Ok(Applied::Unchanged);
        }
        self.write(&hash, desired).await.map(Applied::Written)
    }

    /// [`Applier::apply`] over the child of the same name as its cache shows it (or as this
    /// operator last wrote it, while the cache lags).
    pub async fn apply_cached<K: Compact>(
        &self,
        cache: &Cache<K>,
        desired: K,
    ) -> Result<Applied<K>, kube::Error> {
        let observed = self.expected.observed(
            cache,
            &desired.namespace().unwrap_or_default(),
            &desired.name_any(),
        );
        self.apply(desired, observed.as_deref()).await
    }

    /// Server-side applies `object`, stamped with `hash` (the hash of what the spec asked for,
    /// which may differ from `object` itself, e.g. while rolled back).
    pub async fn write<K: Compact>(&self, hash: &str, object: K) -> Result<K, kube::Error> {
        let object = stamped_with(object, hash.to_string());
        let api: Api<K> =
            Api::namespaced(self.client.clone(), &object.namespace().unwrap_or_default());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let written = api
            .patch(&object.name_any(), &params, &Patch::Apply(&object))
            .await?;
        self.baselines.written(written.meta());
        self.expected.written(written.clone());
        Ok(written)
    }

    /// A child the spec may or may not want: applied over `observed` when `desired` is set,
    /// else `observed` deleted if `owner_uid` controls it. The API's answer to a write, and the
    /// requests made (0 or 1).
    pub async fn apply_or_delete<K: Compact>(
        &self,
        owner_uid: Option<String>,
        desired: Option<K>,
        observed: Option<Arc<K>>,
    ) -> Result<(Option<K>, u64), kube::Error> {
        match desired {
            Some(desired) => {
                let applied = self.apply(desired, observed.as_deref()).await?;
                let writes = applied.writes();
                Ok((applied.written(), writes))
            }
            None => {
                let deleted = self.delete(controlled_by(owner_uid, observed)).await?;
                Ok((None, u64::from(deleted)))
            }
        }
    }

    /// Creates `object` unless an object of its name exists: a POST, never an update, for what
    /// must not change once written (generated keys and passwords: replacing one would lock out
    /// a running database or end every signed session). `None`: one exists already (`409`),
    /// whoever wrote it; the caller decides whether it is ours.
    pub async fn create_once<K: Child>(&self, object: &K) -> Result<Option<K>, kube::Error> {
        let api: Api<K> =
            Api::namespaced(self.client.clone(), &object.namespace().unwrap_or_default());
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        match api.create(&params, object).await {
            Ok(created) => Ok(Some(created)),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes `observed` (a child the spec no longer wants). The uid precondition makes sure
    /// the object deleted is the one observed, not a namesake created since. Returns whether a
    /// request was made.
    pub async fn delete<K: Child>(&self, observed: Option<Arc<K>>) -> Result<bool, kube::Error> {
        let Some(observed) = observed else {
            return Ok(false);
        };
        let api: Api<K> = Api::namespaced(
            self.client.clone(),
            &observed.namespace().unwrap_or_default(),
        );
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: observed.uid(),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        if let Some(uid) = observed.uid() {
            self.baselines.forget(&uid);
        }
        self.expected.deleted::<K>(
            &observed.namespace().unwrap_or_default(),
            &observed.name_any(),
        );
        match api.delete(&observed.name_any(), &params).await {
            Ok(_) => Ok(true),
            // Already gone, or replaced by another object: either way ours is not there any more.
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(true),
            Err(error) => Err(error),
        }
    }
}

/// Why the child `name` cannot be written for `app`, when something else holds that name: the
/// metadata of the object as `observed` (the cache of objects the operator labelled, which another MeteorApp's
/// children share: `shop`'s `shop-app` Service and `shop-app`'s front Service have one name) or,
/// missing from the cache, as the API has it. A child is this app's only if its controller
/// reference is this app's uid; applying over anyone else's would take it over, and garbage
/// collection would later delete it with the wrong MeteorApp.
pub async fn namesake<K: Child>(
    client: &Client,
    app: &crate::api::MeteorApp,
    namespace: &str,
    name: &str,
    observed: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
) -> Result<Option<String>, kube::Error> {
    let owner_uid = app.uid().unwrap_or_default();
    let holder = match observed {
        Some(observed) => holder(observed, &owner_uid),
        None => Api::<K>::namespaced(client.clone(), namespace)
            .get_metadata_opt(name)
            .await?
            .and_then(|existing| holder(&existing.metadata, &owner_uid)),
    };
    Ok(holder.map(|holder| {
        format!(
            "{} {namespace}/{name} already exists and belongs to {holder}, not to MeteorApp {}; \
             rename one of them or delete that {0} (a MeteorApp's children are named after it: \
             NAME, NAME-app, NAME-proxy, NAME-worker, NAME-mongo)",
            K::kind(&()),
            app.name_any(),
        )
    }))
}

/// Who controls `meta`, unless it is `owner_uid`.
fn holder(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    owner_uid: &str,
) -> Option<String> {
    match meta
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
    {
        Some(owner) if owner.uid == owner_uid => None,
        Some(owner) => Some(format!("{} {}", owner.kind, owner.name)),
        None => Some("no MeteorApp (nothing controls it)".to_string()),
    }
}

/// Keeps `observed` only if `owner_uid` controls it: never delete what we did not create.
pub fn controlled_by<K: Resource>(
    owner_uid: Option<String>,
    observed: Option<Arc<K>>,
) -> Option<Arc<K>> {
    let uid = owner_uid?;
    observed.filter(|o| {
        o.owner_references()
            .iter()
            .any(|r| r.uid == uid && r.controller == Some(true))
    })
}
