//! The managed-MongoDB part of one reconcile: the only code of `crate::mongo` that talks to the
//! Kubernetes API (and, through [`DriverAdmin`], to mongod).
//!
//! Per reconcile of a MeteorApp with `spec.mongo.managed`:
//! 1. Credential Secrets: GET each; a missing generated one is POSTed (create-only, a `409`
//!    means another writer won and its Secret is read back). User-supplied ones are only read.
//! 2. Service, PodDisruptionBudget, NetworkPolicy and the URLs Secret: server-side apply through
//!    the controller's `apply` helper (skipped when unchanged).
//! 3. Volumes: claim templates pinned to the existing StatefulSet's, PVC growth per
//!    [`storage::decide`].
//! 4. One [`replset::step`], when the StatefulSet exists and the credentials are usable.
//! 5. The StatefulSet, applied with the replicas the step allows.
//!
//! [`fold_status`] then puts `MongoReady`, the storage condition and `status.mongo` into the
//! status the core computed, and makes `Ready` wait for `MongoReady`.

use super::build::{self, TierOptions};
use super::driver::DriverAdmin;
use super::replset::{self, KubeFacts, MongoAdmin};
use super::secrets::{self, OsRandom};
use super::status::{self, Readiness};
use super::storage::{self, StorageDecision, StorageFacts};
use super::{
    FIELD_MANAGER, SecretKind, UserCredentials, managed, secret_name, selector_labels, tier_name,
};
use crate::api::{MeteorApp, MeteorAppStatus, MongoStatus};
use crate::controller::apply::{self, Applied, Child};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use std::fmt::Debug;
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

async fn apply_one<K>(client: &Client, namespace: &str, desired: K) -> Result<u64, kube::Error>
where
    K: Child,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let observed = api.get_opt(&desired.name_any()).await?;
    apply_over(client, desired, observed.as_ref()).await
}

/// Applies `desired` over what was observed; 1 if a write was made.
async fn apply_over<K>(
    client: &Client,
    desired: K,
    observed: Option<&K>,
) -> Result<u64, kube::Error>
where
    K: Child,
{
    Ok(match apply::apply(client, desired, observed).await? {
        Applied::Written(_) => 1,
        Applied::Unchanged => 0,
    })
}

/// The usable credentials, or why not.
type Creds = Result<(String, UserCredentials), String>;

async fn credentials(
    api: &Api<Secret>,
    app: &MeteorApp,
    create_once: &[Secret],
    writes: &mut u64,
) -> Result<Creds, kube::Error> {
    let mut found = Vec::new();
    for kind in SecretKind::ALL {
        let name = secret_name(app, kind);
        let mut secret = api.get_opt(&name).await?;
        if secret.is_none()
            && let Some(new) = create_once
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(&name))
        {
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PostParams::default()
            };
            secret = match api.create(&params, new).await {
                Ok(created) => {
                    *writes += 1;
                    tracing::info!(app = %app.name_any(), secret = %name, "generated a credential Secret");
                    Some(created)
                }
                // Created meanwhile by someone else: theirs stands, never overwrite it.
                Err(kube::Error::Api(e)) if e.code == 409 => api.get_opt(&name).await?,
                Err(e) => return Err(e),
            };
        }
        match secret {
            Some(s) => found.push(s),
            None => return Ok(Err(format!("Secret {name} not found"))),
        }
    }
    let parsed = (|| {
        Ok::<_, secrets::SecretError>((
            secrets::read_keyfile(&found[0])?,
            UserCredentials {
                root: secrets::read_credentials(&found[1])?,
                app: secrets::read_credentials(&found[2])?,
                oplog: secrets::read_credentials(&found[3])?,
            },
        ))
    })();
    Ok(parsed.map_err(|e| e.to_string()))
}

async fn storage_decision(
    client: &Client,
    app: &MeteorApp,
    namespace: &str,
) -> Result<StorageDecision, kube::Error> {
    let Some(spec) = managed(app) else {
        return Ok(StorageDecision::Unchanged);
    };
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let selector = selector_labels(app)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let prefix = format!("{}-{}-", build::DATA_VOLUME, tier_name(app));
    let list = pvcs.list(&ListParams::default().labels(&selector)).await?;
    let claims: Vec<&PersistentVolumeClaim> = list
        .items
        .iter()
        .filter(|p| p.name_any().starts_with(&prefix))
        .collect();
    let mut facts = StorageFacts {
        desired: spec.storage.size.clone(),
        pvcs: claims
            .iter()
            .filter_map(|p| {
                let size = p
                    .spec
                    .as_ref()?
                    .resources
                    .as_ref()?
                    .requests
                    .as_ref()?
                    .get("storage")?;
                Some((p.name_any(), size.0.clone()))
            })
            .collect(),
        storage_class: claims
            .iter()
            .find_map(|p| p.spec.as_ref()?.storage_class_name.clone()),
        // Assume yes first: the StorageClass is read only when something must grow.
        allow_expansion: Some(true),
    };
    if !matches!(storage::decide(&facts), StorageDecision::Expand { .. }) {
        return Ok(storage::decide(&facts));
    }
    let classes: Api<StorageClass> = Api::all(client.clone());
    facts.allow_expansion = match &facts.storage_class {
        Some(name) => classes.get_opt(name).await?,
        None => None,
    }
    .map(|c| c.allow_volume_expansion.unwrap_or(false));
    Ok(storage::decide(&facts))
}

