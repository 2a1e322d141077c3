//! The managed-MongoDB tier's I/O within one reconcile: the only code that reads and writes the
//! tier's Kubernetes objects and, through [`MongoAdmin`], talks to mongod. The builders, the
//! replica-set state machine and the status are pure, in `crate::mongo`.
//!
//! Per reconcile of a MeteorApp with `spec.mongo.managed`:
//! 1. Credential Secrets: GET each (Secret data is never cached); a missing generated one is
//!    POSTed (create-only, a `409` means another writer won and its Secret is read back).
//!    User-supplied ones are only read.
//! 2. Service, PodDisruptionBudget, NetworkPolicy and the URLs Secret, observed in the caches (the
//!    Secret's metadata only): through the one [`Applier`], skipped when unchanged and not drifted.
//! 3. Volumes: claim templates pinned to the existing StatefulSet's; PVCs listed only when the
//!    wanted size differs from the template's, and grown per [`storage::decide`].
//! 4. One [`replset::step`], when the StatefulSet exists and the credentials are usable, bounded
//!    by [`STEP_LIMIT`] so an unreachable set cannot hold a reconcile slot for long.
//! 5. The StatefulSet (observed in the cache), applied with the replicas the step allows.

use super::Context;
use super::apply::Applier;
use super::cached::{Cache, Compact};
use crate::api::{MAX_MEMBERS, MeteorApp};
use crate::build::mongo::secrets;
use crate::build::mongo::secrets::UserCredentials;
use crate::build::mongo::{self as build, MongoTier};
use crate::build::mongo::{SecretKind, managed, secret_name, selector_labels, tier_name};
use crate::mongo::driver::DriverAdmin;
use crate::mongo::replset::{self, KubeFacts, MongoAdmin};
use crate::mongo::storage::{self, StorageDecision, StorageFacts};
use crate::status::conditions::Readiness;
use crate::status::mongo::{self as status, TierReport};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use std::time::Duration;

/// Longest one replica-set step may take: the slowest admin command (a step-down, 40 s) plus
/// observing the members. The chart's termination grace period is longer, so a shutdown lets
/// an in-flight step finish.
pub const STEP_LIMIT: Duration = Duration::from_secs(50);

/// The storage request of a StatefulSet's claim template.
fn claim_size(statefulset: &StatefulSet) -> Option<&str> {
    let template = statefulset.spec.as_ref()?.volume_claim_templates.as_ref()?;
    requested_storage(template.first()?)
}

/// The storage a claim (or claim template) requests.
fn requested_storage(claim: &PersistentVolumeClaim) -> Option<&str> {
    let requests = claim.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?;
    requests.get("storage").map(|q| q.0.as_str())
}

/// Applies `desired` over the cached object of the same name; 1 if a write was made.
async fn apply_cached<K: Compact>(
    applier: &Applier,
    store: &Cache<K>,
    desired: K,
) -> Result<u64, kube::Error> {
    Ok(applier.apply_cached(store, desired).await?.writes())
}

/// The usable credentials, or why not.
type Creds = Result<(String, UserCredentials), String>;

