//! Conditions shared by every tier: the core types, how one is set, and how a tier that is
//! not ready holds `Ready` at False.

use crate::api::MeteorAppStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// Puts `condition` in `conditions`, replacing the one of its type.
pub fn upsert(conditions: &mut Vec<Condition>, condition: Condition) {
    conditions.retain(|c| c.type_ != condition.type_);
    conditions.push(condition);
}

/// Turns a `Ready=True` into False with `reason` and `message`, for a tier the app cannot serve
/// without (managed MongoDB, the proxy). The transition time is kept while it stays False.
pub fn hold_not_ready(
    conditions: &mut [Condition],
    previous_ready: Option<&Condition>,
    reason: &str,
    message: String,
    now: &Time,
) {
    if let Some(ready) = conditions.iter_mut().find(|c| c.type_ == READY)
        && ready.status == "True"
    {
        ready.status = "False".into();
        ready.reason = reason.into();
        ready.message = message;
        ready.last_transition_time = previous_ready
            .filter(|p| p.status == "False")
            .map_or_else(|| now.clone(), |p| p.last_transition_time.clone());
    }
}

/// The condition of `type_`, if set.
pub fn find<'a>(status: Option<&'a MeteorAppStatus>, type_: &str) -> Option<&'a Condition> {
    status?.conditions.iter().find(|c| c.type_ == type_)
}

/// The condition's content, before timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// `True` or `False`.
    pub ready: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable detail.
    pub message: String,
}

/// A condition of `type_` from `r`; keeps `lastTransitionTime` of `previous` when the status is
/// the same.
pub fn condition_of(
    type_: &str,
    r: &Readiness,
    observed_generation: Option<i64>,
    previous: Option<&Condition>,
    now: Time,
) -> Condition {
    let status = if r.ready { "True" } else { "False" };
    let last_transition_time = previous
        .filter(|p| p.status == status)
        .map_or(now, |p| p.last_transition_time.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: r.reason.into(),
        message: r.message.clone(),
        observed_generation,
        last_transition_time,
    }
}
