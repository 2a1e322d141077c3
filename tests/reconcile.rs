//! Reconcile against a scripted mock API server: which requests a reconcile makes, in which
//! order, with which bodies, and that it makes no others.

mod support;

use http::{Method, StatusCode};
use k8s_openapi::api::apps::v1::Deployment;
use meteor_operator::api::{MeteorApp, MeteorAppStatus};
use meteor_operator::build::{self, Inputs, MongoWiring};
use meteor_operator::controller::stamped;
use meteor_operator::status::{self, RolloutState, Verdict};
use support::cluster::{Cluster, earlier, reconcile_again};
use support::*;

const WORKER: &str = "/apis/apps/v1/namespaces/default/deployments/todos-worker";

#[tokio::test]
async fn first_visit_applies_every_child_and_sets_conditions() {
    let transcript = Cluster::empty()
        .reconcile(minimal_app(), first_visit_script())
        .await;

    let seen = transcript.seen();
    let apply = seen
        .iter()
        .find(|s| s.method == Method::PATCH && s.path == DEPLOYMENT)
        .unwrap();
    assert!(
        apply.query.contains("fieldManager=meteor-operator"),
        "{}",
        apply.query
    );
    assert!(apply.query.contains("force=true"), "{}", apply.query);
    let deployment = &apply.body;
    assert_eq!(deployment["kind"], "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["metadata"]["ownerReferences"][0]["uid"], UID);
    assert_eq!(
        deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "meteor-operator"
    );
    assert!(deployment["metadata"]["annotations"]["meteorfleet.dev/applied-hash"].is_string());

    // Status is set on the first visit, with server-side apply (so stale fields get removed):
    // not ready yet, rolling out, nothing wrong.
    let status_patch = seen.iter().find(|s| s.path == STATUS).unwrap();
    assert!(
        status_patch.query.contains("fieldManager=meteor-operator"),
        "{}",
        status_patch.query
    );
    assert_eq!(status_patch.body["kind"], "MeteorApp");
    assert_eq!(status_patch.body["apiVersion"], "meteorfleet.dev/v1alpha1");
    let status = transcript.body_of(Method::PATCH, STATUS);
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert_eq!(condition(&status, "Ready")["reason"], "WaitingForReplicas");
    assert_eq!(condition(&status, "Progressing")["status"], "True");
    assert_eq!(condition(&status, "Degraded")["status"], "False");
    assert_eq!(status["status"]["observedGeneration"], 1);
    assert_eq!(
        status["status"]["selector"],
        "app.kubernetes.io/component=app,app.kubernetes.io/instance=todos,app.kubernetes.io/name=meteor"
    );
    assert_eq!(status["status"]["replicaSummary"], "0/2");
}

#[tokio::test]
async fn steady_state_makes_no_write_request() {
    // The status a previous reconcile wrote for exactly these observations.
    let app = app().settled().build();
    let script = vec![Expect::get(SECRET, mongo_secret())];
    let transcript = reconcile_again(&app, script).await;
    assert_eq!(transcript.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn spec_change_rewrites_only_what_changed() {
    let old = minimal_app();
    let app = app().replicas(3).generation(2).build();

    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::patch(DEPLOYMENT),
        // The Service and the PDB do not depend on the replica count: not rewritten.
        Expect::status(&app),
    ];
    let transcript = Cluster::applied(&old, 0).reconcile(app, script).await;
    assert_eq!(
        transcript.body_of(Method::PATCH, DEPLOYMENT)["spec"]["replicas"],
        3
    );
}

#[tokio::test]
async fn invalid_spec_touches_no_child_and_reports_why() {
    let good = app().settled();
    let cluster = Cluster::applied(&good.clone().build(), 0);
    // Written before the CRD rule existed, or straight to etcd: the backstop must catch it.
    let app = good.replicas(-1).generation(2).build();

    let script = vec![Expect::status(&app), Expect::event()];
    let (result, transcript) = cluster.run(app, script).await;
    result.expect("a bad spec is reported, not retried");

    let status = transcript.body_of(Method::PATCH, STATUS);
    // The pods of generation 1 still serve: Ready stays True and speaks for generation 1, so
    // `kubectl wait` for generation 2 does not pass; Degraded says why generation 2 is refused.
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(condition(&status, "Ready")["observedGeneration"], 1);
    assert_eq!(condition(&status, "Degraded")["status"], "True");
    assert_eq!(condition(&status, "Degraded")["reason"], "InvalidSpec");
    assert_eq!(condition(&status, "Degraded")["observedGeneration"], 2);
    let message = condition(&status, "Degraded")["message"].as_str().unwrap();
    assert!(message.contains("spec.replicas"), "{message}");
    // The running pods are still counted.
    assert_eq!(status["status"]["readyReplicas"], 2);

    let event = transcript.event();
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "InvalidSpec");
    assert_eq!(event["regarding"]["name"], "todos");
}

#[tokio::test]
async fn missing_secret_is_reported_and_creates_nothing() {
    let script = vec![
        Expect::get(SECRET, not_found("secrets", "todos-mongo")),
        Expect::status(&minimal_app()),
        Expect::event(),
    ];
    let (result, transcript) = Cluster::empty().run(minimal_app(), script).await;
    result.expect("reconcile reports the problem");
    let status = transcript.body_of(Method::PATCH, STATUS);
    assert_eq!(
        condition(&status, "Degraded")["reason"],
        "ReferenceNotFound"
    );
    let message = condition(&status, "Ready")["message"].as_str().unwrap();
    assert!(
        message.contains("spec.mongo.external.url") && message.contains("todos-mongo"),
        "{message}"
    );
}

#[tokio::test]
async fn unparseable_settings_leave_the_running_deployment_alone() {
    let app = app()
        .settled()
        .spec(|spec| {
            spec.settings = Some(
                serde_json::from_value(serde_json::json!({
                    "configMapKeyRef": {"name": "todos-settings", "key": "settings.json"}
                }))
                .unwrap(),
            )
        })
        .build();
    let config_map = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "todos-settings", "namespace": "default"},
        "data": {"settings.json": "{\"public\": "},
    });
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::get(
            "/api/v1/namespaces/default/configmaps/todos-settings",
            (StatusCode::OK, config_map),
        ),
        Expect::status(&app),
        Expect::event(),
    ];
    let (result, transcript) = Cluster::applied(&minimal_app(), 0).run(app, script).await;
    result.expect("reconcile reports the problem");
    let status = transcript.body_of(Method::PATCH, STATUS);
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(condition(&status, "Degraded")["reason"], "InvalidSettings");
    assert_eq!(
        transcript.writes(),
        vec![
            format!("PATCH {STATUS}"),
            "POST /apis/events.k8s.io/v1/namespaces/default/events".to_string()
        ]
    );
}

