//! Writes to the API: server-side apply of children (skipped when nothing changed), deletion of
//! children the spec no longer wants, and the status patch.
//!
//! "Nothing changed" is decided by a hash of the desired object stamped on the child
//! (`meteorfleet.dev/applied-hash`), so a resync of an unchanged app makes no write request.

use crate::build::meta::FIELD_MANAGER;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
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

/// Annotation on every child: hash of what the operator last applied.
pub const APPLIED_HASH_ANNOTATION: &str = "meteorfleet.dev/applied-hash";

/// What `apply` did.
pub enum Applied<K> {
    /// The child already matched; no request was made.
    Unchanged,
    /// The child was written; the API's answer.
    Written(K),
}

/// Hash of a desired object (before the hash annotation is added).
pub fn desired_hash<K: Serialize>(desired: &K) -> String {
    let bytes = serde_json::to_vec(desired).expect("Kubernetes objects serialize to JSON");
    hex::encode(&Sha256::digest(&bytes)[..12])
}

/// `desired` with its hash annotation: exactly the object that is applied.
pub fn stamped<K: Resource + Serialize>(mut desired: K) -> K {
    let hash = desired_hash(&desired);
    desired
        .annotations_mut()
        .insert(APPLIED_HASH_ANNOTATION.into(), hash);
    desired
}

/// Server-side applies `desired` unless `observed` already carries its hash.
pub async fn apply<K>(
    client: &Client,
    desired: K,
    observed: Option<&K>,
) -> Result<Applied<K>, kube::Error>
where
    K: Child,
{
    let hash = desired_hash(&desired);
    if observed.and_then(|o| o.annotations().get(APPLIED_HASH_ANNOTATION)) == Some(&hash) {
        return Ok(Applied::Unchanged);
    }
    let desired = stamped(desired);
    let namespace = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let written = api.patch(&name, &params, &Patch::Apply(&desired)).await?;
    Ok(Applied::Written(written))
}

/// Deletes `observed` (a child the spec no longer wants). The uid precondition makes sure the
/// object deleted is the one observed, not a namesake created since. Returns whether a request
/// was made.
pub async fn delete<K>(client: &Client, observed: Option<Arc<K>>) -> Result<bool, kube::Error>
where
    K: Child,
{
    let Some(observed) = observed else {
        return Ok(false);
    };
    let api: Api<K> = Api::namespaced(client.clone(), &observed.namespace().unwrap_or_default());
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: observed.uid(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&observed.name_any(), &params).await {
        Ok(_) => Ok(true),
        // Already gone, or replaced by another object: either way ours is not there any more.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(true),
        Err(error) => Err(error),
    }
}

/// When a `K` named `name` exists that `owner_uid` does not control, says so. Used for children
/// missing from the cache (which only holds objects we labelled): applying over a namesake would
/// take it over, and garbage collection would later delete it with the MeteorApp.
pub async fn foreign_namesake<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    owner_uid: &str,
) -> Result<Option<String>, kube::Error>
where
    K: Child,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let Some(existing) = api.get_metadata_opt(name).await? else {
        return Ok(None);
    };
    let ours = existing
        .owner_references()
        .iter()
        .any(|r| r.uid == owner_uid && r.controller == Some(true));
    Ok((!ours).then(|| {
        format!(
            "{} {namespace}/{name} already exists and is not managed by this MeteorApp; \
             rename or delete it, or rename the MeteorApp",
            K::kind(&())
        )
    }))
}
