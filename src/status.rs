//! Status from observations: pure functions from the MeteorApp, what reconcile concluded and the
//! observed Deployments to the `status` block and its `metav1.Condition`s.
//!
//! Nothing here changes on a resync that observed nothing new (a condition's
//! `lastTransitionTime` moves only when its status flips), so an unchanged app writes no status.

use crate::api::{MeteorApp, MeteorAppStatus};
use crate::build::meta::{Component, selector_string};
use crate::problem::Problem;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// What this reconcile concluded before looking at the children's progress.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Children are as the spec wants them.
    Applied,
    /// The spec or its references are wrong; children were left untouched.
    Problem(Problem),
    /// The API refused or failed a write; children may be partly updated.
    ApplyFailed(String),
}

/// Progress of one Deployment as its controller reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Progress {
    replicas: i32,
    ready: i32,
    available: i32,
    updated: i32,
    /// The Deployment controller has seen the latest pod template.
    observed: bool,
    /// The rollout exceeded its progress deadline.
    stuck: bool,
}

fn progress(deployment: Option<&Deployment>) -> Progress {
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

impl Progress {
    /// Every pod runs the current template, is available, and no old pod is left. A tier that
    /// wants no pods and has none is complete even without a Deployment.
    fn complete(&self, desired: i32) -> bool {
        if desired == 0 && self.replicas == 0 {
            return true;
        }
        self.observed
            && self.updated == desired
            && self.available == desired
            && self.replicas == desired
    }
}

/// One condition as this reconcile sees it.
struct Want {
    type_: &'static str,
    status: bool,
    reason: &'static str,
    message: String,
}

/// The whole status block.
pub fn compute(
    app: &MeteorApp,
    verdict: &Verdict,
    app_deployment: Option<&Deployment>,
    worker_deployment: Option<&Deployment>,
    now: &Time,
) -> MeteorAppStatus {
    let desired = app.spec.replicas;
    let tier = progress(app_deployment);
    let workers_desired = app.spec.workers.replicas;
    let workers = progress(worker_deployment);

    let wants = match verdict {
        Verdict::Problem(problem) => blocked(problem.reason(), problem.to_string()),
        Verdict::ApplyFailed(message) => blocked("ApplyFailed", message.clone()),
        Verdict::Applied => observed(desired, tier, workers_desired, workers),
    };

    let previous = app
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[]);
    let generation = app.metadata.generation;
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
        // Filled in by `crate::mongo::kube::fold_status` for managed MongoDB.
        mongo: None,
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
    MeteorAppStatus {
        observed_generation: generation,
        conditions: blocked("InvalidSpec", message)
            .into_iter()
            .map(|want| condition(want, previous_conditions, generation, now))
            .collect(),
        ..previous.cloned().unwrap_or_default()
    }
}

/// Conditions while a problem keeps the operator from acting.
fn blocked(reason: &'static str, message: String) -> Vec<Want> {
    vec![
        Want {
            type_: READY,
            status: false,
            reason,
            message: message.clone(),
        },
        Want {
            type_: PROGRESSING,
            status: false,
            reason,
            message: "changes are on hold until the problem is fixed; running pods are untouched"
                .into(),
        },
        Want {
            type_: DEGRADED,
            status: true,
            reason,
            message,
        },
    ]
}

