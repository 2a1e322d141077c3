//! The app-tier and worker-tier Deployments.

use super::Inputs;
use super::meta::{
    Component, TEMPLATE_HASH_LABEL, app_name, child_meta, content_hash, selector_labels,
    worker_name,
};
use super::pod::pod_template;
use crate::api::{DEFAULT_MAX_SURGE, DEFAULT_MAX_UNAVAILABLE, MeteorApp};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Old ReplicaSets kept for `kubectl rollout undo`.
const REVISION_HISTORY: i32 = 5;

/// The app tier: identical processes behind the Service, replaced by a surge-first rolling
/// update so capacity never drops and displaced clients land on spare processes.
pub fn app_deployment(app: &MeteorApp, inputs: &Inputs) -> Deployment {
    let rollout = &app.spec.rollout;
    Deployment {
        metadata: child_meta(app, app_name(app), Component::App.as_str()),
        spec: Some(DeploymentSpec {
            replicas: Some(app.spec.replicas),
            selector: selector(app, Component::App),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(rollout.max_surge.clone().unwrap_or(DEFAULT_MAX_SURGE)),
                    max_unavailable: Some(
                        rollout
                            .max_unavailable
                            .clone()
                            .unwrap_or(DEFAULT_MAX_UNAVAILABLE),
                    ),
                }),
            }),
            min_ready_seconds: Some(rollout.min_ready_seconds),
            progress_deadline_seconds: Some(rollout.progress_deadline_seconds),
            revision_history_limit: Some(REVISION_HISTORY),
            template: hashed(pod_template(app, Component::App, inputs)),
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The worker tier, when `spec.workers.replicas > 0`. `Recreate` so an old and a new worker
/// never run the same exactly-once jobs side by side during a rollout.
pub fn worker_deployment(app: &MeteorApp, inputs: &Inputs) -> Option<Deployment> {
    let replicas = app.spec.workers.replicas;
    (replicas > 0).then(|| Deployment {
        metadata: child_meta(app, worker_name(app), Component::Worker.as_str()),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: selector(app, Component::Worker),
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            }),
            progress_deadline_seconds: Some(app.spec.rollout.progress_deadline_seconds),
            revision_history_limit: Some(REVISION_HISTORY),
            template: hashed(pod_template(app, Component::Worker, inputs)),
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

fn selector(app: &MeteorApp, component: Component) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector_labels(app, component.as_str())),
        ..LabelSelector::default()
    }
}

/// `template` labelled with its own hash ([`TEMPLATE_HASH_LABEL`]).
fn hashed(mut template: PodTemplateSpec) -> PodTemplateSpec {
    let hash = content_hash(&template);
    template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default)
        .insert(TEMPLATE_HASH_LABEL.into(), hash);
    template
}

/// The template hash a Deployment's pod template carries, if any.
pub fn template_hash(deployment: &Deployment) -> Option<&str> {
    deployment
        .spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .labels
        .as_ref()?
        .get(TEMPLATE_HASH_LABEL)
        .map(String::as_str)
}
