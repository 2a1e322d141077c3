//! The `spec.autoscaling` part of the API: a stock HorizontalPodAutoscaler on the MeteorApp's own
//! `scale` subresource, with Meteor-suited defaults, and the `status.autoscaling` the operator
//! reports from it.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Default least replicas: two, so one process dying leaves one serving.
pub const DEFAULT_MIN_REPLICAS: i32 = 2;
/// Default CPU target: headroom for the reconnect burst of a neighbour dying.
pub const DEFAULT_TARGET_CPU_PERCENT: i32 = 70;
/// Most replicas an autoscaler may ask for (a sanity bound, not a cluster limit).
pub const MAX_REPLICAS_BOUND: i32 = 1000;

/// CPU-driven autoscaling of the app tier.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.minReplicas) || self.minReplicas <= self.maxReplicas")
    .message("autoscaling.minReplicas: must not exceed maxReplicas"))]
pub struct Autoscaling {
    /// Least app processes. Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("must be at least 1 (park an app with replicas: 0 and no autoscaling)"))]
    pub min_replicas: Option<i32>,
    /// Most app processes.
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("must be between 1 and 1000"))]
    pub max_replicas: i32,
    /// Average CPU use, as a percentage of the requested CPU, the autoscaler aims for. Default 70.
    #[serde(
        default,
        rename = "targetCPUUtilizationPercentage",
        skip_serializing_if = "Option::is_none"
    )]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("must be between 1 and 100"))]
    pub target_cpu_utilization_percentage: Option<i32>,
    /// Average memory use, as a percentage of the requested memory. Default: not a target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("must be between 1 and 100"))]
    pub target_memory_utilization_percentage: Option<i32>,
    /// Average open sessions per app pod, from the proxy's `meteor_proxy_backend_sessions` served
    /// through the custom metrics API (see docs/autoscaling.md). Default: not a target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("must be at least 1"))]
    pub sessions_per_replica: Option<i32>,
    /// The HPA's scaling behaviour. Default: up at once, down by at most one pod every two
    /// minutes after a ten-minute stabilization window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

/// What the HorizontalPodAutoscaler reports.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingStatus {
    /// App processes the autoscaler last saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_replicas: Option<i32>,
    /// App processes it wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// Average CPU use, percent of the request, as the autoscaler last measured it.
    #[serde(
        default,
        rename = "currentCPUUtilizationPercentage",
        skip_serializing_if = "Option::is_none"
    )]
    pub current_cpu_utilization_percentage: Option<i32>,
}
