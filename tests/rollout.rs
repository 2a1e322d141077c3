//! The rollout plan against the scripted mock API server: a rollout that never gets healthy is
//! rolled back to the last available template and stays there; an operator upgrade waits for an
//! upgrade slot while a user's change never does; drift in any child is put back; an API
//! refusal is reported on the status.

mod support;

use http::{Method, StatusCode};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
use meteor_operator::api::{MeteorApp, RolloutStatus};
use meteor_operator::build::meta;
use meteor_operator::controller::cached::Cached;
use meteor_operator::controller::{reconcile, stamped};
use meteor_operator::plan::TierFacts;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::cluster::Cluster;
use support::*;

const REPLICA_SETS: &str = "/apis/apps/v1/namespaces/default/replicasets";

/// The children of `app` exactly as a previous reconcile applied them.
fn children(app: &MeteorApp) -> (Deployment, Service, PodDisruptionBudget) {
    let (mut deployment, service, budget) = applied_children(app);
    deployment.metadata.uid = Some("deployment-uid".into());
    (deployment, service, budget.unwrap())
}

/// The caches after a reconcile applied `app`, its Deployment since become what `running` makes
/// of it (stuck, rolling ...).
fn cluster(app: &MeteorApp, running: impl FnOnce(Deployment) -> Deployment) -> Cluster {
    let (deployment, service, budget) = children(app);
    Cluster {
        deployments: vec![running(deployment)],
        services: vec![service],
        budgets: vec![budget],
        ..Cluster::default()
    }
}

/// An app pod of `template` whose container restarted `restarts` times, as the pod cache holds it.
fn new_pod(name: &str, template: &str, restarts: i32) -> serde_json::Value {
    json!({
        "metadata": { "name": name, "namespace": "default", "labels": {
            "app.kubernetes.io/name": "meteor", "app.kubernetes.io/instance": "todos",
            "app.kubernetes.io/component": "app", "meteorfleet.dev/template-hash": template } },
        "status": { "containerStatuses": [{ "name": "meteor", "image": "", "imageID": "",
            "ready": false, "restartCount": restarts }] },
    })
}

/// `template` with the pod label `key: value`.
fn label(template: &mut k8s_openapi::api::core::v1::PodTemplateSpec, key: &str, value: &str) {
    let labels = template.metadata.as_mut().unwrap().labels.as_mut().unwrap();
    labels.insert(key.into(), value.into());
}

fn template_of(deployment: &Deployment) -> String {
    TierFacts::of(deployment).template.unwrap()
}

/// `history` remembering `good` (of `image`) as the last available template.
fn available(good: &Deployment, image: &str) -> RolloutStatus {
    RolloutStatus {
        available_template: Some(template_of(good)),
        available_image: Some(image.into()),
        ..RolloutStatus::default()
    }
}

