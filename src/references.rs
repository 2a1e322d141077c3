//! The Secrets and ConfigMaps a MeteorApp reads from, and what their data means for the pods.
//!
//! The controller fetches each referenced object (I/O); everything here is pure: which objects
//! are referenced, whether the keys exist, whether the settings parse, and the checksum that rolls
//! the pods when referenced data changes.

use crate::api::MeteorApp;
use crate::problem::Problem;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The kinds of object a MeteorApp may reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SourceKind {
    Secret,
    ConfigMap,
}

/// One key the app's pods read, and the spec field that names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub kind: SourceKind,
    pub name: String,
    pub key: String,
    pub field: &'static str,
    /// The value must be a JSON document (the settings).
    pub json: bool,
}

/// Every key the app's pods read from Secrets and ConfigMaps.
pub fn references(app: &MeteorApp) -> Vec<Reference> {
    let mut refs = Vec::new();
    if let Some(external) = &app.spec.mongo.external {
        refs.push(Reference {
            kind: SourceKind::Secret,
            name: external.url.name.clone(),
            key: external.url.key.clone(),
            field: "spec.mongo.external.url",
            json: false,
        });
        if let Some(oplog) = &external.oplog_url {
            refs.push(Reference {
                kind: SourceKind::Secret,
                name: oplog.name.clone(),
                key: oplog.key.clone(),
                field: "spec.mongo.external.oplogUrl",
                json: false,
            });
        }
    }
    if let Some(settings) = &app.spec.settings {
        if let Some(secret) = &settings.secret_key_ref {
            refs.push(Reference {
                kind: SourceKind::Secret,
                name: secret.name.clone(),
                key: secret.key.clone(),
                field: "spec.settings.secretKeyRef",
                json: true,
            });
        }
        if let Some(config_map) = &settings.config_map_key_ref {
            refs.push(Reference {
                kind: SourceKind::ConfigMap,
                name: config_map.name.clone(),
                key: config_map.key.clone(),
                field: "spec.settings.configMapKeyRef",
                json: true,
            });
        }
    }
    refs
}

/// The data of one fetched Secret or ConfigMap (key → bytes); None when it does not exist.
pub type SourceData = Option<BTreeMap<String, Vec<u8>>>;

/// Fetched objects by kind and name.
pub type Fetched = BTreeMap<(SourceKind, String), SourceData>;

/// Checks every reference against the fetched data and returns the checksum of the referenced
/// values (only those keys: unrelated keys in the same Secret do not roll the pods).
pub fn resolve(app: &MeteorApp, fetched: &Fetched) -> Result<String, Problem> {
    let namespace = app.metadata.namespace.as_deref().unwrap_or("default");
    let mut hasher = Sha256::new();
    for reference in references(app) {
        let kind = match reference.kind {
            SourceKind::Secret => "Secret",
            SourceKind::ConfigMap => "ConfigMap",
        };
        let data = fetched
            .get(&(reference.kind, reference.name.clone()))
            .and_then(Option::as_ref)
            .ok_or_else(|| {
                Problem::ReferenceNotFound(format!(
                    "{}: {kind} {namespace}/{} not found",
                    reference.field, reference.name
                ))
            })?;
        let value = data.get(&reference.key).ok_or_else(|| {
            Problem::ReferenceNotFound(format!(
                "{}: {kind} {namespace}/{} has no key {:?}",
                reference.field, reference.name, reference.key
            ))
        })?;
        if reference.json {
            serde_json::from_slice::<serde_json::Value>(value).map_err(|error| {
                Problem::InvalidSettings(format!(
                    "{}: key {:?} of {kind} {namespace}/{} is not valid JSON: {error}",
                    reference.field, reference.key, reference.name
                ))
            })?;
        }
        hash_field(&mut hasher, reference.field.as_bytes());
        hash_field(&mut hasher, value);
    }
    Ok(short_hex(hasher))
}

/// The checksum when the data cannot be read (offline `render`): from the references alone.
pub fn offline_hash(app: &MeteorApp) -> String {
    let mut hasher = Sha256::new();
    for reference in references(app) {
        hash_field(&mut hasher, reference.field.as_bytes());
        hash_field(&mut hasher, reference.name.as_bytes());
        hash_field(&mut hasher, reference.key.as_bytes());
    }
    short_hex(hasher)
}

/// Length-prefixed, so ("ab","c") and ("a","bc") hash differently.
fn hash_field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

fn short_hex(hasher: Sha256) -> String {
    hex::encode(&hasher.finalize()[..8])
}
