//! The Secrets and ConfigMaps a MeteorApp reads from, and what their data means for the pods.
//!
//! The controller fetches each referenced object (I/O); everything here is pure: which objects
//! are referenced, whether the keys exist, whether the settings parse, and the checksum that rolls
//! the pods when referenced data changes.

use crate::api::MeteorApp;
use crate::problem::Problem;
use k8s_openapi::api::core::v1::EnvVar;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The kinds of object a MeteorApp may reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    Secret,
    ConfigMap,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Secret => "Secret",
            SourceKind::ConfigMap => "ConfigMap",
        }
    }
}

/// What the pods read from a referenced object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Keys {
    /// One key (`valueFrom`, the Mongo URLs, the settings).
    One(String),
    /// Every key (`envFrom`).
    All,
}

/// One Secret or ConfigMap the app's pods read, and the spec field that names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub kind: SourceKind,
    pub name: String,
    pub keys: Keys,
    /// E.g. `spec.env[2].valueFrom.secretKeyRef`.
    pub field: String,
    /// The value must be a JSON document (the settings).
    pub json: bool,
    /// `optional: true`: Kubernetes leaves the variables unset when the object or key is missing.
    pub optional: bool,
}

impl Reference {
    fn key(kind: SourceKind, name: &str, key: &str, field: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.to_string(),
            keys: Keys::One(key.to_string()),
            field: field.into(),
            json: false,
            optional: false,
        }
    }
}

/// Every Secret and ConfigMap key the app's pods read, in spec order. The operator's own
/// references come first, so the hash of an app without env references is what it always was.
pub fn references(app: &MeteorApp) -> Vec<Reference> {
    let mut refs = Vec::new();
    if let Some(external) = &app.spec.mongo.external {
        refs.push(Reference::key(
            SourceKind::Secret,
            &external.url.name,
            &external.url.key,
            "spec.mongo.external.url",
        ));
        if let Some(oplog) = &external.oplog_url {
            refs.push(Reference::key(
                SourceKind::Secret,
                &oplog.name,
                &oplog.key,
                "spec.mongo.external.oplogUrl",
            ));
        }
    }
    if let Some(settings) = &app.spec.settings {
        if let Some(secret) = &settings.secret_key_ref {
            refs.push(Reference {
                json: true,
                ..Reference::key(
                    SourceKind::Secret,
                    &secret.name,
                    &secret.key,
                    "spec.settings.secretKeyRef",
                )
            });
        }
        if let Some(config_map) = &settings.config_map_key_ref {
            refs.push(Reference {
                json: true,
                ..Reference::key(
                    SourceKind::ConfigMap,
                    &config_map.name,
                    &config_map.key,
                    "spec.settings.configMapKeyRef",
                )
            });
        }
    }
    env_references(&mut refs, "spec.env", &app.spec.env);
    for (index, source) in app.spec.env_from.iter().enumerate() {
        if let Some(secret) = &source.secret_ref {
            refs.push(Reference {
                kind: SourceKind::Secret,
                name: secret.name.clone(),
                keys: Keys::All,
                field: format!("spec.envFrom[{index}].secretRef"),
                json: false,
                optional: secret.optional == Some(true),
            });
        }
        if let Some(config_map) = &source.config_map_ref {
            refs.push(Reference {
                kind: SourceKind::ConfigMap,
                name: config_map.name.clone(),
                keys: Keys::All,
                field: format!("spec.envFrom[{index}].configMapRef"),
                json: false,
                optional: config_map.optional == Some(true),
            });
        }
    }
    env_references(&mut refs, "spec.workers.env", &app.spec.workers.env);
    refs
}

/// The `valueFrom` key references of one env list.
fn env_references(refs: &mut Vec<Reference>, list: &str, env: &[EnvVar]) {
    for (index, var) in env.iter().enumerate() {
        let Some(from) = &var.value_from else {
            continue;
        };
        if let Some(secret) = &from.secret_key_ref {
            refs.push(Reference {
                optional: secret.optional == Some(true),
                ..Reference::key(
                    SourceKind::Secret,
                    &secret.name,
                    &secret.key,
                    format!("{list}[{index}].valueFrom.secretKeyRef"),
                )
            });
        }
        if let Some(config_map) = &from.config_map_key_ref {
            refs.push(Reference {
                optional: config_map.optional == Some(true),
                ..Reference::key(
                    SourceKind::ConfigMap,
                    &config_map.name,
                    &config_map.key,
                    format!("{list}[{index}].valueFrom.configMapKeyRef"),
                )
            });
        }
    }
}

