//! The `spec.mongo` part of the API: which MongoDB the app uses.

use super::SecretKeyRef;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The app's MongoDB.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.external)").message("set external (the MongoDB connection strings)"))]
pub struct MongoSpec {
    /// A MongoDB run elsewhere; the app gets its URLs from Secret keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalMongo>,
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
