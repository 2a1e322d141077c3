//! One reconciliation of one MeteorApp: validate → resolve references → build → apply → status.
//!
//! Only this file and `apply.rs` talk to the API. A problem with the spec or its references
//! stops before any child is touched, so running pods keep running as they were.

use super::apply::{self, Applied};
use super::{Context, Error, ListedApp};
use crate::api::{MeteorApp, MeteorAppStatus};
use crate::build::{self, Desired, Inputs, MongoWiring, meta};
use crate::problem::Problem;
use crate::references::{self, Fetched, SourceKind};
use crate::status::{self, DEGRADED, READY, Verdict};
use crate::validate::validate;
use futures::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// Resync period of a healthy app: a safety net, since watches trigger every real change.
const RESYNC: Duration = Duration::from_secs(300);
/// How soon to look again while a rollout is under way.
const WHILE_PROGRESSING: Duration = Duration::from_secs(30);

pub async fn reconcile(app: Arc<MeteorApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.caches_ready() {
        // Until every child cache has listed once, a missing child may only be unseen.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if app.meta().deletion_timestamp.is_some() {
        // Garbage collection is removing the children; re-applying them would fight it.
        return Ok(Action::await_change());
    }
    let namespace = app.namespace().ok_or(Error::MissingNamespace)?;

    let checked = match check(&app, &ctx, &namespace).await? {
        Ok(inputs) => {
            let desired = build::desired(&app, &inputs);
            match namesake_conflict(&app, &ctx, &namespace, &desired).await? {
                Some(problem) => Err(problem),
                None => Ok(desired),
            }
        }
        Err(problem) => Err(problem),
    };
    let (verdict, mut written) = match checked {
        Err(problem) => (Verdict::Problem(problem), Written::default()),
        Ok(desired) => {
            match converge(&app, &ctx, &namespace, desired).await {
                Ok(written) => (Verdict::Applied, written),
                Err(error) => {
                    // Report it on the object, then let the error policy back off.
                    let verdict = Verdict::ApplyFailed(format!("writing children failed: {error}"));
                    let new_status = status_for(&app, &ctx, &verdict, Written::default());
                    publish_status(&app, &ctx, &namespace, new_status).await?;
                    return Err(error.into());
                }
            }
        }
    };

    let mongo_requeue = written.mongo.as_ref().map(|m| m.requeue);
    let new_status = status_for(&app, &ctx, &verdict, std::mem::take(&mut written));
    let progressing =
        status::find(Some(&new_status), status::PROGRESSING).is_some_and(|c| c.status == "True");
    publish_status(&app, &ctx, &namespace, new_status).await?;

    let requeue = match verdict {
        Verdict::Applied if progressing => WHILE_PROGRESSING,
        _ => RESYNC,
    };
    // The replica set moves one step per reconcile; come back as soon as it asks.
    Ok(Action::requeue(
        mongo_requeue.map_or(requeue, |m| m.min(requeue)),
    ))
}

/// The status for `verdict`, from the freshest view of the Deployments: what this reconcile
/// wrote, else the cache. Managed MongoDB adds MongoReady and status.mongo, and holds Ready.
fn status_for(
    app: &MeteorApp,
    ctx: &Context,
    verdict: &Verdict,
    written: Written,
) -> MeteorAppStatus {
    let app_deployment = written
        .app
        .map(Arc::new)
        .or_else(|| ctx.observed_deployment(app, &meta::app_name(app)));
    let worker_deployment = written
        .worker
        .map(Arc::new)
        .or_else(|| ctx.observed_deployment(app, &meta::worker_name(app)));
    let now = now();
    let mut new_status = status::compute(
        app,
        verdict,
        app_deployment.as_deref(),
        worker_deployment.as_deref(),
        &now,
    );
    crate::mongo::tier::fold_status(&mut new_status, app, written.mongo.as_ref(), &now);
    new_status
}

/// Static validation, then the referenced Secrets and ConfigMaps. `Err` of the outer result is an
/// API failure (retry); `Err` of the inner one is a problem the user must fix.
async fn check(
    app: &MeteorApp,
    ctx: &Context,
    namespace: &str,
) -> Result<Result<Inputs, Problem>, Error> {
    if let Err(problem) = validate(app) {
        return Ok(Err(problem));
    }
    let Some(mongo) = MongoWiring::for_app(app) else {
        return Ok(Err(Problem::InvalidSpec(
            "spec.mongo: set exactly one of external or managed".into(),
        )));
    };
    let fetched = fetch_references(app, ctx, namespace).await?;
    Ok(references::resolve(app, &fetched).map(|config_hash| Inputs { config_hash, mongo }))
}

