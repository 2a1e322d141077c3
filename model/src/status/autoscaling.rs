//! The autoscaler as status: the `Autoscaled` condition (carrying the HorizontalPodAutoscaler's
//! own conditions and messages) and `status.autoscaling`, computed purely from the HPA as
//! observed, and folded into the status the core computed.

use super::conditions::upsert;
use super::conditions::{Readiness, condition_of};
use crate::api::{AutoscalingStatus, MeteorApp, MeteorAppStatus};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Condition type of the autoscaler.
pub const AUTOSCALED: &str = "Autoscaled";
/// `Autoscaled=False` while the HPA has not reported yet (not a problem).
pub const PENDING: &str = "Pending";

/// `Autoscaled` from the HPA's conditions: a refusal to scale or to read metrics first (its
/// reason and message, e.g. metrics-server missing), then a limit it hit, else active.
pub fn readiness(hpa: Option<&HorizontalPodAutoscaler>) -> Readiness {
    let conditions = hpa
        .and_then(|h| h.status.as_ref()?.conditions.clone())
        .unwrap_or_default();
    let find = |type_: &str| conditions.iter().find(|c| c.type_ == type_);
    let text = |c: &k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerCondition| {
        c.message
            .clone()
            .unwrap_or_else(|| format!("{} is {}", c.type_, c.status))
    };
    // The HPA's own reason goes into the message: its reasons are open-ended strings.
    let refused = |c: &k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerCondition,
                   reason: &'static str| Readiness {
        ready: false,
        reason,
        message: format!(
            "HorizontalPodAutoscaler {}: {}",
            c.reason.as_deref().unwrap_or(&c.type_),
            text(c)
        ),
    };
    if let Some(c) = find("AbleToScale").filter(|c| c.status == "False") {
        return refused(c, "UnableToScale");
    }
    if let Some(c) = find("ScalingActive").filter(|c| c.status == "False") {
        let metrics = c
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("FailedGet"));
        return refused(
            c,
            if metrics {
                "MetricsUnavailable"
            } else {
                "ScalingNotActive"
            },
        );
    }
    match (find("ScalingActive"), find("ScalingLimited")) {
        (None, _) => Readiness {
            ready: false,
            reason: PENDING,
            message: "the HorizontalPodAutoscaler has not reported yet".into(),
        },
        (Some(_), Some(limited)) if limited.status == "True" => Readiness {
            ready: true,
            reason: "ScalingLimited",
            message: format!("HorizontalPodAutoscaler: {}", text(limited)),
        },
        (Some(active), _) => Readiness {
            ready: true,
            reason: "ScalingActive",
            message: format!("HorizontalPodAutoscaler: {}", text(active)),
        },
    }
}

/// `status.autoscaling` from the HPA.
pub fn autoscaling_status(hpa: Option<&HorizontalPodAutoscaler>) -> AutoscalingStatus {
    let status = hpa.and_then(|h| h.status.as_ref());
    AutoscalingStatus {
        current_replicas: status.and_then(|s| s.current_replicas),
        desired_replicas: status.map(|s| s.desired_replicas),
        current_cpu_utilization_percentage: status.and_then(|s| {
            s.current_metrics.iter().flatten().find_map(|m| {
                let resource = m.resource.as_ref().filter(|r| r.name == "cpu")?;
                resource.current.average_utilization
            })
        }),
    }
}

/// Puts `Autoscaled` and `status.autoscaling` into `new` for an autoscaled app; with no
/// observation (the reconcile stopped early) the previous ones are carried over.
pub fn fold_status(
    new: &mut MeteorAppStatus,
    app: &MeteorApp,
    seen: Option<Option<&HorizontalPodAutoscaler>>,
    now: &Time,
) {
    if app.spec.autoscaling.is_none() {
        return;
    }
    let previous = app.status.as_ref();
    let previous_condition =
        previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == AUTOSCALED));
    let Some(hpa) = seen else {
        new.autoscaling = previous.and_then(|s| s.autoscaling.clone());
        if let Some(c) = previous_condition {
            upsert(&mut new.conditions, c.clone());
        }
        return;
    };
    new.autoscaling = Some(autoscaling_status(hpa));
    upsert(
        &mut new.conditions,
        condition_of(
            AUTOSCALED,
            &readiness(hpa),
            app.metadata.generation,
            previous_condition,
            now.clone(),
        ),
    );
}