#[tokio::test]
async fn a_rollout_that_never_gets_healthy_is_rolled_back_and_stays_there() {
    // v1 rolled out fine; the spec then moved to v2, whose pods never became available.
    let v1 = app().image("ghcr.io/example/todos:1").build();
    let (good, _, _) = children(&v1);
    let good_template = template_of(&good);
    let history = available(&good, "ghcr.io/example/todos:1");
    let app = app()
        .image("ghcr.io/example/todos:2")
        .generation(2)
        .settled_with_history(&rolled_out(good.clone(), 2), history)
        .build();

    // The Deployment's revision history still has v1's ReplicaSet.
    let mut rs_template = good.spec.as_ref().unwrap().template.clone();
    label(&mut rs_template, "pod-template-hash", "5d4f8b7c9");
    let replica_sets = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSetList", "metadata": {},
        "items": [{
            "metadata": {"name": "todos-5d4f8b7c9", "namespace": "default",
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                              "name": "todos", "uid": "deployment-uid", "controller": true}]},
            "spec": {"selector": {}, "template": rs_template},
        }],
    });
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::get(REPLICA_SETS, (StatusCode::OK, replica_sets)),
        Expect::patch(DEPLOYMENT),
        Expect::status(&app),
        Expect::event(),
    ];
    let transcript = cluster(&app, stuck).reconcile(app.clone(), script).await;

    let query = transcript.query_of(REPLICA_SETS);
    assert!(
        query.contains(&format!(
            "meteorfleet.dev%2Ftemplate-hash%3D{good_template}"
        )),
        "{}",
        query
    );
    let patch = transcript.body_of(Method::PATCH, DEPLOYMENT);
    let template = &patch["spec"]["template"];
    assert_eq!(
        template["spec"]["containers"][0]["image"],
        "ghcr.io/example/todos:1"
    );
    assert_eq!(
        template["metadata"]["labels"]["meteorfleet.dev/template-hash"],
        good_template.as_str()
    );
    assert!(
        template["metadata"]["labels"]
            .get("pod-template-hash")
            .is_none()
    );
    // Everything else follows the spec.
    assert_eq!(patch["spec"]["replicas"], 2);

    let status = transcript.body_of(Method::PATCH, STATUS);
    assert_eq!(condition(&status, "Degraded")["reason"], "RolledBack");
    let message = condition(&status, "Degraded")["message"].as_str().unwrap();
    assert!(message.contains("ghcr.io/example/todos:2"), "{message}");
    assert!(message.contains("progressDeadlineSeconds"), "{message}");
    assert_eq!(
        status["status"]["rollout"]["failedTemplate"],
        template_of(&children(&app).0)
    );
    assert_eq!(
        status["status"]["rollout"]["availableTemplate"],
        good_template.as_str()
    );
    let event = transcript.event();
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "RolledBack");

    // The next pass, once v1 serves again: the spec still says v2, and nothing is written.
    let mut after = app.clone();
    after.status = Some(serde_json::from_value(status["status"].clone()).unwrap());
    let mut rolled_back: Deployment = serde_json::from_value(patch).unwrap();
    rolled_back = rolled_out(rolled_back, 2);
    // (The mock answered the rollback without a Deployment status, so the first pass saw no
    // ready pod; now Ready comes back: one status write and one Normal event, no Deployment.)
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::status(&after),
        Expect::event(),
    ];
    let transcript = cluster(&after, |_| rolled_back)
        .reconcile(after, script)
        .await;
    let status = transcript.body_of(Method::PATCH, STATUS);
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(condition(&status, "Degraded")["reason"], "RolledBack");
    assert_eq!(condition(&status, "Progressing")["reason"], "RolledBack");
    assert_eq!(
        status["status"]["rollout"]["failedImage"],
        "ghcr.io/example/todos:2"
    );
}

/// While v1's pods still run (a rollout that never got healthy keeps them), the ReplicaSet to go
/// back to is the one their owner reference names: read by name, no LIST.
#[tokio::test]
async fn the_rollback_target_is_read_by_the_name_its_running_pods_give() {
    let v1 = app().image("ghcr.io/example/todos:1").build();
    let (good, _, _) = children(&v1);
    let good_template = template_of(&good);
    let app = app()
        .image("ghcr.io/example/todos:2")
        .generation(2)
        .settled_with_history(
            &rolled_out(good.clone(), 2),
            available(&good, "ghcr.io/example/todos:1"),
        )
        .build();
    let mut old_pod = new_pod("todos-5d4f8b7c9-x", &good_template, 0);
    old_pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": "todos-5d4f8b7c9", "uid": "rs-uid", "controller": true}]);
    let mut rs_template = good.spec.as_ref().unwrap().template.clone();
    label(&mut rs_template, "pod-template-hash", "5d4f8b7c9");
    let replica_set = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "todos-5d4f8b7c9", "namespace": "default", "uid": "rs-uid",
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                          "name": "todos", "uid": "deployment-uid", "controller": true}]},
        "spec": {"selector": {}, "template": rs_template},
    });
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::get(
            &format!("{REPLICA_SETS}/todos-5d4f8b7c9"),
            (StatusCode::OK, replica_set),
        ),
        Expect::patch(DEPLOYMENT),
        Expect::status(&app),
        Expect::event(),
    ];
    let transcript = cluster(&app, stuck)
        .with_pods(vec![old_pod])
        .reconcile(app.clone(), script)
        .await;
    let patch = transcript.body_of(Method::PATCH, DEPLOYMENT);
    assert_eq!(
        patch["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/example/todos:1"
    );
}

