//! What `restart`, `rollback`, `park` and `unpark` change: each a JSON merge patch of the
//! MeteorApp decided from the app as read. Pure: no client, no clock (`now` is passed in). Never
//! a patch of a child object: the operator owns those and puts them back.

use crate::render::plural;
use k8s_openapi::jiff::Timestamp;
use meteor_operator::api::{DEFAULT_MIN_REPLICAS, MeteorApp};
use serde_json::{Value, json};

/// Pod-template annotation `restart` sets in `spec.podAnnotations` to the time of the restart.
/// The operator copies `spec.podAnnotations` into the app and worker pod templates, so a new value
/// is a new template, rolled out like any spec change.
pub const RESTARTED_AT_ANNOTATION: &str = "meteorfleet.dev/restartedAt";

/// Annotation on the MeteorApp where `park` remembers the replicas it replaced by 0.
pub const PARKED_REPLICAS_ANNOTATION: &str = "meteorfleet.dev/parked-replicas";

/// The replicas a MeteorApp has when `spec.replicas` is left out.
const API_DEFAULT_REPLICAS: i32 = 2;

/// What a command does to one app.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Send this merge patch; `message` says what it does.
    Patch { patch: Value, message: String },
    /// Already so: nothing to send.
    Nothing { message: String },
    /// Cannot, or will not without being told: nothing sent, exit status 1.
    Refuse { message: String },
}

fn name(app: &MeteorApp) -> &str {
    app.metadata.name.as_deref().unwrap_or("")
}

/// `metadata.resourceVersion` as a precondition: the patch applies only to the app as read.
fn precondition(app: &MeteorApp) -> Value {
    json!(app.metadata.resource_version)
}

/// A rolling restart: a new `spec.podAnnotations[meteorfleet.dev/restartedAt]`, which the operator
/// carries into the app and worker pod templates. No precondition: a later writer changes nothing
/// this needs.
pub fn restart(app: &MeteorApp, now: Timestamp, force: bool) -> Decision {
    let history = app.status.as_ref().and_then(|s| s.rollout.as_ref());
    if let Some(failed) = history.and_then(|h| h.failed_image.as_deref())
        && !force
    {
        return Decision::Refuse {
            message: format!(
                "{} is rolled back: the spec's template (image {failed}) failed and the operator \
                 keeps the last available one. A restart is a new template, so a new attempt of \
                 the failed one. Run `kubectl meteor rollback {0}` first, or pass --force.",
                name(app)
            ),
        };
    }
    let stamp = now
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or(now)
        .to_string();
    let drain = app.spec.rollout.drain_seconds;
    let shutdown = app.spec.rollout.shutdown_seconds;
    let mut tiers = plural(app.spec.replicas, "app pod", "app pods");
    if app.spec.workers.replicas > 0 {
        tiers.push_str(" and ");
        tiers.push_str(&plural(
            app.spec.workers.replicas,
            "worker pod",
            "worker pods",
        ));
    }
    let mut message = format!(
        "{}: restart requested: spec.podAnnotations[{RESTARTED_AT_ANNOTATION}] = {stamp}. The \
         operator rolls the {tiers} to the new template surge-first; each old pod leaves the \
         endpoints and keeps its sessions for rollout.drainSeconds ({drain} s), then gets SIGTERM \
         and rollout.shutdownSeconds ({shutdown} s). The proxy pods are not restarted. Follow \
         with: kubectl wait --for=condition=Progressing=False meteorapp/{0}",
        name(app)
    );
    if app.spec.replicas == 0 {
        message.push_str(" (the app is parked: no app pod runs to restart)");
    }
    Decision::Patch {
        patch: json!({"spec": {"podAnnotations": {RESTARTED_AT_ANNOTATION: stamp}}}),
        message,
    }
}

