//! The PodDisruptionBudget of the app tier: voluntary evictions (node drains) take one process
//! at a time, so its clients reconnect to the others instead of all at once.

use super::meta::{Component, app_name, child_meta, selector_labels};
use crate::api::MeteorApp;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Only with more than one replica: a budget on a single pod would block node drains forever.
pub fn app_disruption_budget(app: &MeteorApp) -> Option<PodDisruptionBudget> {
    (app.spec.replicas > 1).then(|| PodDisruptionBudget {
        metadata: child_meta(app, app_name(app), Component::App.as_str()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(app, Component::App.as_str())),
                ..LabelSelector::default()
            }),
            // A crash-looping pod must not block a node drain.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}
