//! Managed MongoDB: a replica set per MeteorApp (`spec.mongo.managed`).
//!
//! Contracts, by submodule:
//! - [`build`]: pure builders. [`build::desired`] gives every Kubernetes object of the tier from
//!   the MeteorApp alone; credential Secrets are generated there (CSPRNG) and must be written
//!   create-only. [`build::urls_secret`] derives the connection URLs from the credentials.
//! - [`replset`]: the replica-set state machine behind the [`replset::MongoAdmin`] trait. One
//!   call of [`replset::step`] observes, then makes at most one change, and says whether to come
//!   back. It keeps no memory between calls, so an interrupted operator resumes from what it sees.
//! - [`driver`]: [`replset::MongoAdmin`] on the official `mongodb` driver.
//! - the `MongoReady` condition and `status.mongo` are in [`crate::status::mongo`].
//! - [`storage`]: whether a `storage.size` change can be applied to existing volumes.
//!
//! Names are fixed so the pieces agree without talking: StatefulSet and headless Service
//! `<app>-mongo`, members `<app>-mongo-N.<app>-mongo.<ns>.svc.cluster.local:27017`, replica set
//! `<app>`, Secrets `<app>-mongo-{keyfile,root,app,oplog,urls}`.

pub mod build;
pub mod driver;
pub mod replset;
pub mod secrets;
pub mod storage;

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
    app.spec.mongo.managed.as_ref()
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

// Local stand-ins for the shared label and owner helpers the lead is writing in `src/build/`;
// swap them when the branches meet.

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

/// The credentials of the three users, read from their Secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserCredentials {
    /// Root user.
    pub root: secrets::Credentials,
    /// App user.
    pub app: secrets::Credentials,
    /// Oplog user.
    pub oplog: secrets::Credentials,
}

/// The replica set `app` should have, for [`replset::step`].
pub fn target(app: &MeteorApp, users: &UserCredentials) -> Option<replset::Target> {
    let spec = managed(app)?;
    let user = |c: &secrets::Credentials, role: &str, db: String| replset::UserSpec {
        name: c.username.clone(),
        password: c.password.clone(),
        roles: vec![(role.to_string(), db)],
    };
    Some(replset::Target {
        set_name: replica_set_name(app),
        members: spec.members.clamp(1, replset::MAX_MEMBERS as i32) as usize,
        hosts: (0..replset::MAX_MEMBERS)
            .map(|i| member_host(app, i))
            .collect(),
        root: user(&users.root, "root", "admin".into()),
        users: vec![
            user(&users.app, "readWrite", database(app)),
            user(&users.oplog, "read", "local".into()),
        ],
    })
}
