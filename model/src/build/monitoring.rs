//! The Prometheus Operator `PodMonitor` `<name>-proxy`, with `routing.proxy.podMonitor`: the
//! app's own proxy pods (port `admin`), in the app's namespace, for a Prometheus that selects
//! monitors per namespace or by label (a tenant's own Prometheus), where the chart's fleet-wide
//! PodMonitor in the operator's namespace is out of its reach. Typed here with only the fields
//! the operator writes (the Prometheus Operator publishes no Rust types).

use crate::api::{MeteorApp, ProxyPodMonitor};
use crate::build::meta::{Component, child_meta, proxy_name, selector_labels};
use crate::build::routing::ADMIN_PORT_NAME;
use kube::CustomResource;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The subset of the Prometheus Operator's `PodMonitorSpec` the operator writes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1",
    kind = "PodMonitor",
    plural = "podmonitors",
    namespaced,
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct PodMonitorSpec {
    pub selector: LabelSelector,
    pub pod_metrics_endpoints: Vec<PodMetricsEndpoint>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodMetricsEndpoint {
    pub port: String,
    pub path: String,
    /// Keeps `meteor_proxy_backend_sessions`' own `pod` (the app pod it counts), as the
    /// session-based autoscaling rule expects.
    pub honor_labels: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relabelings: Vec<Relabeling>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Relabeling {
    pub source_labels: Vec<String>,
    pub target_label: String,
}

/// `routing.proxy.podMonitor`, while the proxy it scrapes is on.
pub fn wanted_pod_monitor(app: &MeteorApp) -> Option<&ProxyPodMonitor> {
    let proxy = &app.spec.routing.proxy;
    proxy.pod_monitor.as_ref().filter(|_| proxy.enabled)
}

/// The PodMonitor, with the proxy on and `routing.proxy.podMonitor` set.
pub fn pod_monitor(app: &MeteorApp) -> Option<PodMonitor> {
    let wanted = wanted_pod_monitor(app)?;
    let mut metadata = child_meta(app, proxy_name(app), Component::Proxy.as_str());
    if let Some(extra) = &wanted.labels {
        let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
        for (key, value) in extra {
            // The operator's own labels select and own the object: a user label cannot move them.
            labels.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    let spec = PodMonitorSpec {
        selector: LabelSelector {
            match_labels: selector_labels(app, Component::Proxy.as_str()),
        },
        pod_metrics_endpoints: vec![PodMetricsEndpoint {
            port: ADMIN_PORT_NAME.into(),
            path: "/metrics".into(),
            honor_labels: true,
            interval: wanted.interval.clone(),
            // The app's name as `app`, as the chart's PodMonitor and the dashboards label it.
            relabelings: vec![Relabeling {
                source_labels: vec![
                    "__meta_kubernetes_pod_label_app_kubernetes_io_instance".into(),
                ],
                target_label: "app".into(),
            }],
        }],
    };
    Some(PodMonitor { metadata, spec })
}
