//! The observe step of a pass: every read a MeteorApp's spec implies, made once, before anything
//! is built or written. The referenced Secrets and ConfigMaps (for the config hash), the TLS
//! Secret (for its type and keys), the cached Deployments the rollout plan and the status read,
//! and the pods of a rollout under way (for crash loops). What comes after (build, plan, status)
//! reads only this, never the cluster; the applier reads only what it must to write (names held
//! by someone else, create-once Secrets, the rollback target's template, the replica set).

use super::{Context, Error, Step};
use crate::api::MeteorApp;
use crate::build::meta;
use crate::plan::TierFacts;
use crate::problem::Problem;
use crate::status::routing::TlsSecretState;
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use std::sync::Arc;

/// What one pass saw of the cluster.
pub(super) struct Observed {
    /// What the app's references resolved to: the config hash, or why they cannot be used.
    pub config: Result<String, Problem>,
    /// The TLS Secret the proxy or the Ingress serves (`None` without TLS).
    pub tls_secret: Option<TlsSecretState>,
    /// The app tier's Deployment, as this operator last wrote it or as cached.
    pub app: Option<Arc<Deployment>>,
    /// The worker tier's Deployment, likewise.
    pub worker: Option<Arc<Deployment>>,
    /// A new pod of the rollout under way restarting past `rollout.rollbackOnRestarts`.
    pub crash_loop: Option<CrashLoop>,
}

/// A pod of pod template `template` that restarted too often.
pub(super) struct CrashLoop {
    pub template: String,
    pub message: String,
}

impl Observed {
    /// The crash loop of `template`'s pods, if the one seen is of that template.
    pub fn crash_loop_of(&self, template: &str) -> Option<String> {
        self.crash_loop
            .as_ref()
            .filter(|c| c.template == template)
            .map(|c| c.message.clone())
    }
}

/// Reads what `app` implies. `Err` is an API failure (retry).
pub(super) async fn observe(
    app: &MeteorApp,
    ctx: &Context,
    namespace: &str,
) -> Result<Observed, Error> {
    let config = super::referenced::resolve(app, ctx, namespace).await?;
    // A pass that cannot use its references stops there: nothing more is worth a request.
    let tls_secret = match &config {
        Ok(_) => super::routing::tls_secret(ctx, app, namespace)
            .await
            .map_err(Error::at(Step::TlsSecret))?,
        Err(_) => None,
    };
    let app_deployment = ctx.observed(&ctx.deployments, namespace, &meta::app_name(app));
    let worker = ctx.observed(&ctx.deployments, namespace, &meta::worker_name(app));
    let crash_loop = app_deployment
        .as_deref()
        .and_then(|deployment| crash_loop(ctx, app, namespace, deployment));
    Ok(Observed {
        config,
        tls_secret,
        app: app_deployment,
        worker,
        crash_loop,
    })
}

/// The first pod of the app Deployment's rollout under way that restarted `rollbackOnRestarts`
/// times, from the cache of pods. Pods are only looked at while such a rollout could be rolled
/// back: automatic rollback on, an earlier template that was available, and the Deployment's
/// rollout neither complete nor stuck.
fn crash_loop(
    ctx: &Context,
    app: &MeteorApp,
    namespace: &str,
    deployment: &Deployment,
) -> Option<CrashLoop> {
    let rollout = &app.spec.rollout;
    let facts = TierFacts::of(deployment);
    let template = facts.template?;
    let earlier = app
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref()?.available_template.as_ref())
        .is_some_and(|available| *available != template);
    if !rollout.auto_rollback || !earlier || facts.complete || facts.stuck {
        return None;
    }
    let selector = meta::template_selector_labels(app, &template);
    let threshold = rollout.rollback_on_restarts;
    let message = ctx.pods_of(namespace, &selector).iter().find_map(|pod| {
        let restarts = pod.restarts()?;
        (restarts >= threshold).then(|| {
            format!(
                "pod {} restarted {restarts} times (rollout.rollbackOnRestarts is {threshold})",
                pod.name_any()
            )
        })
    })?;
    Some(CrashLoop { template, message })
}