#[tokio::test]
async fn workers_back_to_zero_delete_the_worker_deployment_and_one_replica_drops_the_pdb() {
    let with_workers = app().workers(1).build();
    let worker = {
        let inputs = Inputs {
            config_hash: "x".into(),
            mongo: MongoWiring::for_app(&with_workers).unwrap(),
        };
        stamped(build::worker_deployment(&with_workers, &inputs).unwrap())
    };
    let app = app().workers(0).replicas(1).build();

    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::patch(DEPLOYMENT),
        Expect::delete(WORKER),
        Expect::delete(PDB),
        Expect::status(&app),
    ];
    Cluster::applied(&with_workers, 0)
        .with_deployment(worker)
        .reconcile(app, script)
        .await;
}

#[tokio::test]
async fn a_child_we_do_not_control_is_never_deleted() {
    let app = minimal_app();
    let (deployment, service, _) = applied_children(&app);
    // A Deployment named like our worker but owned by someone else.
    let mut foreign: Deployment = deployment.clone();
    foreign.metadata.name = Some("todos-worker".into());
    foreign.metadata.owner_references = None;

    let single = support::app().replicas(1).build();
    let cluster = Cluster::applied(&single, 0).with_deployment(foreign);
    assert_eq!(cluster.services, vec![service]);
    assert!(cluster.budgets.is_empty());
    // Ready for the first time (no event for that), and no DELETE of the foreign Deployment.
    let script = vec![Expect::get(SECRET, mongo_secret()), Expect::status(&single)];
    cluster.reconcile(single, script).await;
}