#[tokio::test]
async fn new_pods_in_a_crash_loop_count_as_a_failed_rollout() {
    let (good, _, _) = children(&app().image("todos:1").build());
    let history = available(&good, "todos:1");
    let app = app()
        .image("todos:2")
        .spec(|spec| spec.rollout.rollback_on_restarts = 3)
        .settled_with_history(&rolled_out(good, 2), history)
        .build();
    let (failing, _, _) = children(&app);
    // Rolling out, not yet past the deadline; one new pod restarted 4 times.
    let rolling = |failing| {
        let mut rolling = rolled_out(failing, 2);
        rolling.status.as_mut().unwrap().updated_replicas = Some(1);
        rolling.status.as_mut().unwrap().replicas = Some(3);
        rolling
    };
    // From the cache of pods: a reconcile lists none.
    let pods = vec![
        new_pod("todos-new-1", &template_of(&failing), 4),
        // Another template's restarts say nothing about this rollout.
        new_pod("todos-old-1", "0ld", 40),
    ];
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        // No ReplicaSet of the good template is left: nothing to go back to.
        Expect::get(
            REPLICA_SETS,
            (
                StatusCode::OK,
                json!({"apiVersion": "apps/v1", "kind": "ReplicaSetList", "metadata": {}, "items": []}),
            ),
        ),
        Expect::status(&app),
    ];
    let transcript = cluster(&app, rolling)
        .with_pods(pods)
        .reconcile(app.clone(), script)
        .await;
    // Without a target the rollout carries on; the history forgets the vanished template.
    assert!(
        transcript
            .writes()
            .iter()
            .all(|w| !w.contains("deployments"))
    );
    let status = transcript.body_of(Method::PATCH, STATUS);
    assert_eq!(condition(&status, "Progressing")["reason"], "RollingOut");
    assert!(status["status"].get("rollout").is_none(), "{status}");
}

#[tokio::test]
async fn a_crash_loop_with_a_target_rolls_back_and_auto_rollback_off_does_not() {
    for auto_rollback in [true, false] {
        let (good, _, _) = children(&app().image("todos:1").build());
        let history = available(&good, "todos:1");
        let app = app()
            .image("todos:2")
            .spec(|spec| spec.rollout.auto_rollback = auto_rollback)
            .settled_with_history(&rolled_out(good.clone(), 2), history)
            .build();
        let (failing, _, _) = children(&app);
        let script = if auto_rollback {
            let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSetList", "metadata": {}, "items": [
                {"metadata": {"name": "todos-1", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                  "name": "todos", "uid": "deployment-uid", "controller": true}]},
                 "spec": {"selector": {}, "template": good.spec.as_ref().unwrap().template}}]});
            vec![
                Expect::get(SECRET, mongo_secret()),
                Expect::get(REPLICA_SETS, (StatusCode::OK, rs)),
                Expect::patch(DEPLOYMENT),
                Expect::status(&app),
                Expect::event(),
            ]
        } else {
            // Off: no pod is even looked at, nothing is rolled back.
            vec![Expect::get(SECRET, mongo_secret()), Expect::status(&app)]
        };
        let pods = vec![new_pod("p", &template_of(&failing), 3)];
        let rolling = |failing| {
            let mut rolling = rolled_out(failing, 2);
            rolling.status.as_mut().unwrap().updated_replicas = Some(1);
            rolling
        };
        let transcript = cluster(&app, rolling)
            .with_pods(pods)
            .reconcile(app, script)
            .await;
        let status = transcript.body_of(Method::PATCH, STATUS);
        let reason = condition(&status, "Degraded")["reason"].clone();
        assert_eq!(
            reason,
            if auto_rollback {
                "RolledBack"
            } else {
                "AsExpected"
            }
        );
        if auto_rollback {
            let message = condition(&status, "Degraded")["message"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(message.contains("restarted 3 times"), "{message}");
        }
    }
}

