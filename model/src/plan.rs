//! How the app tier's rollout proceeds, decided between building the desired Deployments and
//! applying them: roll back a rollout that never got healthy, stay rolled back, or wait for an
//! upgrade slot. Pure: observations in, a decision out; no client, no clock.

use crate::api::{Rollout, RolloutStatus};
use crate::build::meta::{
    APPLIED_HASH_ANNOTATION, CACHED_CONFIG_HASH_ANNOTATION, CACHED_IMAGE_ANNOTATION,
    CACHED_TEMPLATE_HASH_ANNOTATION, CONFIG_HASH_ANNOTATION,
};
use crate::build::template_hash;
use k8s_openapi::api::apps::v1::Deployment;

/// What the cache shows of one tier's Deployment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TierFacts {
    /// The template it runs (`meteorfleet.dev/template-hash`), absent on templates built before
    /// the label existed.
    pub template: Option<String>,
    /// The config hash of that template.
    pub config: Option<String>,
    /// Its image.
    pub image: Option<String>,
    /// The hash of what the operator last applied (`meteorfleet.dev/applied-hash`).
    pub applied: Option<String>,
    /// Every pod runs that template and is available.
    pub complete: bool,
    /// The Deployment controller saw the latest template and gave up: progress deadline exceeded.
    pub stuck: bool,
}

impl TierFacts {
    /// Of a Deployment as the API has it, or as the cache holds it (its template's values moved
    /// to cache-only annotations: see [`crate::build::meta::CACHED_IMAGE_ANNOTATION`]).
    pub fn of(deployment: &Deployment) -> Self {
        let template = deployment.spec.as_ref().map(|s| &s.template);
        let progress = crate::status::Progress::of(Some(deployment));
        let desired = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        let annotation = |key: &str| {
            deployment
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(key).cloned())
        };
        Self {
            template: template_hash(deployment)
                .map(String::from)
                .or_else(|| annotation(CACHED_TEMPLATE_HASH_ANNOTATION)),
            config: template
                .and_then(|t| t.metadata.as_ref()?.annotations.as_ref())
                .and_then(|a| a.get(CONFIG_HASH_ANNOTATION).cloned())
                .or_else(|| annotation(CACHED_CONFIG_HASH_ANNOTATION)),
            image: template
                .and_then(|t| t.spec.as_ref()?.containers.first()?.image.clone())
                .or_else(|| annotation(CACHED_IMAGE_ANNOTATION)),
            applied: annotation(APPLIED_HASH_ANNOTATION),
            complete: progress.complete(desired),
            stuck: progress.observed && progress.stuck,
        }
    }
}

/// What one tier's Deployment is asked to become.
#[derive(Clone, Debug, PartialEq)]
pub struct TierWants {
    pub template: String,
    pub config: String,
    pub image: String,
    /// The hash of the desired Deployment, as the applier stamps it.
    pub applied: String,
}

/// Everything the rollout decision looks at.
#[derive(Clone, Debug)]
pub struct RolloutFacts<'a> {
    pub rollout: &'a Rollout,
    pub app: TierWants,
    /// The app Deployment as cached; None when it does not exist yet.
    pub observed_app: Option<TierFacts>,
    /// The worker tier, when the spec wants one: (desired, observed).
    pub worker: Option<(TierWants, Option<TierFacts>)>,
    /// `metadata.generation` of the MeteorApp, and the generation its stored status describes.
    pub generation: Option<i64>,
    pub status_generation: Option<i64>,
    /// The rollout history kept in status.
    pub history: Option<&'a RolloutStatus>,
    /// A new pod of the desired template restarting past `rollbackOnRestarts`, as observed (only
    /// looked for when [`wants_restart_counts`] says so).
    pub crash_loop: Option<String>,
}