/// GETs each referenced Secret and ConfigMap once. Not cached: the operator keeps no copy of
/// Secret data in memory.
async fn fetch_references(
    app: &MeteorApp,
    ctx: &Context,
    namespace: &str,
) -> Result<Fetched, Error> {
    let mut fetched = Fetched::new();
    for reference in references::references(app) {
        let key = (reference.kind, reference.name.clone());
        // An empty name cannot be fetched; `resolve` reports it.
        if reference.name.is_empty() || fetched.contains_key(&key) {
            continue;
        }
        let data = match reference.kind {
            SourceKind::Secret => Api::<Secret>::namespaced(ctx.client.clone(), namespace)
                .get_opt(&reference.name)
                .await?
                .map(|secret| {
                    secret
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect()
                }),
            SourceKind::ConfigMap => Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace)
                .get_opt(&reference.name)
                .await?
                .map(|config_map| {
                    let mut data: std::collections::BTreeMap<String, Vec<u8>> = config_map
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect();
                    data.extend(
                        config_map
                            .binary_data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0)),
                    );
                    data
                }),
        };
        fetched.insert(key, data);
    }
    Ok(fetched)
}

/// Deployments this reconcile wrote, as the API returned them.
#[derive(Default)]
struct Written {
    app: Option<Deployment>,
    worker: Option<Deployment>,
    /// What the managed-MongoDB tier did, when the app has one.
    mongo: Option<crate::mongo::tier::TierReport>,
}

/// A child we are about to create whose name is taken by an object this MeteorApp does not
/// control. Only children missing from the cache are looked up, so a converged app costs nothing.
async fn namesake_conflict(
    app: &MeteorApp,
    ctx: &Context,
    namespace: &str,
    desired: &Desired,
) -> Result<Option<Problem>, Error> {
    let uid = app.uid().unwrap_or_default();
    let client = &ctx.client;
    let cached = |store: &kube::runtime::reflector::Store<Deployment>, name: &str| {
        store.get(&ObjectRef::new(name).within(namespace)).is_some()
    };
    let mut deployments = vec![meta::app_name(app)];
    if desired.worker.is_some() {
        deployments.push(meta::worker_name(app));
    }
    for name in deployments {
        if !cached(&ctx.deployments, &name)
            && let Some(message) =
                apply::foreign_namesake::<Deployment>(client, namespace, &name, &uid).await?
        {
            return Ok(Some(Problem::NameConflict(message)));
        }
    }
    let name = meta::app_name(app);
    if ctx
        .services
        .get(&ObjectRef::new(&name).within(namespace))
        .is_none()
        && let Some(message) =
            apply::foreign_namesake::<Service>(client, namespace, &name, &uid).await?
    {
        return Ok(Some(Problem::NameConflict(message)));
    }
    if desired.disruption_budget.is_some()
        && ctx
            .budgets
            .get(&ObjectRef::new(&name).within(namespace))
            .is_none()
        && let Some(message) =
            apply::foreign_namesake::<PodDisruptionBudget>(client, namespace, &name, &uid).await?
    {
        return Ok(Some(Problem::NameConflict(message)));
    }
    Ok(None)
}

/// Applies what changed and deletes what the spec no longer wants.
async fn converge(
    app: &MeteorApp,
    ctx: &Context,
    namespace: &str,
    desired: Desired,
) -> Result<Written, kube::Error> {
    let client = &ctx.client;
    let mut writes = 0;
    let mut written = Written::default();
    let app_name = meta::app_name(app);
    let worker_name = meta::worker_name(app);

    let observed = ctx
        .deployments
        .get(&ObjectRef::new(&app_name).within(namespace));
    if let Applied::Written(deployment) =
        apply::apply(client, desired.app, observed.as_deref()).await?
    {
        writes += 1;
        written.app = Some(deployment);
    }

    let observed = ctx
        .services
        .get(&ObjectRef::new(&app_name).within(namespace));
    if let Applied::Written(_) = apply::apply(client, desired.service, observed.as_deref()).await? {
        writes += 1;
    }

    let observed = ctx
        .deployments
        .get(&ObjectRef::new(&worker_name).within(namespace));
    match desired.worker {
        Some(worker) => {
            if let Applied::Written(deployment) =
                apply::apply(client, worker, observed.as_deref()).await?
            {
                writes += 1;
                written.worker = Some(deployment);
            }
        }
        None => writes += u64::from(apply::delete(client, owned(app, observed)).await?),
    }

    let observed = ctx
        .budgets
        .get(&ObjectRef::new(&app_name).within(namespace));
    match desired.disruption_budget {
        Some(budget) => {
            if let Applied::Written(_) = apply::apply(client, budget, observed.as_deref()).await? {
                writes += 1;
            }
        }
        None => writes += u64::from(apply::delete(client, owned(app, observed)).await?),
    }

    // Managed MongoDB, after the app tier: the app Deployment exists regardless, and its pods
    // start as soon as the URLs Secret and a primary are there.
    written.mongo = crate::mongo::tier::reconcile(client, app, &ctx.mongo_options).await?;
    writes += written.mongo.as_ref().map_or(0, |m| m.writes);

    ctx.metrics.wrote(writes);
    Ok(written)
}