/// Back to the last fully available template, as far as the MeteorApp allows: its status records
/// that template's hash and image (`status.rollout.availableTemplate`, `availableImage`), not the
/// spec that made it. So this sets `spec.image` to that image; the operator then builds the
/// template from the spec. Any other field changed since stays as it is, and is said so.
pub fn rollback(app: &MeteorApp) -> Decision {
    let app_name = name(app);
    let status = app.status.as_ref();
    let history = status.and_then(|s| s.rollout.as_ref());
    let Some(good) = history.and_then(|h| h.available_image.as_deref()) else {
        return Decision::Refuse {
            message: format!(
                "{app_name}: no fully available template is recorded yet \
                 (status.rollout.availableImage): the app never completed a rollout, so there is \
                 nothing to roll back to"
            ),
        };
    };
    let template = history
        .and_then(|h| h.available_template.as_deref())
        .unwrap_or("?");
    let rolled_back = history.and_then(|h| h.failed_template.as_deref()).is_some();
    let progressing = status
        .into_iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == "Progressing")
        .is_some_and(|c| c.status == "True");
    let current = app.spec.image.as_str();
    if current != good {
        let situation = if rolled_back {
            "The operator had already put the Deployment back on that template; this makes the \
             spec agree, so the app is no longer Degraded (RolledBack)."
        } else if progressing {
            "The rollout under way is replaced by one to that image."
        } else {
            "The operator rolls the pods to that image surge-first, each old pod drained."
        };
        return Decision::Patch {
            patch: json!({
                "metadata": {"resourceVersion": precondition(app)},
                "spec": {"image": good}
            }),
            message: format!(
                "{app_name}: spec.image {current} -> {good}, the image of {template}, the last \
                 template that was fully available. {situation} Only the image is restored: the \
                 MeteorApp keeps no earlier spec, so any other field changed since (env, settings, \
                 resources, ...) stays as it is."
            ),
        };
    }
    if rolled_back || progressing {
        let what = if rolled_back {
            "The operator has already put the Deployment back on that template (Degraded \
             RolledBack) and keeps it there until the spec changes."
        } else {
            "A rollout is under way."
        };
        return Decision::Refuse {
            message: format!(
                "{app_name}: spec.image already is {good}, the image of {template}, the last fully \
                 available template, so the change since is in another field, and the MeteorApp \
                 keeps no earlier spec to restore it from. {what} Revert that change where your \
                 manifests live and apply it."
            ),
        };
    }
    Decision::Nothing {
        message: format!(
            "{app_name}: already on {template} (image {good}), the last fully available template; \
             the operator records no earlier one. To go back further, set the image: kubectl \
             patch meteorapp {app_name} --type merge -p '{{\"spec\":{{\"image\":\"IMAGE\"}}}}'"
        ),
    }
}

/// `spec.replicas: 0`, remembering the replicas replaced in an annotation for `unpark`.
pub fn park(app: &MeteorApp) -> Decision {
    let app_name = name(app);
    let replicas = app.spec.replicas;
    if replicas == 0 {
        return Decision::Nothing {
            message: format!("{app_name} is already parked (spec.replicas is 0)"),
        };
    }
    let mut message = format!(
        "{app_name} parked: spec.replicas {replicas} -> 0 ({replicas} remembered in the \
         annotation {PARKED_REPLICAS_ANNOTATION} for unpark). App pods drain and stop; the proxy \
         answers 503; Services, routes and MongoDB stay."
    );
    if app.spec.workers.replicas > 0 {
        message.push_str(&format!(
            " Workers keep running ({}, spec.workers.replicas).",
            plural(app.spec.workers.replicas, "worker pod", "worker pods")
        ));
    }
    if app.spec.autoscaling.is_some() {
        message.push_str(" The autoscaler does not scale an app at 0 until it is unparked.");
    }
    Decision::Patch {
        patch: json!({
            "metadata": {
                "resourceVersion": precondition(app),
                "annotations": {PARKED_REPLICAS_ANNOTATION: replicas.to_string()}
            },
            "spec": {"replicas": 0}
        }),
        message,
    }
}

