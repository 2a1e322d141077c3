//! One reconciliation of one MeteorApp: validate → observe → build → plan → apply → status.
//!
//! Reads happen in the observe step (`observe.rs`) and in the applier's steps (namesakes,
//! create-once Secrets, the rollback target, the routing and Mongo tiers); build, plan and status
//! are pure, in the model crate. A problem with the spec or its references stops before any child
//! is touched, so running pods keep running as they were.

use super::apply::{self, Applied};
use super::listed::Unparsed;
use super::observe::{Observed, observe};
use super::slots::Slot;
use super::{Context, Error, ListedApp, Step};
use crate::api::{MeteorApp, MeteorAppStatus, RolloutStatus};
use crate::build::{self, Desired, Inputs, MongoWiring, meta};
use crate::plan::{self, RolloutFacts, RolloutPlan, TierFacts, TierWants};
use crate::problem::Problem;
use crate::status::monitoring::MonitorState;
use crate::status::{self, RolloutState, Verdict};
use crate::validate::validate;
use futures::FutureExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, ListParams, Patch, PatchParams};
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

/// Progress a user watches (ready pods, ready proxies) is written at most this often per app; a
/// condition that changes is written at once. A new app's pods then cost one status write, not
/// one per pod event.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Progress nobody reads between transitions (pods created but not ready, messages) rides along
/// with the next write, or waits until the resync: on a busy cluster, where pods take minutes to
/// get ready, a new app or a rollout then costs a status write per transition and nothing per
/// pod step (a minute's pace still cost one more write per app on a 1,000-app fleet whose pods
/// took up to three minutes).
const QUIET_PROGRESS_EVERY: Duration = RESYNC;

/// How soon to look again while waiting for an upgrade slot.
const WHILE_WAITING_FOR_SLOT: Duration = Duration::from_secs(15);

pub async fn reconcile(app: Arc<MeteorApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.caches_ready() {
        // Until every child cache has listed once, a missing child may only be unseen.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if app.meta().deletion_timestamp.is_some() {
        // Garbage collection is removing the children; re-applying them would fight it.
        ctx.slots.release(&ObjectRef::from_obj(app.as_ref()));
        ctx.metrics.app_deleted(&app);
        return Ok(Action::await_change());
    }
    let namespace = app.namespace().ok_or(Error::MissingNamespace)?;
    // The status this operator last wrote, when the MeteorApp watch has not delivered it yet.
    let app = ctx.applier.expected().with_written_status(app);

    // Boxed: the whole pass is a large state machine (every API call of every tier), and a
    // task's stack is only a few MiB.
    let outcome = match Box::pin(pass(&app, &ctx, &namespace)).await {
        Ok(outcome) => outcome,
        Err(Error::Api {
            step,
            source: kube::Error::Api(refusal),
        }) => {
            // Say why on the object (silence is the worst answer), then back off and retry.
            let outcome = Outcome::refused(&app, step, &refusal);
            let new_status = status_for(&app, &ctx, outcome);
            ctx.metrics.app_status(&app, &new_status);
            if let Err(error) = publish_status(&app, &ctx, &namespace, new_status).await {
                tracing::warn!(app = %app.name_any(), %error, "could not report the refusal on the status");
            }
            return Err(Error::Api {
                step,
                source: kube::Error::Api(refusal),
            });
        }
        Err(error) => return Err(error),
    };

    let tier_requeue = [
        outcome.written.mongo.as_ref().map(|m| m.requeue),
        outcome.written.requeue,
    ]
    .into_iter()
    .flatten()
    .min();
    let waiting = matches!(
        outcome.verdict,
        Verdict::Applied(RolloutState::WaitingForSlot { .. })
    );
    let applied = matches!(outcome.verdict, Verdict::Applied(_));
    let new_status = status_for(&app, &ctx, outcome);
    ctx.metrics.app_status(&app, &new_status);
    let progressing =
        status::find(Some(&new_status), status::PROGRESSING).is_some_and(|c| c.status == "True");
    let progress_due = publish_status(&app, &ctx, &namespace, new_status).await?;

    let requeue = if let Some(due) = progress_due {
        due
    } else if waiting {
        WHILE_WAITING_FOR_SLOT
    } else if applied && progressing {
        WHILE_PROGRESSING
    } else {
        RESYNC
    };
    // The replica set moves one step per reconcile; come back as soon as it asks.
    Ok(Action::requeue(
        tier_requeue.map_or(requeue, |m| m.min(requeue)),
    ))
}

