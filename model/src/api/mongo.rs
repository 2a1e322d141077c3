//! The `spec.mongo` part of the API: which MongoDB the app uses.
//!
//! Exactly one of `external` (connection strings the user keeps in Secrets) or `managed` (a
//! replica set the operator runs for this app, see `crate::mongo`). Switching between the two on
//! a live object is refused: it would strand the data of the managed set.

use super::SecretKeyRef;
use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Default and smallest supported MongoDB (major.minor) of a managed set.
pub const DEFAULT_MONGO_VERSION: &str = "8.0";

/// The app's MongoDB.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.external) != has(self.managed)")
    .message("set exactly one of external (connection strings) or managed (a replica set run by the operator)"))]
#[x_kube(validation = Rule::new("has(self.managed) == has(oldSelf.managed)")
    .message("cannot switch between external and managed on a live MeteorApp: move the data, then create a new MeteorApp"))]
pub struct MongoSpec {
    /// A MongoDB run elsewhere; the app gets its URLs from Secret keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalMongo>,
    /// A replica set the operator runs for this app (`<name>-mongo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<Box<ManagedMongo>>,
}

/// Connection strings of a MongoDB the operator does not run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalMongo {
    /// Secret key holding `MONGO_URL` (a replica set: Meteor observes changes through it).
    pub url: SecretKeyRef,
    /// Secret key holding `MONGO_OPLOG_URL` (the `local` database), for apps that tail the oplog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oplog_url: Option<SecretKeyRef>,
}

/// The most members a managed replica set may have: MongoDB's limit of voting members (the CRD
/// rule on `members` says 7 too).
pub const MAX_MEMBERS: i32 = 7;

/// A MongoDB replica set run by the operator for this app only.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.database) == has(oldSelf.database) && (!has(self.database) || self.database == oldSelf.database)")
    .message("database cannot change once the set exists (the app user is granted readWrite on it at creation)"))]
pub struct ManagedMongo {
    /// Replica-set members. 3 (default) survives the loss of one; 1 is for development only.
    /// At most 7 (MongoDB's limit of voting members).
    #[serde(default = "default_members")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 7")
        .message("must be between 1 and 7 (1 for development; 3 or more to survive a member loss)"))]
    pub members: i32,

    /// MongoDB major.minor the image runs, 5.0 or later. Decides which features the operator
    /// may use (change streams need 6.0+). Default 8.0.
    #[serde(default = "default_version")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.matches('^([5-9]|[1-9][0-9])\\\\.[0-9]+$')")
        .message("must be a MongoDB version 5.0 or later, written major.minor (like 8.0)"))]
    pub version: String,

    /// Container image. Default: the official `mongo:<version>`. Must be the official image or
    /// one built on it (same paths, uid 999, `mongosh` present) and run `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("must not be empty"))]
    pub image: Option<String>,

    /// Resources of each mongod. Default: 500m CPU and 1Gi requested, 2Gi limit. The WiredTiger
    /// cache is sized from the memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Each member's volume.
    #[serde(default)]
    pub storage: MongoStorage,

    /// Where members run. Default: spread across nodes (required) and zones (best effort).
    #[serde(default)]
    pub placement: MongoPlacement,

    /// Database of the app (`MONGO_URL` path, the app user's `readWrite`). Default: the
    /// MeteorApp name. Cannot change later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_-]{1,63}$') && !(self in ['admin', 'local', 'config'])")
        .message("must be 1 to 63 letters, digits, '_' or '-', and not admin, local or config"))]
    pub database: Option<String>,

    /// What happens to the data when the MeteorApp is deleted.
    #[serde(default)]
    pub persistence: MongoPersistence,

    /// Secrets the user supplies instead of generated ones (created beforehand, never changed
    /// by the operator).
    #[serde(default)]
    pub secrets: MongoSecrets,
}

fn default_members() -> i32 {
    3
}
fn default_version() -> String {
    DEFAULT_MONGO_VERSION.into()
}

/// Volume of each member (one PVC per member from the StatefulSet's claim template).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MongoStorage {
    /// Requested size, like `10Gi` (default). It can grow later only where the StorageClass
    /// allows volume expansion; it never shrinks.
    #[serde(default = "default_storage_size")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))")
        .message("must be a positive quantity like 10Gi"))]
    #[x_kube(validation = Rule::new("quantity(self).compareTo(quantity(oldSelf)) >= 0")
        .message("cannot shrink: volumes can only grow"))]
    pub size: String,
    /// StorageClass of the volumes; unset: the cluster default. Cannot change later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf")
        .message("cannot change: existing volumes cannot move to another StorageClass"))]
    pub storage_class_name: Option<String>,
}

impl Default for MongoStorage {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

fn default_storage_size() -> String {
    "10Gi".into()
}

/// Scheduling of the members.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MongoPlacement {
    /// Node selector of the members.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity of the members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Spread constraints. Unset: at most one member more per node than on any other
    /// (required), and the same across zones (best effort). An empty list turns spreading off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
}

/// Data retention on delete.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MongoPersistence {
    /// `Retain` (default): PVCs and credential Secrets outlive the MeteorApp. `Delete`: they go
    /// with it.
    #[serde(default)]
    pub on_delete: OnDelete,
}

/// What deleting the MeteorApp does to the data.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnDelete {
    /// Keep PVCs and credential Secrets.
    #[default]
    Retain,
    /// Delete PVCs and credential Secrets with the MeteorApp.
    Delete,
}

/// Names of user-supplied Secrets; each unset one is generated as `<name>-mongo-<kind>`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MongoSecrets {
    /// Secret with key `keyfile` (6 to 1024 base64 characters) for member authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("must not be empty"))]
    pub keyfile: Option<String>,
    /// Secret with keys `username` and `password` of the root user (role `root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("must not be empty"))]
    pub root: Option<String>,
    /// Secret with keys `username` and `password` of the app user (`readWrite` on `database`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("must not be empty"))]
    pub app: Option<String>,
    /// Secret with keys `username` and `password` of the oplog user (`read` on `local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("must not be empty"))]
    pub oplog: Option<String>,
}

/// A way Meteor observes changes, in `METEOR_REACTIVITY_ORDER`.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "camelCase")]
pub enum Reactivity {
    /// MongoDB change streams (Meteor 3.5+, MongoDB 6.0+).
    ChangeStreams,
    /// Oplog tailing (`MONGO_OPLOG_URL`).
    Oplog,
    /// Polling and diffing.
    Polling,
}

impl Reactivity {
    /// The name Meteor reads in `METEOR_REACTIVITY_ORDER`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reactivity::ChangeStreams => "changeStreams",
            Reactivity::Oplog => "oplog",
            Reactivity::Polling => "polling",
        }
    }
}

/// Observed state of a managed replica set (`status.mongo`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MongoStatus {
    /// Members in the replica-set configuration.
    pub members: i32,
    /// Members that are PRIMARY or SECONDARY and voting.
    pub ready_members: i32,
    /// Host of the primary, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// Largest replication lag of a secondary behind the primary, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_lag_seconds: Option<i64>,
    /// Seconds between the oldest and the newest entry of the primary's oplog, when known: how
    /// long a member may be away and still catch up without a full initial sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oplog_window_seconds: Option<i64>,
}