/// `spec.replicas` back to `replicas`, else what `park` remembered, else the autoscaler's
/// minimum, else the API's default.
pub fn unpark(app: &MeteorApp, replicas: Option<i32>) -> Decision {
    let app_name = name(app);
    let remembered = app
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PARKED_REPLICAS_ANNOTATION));
    if app.spec.replicas != 0 {
        return Decision::Nothing {
            message: format!(
                "{app_name} is not parked (spec.replicas is {})",
                app.spec.replicas
            ),
        };
    }
    let remembered_count = remembered
        .and_then(|r| r.parse::<i32>().ok())
        .filter(|r| *r >= 1);
    let (to, source) = match (replicas, remembered_count, &app.spec.autoscaling) {
        (Some(n), _, _) => (n, "--replicas".to_string()),
        (None, Some(n), _) => (
            n,
            format!("remembered by park in {PARKED_REPLICAS_ANNOTATION}"),
        ),
        (None, None, Some(a)) => (
            a.min_replicas.unwrap_or(DEFAULT_MIN_REPLICAS),
            "the autoscaler's minReplicas".to_string(),
        ),
        (None, None, None) => (API_DEFAULT_REPLICAS, "the API's default".to_string()),
    };
    let mut metadata = json!({"resourceVersion": precondition(app)});
    if remembered.is_some() {
        metadata["annotations"] = json!({PARKED_REPLICAS_ANNOTATION: null});
    }
    Decision::Patch {
        patch: json!({"metadata": metadata, "spec": {"replicas": to}}),
        message: format!("{app_name} unparked: spec.replicas 0 -> {to} ({source})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(extra: Value) -> MeteorApp {
        let mut value = json!({
            "apiVersion": "meteorfleet.dev/v1alpha1",
            "kind": "MeteorApp",
            "metadata": {"name": "todos", "namespace": "default", "resourceVersion": "41"},
            "spec": {
                "image": "ghcr.io/example/todos:1.5.0",
                "rootUrl": "https://todos.example.com",
                "mongo": {"external": {"url": {"name": "todos-mongo", "key": "MONGO_URL"}}}
            }
        });
        merge(&mut value, extra);
        serde_json::from_value(value).unwrap()
    }

    fn merge(into: &mut Value, from: Value) {
        match (into, from) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (slot, v) => *slot = v,
        }
    }

    fn rolled_back() -> Value {
        json!({"status": {
            "conditions": [{"type": "Degraded", "status": "True", "reason": "RolledBack",
                "message": "rolled back", "lastTransitionTime": "2025-01-01T00:00:00Z"}],
            "rollout": {"availableTemplate": "aaa", "availableImage": "ghcr.io/example/todos:1.4.2",
                "failedTemplate": "bbb", "failedImage": "ghcr.io/example/todos:1.5.0",
                "failure": "pod todos-x restarted 3 times"}}})
    }

    fn patch_of(decision: Decision) -> Value {
        match decision {
            Decision::Patch { patch, .. } => patch,
            other => panic!("expected a patch, got {other:?}"),
        }
    }

    #[test]
    fn restart_stamps_the_pod_annotation_and_refuses_a_rolled_back_app_unless_forced() {
        let now: Timestamp = "2025-03-04T05:06:07.891Z".parse().unwrap();
        assert_eq!(
            patch_of(restart(&app(json!({})), now, false)),
            json!({"spec": {"podAnnotations": {RESTARTED_AT_ANNOTATION: "2025-03-04T05:06:08Z"}}})
        );
        let refused = restart(&app(rolled_back()), now, false);
        assert!(
            matches!(&refused, Decision::Refuse { message } if message.contains("rollback todos")),
            "{refused:?}"
        );
        assert!(matches!(
            restart(&app(rolled_back()), now, true),
            Decision::Patch { .. }
        ));
    }

    #[test]
    fn rollback_sets_the_last_available_image_only_to_the_app_as_read() {
        assert_eq!(
            patch_of(rollback(&app(rolled_back()))),
            json!({"metadata": {"resourceVersion": "41"},
                   "spec": {"image": "ghcr.io/example/todos:1.4.2"}})
        );
        // Rolled back with the image unchanged: the failed change is in another field, which
        // the app keeps no record of.
        let mut same = app(rolled_back());
        same.spec.image = "ghcr.io/example/todos:1.4.2".into();
        assert!(matches!(rollback(&same), Decision::Refuse { .. }));
        // A rollout under way with the image unchanged: the same.
        let rolling = app(json!({"spec": {"image": "ghcr.io/example/todos:1.4.2"},
            "status": {"conditions": [{"type": "Progressing", "status": "True", "reason": "RollingOut",
                "message": "", "lastTransitionTime": "2025-01-01T00:00:00Z"}],
                "rollout": {"availableTemplate": "aaa", "availableImage": "ghcr.io/example/todos:1.4.2"}}}));
        assert!(matches!(rollback(&rolling), Decision::Refuse { .. }));
        // Settled on the available template: nothing to do.
        let settled = app(json!({"spec": {"image": "ghcr.io/example/todos:1.4.2"},
            "status": {"rollout": {"availableTemplate": "aaa", "availableImage": "ghcr.io/example/todos:1.4.2"}}}));
        assert!(matches!(rollback(&settled), Decision::Nothing { .. }));
        // Never completed a rollout.
        assert!(matches!(rollback(&app(json!({}))), Decision::Refuse { .. }));
    }

    #[test]
    fn park_remembers_the_replicas_and_unpark_returns_to_them() {
        let running = app(json!({"spec": {"replicas": 6}}));
        assert_eq!(
            patch_of(park(&running)),
            json!({"metadata": {"resourceVersion": "41",
                                "annotations": {PARKED_REPLICAS_ANNOTATION: "6"}},
                   "spec": {"replicas": 0}})
        );
        let parked = app(
            json!({"metadata": {"annotations": {PARKED_REPLICAS_ANNOTATION: "6"}},
                                "spec": {"replicas": 0}}),
        );
        assert!(matches!(park(&parked), Decision::Nothing { .. }));
        assert_eq!(
            patch_of(unpark(&parked, None)),
            json!({"metadata": {"resourceVersion": "41",
                                "annotations": {PARKED_REPLICAS_ANNOTATION: null}},
                   "spec": {"replicas": 6}})
        );
        assert_eq!(
            patch_of(unpark(&parked, Some(3)))["spec"]["replicas"],
            json!(3)
        );
        let autoscaled = app(json!({"spec": {"replicas": 0,
            "autoscaling": {"minReplicas": 4, "maxReplicas": 10}}}));
        assert_eq!(
            patch_of(unpark(&autoscaled, None)),
            json!({"metadata": {"resourceVersion": "41"}, "spec": {"replicas": 4}})
        );
        assert_eq!(
            patch_of(unpark(&app(json!({"spec": {"replicas": 0}})), None))["spec"]["replicas"],
            json!(2)
        );
        assert!(matches!(unpark(&running, None), Decision::Nothing { .. }));
    }
}