/// What one pass concluded and wrote, for the status.
struct Outcome {
    verdict: Verdict,
    written: Written,
    /// The rollout history to store.
    history: Option<RolloutStatus>,
    /// What the pass observed, when it got that far.
    observed: Option<Observed>,
}

impl Outcome {
    /// Nothing was written; the history is kept as stored.
    fn stopped(app: &MeteorApp, verdict: Verdict) -> Self {
        Self {
            verdict,
            written: Written::default(),
            history: app.status.as_ref().and_then(|s| s.rollout.clone()),
            observed: None,
        }
    }

    /// The API refused a request: Forbidden (RBAC) or another persistent error.
    fn refused(app: &MeteorApp, step: Step, refusal: &kube::core::Status) -> Self {
        let verdict = if refusal.code == 403 {
            Verdict::Refused {
                reason: "Forbidden",
                message: format!(
                    "{step}: the API refused the operator a request: {}; its ServiceAccount \
                     needs that permission (the chart's ClusterRole grants every one the \
                     operator uses)",
                    refusal.message
                ),
            }
        } else {
            Verdict::Refused {
                reason: "ApplyFailed",
                message: format!(
                    "{step}: a request to the API failed ({} {}): {}",
                    refusal.code, refusal.reason, refusal.message
                ),
            }
        };
        Self::stopped(app, verdict)
    }
}

/// validate → observe → build → plan → apply (converge). `Err` is an API failure.
async fn pass(app: &MeteorApp, ctx: &Context, namespace: &str) -> Result<Outcome, Error> {
    if let Err(problem) = validate(app) {
        return Ok(Outcome::stopped(app, Verdict::Problem(problem)));
    }
    let Some(mongo) = MongoWiring::for_app(app) else {
        return Ok(Outcome::stopped(
            app,
            Verdict::Problem(Problem::InvalidSpec(
                "spec.mongo: set exactly one of external or managed".into(),
            )),
        ));
    };
    let observed = observe(app, ctx, namespace).await?;
    let inputs = match &observed.config {
        Ok(config_hash) => Inputs {
            config_hash: config_hash.clone(),
            mongo,
        },
        Err(problem) => return Ok(Outcome::stopped(app, Verdict::Problem(problem.clone()))),
    };
    let desired = build::desired_with(
        app,
        &inputs,
        &ctx.build_options,
        &mut crate::build::mongo::secrets::OsRandom,
    );
    if let Some(taken) = super::namesakes::of_core(ctx, app, &desired)
        .await
        .map_err(Error::at(Step::Namesakes))?
    {
        return Ok(Outcome::stopped(
            app,
            Verdict::Problem(Problem::NameConflict(taken)),
        ));
    }

    let mut facts = rollout_facts(app, &observed, &desired);
    let mut plan = plan::decide(&facts);
    let mut app_write = AppWrite::Desired;
    if let RolloutPlan::RollBack { to, .. } | RolloutPlan::StayRolledBack { to } = &plan {
        // Stamped with the spec's hash plus the target, so a steady rolled-back app makes no
        // request and a spec change is still seen.
        let hash = format!("{}-rollback-{to}", apply::desired_hash(&desired.app));
        app_write = if !ctx.applier.needs_write(&hash, observed.app.as_deref()) {
            AppWrite::Keep
        } else {
            match rollback_template(ctx, app, namespace, to).await? {
                Some(template) => AppWrite::RolledBack {
                    hash,
                    template: Box::new(template),
                },
                None => {
                    // Its ReplicaSet is gone: nothing to go back to.
                    tracing::warn!(app = %app.name_any(), template = %to, "no ReplicaSet left for the rollback target");
                    facts.history = None;
                    plan = RolloutPlan::Apply;
                    AppWrite::Desired
                }
            }
        };
    }
    let history = plan::next_history(&facts, &plan);
    let (rollout, write_deployments) = rollout_state(app, ctx, &plan, &facts, history.as_ref());
    if !write_deployments {
        app_write = AppWrite::Keep;
    }
    let written = converge(
        app,
        ctx,
        namespace,
        &observed,
        desired,
        app_write,
        write_deployments,
    )
    .await?;
    Ok(Outcome {
        verdict: Verdict::Applied(rollout),
        written,
        history,
        observed: Some(observed),
    })
}