/// An app whose Deployment an older operator version built: same spec and data, another
/// template; and its children in the caches.
fn upgraded_app(name: &str) -> (MeteorApp, Cluster) {
    let built_by_an_older_version = |mut deployment: Deployment| {
        let template = &mut deployment.spec.as_mut().unwrap().template;
        label(template, meta::TEMPLATE_HASH_LABEL, "built-by-0.0.9");
        stamped(rolled_out(deployment, 2))
    };
    let app = app().name(name);
    let cluster = cluster(&app.clone().build(), built_by_an_older_version);
    let app = app
        .settled_with_history(&cluster.deployments[0], RolloutStatus::default())
        .build();
    (app, cluster)
}

#[tokio::test]
async fn an_operator_upgrade_rolls_at_most_n_apps_and_a_user_change_never_waits() {
    let (first, todos) = upgraded_app("todos");
    let (second, chat) = upgraded_app("chat");
    let (mut third, shop) = upgraded_app("shop");
    // The user of `shop` changed its spec: that is never delayed.
    third.metadata.generation = Some(2);
    third.spec.replicas = 3;
    let d = |n: &str| format!("/apis/apps/v1/namespaces/default/deployments/{n}");
    let st = |n: &str| {
        format!("/apis/meteorfleet.dev/v1alpha1/namespaces/default/meteorapps/{n}/status")
    };
    let script = vec![
        // todos: takes the one slot.
        Expect::get(SECRET, mongo_secret()),
        Expect::patch(&d("todos")),
        Expect::status(&first),
        // chat: waits; its Deployment is not written.
        Expect::get(SECRET, mongo_secret()),
        Expect::status(&second),
        // shop: the user's change is applied at once.
        Expect::get(SECRET, mongo_secret()),
        Expect::patch(&d("shop")),
        Expect::status(&third),
    ];
    let (actions, transcript) = todos
        .and(chat)
        .and(shop)
        .slots(1)
        .visit(script, |ctx| async move {
            let mut actions = Vec::new();
            for app in [first, second, third] {
                let action = reconcile(Arc::new(app), ctx.clone()).await;
                actions.push(action.expect("reconcile succeeds"));
            }
            actions
        })
        .await;

    let todos = transcript.body_of(Method::PATCH, &st("todos"));
    assert_eq!(
        condition(&todos, "Progressing")["reason"],
        "UpgradeRollingOut"
    );
    let chat = transcript.body_of(Method::PATCH, &st("chat"));
    assert_eq!(
        condition(&chat, "Progressing")["reason"],
        "WaitingForRolloutSlot"
    );
    assert!(
        condition(&chat, "Progressing")["message"]
            .as_str()
            .unwrap()
            .contains("1 of 1 busy"),
        "{chat}"
    );
    // Waiting is not a problem, and a waiting app comes back soon.
    assert_eq!(condition(&chat, "Degraded")["status"], "False");
    assert_eq!(
        actions[1],
        kube::runtime::controller::Action::requeue(Duration::from_secs(15))
    );
    let shop = transcript.body_of(Method::PATCH, &d("shop"));
    assert_eq!(shop["spec"]["replicas"], 3);
}