/// Conditions from the Deployments' progress.
fn observed(desired: i32, tier: Progress, workers_desired: i32, workers: Progress) -> Vec<Want> {
    let app_done = tier.complete(desired);
    let workers_done = workers.complete(workers_desired);
    let serving = tier.available >= desired && workers.available >= workers_desired;
    let stuck = tier.stuck || workers.stuck;

    let (ready, ready_reason, ready_message) = if serving && desired == 0 {
        let message = match tier.replicas {
            0 => "replicas is 0: no app process runs".to_string(),
            n => format!("replicas is 0: {n} app processes still shutting down"),
        };
        (true, "Parked", message)
    } else if serving {
        (
            true,
            "AllReplicasReady",
            format!("{}/{desired} app processes ready", tier.available),
        )
    } else if stuck {
        (
            false,
            "RolloutStuck",
            format!(
                "{}/{desired} app processes ready and the rollout exceeded its progress deadline",
                tier.available
            ),
        )
    } else {
        let mut message = format!("{}/{desired} app processes ready", tier.available);
        if workers_desired > 0 {
            message.push_str(&format!(
                ", {}/{workers_desired} workers ready",
                workers.available
            ));
        }
        (false, "WaitingForReplicas", message)
    };

    let (progressing, progressing_reason, progressing_message) = if stuck {
        (
            false,
            "RolloutStuck",
            "the rollout exceeded spec.rollout.progressDeadlineSeconds; check the new pods"
                .to_string(),
        )
    } else if app_done && workers_done {
        (
            false,
            "RolloutComplete",
            "every process runs the current spec".to_string(),
        )
    } else {
        (
            true,
            "RollingOut",
            format!(
                "{} of {desired} app processes updated, {} available",
                tier.updated, tier.available
            ),
        )
    };

    let (degraded, degraded_reason, degraded_message) = if stuck {
        (true, "RolloutStuck", progressing_message.clone())
    } else {
        (false, "AsExpected", "no problem found".to_string())
    };

    vec![
        Want {
            type_: READY,
            status: ready,
            reason: ready_reason,
            message: ready_message,
        },
        Want {
            type_: PROGRESSING,
            status: progressing,
            reason: progressing_reason,
            message: progressing_message,
        },
        Want {
            type_: DEGRADED,
            status: degraded,
            reason: degraded_reason,
            message: degraded_message,
        },
    ]
}

/// A condition keeps its `lastTransitionTime` while its status stays the same.
fn condition(want: Want, previous: &[Condition], generation: Option<i64>, now: &Time) -> Condition {
    let status = if want.status { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == want.type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: want.type_.into(),
        status: status.into(),
        reason: want.reason.into(),
        message: want.message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// The condition of `type_`, if set.
pub fn find<'a>(status: Option<&'a MeteorAppStatus>, type_: &str) -> Option<&'a Condition> {
    status?.conditions.iter().find(|c| c.type_ == type_)
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
    fn rollout_in_progress_keeps_ready_while_capacity_holds() {
        // maxUnavailable 0: three old pods serve while one new pod boots.
        let status = compute(
            &app(3),
            &Verdict::Applied,
            Some(&deployment(4, 3, 1, false)),
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
            &Verdict::Applied,
            Some(&deployment(4, 2, 1, true)),
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
            &Verdict::Applied,
            Some(&deployment(1, 0, 0, false)),
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
            &Verdict::Applied,
            Some(&deployment(0, 0, 0, false)),
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
            &Verdict::Applied,
            Some(&deployment(2, 2, 2, false)),
            Some(&deployment(1, 0, 1, false)),
            &at(1),
        );
        let ready = find(Some(&status), READY).unwrap();
        assert_eq!(ready.status, "False");
        assert!(ready.message.contains("0/1 workers"), "{}", ready.message);
    }

    #[test]
    fn problems_block_and_transition_time_moves_only_on_status_flips() {
        let mut app = app(2);
        let healthy = compute(
            &app,
            &Verdict::Applied,
            Some(&deployment(2, 2, 2, false)),
            None,
            &at(100),
        );
        app.status = Some(healthy);
        let broken = compute(
            &app,
            &Verdict::Problem(Problem::ReferenceNotFound(
                "spec.mongo.external.url: Secret default/m not found".into(),
            )),
            Some(&deployment(2, 2, 2, false)),
            None,
            &at(200),
        );
        assert_eq!(get(&broken, READY), ("False", "ReferenceNotFound"));
        assert_eq!(get(&broken, DEGRADED), ("True", "ReferenceNotFound"));
        // Ready and Degraded flipped; Progressing stayed False.
        assert_eq!(
            find(Some(&broken), READY).unwrap().last_transition_time,
            at(200)
        );
        assert_eq!(
            find(Some(&broken), PROGRESSING)
                .unwrap()
                .last_transition_time,
            at(100)
        );
        // Running pods are still reported.
        assert_eq!(broken.ready_replicas, 2);
    }
}
