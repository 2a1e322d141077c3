//! PodDisruptionBudgets of the app tier and the proxy: voluntary evictions (node drains) take one
//! pod at a time, so its clients reconnect to the others instead of all at once.

use super::meta::{Component, app_name, child_meta, proxy_name, selector_labels};
use super::routing::proxy_replicas;
use crate::api::MeteorApp;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The app tier's budget. An autoscaled app keeps it whatever the autoscaler does, so it does not
/// appear and disappear as the replicas cross 1 and 2 (maxUnavailable 1 never blocks the drain
/// of a single pod).
pub fn app_disruption_budget(app: &MeteorApp) -> Option<PodDisruptionBudget> {
    let replicas = app
        .spec
        .autoscaling
        .as_ref()
        .map_or(app.spec.replicas, |a| a.max_replicas);
    budget(app, app_name(app), Component::App, replicas)
}

/// The proxy's budget (with the proxy on).
pub fn proxy_disruption_budget(app: &MeteorApp) -> Option<PodDisruptionBudget> {
    let replicas = proxy_replicas(app)?;
    budget(app, proxy_name(app), Component::Proxy, replicas)
}

/// Only with more than one replica: a budget on a single pod would block node drains forever.
fn budget(
    app: &MeteorApp,
    name: String,
    component: Component,
    replicas: i32,
) -> Option<PodDisruptionBudget> {
    (replicas > 1).then(|| PodDisruptionBudget {
        metadata: child_meta(app, name, component.as_str()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(app, component.as_str())),
                ..LabelSelector::default()
            }),
            // A crash-looping pod must not block a node drain.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}