/// The status of `app` while half its pods are ready, computed at an earlier time.
fn half_ready_status(app: &MeteorApp, deployment: &Deployment) -> MeteorAppStatus {
    let mut half = rolled_out(deployment.clone(), 2);
    let s = half.status.as_mut().unwrap();
    s.ready_replicas = Some(1);
    s.available_replicas = Some(1);
    status::compute(
        app,
        &Verdict::Applied(RolloutState::AsSpecified),
        Some(&half),
        None,
        None,
        &earlier(),
    )
}

/// A rolled-out app becomes Ready: one status write. `after_problem`: it was Degraded (a
/// Warning said so), so the return to Ready is also a Normal event; else Ready after waiting for
/// pods is news for nobody.
async fn becomes_ready(after_problem: bool) -> Transcript {
    let mut app = minimal_app();
    let cluster = Cluster::applied(&app, 0);
    let deployment = &cluster.deployments[0];
    let mut status = half_ready_status(&app, deployment);
    let template = meteor_operator::plan::TierFacts::of(deployment).template;
    status.rollout = Some(meteor_operator::api::RolloutStatus {
        available_template: template,
        ..Default::default()
    });
    if after_problem {
        let degraded = status
            .conditions
            .iter_mut()
            .find(|c| c.type_ == "Degraded")
            .unwrap();
        degraded.status = "True".into();
        degraded.reason = "ReferenceNotFound".into();
    }
    app.status = Some(status);
    let mut script = vec![Expect::get(SECRET, mongo_secret()), Expect::status(&app)];
    if after_problem {
        script.push(Expect::event());
    }
    let transcript = cluster.reconcile(app, script).await;
    let status = transcript.body_of(Method::PATCH, STATUS);
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(condition(&status, "Ready")["reason"], "AllReplicasReady");
    assert_eq!(
        condition(&status, "Progressing")["reason"],
        "RolloutComplete"
    );
    if !after_problem {
        // Degraded stayed False: its transition time is kept.
        assert_eq!(
            condition(&status, "Degraded")["lastTransitionTime"],
            "2023-11-14T22:13:20Z"
        );
    }
    transcript
}

#[tokio::test]
async fn an_app_ready_after_waiting_for_pods_has_one_status_write_and_no_event() {
    let transcript = becomes_ready(false).await;
    assert_eq!(transcript.writes().len(), 1, "{:?}", transcript.writes());
}

#[tokio::test]
async fn an_app_ready_again_after_a_problem_says_so_once_in_an_event() {
    let transcript = becomes_ready(true).await;
    let event = transcript.event();
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["reason"], "AllReplicasReady");
}

#[tokio::test]
async fn api_failure_is_reported_and_retried() {
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::get(DEPLOYMENT, not_found("deployments", "todos")),
        Expect::get(SERVICE, not_found("services", "todos")),
        Expect::get(PDB, not_found("poddisruptionbudgets", "todos")),
        Expect {
            method: Method::PATCH,
            path: DEPLOYMENT.into(),
            reply: Reply::Json(
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!({
                    "apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 422,
                    "reason": "Invalid", "message": "Deployment.apps \"todos\" is invalid: spec.template.spec.containers[0].image: Required value",
                }),
            ),
        },
        Expect::status(&minimal_app()),
        Expect::event(),
    ];
    let (result, transcript) = Cluster::empty().run(minimal_app(), script).await;
    assert!(
        result.is_err(),
        "an API failure must trigger the error policy"
    );
    let status = transcript.body_of(Method::PATCH, STATUS);
    assert_eq!(condition(&status, "Degraded")["reason"], "ApplyFailed");
    assert!(
        condition(&status, "Degraded")["message"]
            .as_str()
            .unwrap()
            .contains("image: Required value")
    );
}