/// What the rollout plan looks at: the desired Deployments and what the pass observed.
fn rollout_facts<'a>(
    app: &'a MeteorApp,
    observed: &Observed,
    desired: &Desired,
) -> RolloutFacts<'a> {
    let wants = |deployment: &Deployment| {
        let facts = TierFacts::of(deployment);
        TierWants {
            template: facts.template.unwrap_or_default(),
            config: facts.config.unwrap_or_default(),
            image: facts.image.unwrap_or_default(),
            applied: apply::desired_hash(deployment),
        }
    };
    let mut facts = RolloutFacts {
        rollout: &app.spec.rollout,
        app: wants(&desired.app),
        observed_app: observed.app.as_deref().map(TierFacts::of),
        worker: desired
            .worker
            .as_ref()
            .map(|w| (wants(w), observed.worker.as_deref().map(TierFacts::of))),
        generation: app.metadata.generation,
        status_generation: app.status.as_ref().and_then(|s| s.observed_generation),
        history: app.status.as_ref().and_then(|s| s.rollout.as_ref()),
        crash_loop: None,
    };
    if plan::wants_restart_counts(&facts) {
        facts.crash_loop = observed.crash_loop_of(&facts.app.template);
    }
    facts
}

/// The rollout state to report and whether the app's Deployments may be written, taking or
/// releasing an upgrade slot.
fn rollout_state(
    app: &MeteorApp,
    ctx: &Context,
    plan: &RolloutPlan,
    facts: &RolloutFacts,
    history: Option<&RolloutStatus>,
) -> (RolloutState, bool) {
    let key = ObjectRef::from_obj(app);
    // Rolling out an upgrade before an operator restart: it keeps its slot.
    let was_holding = status::find(app.status.as_ref(), status::PROGRESSING)
        .is_some_and(|c| c.status == "True" && c.reason == status::UPGRADING);
    match plan {
        RolloutPlan::RollBack { .. } | RolloutPlan::StayRolledBack { .. } => {
            ctx.slots.release(&key);
            let history = history.cloned().unwrap_or_default();
            let state = RolloutState::RolledBack {
                failed_image: history.failed_image.unwrap_or_default(),
                good_image: history.available_image.unwrap_or_default(),
                failure: history.failure.unwrap_or_default(),
            };
            (state, true)
        }
        RolloutPlan::NeedsSlot => match ctx.slots.acquire(key, was_holding) {
            Slot::Granted => (RolloutState::Upgrading, true),
            Slot::Busy { busy, slots } => (RolloutState::WaitingForSlot { busy, slots }, false),
        },
        RolloutPlan::Apply => {
            let still_rolling = facts.observed_app.as_ref().is_some_and(|o| {
                o.template.as_deref() == Some(&facts.app.template) && !o.complete && !o.stuck
            }) && facts.generation == facts.status_generation;
            if (was_holding || ctx.slots.holds(&key)) && still_rolling {
                ctx.slots.acquire(key, true);
                (RolloutState::Upgrading, true)
            } else {
                ctx.slots.release(&key);
                (RolloutState::AsSpecified, true)
            }
        }
    }
}

