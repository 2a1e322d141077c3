//! Reconcile against a scripted mock API server: which requests a reconcile makes, in which
//! order, with which bodies, and that it makes no others.

mod support;

use http::{Method, StatusCode};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use meteor_operator::api::{MeteorApp, MeteorAppStatus};
use meteor_operator::build::{self, Inputs, MongoWiring};
use meteor_operator::controller::stamped;
use meteor_operator::status::{self, RolloutState, Verdict};
use support::*;

const WORKER: &str = "/apis/apps/v1/namespaces/default/deployments/todos-worker";

#[tokio::test]
async fn first_visit_applies_every_child_and_sets_conditions() {
    let script = first_visit_script();
    let n = script.len();
    let (client, transcript, task) = mock_client(script);
    let ctx = context(client, vec![], vec![], vec![]);
    reconcile_with(minimal_app(), ctx, &transcript, task, n)
        .await
        .expect("reconcile succeeds");

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
    let mut app = minimal_app();
    let (deployment, service, budget) = applied_children(&app);
    let deployment = rolled_out(deployment, 2);
    // The status a previous reconcile wrote for exactly these observations.
    let earlier = Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap());
    app.status = Some(settled(&app, &deployment, &earlier));

    let script = vec![Expect::get(SECRET, mongo_secret())];
    let (client, transcript, task) = mock_client(script);
    let ctx = context(
        client,
        vec![deployment],
        vec![service],
        budget.into_iter().collect(),
    );
    reconcile_with(app, ctx, &transcript, task, 1)
        .await
        .expect("reconcile succeeds");
    assert_eq!(transcript.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn spec_change_rewrites_only_what_changed() {
    let old = minimal_app();
    let (deployment, service, budget) = applied_children(&old);
    let mut app = old.clone();
    app.spec.replicas = 3;
    app.metadata.generation = Some(2);

    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::patch(DEPLOYMENT),
        // The Service and the PDB do not depend on the replica count: not rewritten.
        Expect::status(&app),
    ];
    let n = script.len();
    let (client, transcript, task) = mock_client(script);
    let ctx = context(
        client,
        vec![rolled_out(deployment, 2)],
        vec![service],
        budget.into_iter().collect(),
    );
    reconcile_with(app, ctx, &transcript, task, n)
        .await
        .expect("reconcile succeeds");
    assert_eq!(
        transcript.body_of(Method::PATCH, DEPLOYMENT)["spec"]["replicas"],
        3
    );
}

#[tokio::test]
async fn invalid_spec_touches_no_child_and_reports_why() {
    let mut good = minimal_app();
    let (deployment, service, budget) = applied_children(&good);
    let deployment = rolled_out(deployment, 2);
    let earlier = Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap());
    good.status = Some(settled(&good, &deployment, &earlier));
    let mut app = good.clone();
    // Written before the CRD rule existed, or straight to etcd: the backstop must catch it.
    app.spec.replicas = -1;
    app.metadata.generation = Some(2);

    let script = vec![Expect::status(&app), Expect::event()];
    let n = script.len();
    let (client, transcript, task) = mock_client(script);
    let ctx = context(
        client,
        vec![deployment],
        vec![service],
        budget.into_iter().collect(),
    );
    reconcile_with(app, ctx, &transcript, task, n)
        .await
        .expect("a bad spec is reported, not retried");

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
    let n = script.len();
    let (client, transcript, task) = mock_client(script);
    let ctx = context(client, vec![], vec![], vec![]);
    reconcile_with(minimal_app(), ctx, &transcript, task, n)
        .await
        .expect("reconcile reports the problem");
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
    let mut app = minimal_app();
    let (deployment, service, budget) = applied_children(&app);
    let deployment = rolled_out(deployment, 2);
    let earlier = Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap());
    app.status = Some(settled(&app, &deployment, &earlier));
    app.spec.settings = Some(
        serde_json::from_value(serde_json::json!({
            "configMapKeyRef": {"name": "todos-settings", "key": "settings.json"}
        }))
        .unwrap(),
    );
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
    let n = script.len();
    let (client, transcript, task) = mock_client(script);
    let ctx = context(
        client,
        vec![deployment],
        vec![service],
        budget.into_iter().collect(),
    );
    reconcile_with(app, ctx, &transcript, task, n)
        .await
        .expect("reconcile reports the problem");
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
    let mut with_workers = minimal_app();
    with_workers.spec.workers.replicas = 1;
    let (deployment, service, budget) = applied_children(&with_workers);
    let worker = {
        let inputs = Inputs {
            config_hash: "x".into(),
            mongo: MongoWiring::for_app(&with_workers).unwrap(),
        };
        stamped(build::worker_deployment(&with_workers, &inputs).unwrap())
    };
    let mut app = with_workers.clone();
    app.spec.workers.replicas = 0;
    app.spec.replicas = 1;

    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::patch(DEPLOYMENT),
        Expect::delete(WORKER),
        Expect::delete(PDB),
        Expect::status(&app),
    ];
    let n = script.len();
    let (client, transcript, task) = mock_client(script);
    let ctx = context(
        client,
        vec![rolled_out(deployment, 2), worker],
        vec![service],
        budget.into_iter().collect(),
    );
    reconcile_with(app, ctx, &transcript, task, n)
        .await
        .expect("reconcile succeeds");
}