/// The data of one fetched Secret or ConfigMap (key → bytes); None when it does not exist.
pub type SourceData = Option<BTreeMap<String, Vec<u8>>>;

/// Fetched objects by kind and name.
pub type Fetched = BTreeMap<(SourceKind, String), SourceData>;

/// Checks every reference against the fetched data and returns the checksum of what the pods
/// read: the one key of a key reference (other keys of the same Secret do not roll the pods),
/// every key of an `envFrom` object, and "absent" for an optional one that is missing (so its
/// creation rolls the pods).
pub fn resolve(app: &MeteorApp, fetched: &Fetched) -> Result<String, Problem> {
    let namespace = app.metadata.namespace.as_deref().unwrap_or("default");
    let mut hasher = Sha256::new();
    for reference in references(app) {
        let Reference {
            kind,
            name,
            keys,
            field,
            json,
            optional,
        } = &reference;
        let kind = kind.as_str();
        // Kubernetes refuses these in a pod, and an empty name cannot be fetched.
        if name.is_empty() {
            return Err(Problem::InvalidSpec(format!(
                "{field}.name: must not be empty"
            )));
        }
        if *keys == Keys::One(String::new()) {
            return Err(Problem::InvalidSpec(format!(
                "{field}.key: must not be empty"
            )));
        }
        let data = fetched
            .get(&(reference.kind, name.clone()))
            .and_then(Option::as_ref);
        hash_field(&mut hasher, field.as_bytes());
        let Some(data) = data else {
            if *optional {
                hash_absent(&mut hasher);
                continue;
            }
            return Err(Problem::ReferenceNotFound(format!(
                "{field}: {kind} {namespace}/{name} not found"
            )));
        };
        match keys {
            Keys::One(key) => {
                let Some(value) = data.get(key) else {
                    if *optional {
                        hash_absent(&mut hasher);
                        continue;
                    }
                    return Err(Problem::ReferenceNotFound(format!(
                        "{field}: {kind} {namespace}/{name} has no key {key:?}"
                    )));
                };
                if *json {
                    serde_json::from_slice::<serde_json::Value>(value).map_err(|error| {
                        Problem::InvalidSettings(format!(
                            "{field}: key {key:?} of {kind} {namespace}/{name} is not valid JSON: {error}"
                        ))
                    })?;
                }
                hash_field(&mut hasher, value);
            }
            Keys::All => {
                hasher.update((data.len() as u64).to_be_bytes());
                for (key, value) in data {
                    hash_field(&mut hasher, key.as_bytes());
                    hash_field(&mut hasher, value);
                }
            }
        }
    }
    Ok(short_hex(hasher))
}

/// The checksum when the data cannot be read (offline `render`): from the references alone.
pub fn offline_hash(app: &MeteorApp) -> String {
    let mut hasher = Sha256::new();
    for reference in references(app) {
        hash_field(&mut hasher, reference.field.as_bytes());
        hash_field(&mut hasher, reference.name.as_bytes());
        if let Keys::One(key) = &reference.keys {
            hash_field(&mut hasher, key.as_bytes());
        }
    }
    short_hex(hasher)
}

/// A missing optional value: a length no real value has, so it differs from every value,
/// the empty one included.
fn hash_absent(hasher: &mut Sha256) {
    hasher.update(u64::MAX.to_be_bytes());
}

/// Length-prefixed, so ("ab","c") and ("a","bc") hash differently.
fn hash_field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