/// What to do with the app tier's Deployments.
#[derive(Clone, Debug, PartialEq)]
pub enum RolloutPlan {
    /// Apply what the spec asks for.
    Apply,
    /// The template changes although the spec and its data did not: a new operator version. Apply
    /// only with an upgrade slot, so the fleet does not restart all at once.
    NeedsSlot,
    /// The rollout of the desired template failed: put the app Deployment back on `to`.
    RollBack { to: String, failure: String },
    /// Rolled back earlier and the spec still asks for the failed template: keep `to`.
    StayRolledBack { to: String },
}

/// Whether the new pods' restart counts are worth a look: a rollout of the desired template is
/// under way and there is an earlier template to return to.
pub fn wants_restart_counts(facts: &RolloutFacts) -> bool {
    facts.rollout.auto_rollback
        && rollback_target(facts).is_some()
        && facts.observed_app.as_ref().is_some_and(|o| {
            o.template.as_deref() == Some(&facts.app.template) && !o.complete && !o.stuck
        })
}

fn rollback_target(facts: &RolloutFacts) -> Option<String> {
    facts
        .history?
        .available_template
        .clone()
        .filter(|t| *t != facts.app.template)
}

pub fn decide(facts: &RolloutFacts) -> RolloutPlan {
    let history = facts.history;
    if let Some(to) = rollback_target(facts)
        && history.and_then(|h| h.failed_template.as_deref()) == Some(&facts.app.template)
    {
        return RolloutPlan::StayRolledBack { to };
    }
    let Some(observed) = &facts.observed_app else {
        return RolloutPlan::Apply;
    };
    if facts.rollout.auto_rollback
        && observed.template.as_deref() == Some(&facts.app.template)
        && !observed.complete
        && let Some(to) = rollback_target(facts)
    {
        let failure = if observed.stuck {
            Some(format!(
                "no progress within rollout.progressDeadlineSeconds ({} s)",
                facts.rollout.progress_deadline_seconds
            ))
        } else {
            facts.crash_loop.clone()
        };
        if let Some(failure) = failure {
            return RolloutPlan::RollBack { to, failure };
        }
    }
    let spec_unchanged = facts.generation.is_some() && facts.generation == facts.status_generation;
    // The operator now builds another Deployment from the same spec and data. (Someone else
    // changing the template, a `rollout undo`, leaves our applied hash as it was: that is drift,
    // put back at once.)
    let upgraded = |wants: &TierWants, observed: Option<&TierFacts>| {
        observed.is_some_and(|o| {
            o.template.as_deref() != Some(&wants.template)
                && o.config.as_deref() == Some(&wants.config)
                && o.applied.as_deref() != Some(&wants.applied)
        })
    };
    let worker_upgraded = facts
        .worker
        .as_ref()
        .is_some_and(|(wants, observed)| upgraded(wants, observed.as_ref()));
    if spec_unchanged && (upgraded(&facts.app, Some(observed)) || worker_upgraded) {
        return RolloutPlan::NeedsSlot;
    }
    RolloutPlan::Apply
}