#[tokio::test]
async fn a_child_we_do_not_control_is_never_deleted() {
    let app = minimal_app();
    let (deployment, service, _) = applied_children(&app);
    // A Deployment named like our worker but owned by someone else.
    let mut foreign: Deployment = deployment.clone();
    foreign.metadata.name = Some("todos-worker".into());
    foreign.metadata.owner_references = None;

    let mut single = app.clone();
    single.spec.replicas = 1;
    let (deployment, service_single, _) = applied_children(&single);
    assert_eq!(service, service_single);
    // Ready for the first time (no event for that), and no DELETE of the foreign Deployment.
    let script = vec![Expect::get(SECRET, mongo_secret()), Expect::status(&single)];
    let n = script.len();
    let (client, transcript, task) = mock_client(script);
    let ctx = context(
        client,
        vec![rolled_out(deployment, 1), foreign],
        vec![service],
        vec![],
    );
    reconcile_with(single, ctx, &transcript, task, n)
        .await
        .expect("reconcile succeeds");
}

/// The status of `app` while half its pods are ready, computed at an earlier time.
fn half_ready_status(app: &MeteorApp, deployment: &Deployment) -> MeteorAppStatus {
    let earlier = Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap());
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
        &earlier,
    )
}

/// A rolled-out app becomes Ready: one status write. `was_available`: it had been available
/// before (its rollout history says so), so the return to Ready is also a Normal event.
async fn becomes_ready(was_available: bool) -> Transcript {
    let mut app = minimal_app();
    let (deployment, service, budget) = applied_children(&app);
    let mut status = half_ready_status(&app, &deployment);
    if was_available {
        let template = meteor_operator::plan::TierFacts::of(&deployment).template;
        status.rollout = Some(meteor_operator::api::RolloutStatus {
            available_template: template,
            ..Default::default()
        });
    }
    app.status = Some(status);
    let mut script = vec![Expect::get(SECRET, mongo_secret()), Expect::status(&app)];
    if was_available {
        script.push(Expect::event());
    }
    let n = script.len();
    let (client, transcript, task) = mock_client(script);
    let ctx = context(
        client,
        vec![rolled_out(deployment, 2)],
        vec![service],
        budget.into_iter().collect(),
    );
    reconcile_with(app, ctx, &transcript, task, n)
        .await
        .expect("reconcile succeeds");
    let status = transcript.body_of(Method::PATCH, STATUS);
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(condition(&status, "Ready")["reason"], "AllReplicasReady");
    assert_eq!(
        condition(&status, "Progressing")["reason"],
        "RolloutComplete"
    );
    // Degraded stayed False: its transition time is kept.
    assert_eq!(
        condition(&status, "Degraded")["lastTransitionTime"],
        "2023-11-14T22:13:20Z"
    );
    transcript
}

#[tokio::test]
async fn a_new_app_becomes_ready_with_one_status_write_and_no_event() {
    let transcript = becomes_ready(false).await;
    assert_eq!(transcript.writes().len(), 1, "{:?}", transcript.writes());
}

#[tokio::test]
async fn an_app_ready_again_says_so_once_in_an_event() {
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
    let n = script.len();
    let (client, transcript, task) = mock_client(script);
    let ctx = context(client, vec![], vec![], vec![]);
    let result = reconcile_with(minimal_app(), ctx, &transcript, task, n).await;
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
    let n = script.len();
    let (client, transcript, task) = mock_client(script);
    let ctx = context(client, vec![], vec![], vec![]);
    reconcile_with(minimal_app(), ctx, &transcript, task, n)
        .await
        .expect("a conflict is reported, not retried");
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
    let (deployment, service, budget) = applied_children(&app);
    let deployment = rolled_out(deployment, 2);
    let earlier = Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap());
    app.status = Some(status::compute(
        &app,
        &Verdict::Applied(RolloutState::AsSpecified),
        None,
        None,
        None,
        &earlier,
    ));
    let script = vec![Expect::get(SECRET, mongo_secret()), Expect::status(&app)];
    let n = script.len();
    let (client, transcript, task) = mock_client(script);
    let ctx = context(
        client,
        vec![deployment.clone()],
        vec![service.clone()],
        budget.clone().into_iter().collect(),
    );
    reconcile_with(app.clone(), ctx, &transcript, task, n)
        .await
        .expect("reconcile succeeds");

    // Reconcile 2 sees the status exactly as the API stored it (a JSON round trip of what was
    // applied) and must write nothing: no status, no second Ready event.
    let applied = transcript.body_of(Method::PATCH, STATUS);
    app.status = Some(serde_json::from_value(applied["status"].clone()).unwrap());
    let (client, transcript, task) = mock_client(vec![Expect::get(SECRET, mongo_secret())]);
    let ctx = context(
        client,
        vec![deployment],
        vec![service],
        budget.into_iter().collect(),
    );
    reconcile_with(app, ctx, &transcript, task, 1)
        .await
        .expect("reconcile succeeds");
    assert_eq!(transcript.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn an_app_being_deleted_is_left_to_garbage_collection() {
    let mut app = minimal_app();
    app.metadata.deletion_timestamp = Some(Time(
        k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
    ));
    let (client, transcript, task) = mock_client(vec![]);
    let ctx = context(client, vec![], vec![], vec![]);
    reconcile_with(app, ctx, &transcript, task, 0)
        .await
        .expect("nothing to do");
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
    let n = script.len();
    let (client, transcript, task) = mock_client(script);
    let ctx = context(client, vec![], vec![], vec![]);
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        reconcile_listed(std::sync::Arc::new(listed), ctx.clone()),
    )
    .await
    .unwrap();
    drop(ctx);
    result.expect("reported, not retried");
    let matched = task.await.unwrap();
    assert_eq!(matched, n, "{:?}", transcript.seen());
    let status = transcript.body_of(Method::PATCH, STATUS);
    assert_eq!(condition(&status, "Ready")["reason"], "InvalidSpec");
    let message = condition(&status, "Ready")["message"].as_str().unwrap();
    assert!(message.contains("spec.replicas"), "{message}");
    assert_eq!(status["status"]["observedGeneration"], 5);
    let event = transcript.event();
    assert_eq!(event["type"], "Warning");
}