/// Keeps `observed` only if this MeteorApp controls it: never delete what we did not create.
fn owned<K: Resource>(app: &MeteorApp, observed: Option<Arc<K>>) -> Option<Arc<K>> {
    let uid = app.uid()?;
    observed.filter(|o| {
        o.owner_references()
            .iter()
            .any(|r| r.uid == uid && r.controller == Some(true))
    })
}

/// Patches the status when it differs from what is stored, and records transitions as events.
async fn publish_status(
    app: &MeteorApp,
    ctx: &Context,
    namespace: &str,
    new_status: MeteorAppStatus,
) -> Result<(), Error> {
    write_status(
        ctx,
        &app.metadata,
        namespace,
        app.status.as_ref(),
        new_status,
    )
    .await
}

/// Reconciles a MeteorApp as listed: a parsed one normally, one that did not deserialize by
/// reporting it.
pub async fn reconcile_listed(listed: Arc<ListedApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    match &listed.parsed {
        Ok(app) => reconcile(app.clone(), ctx).await,
        Err(message) => report_unparseable(&listed, message, &ctx).await,
    }
}

/// Reports a MeteorApp that did not deserialize (see `ListedApp`): InvalidSpec naming the
/// field, a Warning event, and nothing else touched.
async fn report_unparseable(
    listed: &ListedApp,
    message: &str,
    ctx: &Context,
) -> Result<Action, Error> {
    if listed.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = listed.namespace().ok_or(Error::MissingNamespace)?;
    let new_status = status::unparseable(
        listed.status.as_ref(),
        listed.metadata.generation,
        format!("the MeteorApp does not match its schema: {message}"),
        &now(),
    );
    write_status(
        ctx,
        &listed.metadata,
        &namespace,
        listed.status.as_ref(),
        new_status,
    )
    .await?;
    Ok(Action::requeue(RESYNC))
}

async fn write_status(
    ctx: &Context,
    metadata: &ObjectMeta,
    namespace: &str,
    old_status: Option<&MeteorAppStatus>,
    new_status: MeteorAppStatus,
) -> Result<(), Error> {
    if old_status == Some(&new_status) {
        return Ok(());
    }
    let name = metadata.name.clone().unwrap_or_default();
    let events = transition_events(old_status, &new_status);
    let api: Api<MeteorApp> = Api::namespaced(ctx.client.clone(), namespace);
    // Server-side apply, so a field this status leaves out is removed, not kept stale.
    let patch = serde_json::json!({
        "apiVersion": MeteorApp::api_version(&()),
        "kind": MeteorApp::kind(&()),
        "status": new_status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(meta::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.metrics.wrote(1);

    let reference = ObjectReference {
        api_version: Some(MeteorApp::api_version(&()).into()),
        kind: Some(MeteorApp::kind(&()).into()),
        name: metadata.name.clone(),
        namespace: Some(namespace.to_string()),
        uid: metadata.uid.clone(),
        ..ObjectReference::default()
    };
    for event in events {
        // An event that cannot be recorded must not fail the reconcile.
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(%error, app = %name, "could not record an event");
        }
    }
    Ok(())
}

/// A Warning when a problem appears or changes; a Normal event when the app becomes Ready.
fn transition_events(old: Option<&MeteorAppStatus>, new: &MeteorAppStatus) -> Vec<Event> {
    let mut events = Vec::new();
    let old_degraded = status::find(old, DEGRADED);
    if let Some(degraded) = status::find(Some(new), DEGRADED)
        && degraded.status == "True"
        && old_degraded.is_none_or(|o| {
            o.status != "True" || o.reason != degraded.reason || o.message != degraded.message
        })
    {
        events.push(Event {
            type_: EventType::Warning,
            reason: degraded.reason.clone(),
            note: Some(degraded.message.clone()),
            action: "Reconcile".into(),
            secondary: None,
        });
    }
    let was_ready = status::find(old, READY).is_some_and(|c| c.status == "True");
    if let Some(ready) = status::find(Some(new), READY)
        && ready.status == "True"
        && !was_ready
    {
        events.push(Event {
            type_: EventType::Normal,
            reason: ready.reason.clone(),
            note: Some(ready.message.clone()),
            action: "Reconcile".into(),
            secondary: None,
        });
    }
    events
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

impl Context {
    fn caches_ready(&self) -> bool {
        [
            self.deployments.wait_until_ready().now_or_never(),
            self.services.wait_until_ready().now_or_never(),
            self.budgets.wait_until_ready().now_or_never(),
        ]
        .iter()
        .all(|ready| matches!(ready, Some(Ok(()))))
    }

    fn observed_deployment(&self, app: &MeteorApp, name: &str) -> Option<Arc<Deployment>> {
        let namespace = app.namespace()?;
        self.deployments
            .get(&ObjectRef::new(name).within(&namespace))
    }
}
