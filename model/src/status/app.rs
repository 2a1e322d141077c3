//! Status from observations: pure functions from the MeteorApp, what reconcile concluded and the
//! observed Deployments to the `status` block and its `metav1.Condition`s.
//!
//! Nothing here changes on a resync that observed nothing new (a condition's
//! `lastTransitionTime` moves only when its status flips), so an unchanged app writes no status.

use super::conditions::{DEGRADED, PROGRESSING, READY, find};
use crate::api::{MeteorApp, MeteorAppStatus, RolloutStatus};
use crate::build::meta::{Component, selector_string};
use crate::problem::Problem;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// What this reconcile concluded before looking at the children's progress.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Children are as the spec wants them (or as the rollout plan holds them).
    Applied(RolloutState),
    /// The spec or its references are wrong; children were left untouched.
    Problem(Problem),
    /// The API refused or failed a request; children may be partly updated.
    Refused {
        /// Condition reason: `Forbidden` for a 403, `ApplyFailed` otherwise.
        reason: &'static str,
        message: String,
    },
}

/// Where the app tier's rollout stands after the plan (see `crate::plan`).
#[derive(Clone, Debug, PartialEq)]
pub enum RolloutState {
    /// As the spec asks.
    AsSpecified,
    /// Rolling out a new operator version's template in an upgrade slot.
    Upgrading,
    /// An operator upgrade changes the template; no upgrade slot is free yet.
    WaitingForSlot { busy: usize, slots: usize },
    /// Put back on the last available template (now or earlier); the spec's template failed.
    RolledBack {
        failed_image: String,
        good_image: String,
        failure: String,
    },
}

/// Reason of `Progressing` while an app rolls out a new operator version's template.
pub const UPGRADING: &str = "UpgradeRollingOut";

/// Progress of one Deployment as its controller reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Progress {
    pub replicas: i32,
    pub ready: i32,
    pub available: i32,
    pub updated: i32,
    /// The Deployment controller has seen the latest pod template.
    pub observed: bool,
    /// The rollout exceeded its progress deadline.
    pub stuck: bool,
}

impl Progress {
    pub fn of(deployment: Option<&Deployment>) -> Self {
        let Some(deployment) = deployment else {
            return Progress::default();
        };
        let Some(status) = deployment.status.as_ref() else {
            return Progress::default();
        };
        let generation = deployment.metadata.generation.unwrap_or(0);
        Progress {
            replicas: status.replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            available: status.available_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            observed: status.observed_generation.unwrap_or(0) >= generation,
            stuck: status.conditions.iter().flatten().any(|c| {
                c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            }),
        }
    }

    /// Every pod runs the current template, is available, and no old pod is left. A tier that
    /// wants no pods and has none is complete even without a Deployment.
    pub fn complete(&self, desired: i32) -> bool {
        if desired == 0 && self.replicas == 0 {
            return true;
        }
        self.observed
            && self.updated == desired
            && self.available == desired
            && self.replicas == desired
    }

    /// Stuck on the template the Deployment controller last saw, not on one since replaced.
    fn stuck_on_latest(&self) -> bool {
        self.observed && self.stuck
    }
}

/// One condition as this reconcile sees it.
struct Want {
    type_: &'static str,
    status: bool,
    reason: String,
    message: String,
    /// The generation it speaks for (default: the current one).
    generation: Option<Option<i64>>,
}

impl Want {
    fn new(type_: &'static str, status: bool, reason: &str, message: String) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message,
            generation: None,
        }
    }
}