/// The status for this pass, from the freshest view of the Deployments: what it wrote, else
/// the cache. Managed MongoDB adds MongoReady and status.mongo, and holds Ready.
fn status_for(app: &MeteorApp, ctx: &Context, outcome: Outcome) -> MeteorAppStatus {
    let Outcome {
        verdict,
        written,
        history,
        observed,
    } = outcome;
    // A pass that stopped before observing reports the Deployments as cached.
    let (observed_app, observed_worker) = match observed {
        Some(observed) => (observed.app, observed.worker),
        None => (
            ctx.observed_deployment(app, &meta::app_name(app)),
            ctx.observed_deployment(app, &meta::worker_name(app)),
        ),
    };
    let app_deployment = written.app.map(Arc::new).or(observed_app);
    let worker_deployment = written.worker.map(Arc::new).or(observed_worker);
    let report = status::PassReport {
        verdict: &verdict,
        app: app_deployment.as_deref(),
        worker: worker_deployment.as_deref(),
        history,
        mongo: written.mongo.as_ref(),
        routing: written.routing.as_ref(),
        autoscaler: written.autoscaler.as_ref().map(Option::as_deref),
        pod_monitor: written.pod_monitor.as_ref(),
    };
    status::of_pass(app, report, &now())
}

/// Deployments this reconcile wrote, as the API returned them.
#[derive(Default)]
struct Written {
    app: Option<Deployment>,
    worker: Option<Deployment>,
    /// What the managed-MongoDB tier did, when the app has one.
    mongo: Option<crate::status::mongo::TierReport>,
    /// What the routing tier saw.
    routing: Option<crate::status::routing::RoutingObservation>,
    /// The autoscaler as written or cached, when the pass got that far.
    autoscaler: Option<Option<Arc<HorizontalPodAutoscaler>>>,
    /// The proxy pods' PodMonitor, when the spec wants one.
    pod_monitor: Option<MonitorState>,
    /// Come back this soon for the routing tier or an optional kind's cache.
    requeue: Option<Duration>,
}