#[tokio::test]
async fn an_unlabelled_namesake_is_never_taken_over() {
    // A Service `todos` that a team created before adopting the operator.
    let theirs = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "todos", "namespace": "default", "uid": "their-uid"},
    });
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::get(DEPLOYMENT, not_found("deployments", "todos")),
        Expect::get(SERVICE, (StatusCode::OK, theirs)),
        Expect::status(&minimal_app()),
        Expect::event(),
    ];
    let (result, transcript) = Cluster::empty().run(minimal_app(), script).await;
    result.expect("a conflict is reported, not retried");
    let status = transcript.body_of(Method::PATCH, STATUS);
    assert_eq!(condition(&status, "Degraded")["reason"], "NameConflict");
    let message = condition(&status, "Degraded")["message"].as_str().unwrap();
    assert!(
        message.contains("Service default/todos already exists"),
        "{message}"
    );
    // Nothing was applied: only the status and the Warning event were written.
    assert_eq!(transcript.writes().len(), 2, "{:?}", transcript.writes());
}

#[tokio::test]
async fn once_ready_the_next_resync_writes_nothing() {
    // Reconcile 1: the Deployment became available, so status flips to Ready (+ one event).
    let mut app = minimal_app();
    let cluster = Cluster::applied(&app, 0);
    app.status = Some(status::compute(
        &app,
        &Verdict::Applied(RolloutState::AsSpecified),
        None,
        None,
        None,
        &earlier(),
    ));
    let script = vec![Expect::get(SECRET, mongo_secret()), Expect::status(&app)];
    let transcript = cluster.clone().reconcile(app.clone(), script).await;

    // Reconcile 2 sees the status exactly as the API stored it (a JSON round trip of what was
    // applied) and must write nothing: no status, no second Ready event.
    let applied = transcript.body_of(Method::PATCH, STATUS);
    app.status = Some(serde_json::from_value(applied["status"].clone()).unwrap());
    let transcript = cluster
        .reconcile(app, vec![Expect::get(SECRET, mongo_secret())])
        .await;
    assert_eq!(transcript.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn an_app_being_deleted_is_left_to_garbage_collection() {
    let mut app = minimal_app();
    app.metadata.deletion_timestamp = Some(earlier());
    let (result, transcript) = Cluster::empty().run(app, vec![]).await;
    result.expect("nothing to do");
    assert!(transcript.seen().is_empty());
}

#[tokio::test]
async fn an_app_that_does_not_parse_is_reported_and_nothing_else_is_touched() {
    use meteor_operator::controller::{ListedApp, reconcile_listed};
    // Stored under an older CRD: replicas out of range for the current type.
    let listed = ListedApp::from_value(serde_json::json!({
        "apiVersion": "meteorfleet.dev/v1alpha1", "kind": "MeteorApp",
        "metadata": {"name": "todos", "namespace": "default", "uid": UID, "generation": 5},
        "spec": {"image": "todos:1", "rootUrl": "https://todos.example.com", "replicas": 99999999999u64,
                 "mongo": {"external": {"url": {"name": "todos-mongo", "key": "MONGO_URL"}}}},
    }));
    let script = vec![Expect::status(&minimal_app()), Expect::event()];
    let (result, transcript) = Cluster::empty()
        .visit(script, |ctx| {
            reconcile_listed(std::sync::Arc::new(listed), ctx)
        })
        .await;
    result.expect("reported, not retried");
    let status = transcript.body_of(Method::PATCH, STATUS);
    assert_eq!(condition(&status, "Ready")["reason"], "InvalidSpec");
    let message = condition(&status, "Ready")["message"].as_str().unwrap();
    assert!(message.contains("spec.replicas"), "{message}");
    assert_eq!(status["status"]["observedGeneration"], 5);
    let event = transcript.event();
    assert_eq!(event["type"], "Warning");
}
