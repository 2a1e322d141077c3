//! HorizontalPodAutoscaler `<name>` (`autoscaling/v2`), with `spec.autoscaling`. It scales the
//! MeteorApp itself through its `scale` subresource, so the HPA writes `spec.replicas` and the
//! operator stays the only writer of the Deployment (and can pick which pods go, see
//! the operator's `controller`).

use super::meta::{Component, app_name, child_meta};
use crate::api::{Autoscaling, DEFAULT_MIN_REPLICAS, DEFAULT_TARGET_CPU_PERCENT, MeteorApp};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricIdentifier, MetricSpec,
    MetricTarget, PodsMetricSource, ResourceMetricSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Resource;

/// The per-pod metric `sessionsPerReplica` targets: open sessions per app pod, as the proxies
/// export them and a custom-metrics adapter serves them (docs/autoscaling.md).
pub const SESSIONS_METRIC: &str = "meteor_proxy_backend_sessions";

/// The autoscaler, with `spec.autoscaling`.
pub fn horizontal_pod_autoscaler(app: &MeteorApp) -> Option<HorizontalPodAutoscaler> {
    let autoscaling = app.spec.autoscaling.as_ref()?;
    Some(HorizontalPodAutoscaler {
        metadata: child_meta(app, app_name(app), Component::App.as_str()),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some(MeteorApp::api_version(&()).into()),
                kind: MeteorApp::kind(&()).into(),
                name: app_name(app),
            },
            min_replicas: Some(autoscaling.min_replicas.unwrap_or(DEFAULT_MIN_REPLICAS)),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(metrics(autoscaling)),
            behavior: Some(
                autoscaling
                    .behavior
                    .clone()
                    .unwrap_or_else(default_behavior),
            ),
        }),
        status: None,
    })
}

fn metrics(autoscaling: &Autoscaling) -> Vec<MetricSpec> {
    let utilization = |name: &str, percent: i32| MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: name.into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(percent),
                ..MetricTarget::default()
            },
        }),
        ..MetricSpec::default()
    };
    let cpu = autoscaling
        .target_cpu_utilization_percentage
        .unwrap_or(DEFAULT_TARGET_CPU_PERCENT);
    let mut metrics = vec![utilization("cpu", cpu)];
    if let Some(memory) = autoscaling.target_memory_utilization_percentage {
        metrics.push(utilization("memory", memory));
    }
    if let Some(sessions) = autoscaling.sessions_per_replica {
        metrics.push(MetricSpec {
            type_: "Pods".into(),
            pods: Some(PodsMetricSource {
                metric: MetricIdentifier {
                    name: SESSIONS_METRIC.into(),
                    selector: None,
                },
                target: MetricTarget {
                    type_: "AverageValue".into(),
                    average_value: Some(Quantity(sessions.to_string())),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        });
    }
    metrics
}

/// Up at once (double, or four more pods, per 15 s, whichever is more); down slowly: a
/// ten-minute window, then at most one pod every two minutes, so a dip in load costs no
/// reconnects and each removed pod's clients settle before the next goes.
pub fn default_behavior() -> HorizontalPodAutoscalerBehavior {
    let policy = |type_: &str, value: i32, period_seconds: i32| HPAScalingPolicy {
        type_: type_.into(),
        value,
        period_seconds,
    };
    HorizontalPodAutoscalerBehavior {
        scale_up: Some(HPAScalingRules {
            stabilization_window_seconds: Some(0),
            select_policy: Some("Max".into()),
            policies: Some(vec![policy("Percent", 100, 15), policy("Pods", 4, 15)]),
            ..HPAScalingRules::default()
        }),
        scale_down: Some(HPAScalingRules {
            stabilization_window_seconds: Some(600),
            select_policy: Some("Min".into()),
            policies: Some(vec![policy("Pods", 1, 120)]),
            ..HPAScalingRules::default()
        }),
    }
}