/// The whole status block. `history` is the rollout history to store (see `crate::plan`).
pub fn compute(
    app: &MeteorApp,
    verdict: &Verdict,
    app_deployment: Option<&Deployment>,
    worker_deployment: Option<&Deployment>,
    history: Option<RolloutStatus>,
    now: &Time,
) -> MeteorAppStatus {
    let desired = app.spec.replicas;
    let tier = Progress::of(app_deployment);
    let workers_desired = app.spec.workers.replicas;
    let workers = Progress::of(worker_deployment);
    let previous = app
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[]);
    let generation = app.metadata.generation;

    let serving = serving(desired, tier, workers_desired, workers);
    let wants = match verdict {
        Verdict::Problem(problem) => blocked(
            problem.reason(),
            problem.to_string(),
            serving,
            accepted_generation(previous),
        ),
        Verdict::Refused { reason, message } => blocked(
            reason,
            message.clone(),
            serving,
            accepted_generation(previous),
        ),
        Verdict::Applied(rollout) => {
            observed(desired, tier, workers_desired, workers, rollout, serving)
        }
    };

    MeteorAppStatus {
        observed_generation: generation,
        replicas: tier.replicas,
        ready_replicas: tier.ready,
        updated_replicas: tier.updated,
        replica_summary: Some(format!("{}/{}", tier.ready, desired)),
        selector: Some(selector_string(app, Component::App.as_str())),
        url: Some(app.spec.root_url.clone()),
        conditions: wants
            .into_iter()
            .map(|want| condition(want, previous, generation, now))
            .collect(),
        // Filled in by `super::mongo::fold_status` for managed MongoDB.
        mongo: None,
        rollout: history,
        // Filled in by `super::routing::fold_status`.
        routing: None,
        // Filled in by `super::autoscaling::fold_status`.
        autoscaling: None,
    }
}

