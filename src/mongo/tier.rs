//! The managed-MongoDB tier's report and how it folds into the MeteorApp's status. Pure: the
//! tier's I/O (Secrets, objects, the replica-set step) lives in `crate::controller::mongo`.

use super::managed;
use super::status::{self, Readiness};
use crate::api::{MeteorApp, MeteorAppStatus, MongoStatus};
use crate::status::upsert;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::time::Duration;

/// What the tier reconcile found and did.
#[derive(Clone, Debug, PartialEq)]
pub struct TierReport {
    /// Content of `MongoReady`.
    pub readiness: Readiness,
    /// Content of `MongoStorageResized`, while a resize is refused or under way.
    pub storage: Option<Readiness>,
    /// `status.mongo`, when the config was readable.
    pub mongo: Option<MongoStatus>,
    /// When to reconcile again at the latest.
    pub requeue: Duration,
    /// Write requests made.
    pub writes: u64,
}

/// Puts the tier's conditions and `status.mongo` into `status` (computed by the core), and
/// holds `Ready` at False while `MongoReady` is not True. With no report (the reconcile stopped
/// before the tier), the previous MongoDB status is carried over unchanged.
pub fn fold_status(
    new: &mut MeteorAppStatus,
    app: &MeteorApp,
    report: Option<&TierReport>,
    now: &Time,
) {
    let previous = app.status.as_ref();
    let previous_condition =
        |type_: &str| previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == type_));
    if managed(app).is_none() {
        new.mongo = None;
        return;
    }
    let generation = app.metadata.generation;
    match report {
        Some(r) => {
            new.mongo = r.mongo.clone().or_else(|| {
                // Config unreadable this time: keep the size, drop what is no longer known.
                previous.and_then(|s| s.mongo.clone()).map(|m| MongoStatus {
                    ready_members: 0,
                    primary: None,
                    replication_lag_seconds: None,
                    ..m
                })
            });
            upsert(
                &mut new.conditions,
                status::condition(
                    &r.readiness,
                    generation,
                    previous_condition(status::CONDITION_TYPE),
                    now.clone(),
                ),
            );
            match &r.storage {
                Some(s) => upsert(
                    &mut new.conditions,
                    status::condition_of(
                        status::STORAGE_CONDITION_TYPE,
                        s,
                        generation,
                        previous_condition(status::STORAGE_CONDITION_TYPE),
                        now.clone(),
                    ),
                ),
                None => new
                    .conditions
                    .retain(|c| c.type_ != status::STORAGE_CONDITION_TYPE),
            }
        }
        None => {
            new.mongo = previous.and_then(|s| s.mongo.clone());
            for type_ in [status::CONDITION_TYPE, status::STORAGE_CONDITION_TYPE] {
                if let Some(c) = previous_condition(type_) {
                    upsert(&mut new.conditions, c.clone());
                }
            }
        }
    }
    let mongo_ready = new
        .conditions
        .iter()
        .find(|c| c.type_ == status::CONDITION_TYPE)
        .map(|c| (c.status == "True", c.message.clone()));
    let mongo_message = match mongo_ready {
        Some((true, _)) => return,
        Some((false, message)) => message,
        None => "MongoDB not reconciled yet".to_string(),
    };
    crate::status::hold_not_ready(
        &mut new.conditions,
        previous_condition(crate::status::READY),
        "MongoNotReady",
        format!("MongoDB: {mongo_message}"),
        now,
    );
}