/// Applies what changed (or drifted) and deletes what the spec no longer wants. The app tier's
/// Deployments follow the rollout plan: rolled back, or left alone while waiting for a slot.
async fn converge(
    app: &MeteorApp,
    ctx: &Context,
    namespace: &str,
    observed: &Observed,
    desired: Desired,
    app_write: AppWrite,
    write_workers: bool,
) -> Result<Written, Error> {
    // Every kind by name, no `..`: a kind added to `Desired` does not compile until it is
    // applied here.
    let Desired {
        app: app_deployment,
        service,
        worker,
        disruption_budget,
        routing,
        autoscaler,
        mongo,
        pod_monitor,
    } = desired;
    let applier = &ctx.applier;
    let app_tier = Error::at(Step::AppTier);
    let mut writes = 0;
    let mut written = Written::default();
    let app_name = meta::app_name(app);
    let observed_app = observed.app.clone();
    let observed_worker = observed.worker.clone();

    // Fewer app pods than now: first mark which hold the fewest sessions.
    let replicas = |d: Option<&Deployment>| d.and_then(|d| d.spec.as_ref()?.replicas);
    if !matches!(app_write, AppWrite::Keep)
        && replicas(Some(&app_deployment)) < replicas(observed_app.as_deref())
    {
        writes += Box::pin(super::scale_down::set_deletion_costs(ctx, app, namespace))
            .await
            .map_err(app_tier)?;
    }
    written.app = match app_write {
        AppWrite::Desired => match applier
            .apply(app_deployment, observed_app.as_deref())
            .await
            .map_err(app_tier)?
        {
            Applied::Written(deployment) => Some(deployment),
            Applied::Unchanged => None,
        },
        AppWrite::RolledBack { hash, template } => {
            let mut rolled_back = app_deployment;
            if let Some(spec) = rolled_back.spec.as_mut() {
                spec.template = *template;
            }
            Some(applier.write(&hash, rolled_back).await.map_err(app_tier)?)
        }
        AppWrite::Keep => None,
    };
    writes += u64::from(written.app.is_some());
    if write_workers {
        let (deployment, n) = applier
            .apply_or_delete(app.uid(), worker, observed_worker)
            .await
            .map_err(app_tier)?;
        writes += n;
        written.worker = deployment;
    }

    // The way in, before the front Service: that may only switch to proxy pods that serve.
    // Boxed: its state machine is large, and every reconcile future lives on a task's stack.
    let routing = Box::pin(super::routing::reconcile(
        ctx,
        app,
        namespace,
        routing,
        observed.tls_secret.clone(),
    ))
    .await
    .map_err(Error::at(Step::Routing))?;
    writes += routing.writes;
    let observed = ctx.observed(&ctx.services, namespace, &app_name);
    if !(routing.hold_front_service() && observed.is_some()) {
        writes += applier
            .apply(service, observed.as_deref())
            .await
            .map_err(app_tier)?
            .writes();
    }
    written.routing = Some(routing.seen);
    written.requeue = routing.requeue;

    let observed = ctx.observed(&ctx.budgets, namespace, &app_name);
    let (_, n) = applier
        .apply_or_delete(app.uid(), disruption_budget, observed)
        .await
        .map_err(app_tier)?;
    writes += n;

    let observed = ctx.observed(&ctx.autoscalers, namespace, &app_name);
    let wanted = autoscaler.is_some();
    let (hpa, n) = applier
        .apply_or_delete(app.uid(), autoscaler, observed.clone())
        .await
        .map_err(app_tier)?;
    writes += n;
    // As written, else as cached; none once the spec no longer wants one.
    written.autoscaler = Some(if wanted {
        hpa.map(Arc::new).or(observed)
    } else {
        None
    });

    let monitor = super::optional::apply_or_delete(
        ctx,
        app,
        namespace,
        &ctx.routing.pod_monitors,
        &meta::proxy_name(app),
        pod_monitor,
    )
    .await
    .map_err(Error::at(Step::Monitoring))?;
    writes += monitor.writes;
    written.pod_monitor = monitor_state(&monitor.state);
    if monitor.listing() {
        let listing = super::optional::WHILE_LISTING;
        written.requeue = Some(written.requeue.map_or(listing, |r| r.min(listing)));
    }

    // Managed MongoDB, after the app tier: the app Deployment exists regardless, and its pods
    // start as soon as the URLs Secret and a primary are there.
    written.mongo = super::mongo::reconcile(ctx, app, mongo)
        .await
        .map_err(Error::at(Step::Mongo))?;
    writes += written.mongo.as_ref().map_or(0, |m| m.writes);

    ctx.metrics.wrote(writes);
    Ok(written)
}

/// What the status says of the PodMonitor (`None`: not wanted).
fn monitor_state<K>(state: &super::optional::Optionally<K>) -> Option<MonitorState> {
    use super::optional::Optionally;
    match state {
        Optionally::NotWanted => None,
        Optionally::NotInstalled => Some(MonitorState::NotInstalled),
        Optionally::Listing => Some(MonitorState::Listing),
        Optionally::Seen(_) => Some(MonitorState::Applied),
    }
}

/// How the app Deployment is written this pass.
enum AppWrite {
    /// As the spec asks.
    Desired,
    /// Back on an earlier pod template, stamped with `hash`.
    RolledBack {
        hash: String,
        template: Box<PodTemplateSpec>,
    },
    /// Not at all (rolled back and unchanged, or waiting for an upgrade slot).
    Keep,
}