async fn credentials(
    api: &Api<Secret>,
    applier: &Applier,
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
            secret = match applier.create_once(new).await? {
                Some(created) => {
                    *writes += 1;
                    tracing::info!(app = %app.name_any(), secret = %name, "generated a credential Secret");
                    Some(created)
                }
                // Created meanwhile by someone else: theirs stands, never overwrite it.
                None => api.get_opt(&name).await?,
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
    // The members' volumes by name, `data-<tier>-<ordinal>` from 0 until one is missing (never a
    // LIST of the namespace's claims): a scale-down leaves the removed members' volumes, so they
    // grow too, and a set has at most MAX_MEMBERS. Only claims carrying the tier's labels count.
    let selector = selector_labels(app);
    let mut found = Vec::new();
    for ordinal in 0..MAX_MEMBERS {
        let name = format!("{}-{}-{ordinal}", build::DATA_VOLUME, tier_name(app));
        let Some(claim) = pvcs.get_opt(&name).await? else {
            break;
        };
        if crate::build::meta::has_labels(claim.metadata.labels.as_ref(), &selector) {
            found.push(claim);
        }
    }
    let claims: Vec<&PersistentVolumeClaim> = found.iter().collect();
    let mut facts = StorageFacts {
        desired: spec.storage.size.clone(),
        pvcs: claims
            .iter()
            .filter_map(|p| Some((p.name_any(), requested_storage(p)?.to_string())))
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
    ctx: &Context,
    app: &MeteorApp,
    tier: Option<MongoTier>,
) -> Result<Option<TierReport>, kube::Error> {
    reconcile_with(ctx, app, tier, |root, keyfile| {
        DriverAdmin::new(root.clone(), keyfile.to_string())
    })
    .await
}

/// [`reconcile`] with the MongoDB admin made by `admin_for(root credentials, keyfile)`.
pub async fn reconcile_with<A: MongoAdmin>(
    ctx: &Context,
    app: &MeteorApp,
    tier: Option<MongoTier>,
    admin_for: impl FnOnce(&secrets::Credentials, &str) -> A,
) -> Result<Option<TierReport>, kube::Error> {
    let client = &ctx.client;
    let applier = &ctx.applier;
    let Some(mut tier) = tier else {
        return Ok(None);
    };
    let namespace = app.namespace().unwrap_or_default();
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut writes = 0;

    let creds = credentials(&secrets_api, applier, app, &tier.create_once, &mut writes).await?;
    writes += apply_cached(applier, &ctx.services, tier.service).await?;
    writes += apply_cached(applier, &ctx.budgets, tier.pdb).await?;
    writes += apply_cached(applier, &ctx.network_policies, tier.network_policy).await?;
    if let Ok((_, users)) = &creds {
        // Observed through the metadata-only cache of the operator's own Secrets: the hash and
        // field ownership are all the applier compares.
        let urls = build::urls_secret(app, &users.app, &users.oplog);
        let hash = super::apply::desired_hash(&urls);
        let observed = ctx.observed(&ctx.owned_secrets, &namespace, &urls.name_any());
        if applier.needs_write(&hash, observed.as_deref()) {
            applier.write(&hash, urls).await?;
            writes += 1;
        }
    }

    let existing = ctx
        .applier
        .expected()
        .observed(&ctx.statefulsets, &namespace, &tier_name(app));
    storage::pin_claim_templates(&mut tier.statefulset, existing.as_deref());
    // Volumes made from the claim template already have its size: PVCs are only listed when
    // the wanted size differs from it.
    let decision = match &existing {
        Some(existing) if claim_size(existing) != managed(app).map(|m| m.storage.size.as_str()) => {
            storage_decision(client, app, &namespace).await?
        }
        _ => StorageDecision::Unchanged,
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
            let target = crate::mongo::target(app, users).expect("managed apps have a target");
            let admin = admin_for(&users.root, keyfile);
            let kube = KubeFacts {
                statefulset_replicas: existing_replicas,
                was_initialized,
            };
            let step = tokio::time::timeout(STEP_LIMIT, replset::step(&admin, &target, kube));
            let Ok(outcome) = step.await else {
                // Never scale down on a step that did not finish.
                let message = format!("no answer from MongoDB within {} s", STEP_LIMIT.as_secs());
                tracing::warn!(app = %app.name_any(), "{message}");
                let replicas = existing_replicas
                    .unwrap_or(desired_members)
                    .max(desired_members);
                let report = (
                    not_ready("Unreachable", message),
                    None,
                    replicas,
                    replset::REQUEUE_WAIT,
                );
                return finish(
                    applier,
                    tier.statefulset,
                    existing.as_deref(),
                    report,
                    decision,
                    writes,
                )
                .await;
            };
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
    let report = (readiness, mongo, replicas, requeue);
    finish(
        applier,
        tier.statefulset,
        existing.as_deref(),
        report,
        decision,
        writes,
    )
    .await
}

/// Applies the StatefulSet with the replicas the step allows, and reports.
async fn finish(
    applier: &Applier,
    mut statefulset: StatefulSet,
    existing: Option<&StatefulSet>,
    (readiness, mongo, replicas, requeue): (
        Readiness,
        Option<crate::api::MongoStatus>,
        i32,
        Duration,
    ),
    decision: StorageDecision,
    mut writes: u64,
) -> Result<Option<TierReport>, kube::Error> {
    if let Some(spec) = statefulset.spec.as_mut() {
        spec.replicas = Some(replicas);
    }
    writes += applier.apply(statefulset, existing).await?.writes();
    Ok(Some(TierReport {
        readiness,
        storage: status::storage_readiness(&decision),
        mongo,
        requeue,
        writes,
    }))
}