/// The status of a MeteorApp that does not deserialize: it is reported as InvalidSpec; the
/// counts of the last good status are kept, since its children are left as they are.
pub fn unparseable(
    previous: Option<&MeteorAppStatus>,
    generation: Option<i64>,
    message: String,
    now: &Time,
) -> MeteorAppStatus {
    let previous_conditions = previous.map(|s| s.conditions.as_slice()).unwrap_or(&[]);
    // The children are left as they are, so whether the app serves is what was last seen.
    let serving = previous_conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| Serving {
            ready: c.status == "True",
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .unwrap_or_else(|| Serving::not("InvalidSpec", message.clone()));
    MeteorAppStatus {
        observed_generation: generation,
        conditions: blocked(
            "InvalidSpec",
            message,
            serving,
            accepted_generation(previous_conditions),
        )
        .into_iter()
        .map(|want| condition(want, previous_conditions, generation, now))
        .collect(),
        ..previous.cloned().unwrap_or_default()
    }
}

/// The generation whose spec is serving: what `Ready` last spoke for. While a problem blocks
/// the latest spec, `Ready` keeps it, so `kubectl wait --for=condition=Ready` on the new
/// generation does not pass for a spec that was never applied.
fn accepted_generation(previous: &[Condition]) -> Option<i64> {
    previous
        .iter()
        .find(|c| c.type_ == READY)
        .and_then(|c| c.observed_generation)
}

/// Whether the app serves, and the words for it.
struct Serving {
    ready: bool,
    reason: String,
    message: String,
}

impl Serving {
    fn not(reason: &str, message: String) -> Self {
        Self {
            ready: false,
            reason: reason.into(),
            message,
        }
    }
}

fn serving(desired: i32, tier: Progress, workers_desired: i32, workers: Progress) -> Serving {
    let up = tier.available >= desired && workers.available >= workers_desired;
    if up && desired == 0 {
        let message = match tier.replicas {
            0 => "replicas is 0: no app process runs".to_string(),
            n => format!("replicas is 0: {n} app processes still shutting down"),
        };
        return Serving {
            ready: true,
            reason: "Parked".into(),
            message,
        };
    }
    if up {
        return Serving {
            ready: true,
            reason: "AllReplicasReady".into(),
            message: format!("{}/{desired} app processes ready", tier.available),
        };
    }
    let mut message = format!("{}/{desired} app processes ready", tier.available);
    if workers_desired > 0 {
        message.push_str(&format!(
            ", {}/{workers_desired} workers ready",
            workers.available
        ));
    }
    if tier.stuck_on_latest() || workers.stuck_on_latest() {
        message.push_str(" and the rollout exceeded its progress deadline");
        return Serving::not("RolloutStuck", message);
    }
    Serving::not("WaitingForReplicas", message)
}

/// Conditions while a problem keeps the operator from acting. `Ready` stays about serving: an app
/// whose pods serve stays Ready (the problem is in `Degraded`); one that does not says why.
fn blocked(reason: &str, message: String, serving: Serving, accepted: Option<i64>) -> Vec<Want> {
    let ready = if serving.ready {
        Want::new(READY, true, &serving.reason, serving.message)
    } else {
        Want::new(READY, false, reason, message.clone())
    };
    vec![
        Want {
            generation: Some(accepted),
            ..ready
        },
        Want::new(
            PROGRESSING,
            false,
            reason,
            "changes are on hold until the problem is fixed; running pods are untouched".into(),
        ),
        Want::new(DEGRADED, true, reason, message),
    ]
}

/// Conditions from the Deployments' progress and the rollout plan.
fn observed(
    desired: i32,
    tier: Progress,
    workers_desired: i32,
    workers: Progress,
    rollout: &RolloutState,
    serving: Serving,
) -> Vec<Want> {
    let app_done = tier.complete(desired);
    let workers_done = workers.complete(workers_desired);
    let stuck = tier.stuck_on_latest() || workers.stuck_on_latest();

    let progressing = match rollout {
        RolloutState::RolledBack {
            failed_image,
            good_image,
            ..
        } => Want::new(
            PROGRESSING,
            !app_done,
            "RolledBack",
            format!(
                "back on image {good_image} (the last that was fully available); {failed_image} failed"
            ),
        ),
        RolloutState::WaitingForSlot { busy, slots } => Want::new(
            PROGRESSING,
            true,
            "WaitingForRolloutSlot",
            format!(
                "a new operator version changes the pod template; waiting for an upgrade slot ({busy} of {slots} busy)"
            ),
        ),
        _ if stuck => Want::new(
            PROGRESSING,
            false,
            "RolloutStuck",
            "the rollout exceeded spec.rollout.progressDeadlineSeconds; check the new pods".into(),
        ),
        _ if app_done && workers_done => Want::new(
            PROGRESSING,
            false,
            "RolloutComplete",
            "every process runs the current spec".into(),
        ),
        RolloutState::Upgrading => Want::new(
            PROGRESSING,
            true,
            UPGRADING,
            format!(
                "rolling out a new operator version: {} of {desired} app processes updated, {} available",
                tier.updated, tier.available
            ),
        ),
        _ => Want::new(
            PROGRESSING,
            true,
            "RollingOut",
            format!(
                "{} of {desired} app processes updated, {} available",
                tier.updated, tier.available
            ),
        ),
    };

    let degraded = match rollout {
        RolloutState::RolledBack {
            failed_image,
            good_image,
            failure,
        } => Want::new(
            DEGRADED,
            true,
            "RolledBack",
            format!(
                "rolled back: image {failed_image} failed ({failure}); running {good_image}, the last template that was fully available, until the spec changes"
            ),
        ),
        _ if stuck => Want::new(
            DEGRADED,
            true,
            "RolloutStuck",
            "the rollout exceeded spec.rollout.progressDeadlineSeconds and there is no earlier available template to roll back to (or rollout.autoRollback is false)".into(),
        ),
        _ => Want::new(DEGRADED, false, "AsExpected", "no problem found".into()),
    };

    vec![
        Want::new(READY, serving.ready, &serving.reason, serving.message),
        progressing,
        degraded,
    ]
}

/// A condition keeps its `lastTransitionTime` while its status stays the same.
fn condition(want: Want, previous: &[Condition], generation: Option<i64>, now: &Time) -> Condition {
    let generation = want.generation.unwrap_or(generation);
    let status = if want.status { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == want.type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: want.type_.into(),
        status: status.into(),
        reason: want.reason,
        message: want.message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// How a new status differs from the stored one, for pacing its write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing to write.
    None,
    /// A condition's status or reason, the generation, or anything but progress figures: written
    /// at once.
    Transition,
    /// Progress a user watches: ready app pods (`kubectl get meteor`'s READY column) or ready
    /// proxies. Paced (the controller writes it within seconds, with whatever came meanwhile).
    Visible,
    /// Progress nobody reads between transitions: pods created or updated but not ready yet, and
    /// condition messages. Paced more slowly; the next transition carries it.
    Quiet,
}

/// How `new` differs from `old` (see [`Change`]).
pub fn change(old: Option<&MeteorAppStatus>, new: &MeteorAppStatus) -> Change {
    let Some(old) = old else {
        return Change::Transition;
    };
    if old == new {
        return Change::None;
    }
    // `new` with every progress figure put back as it was: equal to `old` if progress is all
    // that moved.
    let mut same = new.clone();
    same.replicas = old.replicas;
    same.ready_replicas = old.ready_replicas;
    same.updated_replicas = old.updated_replicas;
    same.replica_summary.clone_from(&old.replica_summary);
    if let (Some(routing), Some(was)) = (same.routing.as_mut(), old.routing.as_ref()) {
        routing.proxy_ready_replicas = was.proxy_ready_replicas;
    }
    for condition in &mut same.conditions {
        if let Some(was) = find(Some(old), &condition.type_)
            && (was.status == condition.status && was.reason == condition.reason)
        {
            condition.message.clone_from(&was.message);
        }
    }
    if same != *old {
        return Change::Transition;
    }
    let proxies_ready =
        |s: &MeteorAppStatus| s.routing.as_ref().and_then(|r| r.proxy_ready_replicas);
    if new.ready_replicas != old.ready_replicas || proxies_ready(new) != proxies_ready(old) {
        Change::Visible
    } else {
        Change::Quiet
    }
}

/// What differs between two statuses, in a few words for the operator's debug log: the fields
/// that moved, and each condition whose status or reason changed.
pub fn describe_change(old: Option<&MeteorAppStatus>, new: &MeteorAppStatus) -> String {
    let Some(old) = old else {
        return "first status".into();
    };
    let mut parts = Vec::new();
    let json = |s: &MeteorAppStatus| serde_json::to_value(s).unwrap_or_default();
    let (before, after) = (json(old), json(new));
    if let (Some(before), Some(after)) = (before.as_object(), after.as_object()) {
        for key in before.keys().chain(after.keys()) {
            if key != "conditions" && before.get(key) != after.get(key) && !parts.contains(key) {
                parts.push(key.clone());
            }
        }
    }
    for condition in &new.conditions {
        match find(Some(old), &condition.type_) {
            Some(was) if was.status == condition.status && was.reason == condition.reason => {
                if was != condition {
                    parts.push(format!("{} (message)", condition.type_));
                }
            }
            Some(was) => parts.push(format!(
                "{} {}/{} -> {}/{}",
                condition.type_, was.status, was.reason, condition.status, condition.reason
            )),
            None => parts.push(format!("{} new", condition.type_)),
        }
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};

    fn app(replicas: i32) -> MeteorApp {
        let mut app: MeteorApp = serde_json::from_value(serde_json::json!({
            "apiVersion": "meteorfleet.dev/v1alpha1", "kind": "MeteorApp",
            "metadata": {"name": "todos", "namespace": "default", "generation": 4},
            "spec": {"image": "todos:1", "rootUrl": "https://todos.example.com", "replicas": replicas,
                     "mongo": {"external": {"url": {"name": "m", "key": "u"}}}},
        }))
        .unwrap();
        app.spec.replicas = replicas;
        app
    }

    fn deployment(replicas: i32, ready: i32, updated: i32, stuck: bool) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.generation = Some(7);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(7),
            replicas: Some(replicas),
            ready_replicas: Some(ready),
            available_replicas: Some(ready),
            updated_replicas: Some(updated),
            conditions: stuck.then(|| {
                vec![DeploymentCondition {
                    type_: "Progressing".into(),
                    status: "False".into(),
                    reason: Some("ProgressDeadlineExceeded".into()),
                    ..DeploymentCondition::default()
                }]
            }),
            ..DeploymentStatus::default()
        });
        d
    }

    fn at(second: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(second).unwrap())
    }

    fn get<'a>(status: &'a MeteorAppStatus, type_: &str) -> (&'a str, &'a str) {
        let c = find(Some(status), type_).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn status_changes_are_paced_by_what_a_user_sees() {
        // A new app of 2 pods on a real cluster: the Deployment controller reports the pods
        // created, then ready one by one.
        let mut app = app(2);
        let mut step = |replicas, ready, updated| {
            let status = compute(
                &app,
                &Verdict::Applied(RolloutState::AsSpecified),
                Some(&deployment(replicas, ready, updated, false)),
                None,
                None,
                &at(1),
            );
            let change = change(app.status.as_ref(), &status);
            app.status = Some(status);
            change
        };
        assert_eq!(step(0, 0, 0), Change::Transition, "the first status");
        assert_eq!(step(0, 0, 0), Change::None, "nothing new");
        assert_eq!(step(2, 0, 2), Change::Quiet, "pods created, none ready");
        assert_eq!(step(2, 1, 2), Change::Visible, "READY 0/2 -> 1/2");
        assert_eq!(step(2, 2, 2), Change::Transition, "Ready=True");
    }

    #[test]
    fn a_change_is_described_by_what_moved() {
        let app = app(2);
        let status = |ready| {
            compute(
                &app,
                &Verdict::Applied(RolloutState::AsSpecified),
                Some(&deployment(2, ready, 2, false)),
                None,
                None,
                &at(1),
            )
        };
        let (before, after) = (status(1), status(2));
        let said = describe_change(Some(&before), &after);
        assert!(
            said.contains("readyReplicas")
                && said.contains("Ready False/WaitingForReplicas -> True/AllReplicasReady"),
            "{said}"
        );
        assert_eq!(describe_change(None, &after), "first status");
    }

    #[test]
    fn rollout_in_progress_keeps_ready_while_capacity_holds() {
        // maxUnavailable 0: three old pods serve while one new pod boots.
        let status = compute(
            &app(3),
            &Verdict::Applied(RolloutState::AsSpecified),
            Some(&deployment(4, 3, 1, false)),
            None,
            None,
            &at(1),
        );
        assert_eq!(get(&status, READY), ("True", "AllReplicasReady"));
        assert_eq!(get(&status, PROGRESSING), ("True", "RollingOut"));
        assert_eq!(get(&status, DEGRADED), ("False", "AsExpected"));
        assert_eq!(status.replica_summary.as_deref(), Some("3/3"));
        assert_eq!(status.observed_generation, Some(4));
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(4))
        );
    }

    #[test]
    fn stuck_rollout_is_degraded() {
        let status = compute(
            &app(3),
            &Verdict::Applied(RolloutState::AsSpecified),
            Some(&deployment(4, 2, 1, true)),
            None,
            None,
            &at(1),
        );
        assert_eq!(get(&status, READY), ("False", "RolloutStuck"));
        assert_eq!(get(&status, PROGRESSING), ("False", "RolloutStuck"));
        assert_eq!(get(&status, DEGRADED), ("True", "RolloutStuck"));
    }

    #[test]
    fn parked_app_is_ready_and_says_while_pods_shut_down() {
        let draining = compute(
            &app(0),
            &Verdict::Applied(RolloutState::AsSpecified),
            Some(&deployment(1, 0, 0, false)),
            None,
            None,
            &at(1),
        );
        assert_eq!(get(&draining, PROGRESSING).0, "True");
        assert_eq!(get(&draining, READY), ("True", "Parked"));
        let message = &find(Some(&draining), READY).unwrap().message;
        assert!(
            message.contains("1 app processes still shutting down"),
            "{message}"
        );
        let parked = compute(
            &app(0),
            &Verdict::Applied(RolloutState::AsSpecified),
            Some(&deployment(0, 0, 0, false)),
            None,
            None,
            &at(1),
        );
        assert_eq!(get(&parked, READY), ("True", "Parked"));
        assert_eq!(get(&parked, PROGRESSING), ("False", "RolloutComplete"));
    }

    #[test]
    fn workers_must_be_ready_too() {
        let mut with_workers = app(2);
        with_workers.spec.workers.replicas = 1;
        let status = compute(
            &with_workers,
            &Verdict::Applied(RolloutState::AsSpecified),
            Some(&deployment(2, 2, 2, false)),
            Some(&deployment(1, 0, 1, false)),
            None,
            &at(1),
        );
        let ready = find(Some(&status), READY).unwrap();
        assert_eq!(ready.status, "False");
        assert!(ready.message.contains("0/1 workers"), "{}", ready.message);
    }

    #[test]
    fn a_problem_keeps_a_serving_app_ready_and_says_so_in_degraded() {
        let mut app = app(2);
        let healthy = compute(
            &app,
            &Verdict::Applied(RolloutState::AsSpecified),
            Some(&deployment(2, 2, 2, false)),
            None,
            None,
            &at(100),
        );
        app.status = Some(healthy);
        // The user edits the spec (generation 5) and deletes the settings Secret meanwhile.
        app.metadata.generation = Some(5);
        let broken = compute(
            &app,
            &Verdict::Problem(Problem::ReferenceNotFound(
                "spec.mongo.external.url: Secret default/m not found".into(),
            )),
            Some(&deployment(2, 2, 2, false)),
            None,
            None,
            &at(200),
        );
        // Still serving: Ready stays True (nobody is paged), but it speaks for generation 4, the
        // last accepted spec, so `kubectl wait` on generation 5 does not pass.
        assert_eq!(get(&broken, READY), ("True", "AllReplicasReady"));
        let ready = find(Some(&broken), READY).unwrap();
        assert_eq!(ready.observed_generation, Some(4));
        assert_eq!(ready.last_transition_time, at(100));
        assert_eq!(get(&broken, DEGRADED), ("True", "ReferenceNotFound"));
        assert_eq!(
            find(Some(&broken), DEGRADED).unwrap().observed_generation,
            Some(5)
        );
        assert_eq!(
            find(Some(&broken), DEGRADED).unwrap().last_transition_time,
            at(200)
        );
        assert_eq!(
            find(Some(&broken), PROGRESSING)
                .unwrap()
                .last_transition_time,
            at(100)
        );
        assert_eq!(broken.observed_generation, Some(5));
        assert_eq!(broken.ready_replicas, 2);
    }

    #[test]
    fn a_problem_with_nothing_serving_is_the_reason_ready_is_false() {
        let status = compute(
            &app(2),
            &Verdict::Refused {
                reason: "Forbidden",
                message: "deployments.apps \"todos\" is forbidden".into(),
            },
            None,
            None,
            None,
            &at(1),
        );
        assert_eq!(get(&status, READY), ("False", "Forbidden"));
        assert_eq!(get(&status, DEGRADED), ("True", "Forbidden"));
        assert_eq!(
            find(Some(&status), READY).unwrap().observed_generation,
            None
        );
    }

    #[test]
    fn stuck_is_only_reported_for_the_template_the_deployment_controller_saw() {
        // The fix was applied (generation 8) but the Deployment controller has not seen it: the
        // old ProgressDeadlineExceeded condition is about the previous template.
        let mut d = deployment(4, 2, 1, true);
        d.metadata.generation = Some(8);
        let status = compute(
            &app(3),
            &Verdict::Applied(RolloutState::AsSpecified),
            Some(&d),
            None,
            None,
            &at(1),
        );
        assert_eq!(get(&status, READY), ("False", "WaitingForReplicas"));
        assert_eq!(get(&status, PROGRESSING), ("True", "RollingOut"));
        assert_eq!(get(&status, DEGRADED), ("False", "AsExpected"));
    }

    #[test]
    fn rolled_back_and_waiting_for_a_slot_are_reported() {
        let rolled_back = compute(
            &app(2),
            &Verdict::Applied(RolloutState::RolledBack {
                failed_image: "todos:2".into(),
                good_image: "todos:1".into(),
                failure: "no progress within rollout.progressDeadlineSeconds (900 s)".into(),
            }),
            Some(&deployment(2, 2, 2, false)),
            None,
            None,
            &at(1),
        );
        assert_eq!(get(&rolled_back, READY), ("True", "AllReplicasReady"));
        assert_eq!(get(&rolled_back, PROGRESSING), ("False", "RolledBack"));
        assert_eq!(get(&rolled_back, DEGRADED), ("True", "RolledBack"));
        let message = &find(Some(&rolled_back), DEGRADED).unwrap().message;
        assert!(
            message.contains("todos:2") && message.contains("todos:1"),
            "{message}"
        );
        let waiting = compute(
            &app(2),
            &Verdict::Applied(RolloutState::WaitingForSlot { busy: 2, slots: 2 }),
            Some(&deployment(2, 2, 2, false)),
            None,
            None,
            &at(1),
        );
        assert_eq!(
            get(&waiting, PROGRESSING),
            ("True", "WaitingForRolloutSlot")
        );
        assert_eq!(get(&waiting, READY).0, "True");
    }
}