#[tokio::test]
async fn a_slot_frees_when_the_upgrade_completes() {
    let (app, cluster) = upgraded_app("todos");
    let cluster = cluster.slots(1);
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::patch(DEPLOYMENT),
        Expect::status(&app),
        // Second pass: the new template has rolled out (the mock's apply answer carried no
        // Deployment status, so the first pass saw it unready: Ready again, with no event, as
        // waiting for pods was no problem).
        Expect::get(SECRET, mongo_secret()),
        Expect::status(&app),
    ];
    let n = script.len();
    let (client, transcript, task) = mock_client(script);
    let ctx = cluster.clone().context(client);
    let key = kube::runtime::reflector::ObjectRef::from_obj(&app);
    reconcile(Arc::new(app.clone()), ctx.clone()).await.unwrap();
    assert!(ctx.slots.holds(&key));
    // The cache now shows the new Deployment, complete; the status shows the upgrade rolling.
    let written: Deployment =
        serde_json::from_value(transcript.body_of(Method::PATCH, DEPLOYMENT)).unwrap();
    let status = transcript.body_of(Method::PATCH, STATUS);
    let mut next = app.clone();
    next.status = Some(serde_json::from_value(status["status"].clone()).unwrap());
    let ctx2 = cluster
        .app_deployment(|_| rolled_out(written, 2))
        .context(ctx.client.clone());
    // A fresh operator process: the stored status says it held a slot; complete, it lets go.
    reconcile(Arc::new(next), ctx2.clone()).await.unwrap();
    assert!(!ctx2.slots.holds(&key));
    drop((ctx, ctx2));
    mock_saw_exactly(&transcript, task, n).await;
    let last = transcript
        .seen()
        .into_iter()
        .rev()
        .find(|s| s.path == STATUS)
        .unwrap();
    assert_eq!(
        condition(&last.body, "Progressing")["reason"],
        "RolloutComplete"
    );
}

fn entry(
    manager: &str,
    subresource: Option<&str>,
    fields: serde_json::Value,
) -> ManagedFieldsEntry {
    ManagedFieldsEntry {
        manager: Some(manager.into()),
        operation: Some(
            if manager == "meteor-operator" {
                "Apply"
            } else {
                "Update"
            }
            .into(),
        ),
        subresource: subresource.map(Into::into),
        fields_v1: Some(FieldsV1(fields)),
        ..ManagedFieldsEntry::default()
    }
}

#[tokio::test]
async fn drift_in_each_child_is_put_back_and_status_writers_are_not_drift() {
    let (deployment, service, budget) = children(&minimal_app());
    let deployment = rolled_out(deployment, 2);
    let history = available(&deployment, &minimal_app().spec.image);
    let app = app().settled_with_history(&deployment, history).build();
    let ours = entry(
        "meteor-operator",
        None,
        json!({"f:spec": {"f:replicas": {}}}),
    );
    let status_writer = entry(
        "kube-controller-manager",
        Some("status"),
        json!({"f:status": {}}),
    );
    // After an operator restart (no baseline): someone else owns part of the spec.
    let cases: [(&str, &str, serde_json::Value); 3] = [
        ("kubectl", DEPLOYMENT, json!({"f:spec": {"f:replicas": {}}})),
        (
            "kubectl-edit",
            SERVICE,
            json!({"f:spec": {"f:selector": {}}}),
        ),
        (
            "kubectl-patch",
            PDB,
            json!({"f:spec": {"f:maxUnavailable": {}}}),
        ),
    ];
    for (manager, path, fields) in cases {
        let (mut d, mut s, mut b) = (deployment.clone(), service.clone(), budget.clone());
        for meta in [&mut d.metadata, &mut s.metadata, &mut b.metadata] {
            meta.uid = Some(format!("uid-{}", meta.name.as_deref().unwrap()));
            meta.managed_fields = Some(vec![ours.clone(), status_writer.clone()]);
        }
        let drifted = match path {
            DEPLOYMENT => &mut d.metadata,
            SERVICE => &mut s.metadata,
            _ => &mut b.metadata,
        };
        drifted.uid = Some("drifted".into());
        drifted
            .managed_fields
            .as_mut()
            .unwrap()
            .push(entry(manager, None, fields));
        // The API answers an apply with the whole object, status included.
        let answer = match path {
            DEPLOYMENT => Expect {
                method: Method::PATCH,
                path: path.into(),
                reply: Reply::Json(StatusCode::OK, serde_json::to_value(&deployment).unwrap()),
            },
            _ => Expect::patch(path),
        };
        let script = vec![Expect::get(SECRET, mongo_secret()), answer];
        let cluster = Cluster {
            deployments: vec![d],
            services: vec![s],
            budgets: vec![b],
            ..Cluster::default()
        };
        let transcript = cluster.reconcile(app.clone(), script).await;
        assert_eq!(
            transcript.writes(),
            vec![format!("PATCH {path}")],
            "{manager}"
        );
    }
}