fn short_hex(hasher: Sha256) -> String {
    hex::encode(&hasher.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MONGO_URL: &[u8] = b"mongodb://db-0,db-1/todos?replicaSet=rs0";

    /// An app reading `env`, `envFrom` and `workers.env` on top of its Mongo URL.
    fn app(
        env: serde_json::Value,
        env_from: serde_json::Value,
        workers_env: serde_json::Value,
    ) -> MeteorApp {
        serde_json::from_value(json!({
            "apiVersion": "meteorfleet.dev/v1alpha1", "kind": "MeteorApp",
            "metadata": {"name": "todos", "namespace": "default"},
            "spec": {
                "image": "x", "rootUrl": "https://todos.example.com",
                "mongo": {"external": {"url": {"name": "todos-mongo", "key": "MONGO_URL"}}},
                "env": env, "envFrom": env_from, "workers": {"env": workers_env},
            },
        }))
        .expect("fixture parses")
    }

    fn secret_key(var: &str, name: &str, key: &str, optional: bool) -> serde_json::Value {
        json!({"name": var, "valueFrom": {"secretKeyRef": {"name": name, "key": key, "optional": optional}}})
    }

    fn data(pairs: &[(&str, &str)]) -> SourceData {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        )
    }

    /// The Mongo Secret plus `objects`.
    fn fetched(objects: Vec<(SourceKind, &str, SourceData)>) -> Fetched {
        let mut fetched = Fetched::from([(
            (SourceKind::Secret, "todos-mongo".to_string()),
            Some(BTreeMap::from([(
                "MONGO_URL".to_string(),
                MONGO_URL.to_vec(),
            )])),
        )]);
        for (kind, name, data) in objects {
            fetched.insert((kind, name.to_string()), data);
        }
        fetched
    }

    fn not_found(result: Result<String, Problem>) -> String {
        match result {
            Err(Problem::ReferenceNotFound(message)) => message,
            other => panic!("want ReferenceNotFound, got {other:?}"),
        }
    }

    #[test]
    fn every_env_reference_kind_is_listed_with_its_field() {
        let app = app(
            json!([
                {"name": "PLAIN", "value": "x"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                secret_key("TOKEN", "api", "token", false),
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "flags", "key": "mode", "optional": true}}},
            ]),
            json!([
                {"secretRef": {"name": "bulk"}},
                {"prefix": "CFG_", "configMapRef": {"name": "cfg", "optional": true}},
            ]),
            json!([secret_key("JOBS", "jobs", "key", false)]),
        );
        let listed: Vec<(SourceKind, String, Keys, String, bool)> = references(&app)
            .into_iter()
            .map(|r| (r.kind, r.name, r.keys, r.field, r.optional))
            .collect();
        let one = |k: &str| Keys::One(k.to_string());
        assert_eq!(
            listed,
            vec![
                (
                    SourceKind::Secret,
                    "todos-mongo".into(),
                    one("MONGO_URL"),
                    "spec.mongo.external.url".into(),
                    false
                ),
                (
                    SourceKind::Secret,
                    "api".into(),
                    one("token"),
                    "spec.env[2].valueFrom.secretKeyRef".into(),
                    false
                ),
                (
                    SourceKind::ConfigMap,
                    "flags".into(),
                    one("mode"),
                    "spec.env[3].valueFrom.configMapKeyRef".into(),
                    true
                ),
                (
                    SourceKind::Secret,
                    "bulk".into(),
                    Keys::All,
                    "spec.envFrom[0].secretRef".into(),
                    false
                ),
                (
                    SourceKind::ConfigMap,
                    "cfg".into(),
                    Keys::All,
                    "spec.envFrom[1].configMapRef".into(),
                    true
                ),
                (
                    SourceKind::Secret,
                    "jobs".into(),
                    one("key"),
                    "spec.workers.env[0].valueFrom.secretKeyRef".into(),
                    false
                ),
            ]
        );
    }

    #[test]
    fn an_app_without_env_references_keeps_the_hash_it_always_had() {
        // sha256 of the length-prefixed field and value, first 8 bytes: what earlier releases
        // stamped, so upgrading the operator rolls no pod.
        let app = app(json!([]), json!([]), json!([]));
        assert_eq!(resolve(&app, &fetched(vec![])).unwrap(), "2277d05ce81c97ad");
    }

    #[test]
    fn a_required_missing_secret_or_key_names_the_field() {
        let app = app(
            json!([{"name": "A", "value": "a"}, {"name": "B", "value": "b"}, secret_key("BAR", "foo", "bar", false)]),
            json!([]),
            json!([]),
        );
        assert_eq!(
            not_found(resolve(
                &app,
                &fetched(vec![(SourceKind::Secret, "foo", None)])
            )),
            "spec.env[2].valueFrom.secretKeyRef: Secret default/foo not found"
        );
        assert_eq!(
            not_found(resolve(
                &app,
                &fetched(vec![(SourceKind::Secret, "foo", data(&[("other", "1")]))])
            )),
            r#"spec.env[2].valueFrom.secretKeyRef: Secret default/foo has no key "bar""#
        );
        // Never fetched counts as missing too.
        assert!(
            not_found(resolve(&app, &fetched(vec![]))).ends_with("Secret default/foo not found")
        );
    }

    #[test]
    fn a_required_missing_config_map_key_or_env_from_object_names_the_field() {
        let app = app(
            json!([{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "flags", "key": "mode"}}}]),
            json!([{"secretRef": {"name": "bulk"}}, {"configMapRef": {"name": "x"}}]),
            json!([secret_key("JOBS", "jobs", "key", false)]),
        );
        let flags = (SourceKind::ConfigMap, "flags", data(&[("mode", "fast")]));
        let bulk = (SourceKind::Secret, "bulk", data(&[]));
        let x = (SourceKind::ConfigMap, "x", data(&[("k", "v")]));
        let jobs = (SourceKind::Secret, "jobs", data(&[("key", "v")]));
        assert_eq!(
            not_found(resolve(
                &app,
                &fetched(vec![
                    (SourceKind::ConfigMap, "flags", data(&[])),
                    bulk.clone(),
                    x.clone(),
                    jobs.clone()
                ])
            )),
            r#"spec.env[0].valueFrom.configMapKeyRef: ConfigMap default/flags has no key "mode""#
        );
        assert_eq!(
            not_found(resolve(
                &app,
                &fetched(vec![
                    flags.clone(),
                    (SourceKind::Secret, "bulk", None),
                    x.clone(),
                    jobs.clone()
                ])
            )),
            "spec.envFrom[0].secretRef: Secret default/bulk not found"
        );
        assert_eq!(
            not_found(resolve(
                &app,
                &fetched(vec![
                    flags.clone(),
                    bulk.clone(),
                    (SourceKind::ConfigMap, "x", None),
                    jobs.clone()
                ])
            )),
            "spec.envFrom[1].configMapRef: ConfigMap default/x not found"
        );
        assert_eq!(
            not_found(resolve(
                &app,
                &fetched(vec![
                    flags.clone(),
                    bulk.clone(),
                    x.clone(),
                    (SourceKind::Secret, "jobs", data(&[]))
                ])
            )),
            r#"spec.workers.env[0].valueFrom.secretKeyRef: Secret default/jobs has no key "key""#
        );
        // An empty envFrom object is present: it just sets nothing.
        assert!(resolve(&app, &fetched(vec![flags, bulk, x, jobs])).is_ok());
    }

    /// `resolve` with the Mongo Secret and one more object.
    fn with_object(
        app: &MeteorApp,
        kind: SourceKind,
        name: &str,
        object: SourceData,
    ) -> Result<String, Problem> {
        resolve(app, &fetched(vec![(kind, name, object)]))
    }

    #[test]
    fn an_optional_missing_reference_is_fine_and_its_creation_changes_the_hash() {
        let optional_value = json!([secret_key("T", "opt", "token", true)]);
        for (env, env_from, workers) in [
            (optional_value.clone(), json!([]), json!([])),
            (
                json!([]),
                json!([{"secretRef": {"name": "opt", "optional": true}}]),
                json!([]),
            ),
            (json!([]), json!([]), optional_value.clone()),
        ] {
            let app = app(env, env_from, workers);
            let secret = |object| with_object(&app, SourceKind::Secret, "opt", object);
            let absent = secret(None).expect("an optional Secret may be missing");
            let empty = secret(data(&[("token", "")])).unwrap();
            let set = secret(data(&[("token", "s3cret")])).unwrap();
            assert_ne!(absent, empty, "an absent value differs from an empty one");
            assert_ne!(absent, set);
            assert_ne!(empty, set);
            // The Mongo URL's hash alone would hide the difference between none and absent.
            assert_ne!(absent, "2277d05ce81c97ad");
        }
        // A valueFrom whose Secret exists without the key reads as absent too, and the key's
        // later creation rolls the pods.
        let app = app(optional_value, json!([]), json!([]));
        let secret = |object| with_object(&app, SourceKind::Secret, "opt", object);
        let no_key = secret(data(&[("other", "x")])).expect("an optional key may be missing");
        assert_eq!(no_key, secret(None).unwrap());
        assert_ne!(
            no_key,
            secret(data(&[("other", "x"), ("token", "t")])).unwrap()
        );
    }

    #[test]
    fn a_value_from_hashes_its_key_only() {
        let app_secret = app(
            json!([secret_key("TOKEN", "api", "token", false)]),
            json!([]),
            json!([]),
        );
        let hash = |pairs: &[(&str, &str)]| {
            with_object(&app_secret, SourceKind::Secret, "api", data(pairs)).unwrap()
        };
        let before = hash(&[("token", "one"), ("unrelated", "a")]);
        assert_ne!(
            before,
            hash(&[("token", "two"), ("unrelated", "a")]),
            "the referenced value rolls the pods"
        );
        assert_eq!(
            before,
            hash(&[("token", "one"), ("unrelated", "b")]),
            "another key does not"
        );
        assert_eq!(
            before,
            hash(&[("token", "one")]),
            "nor does removing another key"
        );

        let app_config_map = app(
            json!([{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "flags", "key": "mode"}}}]),
            json!([]),
            json!([]),
        );
        let hash = |pairs: &[(&str, &str)]| {
            with_object(&app_config_map, SourceKind::ConfigMap, "flags", data(pairs)).unwrap()
        };
        assert_ne!(hash(&[("mode", "a")]), hash(&[("mode", "b")]));
        assert_eq!(
            hash(&[("mode", "a"), ("x", "1")]),
            hash(&[("mode", "a"), ("x", "2")])
        );
    }

    #[test]
    fn an_env_from_hashes_every_key_and_value_but_not_the_prefix() {
        let hash = |prefix: &str, kind: SourceKind, pairs: &[(&str, &str)]| {
            let reference = match kind {
                SourceKind::Secret => json!({"prefix": prefix, "secretRef": {"name": "bulk"}}),
                SourceKind::ConfigMap => {
                    json!({"prefix": prefix, "configMapRef": {"name": "bulk"}})
                }
            };
            let app = app(json!([]), json!([reference]), json!([]));
            resolve(&app, &fetched(vec![(kind, "bulk", data(pairs))])).unwrap()
        };
        for kind in [SourceKind::Secret, SourceKind::ConfigMap] {
            let before = hash("A_", kind, &[("k1", "v1"), ("k2", "v2")]);
            assert_eq!(
                before,
                hash("B_", kind, &[("k1", "v1"), ("k2", "v2")]),
                "the prefix is no data"
            );
            assert_ne!(
                before,
                hash("A_", kind, &[("k1", "v1"), ("k2", "changed")]),
                "a value"
            );
            assert_ne!(
                before,
                hash("A_", kind, &[("k1", "v1"), ("k2", "v2"), ("k3", "")]),
                "a new key"
            );
            assert_ne!(before, hash("A_", kind, &[("k1", "v1")]), "a removed key");
            assert_ne!(
                before,
                hash("A_", kind, &[("k1", "v1"), ("k3", "v2")]),
                "a renamed key"
            );
            // Keys and values are length-prefixed: moving bytes between them is a change.
            assert_ne!(
                hash("", kind, &[("ab", "c")]),
                hash("", kind, &[("a", "bc")])
            );
        }
    }

    #[test]
    fn settings_must_still_be_json_and_roll_the_pods() {
        let mut app = app(json!([]), json!([]), json!([]));
        app.spec.settings = Some(
            serde_json::from_value(
                json!({"secretKeyRef": {"name": "todos-settings", "key": "settings.json"}}),
            )
            .unwrap(),
        );
        let settings = |value: &str| {
            resolve(
                &app,
                &fetched(vec![(
                    SourceKind::Secret,
                    "todos-settings",
                    data(&[("settings.json", value)]),
                )]),
            )
        };
        assert!(
            matches!(settings("{\"public\": "), Err(Problem::InvalidSettings(m)) if m.starts_with("spec.settings.secretKeyRef: "))
        );
        assert_ne!(
            settings("{}").unwrap(),
            settings("{\"public\": {}}").unwrap()
        );
    }

    #[test]
    fn an_empty_name_or_key_is_an_invalid_spec_not_a_lookup() {
        let app_with = |var: serde_json::Value| app(json!([var]), json!([]), json!([]));
        assert_eq!(
            resolve(
                &app_with(secret_key("T", "", "token", true)),
                &fetched(vec![])
            ),
            Err(Problem::InvalidSpec(
                "spec.env[0].valueFrom.secretKeyRef.name: must not be empty".into()
            ))
        );
        assert_eq!(
            resolve(
                &app_with(secret_key("T", "api", "", false)),
                &fetched(vec![(SourceKind::Secret, "api", data(&[]))])
            ),
            Err(Problem::InvalidSpec(
                "spec.env[0].valueFrom.secretKeyRef.key: must not be empty".into()
            ))
        );
    }

    #[test]
    fn the_offline_hash_follows_the_references() {
        let none = app(json!([]), json!([]), json!([]));
        let value_from = app(
            json!([secret_key("T", "api", "token", false)]),
            json!([]),
            json!([]),
        );
        let other_key = app(
            json!([secret_key("T", "api", "other", false)]),
            json!([]),
            json!([]),
        );
        let env_from = app(
            json!([]),
            json!([{"secretRef": {"name": "api"}}]),
            json!([]),
        );
        let hashes = [&none, &value_from, &other_key, &env_from].map(offline_hash);
        for (i, a) in hashes.iter().enumerate() {
            for b in &hashes[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