/// The rollout history to store after this reconcile.
pub fn next_history(facts: &RolloutFacts, plan: &RolloutPlan) -> Option<RolloutStatus> {
    let mut history = facts.history.cloned().unwrap_or_default();
    if let Some(observed) = &facts.observed_app
        && observed.complete
        && observed.template.is_some()
    {
        history.available_template = observed.template.clone();
        history.available_image = observed.image.clone();
    }
    match plan {
        RolloutPlan::RollBack { failure, .. } => {
            history.failed_template = Some(facts.app.template.clone());
            history.failed_image = Some(facts.app.image.clone());
            history.failure = Some(failure.clone());
        }
        RolloutPlan::StayRolledBack { .. } => {}
        RolloutPlan::Apply | RolloutPlan::NeedsSlot => {
            history.failed_template = None;
            history.failed_image = None;
            history.failure = None;
        }
    }
    (history != RolloutStatus::default()).then_some(history)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wants(template: &str) -> TierWants {
        TierWants {
            template: template.into(),
            config: "c1".into(),
            image: format!("todos:{template}"),
            applied: format!("hash-of-{template}"),
        }
    }

    fn running(template: &str, complete: bool, stuck: bool) -> TierFacts {
        TierFacts {
            template: Some(template.into()),
            config: Some("c1".into()),
            image: Some(format!("todos:{template}")),
            applied: Some(format!("hash-of-{template}")),
            complete,
            stuck,
        }
    }

    fn good(template: &str) -> RolloutStatus {
        RolloutStatus {
            available_template: Some(template.into()),
            available_image: Some(format!("todos:{template}")),
            ..RolloutStatus::default()
        }
    }

    fn facts<'a>(
        rollout: &'a Rollout,
        history: Option<&'a RolloutStatus>,
        desired: &str,
        observed: Option<TierFacts>,
    ) -> RolloutFacts<'a> {
        RolloutFacts {
            rollout,
            app: wants(desired),
            observed_app: observed,
            worker: None,
            generation: Some(2),
            status_generation: Some(1),
            history,
            crash_loop: None,
        }
    }

    #[test]
    fn a_stuck_rollout_goes_back_to_the_last_available_template() {
        let rollout = Rollout::default();
        let history = good("v1");
        let f = facts(
            &rollout,
            Some(&history),
            "v2",
            Some(running("v2", false, true)),
        );
        let plan = decide(&f);
        assert_eq!(
            plan,
            RolloutPlan::RollBack {
                to: "v1".into(),
                failure: "no progress within rollout.progressDeadlineSeconds (900 s)".into()
            }
        );
        let next = next_history(&f, &plan).unwrap();
        assert_eq!(next.failed_template.as_deref(), Some("v2"));
        assert_eq!(next.failed_image.as_deref(), Some("todos:v2"));
        assert_eq!(next.available_template.as_deref(), Some("v1"));

        // Next pass: the Deployment runs v1 again; the spec still asks for v2.
        let f = facts(
            &rollout,
            Some(&next),
            "v2",
            Some(running("v1", true, false)),
        );
        assert_eq!(decide(&f), RolloutPlan::StayRolledBack { to: "v1".into() });
        let kept = next_history(&f, &RolloutPlan::StayRolledBack { to: "v1".into() }).unwrap();
        assert_eq!(kept, next);

        // A new spec (v3) is a new attempt.
        let f = facts(
            &rollout,
            Some(&next),
            "v3",
            Some(running("v1", true, false)),
        );
        assert_eq!(decide(&f), RolloutPlan::Apply);
        assert_eq!(next_history(&f, &RolloutPlan::Apply).unwrap(), good("v1"));
    }

    #[test]
    fn a_crash_loop_counts_only_when_looked_for_and_only_for_the_new_template() {
        let rollout = Rollout::default();
        let history = good("v1");
        let mut f = facts(
            &rollout,
            Some(&history),
            "v2",
            Some(running("v2", false, false)),
        );
        assert!(wants_restart_counts(&f));
        assert_eq!(decide(&f), RolloutPlan::Apply);
        f.crash_loop = Some("pod todos-abc restarted 3 times".into());
        assert!(
            matches!(decide(&f), RolloutPlan::RollBack { failure, .. } if failure.contains("restarted 3"))
        );
        // Complete rollouts and the first ever rollout are never rolled back.
        let f = facts(
            &rollout,
            Some(&history),
            "v2",
            Some(running("v2", true, false)),
        );
        assert!(!wants_restart_counts(&f));
        let f = facts(&rollout, None, "v2", Some(running("v2", false, true)));
        assert_eq!(decide(&f), RolloutPlan::Apply);
    }

    #[test]
    fn auto_rollback_off_reports_stuck_and_changes_nothing() {
        let rollout = Rollout {
            auto_rollback: false,
            ..Rollout::default()
        };
        let history = good("v1");
        let f = facts(
            &rollout,
            Some(&history),
            "v2",
            Some(running("v2", false, true)),
        );
        assert!(!wants_restart_counts(&f));
        assert_eq!(decide(&f), RolloutPlan::Apply);
    }

    #[test]
    fn only_a_template_change_without_a_spec_or_data_change_waits_for_a_slot() {
        let rollout = Rollout::default();
        let history = good("v1");
        let mut f = facts(
            &rollout,
            Some(&history),
            "v1-new-operator",
            Some(running("v1", true, false)),
        );
        f.status_generation = Some(2);
        assert_eq!(decide(&f), RolloutPlan::NeedsSlot);
        // The user changed the spec: never delayed.
        f.status_generation = Some(1);
        assert_eq!(decide(&f), RolloutPlan::Apply);
        // Referenced data changed (config hash): the user's change too.
        f.status_generation = Some(2);
        f.observed_app.as_mut().unwrap().config = Some("c0".into());
        assert_eq!(decide(&f), RolloutPlan::Apply);
        // A template built before the label existed counts as an upgrade.
        f.observed_app = Some(TierFacts {
            template: None,
            ..running("v1", true, false)
        });
        assert_eq!(decide(&f), RolloutPlan::NeedsSlot);
        // So does a worker-only template change.
        f.observed_app = Some(running("v1-new-operator", true, false));
        f.worker = Some((wants("w2"), Some(running("w1", true, false))));
        assert_eq!(decide(&f), RolloutPlan::NeedsSlot);
        // A `rollout undo` by someone else: the template differs but our applied hash is the
        // one we want, so it is drift, applied at once.
        f.worker = None;
        f.observed_app = Some(TierFacts {
            applied: Some("hash-of-v1-new-operator".into()),
            ..running("v1-old", true, false)
        });
        assert_eq!(decide(&f), RolloutPlan::Apply);
        // A Deployment not created yet needs no slot.
        f.observed_app = None;
        assert_eq!(decide(&f), RolloutPlan::Apply);
    }
}