#[tokio::test]
async fn a_change_by_someone_else_after_our_write_is_seen_from_field_ownership() {
    let app = minimal_app();
    let (deployment, service, budget) = children(&app);
    let mut observed = rolled_out(deployment, 2);
    observed.metadata.uid = Some("d1".into());
    let ours = entry(
        "meteor-operator",
        None,
        json!({"f:spec": {"f:replicas": {}, "f:template": {}}}),
    );
    // The operator wrote it (baseline: our entry with replicas) ...
    let ctx = context(kube_client_unused(), vec![], vec![], vec![]);
    let mut answer = observed.clone();
    answer.metadata.managed_fields = Some(vec![ours.clone()]);
    // ... then `kubectl scale` took replicas: our entry no longer lists it.
    let mut scaled = observed.clone();
    scaled.metadata.managed_fields = Some(vec![entry(
        "meteor-operator",
        None,
        json!({"f:spec": {"f:template": {}}}),
    )]);
    let mut scaled = Cached::new(scaled).object();
    let hash = meteor_operator::controller::desired_hash(&observed);
    let _ = (service, budget);
    // Not drifted before the edit, drifted after it.
    ctx.applier.baselines().written(&answer.metadata);
    let mut untouched = Cached::new(answer.clone()).object();
    for cached in [&mut untouched, &mut scaled] {
        cached
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                meteor_operator::controller::APPLIED_HASH_ANNOTATION.into(),
                hash.clone(),
            );
    }
    assert!(!ctx.applier.needs_write(&hash, Some(&untouched)));
    assert!(ctx.applier.needs_write(&hash, Some(&scaled)));
}

/// A client for tests that make no request.
fn kube_client_unused() -> kube::Client {
    let (service, _handle) = tower_test::mock::pair::<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >();
    kube::Client::new(service, "default")
}

#[tokio::test]
async fn a_forbidden_request_is_reported_with_the_verb_and_resource() {
    // As on a real cluster with a ClusterRole lacking `get` on deployments.
    let forbidden = json!({
        "apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403,
        "message": "deployments.apps \"todos\" is forbidden: User \"system:serviceaccount:meteor-system:meteor-operator\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"default\"",
    });
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::get(DEPLOYMENT, (StatusCode::FORBIDDEN, forbidden)),
        Expect::status(&minimal_app()),
        Expect::event(),
    ];
    let ((result, metrics), transcript) = Cluster::empty()
        .visit(script, |ctx| async move {
            let result = reconcile(Arc::new(minimal_app()), ctx.clone()).await;
            (result, ctx.metrics.encode())
        })
        .await;
    assert!(result.is_err(), "a refusal is retried with backoff");
    let status = transcript.body_of(Method::PATCH, STATUS);
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert_eq!(condition(&status, "Ready")["reason"], "Forbidden");
    // The per-app series say so too, for the NotReady alert and the dashboards.
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("meteor_app_condition{")
                && l.contains(r#"type="Ready",status="False",reason="Forbidden""#)
                && l.ends_with(" 1")),
        "{metrics}"
    );
    assert_eq!(condition(&status, "Degraded")["reason"], "Forbidden");
    let message = condition(&status, "Degraded")["message"].as_str().unwrap();
    assert!(
        message.contains("cannot get resource \"deployments\" in API group \"apps\""),
        "{message}"
    );
    let event = transcript.event();
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "Forbidden");
}