fn not_ready(reason: &'static str, message: String) -> Readiness {
    Readiness {
        ready: false,
        reason,
        message,
    }
}

/// Reconciles the managed tier of `app`; `None` when it has none.
pub async fn reconcile(
    client: &Client,
    app: &MeteorApp,
    options: &TierOptions,
) -> Result<Option<TierReport>, kube::Error> {
    reconcile_with(client, app, options, |root, keyfile| {
        DriverAdmin::new(root.clone(), keyfile.to_string())
    })
    .await
}

/// [`reconcile`] with the MongoDB admin made by `admin_for(root credentials, keyfile)`.
pub async fn reconcile_with<A: MongoAdmin>(
    client: &Client,
    app: &MeteorApp,
    options: &TierOptions,
    admin_for: impl FnOnce(&secrets::Credentials, &str) -> A,
) -> Result<Option<TierReport>, kube::Error> {
    let Some(mut tier) = build::desired_with(app, options, &mut OsRandom) else {
        return Ok(None);
    };
    let namespace = app.namespace().unwrap_or_default();
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut writes = 0;

    let creds = credentials(&secrets_api, app, &tier.create_once, &mut writes).await?;
    writes += apply_one(client, &namespace, tier.service).await?;
    writes += apply_one(client, &namespace, tier.pdb).await?;
    writes += apply_one(client, &namespace, tier.network_policy).await?;
    if let Ok((_, users)) = &creds {
        let urls = build::urls_secret(app, &users.app, &users.oplog);
        writes += apply_one(client, &namespace, urls).await?;
    }

    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    let existing = sts_api.get_opt(&tier_name(app)).await?;
    storage::pin_claim_templates(&mut tier.statefulset, existing.as_ref());
    let decision = match existing {
        Some(_) => storage_decision(client, app, &namespace).await?,
        None => StorageDecision::Unchanged,
    };
    if let StorageDecision::Expand { pvcs, size } = &decision {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
        let patch =
            serde_json::json!({ "spec": { "resources": { "requests": { "storage": size } } } });
        for pvc in pvcs {
            api.patch(pvc, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            writes += 1;
        }
    }

    let existing_replicas = existing.as_ref().and_then(|s| s.spec.as_ref()?.replicas);
    let desired_members = managed(app).map_or(1, |m| m.members);
    let was_initialized = app
        .status
        .as_ref()
        .and_then(|s| s.mongo.as_ref())
        .is_some_and(|m| m.members > 0);
    let (readiness, mongo, replicas, requeue) = match (&existing, &creds) {
        (Some(_), Ok((keyfile, users))) => {
            let target = super::target(app, users).expect("managed apps have a target");
            let admin = admin_for(&users.root, keyfile);
            let kube = KubeFacts {
                statefulset_replicas: existing_replicas,
                was_initialized,
            };
            let outcome = replset::step(&admin, &target, kube).await;
            if outcome.action.is_change() || outcome.error.is_some() {
                tracing::info!(
                    app = %app.name_any(),
                    action = ?outcome.action,
                    error = ?outcome.error,
                    "replica set step"
                );
            }
            (
                status::readiness(
                    &target,
                    &outcome.facts,
                    &outcome.action,
                    outcome.error.as_ref(),
                ),
                status::mongo_status(&target, &outcome.facts),
                outcome.statefulset_replicas,
                outcome.requeue,
            )
        }
        (None, _) => (
            not_ready("Provisioning", "creating the StatefulSet".into()),
            None,
            desired_members,
            replset::REQUEUE_WAIT,
        ),
        (Some(_), Err(problem)) => (
            not_ready("Provisioning", problem.clone()),
            None,
            // Without credentials the config is unknown: never scale down blind.
            existing_replicas
                .unwrap_or(desired_members)
                .max(desired_members),
            replset::REQUEUE_WAIT,
        ),
    };
    if let Some(spec) = tier.statefulset.spec.as_mut() {
        spec.replicas = Some(replicas);
    }
    writes += apply_over(client, tier.statefulset, existing.as_ref()).await?;

    Ok(Some(TierReport {
        readiness,
        storage: status::storage_readiness(&decision),
        mongo,
        requeue,
        writes,
    }))
}

fn upsert(conditions: &mut Vec<Condition>, condition: Condition) {
    conditions.retain(|c| c.type_ != condition.type_);
    conditions.push(condition);
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
    if let Some(ready) = new.conditions.iter_mut().find(|c| c.type_ == "Ready")
        && ready.status == "True"
    {
        ready.status = "False".into();
        ready.reason = "MongoNotReady".into();
        ready.message = format!("MongoDB: {mongo_message}");
        ready.last_transition_time = previous_condition("Ready")
            .filter(|p| p.status == "False")
            .map_or_else(|| now.clone(), |p| p.last_transition_time.clone());
    }
}
