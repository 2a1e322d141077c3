//! The managed-MongoDB tier's names, keys, labels and how the app containers are wired to it.
//! Fixed, so the pieces agree without talking: StatefulSet and headless Service `<app>-mongo`,
//! members `<app>-mongo-N.<app>-mongo.<ns>.svc.cluster.local:27017`, replica set `<app>`, Secrets
//! `<app>-mongo-{keyfile,root,app,oplog,urls}`.

use crate::api::{ManagedMongo, MeteorApp, Reactivity, SecretKeyRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use std::collections::BTreeMap;

/// Port of mongod.
pub const MONGO_PORT: i32 = 27017;
/// DNS suffix of most clusters (`<svc>.<ns>.svc.<domain>`); `run --cluster-domain` changes it.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// Field manager of every server-side apply.
pub use crate::build::meta::FIELD_MANAGER;

static CLUSTER_DOMAIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets the cluster's DNS domain, once, at start-up (before any member host is built). Member
/// host names end up in replica-set configs, so the domain must not change for a live set.
pub fn set_cluster_domain(domain: String) {
    let _ = CLUSTER_DOMAIN.set(domain);
}

fn cluster_domain() -> &'static str {
    CLUSTER_DOMAIN
        .get()
        .map(String::as_str)
        .unwrap_or(DEFAULT_CLUSTER_DOMAIN)
}
/// Key of the keyfile in its Secret.
pub const KEYFILE_KEY: &str = "keyfile";
/// Keys of a user Secret.
pub const USERNAME_KEY: &str = "username";
/// Keys of a user Secret.
pub const PASSWORD_KEY: &str = "password";
/// Key of `MONGO_URL` in the URLs Secret.
pub const MONGO_URL_KEY: &str = "MONGO_URL";
/// Key of `MONGO_OPLOG_URL` in the URLs Secret.
pub const MONGO_OPLOG_URL_KEY: &str = "MONGO_OPLOG_URL";

/// The managed-mongo spec of `app`, if it has one.
pub fn managed(app: &MeteorApp) -> Option<&ManagedMongo> {
    app.spec.mongo.managed.as_deref()
}

/// Name of the StatefulSet, headless Service, PDB and NetworkPolicy.
pub fn tier_name(app: &MeteorApp) -> String {
    format!("{}-mongo", app.name_any())
}

/// The replica-set name (`--replSet`): the app name, unique within the namespace.
pub fn replica_set_name(app: &MeteorApp) -> String {
    app.name_any()
}

/// The app database (`spec.mongo.managed.database`, default the app name).
pub fn database(app: &MeteorApp) -> String {
    managed(app)
        .and_then(|m| m.database.clone())
        .unwrap_or_else(|| app.name_any())
}

/// Stable host:port of member `index`, independent of pod IPs.
pub fn member_host(app: &MeteorApp, index: usize) -> String {
    let tier = tier_name(app);
    let ns = app.namespace().unwrap_or_else(|| "default".into());
    let domain = cluster_domain();
    format!("{tier}-{index}.{tier}.{ns}.svc.{domain}:{MONGO_PORT}")
}

/// The four credential Secrets of a managed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretKind {
    /// Shared key the members authenticate each other with.
    Keyfile,
    /// The `root` user (the operator's identity once it exists).
    Root,
    /// The app user: `readWrite` on the app database.
    App,
    /// The oplog user: `read` on `local`.
    Oplog,
}

impl SecretKind {
    /// All kinds, in creation order.
    pub const ALL: [SecretKind; 4] = [
        SecretKind::Keyfile,
        SecretKind::Root,
        SecretKind::App,
        SecretKind::Oplog,
    ];

    fn suffix(self) -> &'static str {
        match self {
            SecretKind::Keyfile => "keyfile",
            SecretKind::Root => "root",
            SecretKind::App => "app",
            SecretKind::Oplog => "oplog",
        }
    }
}

/// Name of the Secret of `kind`: the user's when they gave one, else `<app>-mongo-<kind>`.
pub fn secret_name(app: &MeteorApp, kind: SecretKind) -> String {
    user_secret_name(app, kind).unwrap_or_else(|| format!("{}-{}", tier_name(app), kind.suffix()))
}