/// The annotation the ReplicaSet controller reads to pick which pods a scale-down removes:
/// the lowest cost goes first.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// An app pod, as a scale-down looks at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFacts {
    pub name: String,
    pub ip: Option<std::net::IpAddr>,
    /// Its `pod-deletion-cost` now.
    pub cost: Option<String>,
    /// Already terminating: it holds no session worth keeping.
    pub terminating: bool,
}

/// One backend as one proxy reports it (`/-/status`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct BackendSessions {
    /// `ip:port`.
    pub id: String,
    /// Open connections (WebSockets, streams, requests in flight) to it through this proxy.
    pub active: i64,
    #[serde(default)]
    pub terminating: bool,
}

/// The deletion cost each app pod must carry before a scale-down: its open sessions summed over
/// every proxy (a draining backend counts as empty). Only pods whose annotation differs are
/// returned, so a second look at the same sessions writes nothing.
pub fn deletion_costs(pods: &[PodFacts], proxies: &[Vec<BackendSessions>]) -> Vec<(String, i64)> {
    let mut sessions: std::collections::HashMap<std::net::IpAddr, i64> = Default::default();
    for backend in proxies.iter().flatten() {
        let Ok(addr) = backend.id.parse::<std::net::SocketAddr>() else {
            continue;
        };
        let open = if backend.terminating {
            0
        } else {
            backend.active.max(0)
        };
        *sessions.entry(addr.ip()).or_default() += open;
    }
    pods.iter()
        .filter_map(|pod| {
            let cost = match (pod.terminating, pod.ip) {
                (false, Some(ip)) => sessions.get(&ip).copied().unwrap_or(0),
                _ => 0,
            };
            (pod.cost.as_deref() != Some(cost.to_string().as_str()))
                .then(|| (pod.name.clone(), cost))
        })
        .collect()
}