/// The pod template of the app Deployment's ReplicaSet that ran template `to`: the Deployment's
/// own revision history, as `kubectl rollout undo` uses it. Read only when a rollback is written:
/// the ReplicaSet a cached pod of `to` names (one GET; a rollout that never got healthy keeps
/// its old pods), or, with no such pod left, the ReplicaSets of that template listed.
async fn rollback_template(
    ctx: &Context,
    app: &MeteorApp,
    namespace: &str,
    to: &str,
) -> Result<Option<PodTemplateSpec>, Error> {
    let replica_sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), namespace);
    let app_name = meta::app_name(app);
    let ours = |rs: &ReplicaSet| {
        rs.owner_references()
            .iter()
            .any(|o| o.kind == "Deployment" && o.name == app_name && o.controller == Some(true))
    };
    let pods = ctx.pods_of(namespace, &meta::template_selector_labels(app, to));
    let named = pods.iter().find_map(|pod| pod.replica_set());
    let found = match named {
        Some((name, uid)) => replica_sets
            .get_opt(name)
            .await
            .map_err(Error::at(Step::RollbackTarget))?
            .filter(|rs| rs.uid().as_deref() == Some(uid) && ours(rs)),
        None => None,
    };
    let found = match found {
        Some(replica_set) => Some(replica_set),
        None => replica_sets
            .list(&ListParams::default().labels(&meta::template_selector(app, to)))
            .await
            .map_err(Error::at(Step::RollbackTarget))?
            .items
            .into_iter()
            .find(|rs| ours(rs)),
    };
    let template = found.and_then(|rs| rs.spec?.template);
    Ok(template.map(|mut template| {
        // The ReplicaSet's own label; the Deployment controller sets it again.
        if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove("pod-template-hash");
        }
        template
    }))
}

/// Keeps `observed` only if this MeteorApp controls it: never delete what we did not create.
pub(super) fn owned<K: Resource>(app: &MeteorApp, observed: Option<Arc<K>>) -> Option<Arc<K>> {
    apply::controlled_by(app.uid(), observed)
}

/// Patches the status when it differs from what is stored, and records transitions as events.
/// A change of progress figures alone within [`PROGRESS_EVERY`] of the last write waits: returns
/// when to come back for it.
async fn publish_status(
    app: &MeteorApp,
    ctx: &Context,
    namespace: &str,
    new_status: MeteorAppStatus,
) -> Result<Option<Duration>, Error> {
    let key = ObjectRef::<ListedApp>::new(&app.name_any()).within(namespace);
    let change = status::change(app.status.as_ref(), &new_status);
    if change != status::Change::None {
        tracing::debug!(app = %app.name_any(), ?change, what = %status::describe_change(app.status.as_ref(), &new_status), "status changed");
    }
    let pace = match change {
        status::Change::None => return Ok(None),
        status::Change::Transition => None,
        status::Change::Visible => Some(PROGRESS_EVERY),
        status::Change::Quiet => Some(QUIET_PROGRESS_EVERY),
    };
    if let Some(wait) = pace.and_then(|every| ctx.progress_wait(&key, every)) {
        return Ok(Some(wait));
    }
    let observed_generation = new_status.observed_generation;
    write_status(
        ctx,
        &app.metadata,
        namespace,
        app.status.as_ref(),
        new_status,
    )
    .await?;
    ctx.status_written(key.clone());
    if let Some(waited) =
        observed_generation.and_then(|generation| ctx.generations.observed(&key, generation))
    {
        ctx.metrics.generation_observed(waited);
    }
    Ok(None)
}

/// Reconciles a MeteorApp as listed: a parsed one normally, one that did not deserialize by
/// reporting it.
pub async fn reconcile_listed(listed: Arc<ListedApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    match listed.parsed() {
        Ok(app) => reconcile(app, ctx).await,
        Err(unparsed) => report_unparseable(&unparsed, &ctx).await,
    }
}

/// Reports a MeteorApp that did not deserialize (see `ListedApp`): InvalidSpec naming the
/// field, a Warning event, and nothing else touched.
async fn report_unparseable(unparsed: &Unparsed, ctx: &Context) -> Result<Action, Error> {
    let Unparsed {
        message,
        metadata,
        status,
    } = unparsed;
    if metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = metadata.namespace.clone().ok_or(Error::MissingNamespace)?;
    let new_status = status::unparseable(
        status.as_ref(),
        metadata.generation,
        format!("the MeteorApp does not match its schema: {message}"),
        &now(),
    );
    write_status(ctx, metadata, &namespace, status.as_ref(), new_status).await?;
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
    let answer = api
        .patch_status(
            &name,
            &PatchParams::apply(meta::FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::at(Step::Status))?;
    ctx.applier.expected().status_written(&answer);
    ctx.metrics.wrote(1);

    let reference = reference(metadata, namespace);
    for event in events {
        // An event that cannot be recorded must not fail the reconcile.
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(%error, app = %name, "could not record an event");
        }
    }
    Ok(())
}