/// The Secret name the user supplied for `kind`, if any (the operator never writes those).
pub fn user_secret_name(app: &MeteorApp, kind: SecretKind) -> Option<String> {
    let s = &managed(app)?.secrets;
    match kind {
        SecretKind::Keyfile => s.keyfile.clone(),
        SecretKind::Root => s.root.clone(),
        SecretKind::App => s.app.clone(),
        SecretKind::Oplog => s.oplog.clone(),
    }
}

/// Name of the operator-derived Secret holding `MONGO_URL` and `MONGO_OPLOG_URL`.
pub fn urls_secret_name(app: &MeteorApp) -> String {
    format!("{}-urls", tier_name(app))
}

/// How the app container gets its MongoDB: Secret key references only, never literal passwords.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MongoWiring {
    /// `MONGO_URL`.
    pub url: SecretKeyRef,
    /// `MONGO_OPLOG_URL`, when the oplog may be used.
    pub oplog_url: Option<SecretKeyRef>,
    /// `METEOR_REACTIVITY_ORDER`, when `spec.reactivity` is set.
    pub reactivity_order: Option<String>,
}

impl MongoWiring {
    /// The wiring `spec.mongo` asks for (see [`wiring`]). None when the spec names no MongoDB
    /// (refused by the CRD and by validation before anything is built).
    pub fn for_app(app: &MeteorApp) -> Option<Self> {
        let mongo = &app.spec.mongo;
        (mongo.external.is_some() || mongo.managed.is_some()).then(|| wiring(app))
    }
}

/// The MongoDB environment of the app and worker containers.
///
/// External: the user's references. Managed: keys of the URLs Secret (see
/// [`build::urls_secret`]); `MONGO_OPLOG_URL` is wired unless `spec.reactivity` leaves the oplog
/// out, because Meteor's default order falls back to it and older Meteor tails it.
pub fn wiring(app: &MeteorApp) -> MongoWiring {
    let reactivity = app.spec.reactivity.as_deref();
    let reactivity_order =
        reactivity.map(|r| r.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(","));
    match (&app.spec.mongo.managed, &app.spec.mongo.external) {
        (Some(_), _) => {
            let uses_oplog = reactivity.is_none_or(|r| r.contains(&Reactivity::Oplog));
            let secret = urls_secret_name(app);
            MongoWiring {
                url: SecretKeyRef {
                    name: secret.clone(),
                    key: MONGO_URL_KEY.into(),
                },
                oplog_url: uses_oplog.then(|| SecretKeyRef {
                    name: secret,
                    key: MONGO_OPLOG_URL_KEY.into(),
                }),
                reactivity_order,
            }
        }
        (None, Some(ext)) => MongoWiring {
            url: ext.url.clone(),
            oplog_url: ext.oplog_url.clone(),
            reactivity_order,
        },
        // The CRD requires one of the two; an object that slipped past it gets a reference
        // the pod cannot resolve, which Kubernetes reports plainly.
        (None, None) => MongoWiring {
            url: SecretKeyRef {
                name: urls_secret_name(app),
                key: MONGO_URL_KEY.into(),
            },
            oplog_url: None,
            reactivity_order,
        },
    }
}

/// `app.kubernetes.io/component` of every object of the managed-MongoDB tier.
pub const COMPONENT: &str = "mongo";

/// The project's labels for a mongo object of `app`.
pub fn labels(app: &MeteorApp) -> BTreeMap<String, String> {
    crate::build::meta::labels(app, COMPONENT)
}

/// Labels selecting the mongod pods of `app` (a stable subset of [`labels`]).
pub fn selector_labels(app: &MeteorApp) -> BTreeMap<String, String> {
    crate::build::meta::selector_labels(app, COMPONENT)
}

/// The controller owner reference to `app`.
pub fn owner_ref(app: &MeteorApp) -> OwnerReference {
    crate::build::meta::owner_reference(app)
}