/// The MeteorApp as events refer to it.
pub(super) fn reference(metadata: &ObjectMeta, namespace: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(MeteorApp::api_version(&()).into()),
        kind: Some(MeteorApp::kind(&()).into()),
        name: metadata.name.clone(),
        namespace: Some(namespace.to_string()),
        uid: metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// The events a status change is worth (see [`status::announcements`]).
fn transition_events(old: Option<&MeteorAppStatus>, new: &MeteorAppStatus) -> Vec<Event> {
    status::announcements(old, new)
        .into_iter()
        .map(|a| Event {
            type_: if a.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: a.reason,
            note: Some(a.message),
            action: "Reconcile".into(),
            secondary: None,
        })
        .collect()
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

impl Context {
    /// How long a progress-only status change of `app`, paced to one write `every`, must still
    /// wait, if at all.
    fn progress_wait(&self, app: &ObjectRef<ListedApp>, every: Duration) -> Option<Duration> {
        let written = self.status_writes.lock().expect("lock is never poisoned");
        let since = written.get(app)?.elapsed();
        every.checked_sub(since).filter(|d| !d.is_zero())
    }

    /// Remembers the write for [`QUIET_PROGRESS_EVERY`]; older entries are dropped.
    fn status_written(&self, app: ObjectRef<ListedApp>) {
        let mut written = self.status_writes.lock().expect("lock is never poisoned");
        let now = super::expected::sweep(&mut written, QUIET_PROGRESS_EVERY, |at| *at);
        written.insert(app, now);
    }

    /// Drops the memories of writes past their horizons (the status stand-ins, the writes'
    /// stand-ins, the pace of progress writes), which a write would otherwise sweep only at the
    /// next write.
    pub(super) fn forget_expired(&self) {
        self.applier.expected().forget_expired();
        let mut written = self.status_writes.lock().expect("lock is never poisoned");
        super::expected::sweep(&mut written, QUIET_PROGRESS_EVERY, |at| *at);
    }

    fn caches_ready(&self) -> bool {
        [
            self.deployments.wait_until_ready().now_or_never(),
            self.services.wait_until_ready().now_or_never(),
            self.budgets.wait_until_ready().now_or_never(),
            self.routing.ingresses.wait_until_ready().now_or_never(),
            self.routing
                .service_accounts
                .wait_until_ready()
                .now_or_never(),
            self.routing.role_bindings.wait_until_ready().now_or_never(),
            self.autoscalers.wait_until_ready().now_or_never(),
        ]
        .iter()
        .all(|ready| matches!(ready, Some(Ok(()))))
    }

    fn observed_deployment(&self, app: &MeteorApp, name: &str) -> Option<Arc<Deployment>> {
        self.observed(&self.deployments, &app.namespace()?, name)
    }

    /// The cached pods of `namespace` that carry every label of `selector`.
    pub(super) fn pods_of(
        &self,
        namespace: &str,
        selector: &std::collections::BTreeMap<String, String>,
    ) -> Vec<Arc<super::pods::CachedPod>> {
        self.pods
            .state()
            .into_iter()
            .filter(|pod| {
                pod.metadata.namespace.as_deref() == Some(namespace) && pod.has_labels(selector)
            })
            .collect()
    }

    /// A child as last written by this operator when its cache lags behind, else as cached.
    pub(super) fn observed<K: super::cached::Compact>(
        &self,
        cache: &super::cached::Cache<K>,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<K>> {
        self.applier.expected().observed(cache, namespace, name)
    }
}
