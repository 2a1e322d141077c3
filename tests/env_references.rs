//! Secrets referenced from `spec.env` against the scripted mock API server: a missing one stops
//! the reconcile before any child is written, and a changed value rolls the app Deployment while
//! a change to another key of the same Secret writes nothing.

mod support;

use http::{Method, StatusCode};
use meteor_operator::api::MeteorApp;
use support::cluster::Cluster;
use support::*;

const MONGO: &str = "/api/v1/namespaces/default/secrets/todos-mongo";
const API: &str = "/api/v1/namespaces/default/secrets/todos-api";
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/default/deployments/todos";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
const MONGO_URL: &str = "mongodb://db-0,db-1/todos?replicaSet=rs0";
const HASH: &str = "meteorfleet.dev/config-hash";

/// The minimal app with `TOKEN` from key `token` of Secret `todos-api` as its third variable.
fn app_with_token() -> TestApp {
    app().spec(|spec| {
        spec.env = serde_json::from_value(serde_json::json!([
            {"name": "A", "value": "a"},
            {"name": "B", "value": "b"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "todos-api", "key": "token"}}},
        ]))
        .unwrap()
    })
}

fn secret(name: &str, data: &[(&str, &str)]) -> (StatusCode, serde_json::Value) {
    (StatusCode::OK, secret_json(name, data))
}

/// The children a previous reconcile applied when `todos-api` held `api`.
fn applied_reading(app: &MeteorApp, api: &[(&str, &str)]) -> Cluster {
    Cluster::from_desired(app, desired_children_reading(app, &[("todos-api", api)]), 0)
}

fn template_hash(deployment: &serde_json::Value) -> String {
    deployment["spec"]["template"]["metadata"]["annotations"][HASH]
        .as_str()
        .expect("the pod template carries the config hash")
        .to_string()
}

#[tokio::test]
async fn a_missing_env_secret_is_degraded_with_its_field_and_no_child_is_written() {
    // The app runs as it was before the env reference was added.
    let cluster = Cluster::applied(&minimal_app(), 0);
    let app = app_with_token()
        .settled_over(&cluster.deployments[0])
        .generation(2)
        .build();

    let script = vec![
        Expect::get(MONGO, secret("todos-mongo", &[("MONGO_URL", MONGO_URL)])),
        Expect::get(API, not_found("secrets", "todos-api")),
        Expect::status(&app),
        Expect::event(),
    ];
    let (result, transcript) = cluster.run(app, script).await;
    result.expect("a missing Secret is reported, not retried as an error");

    let message = "spec.env[2].valueFrom.secretKeyRef: Secret default/todos-api not found";
    let status = transcript.body_of(Method::PATCH, STATUS);
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "ReferenceNotFound");
    assert_eq!(degraded["message"], message);
    // The running pods still serve: Ready stays about serving, the problem is in Degraded.
    assert_eq!(condition(&status, "Ready")["status"], "True");
    // The running pods are still there and counted.
    assert_eq!(status["status"]["readyReplicas"], 2);

    let event = transcript.body_of(Method::POST, EVENTS);
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "ReferenceNotFound");
    assert_eq!(event["note"], message);
    // No Deployment, Service or PDB was written: only the status and the event.
    assert_eq!(
        transcript.writes(),
        vec![format!("PATCH {STATUS}"), format!("POST {EVENTS}")]
    );
}

#[tokio::test]
async fn a_changed_env_secret_value_rolls_the_app_deployment() {
    let app = app_with_token();
    let cluster = applied_reading(&app.clone().build(), &[("token", "one"), ("other", "x")]);
    let deployment = &cluster.deployments[0];
    let before = template_hash(&serde_json::to_value(deployment).unwrap());
    let app = app.settled_over(deployment).build();

    let script = vec![
        Expect::get(MONGO, secret("todos-mongo", &[("MONGO_URL", MONGO_URL)])),
        Expect::get(
            API,
            secret("todos-api", &[("token", "two"), ("other", "x")]),
        ),
        // Only the app Deployment depends on the referenced data.
        Expect::patch(DEPLOYMENT),
        Expect::status(&app),
    ];
    let transcript = cluster.reconcile(app, script).await;
    let after = template_hash(&transcript.body_of(Method::PATCH, DEPLOYMENT));
    assert_ne!(after, before, "a new config hash rolls the pods");
}

#[tokio::test]
async fn another_key_of_the_env_secret_changing_writes_nothing_and_each_secret_is_read_once() {
    // The Mongo Secret is also read whole through envFrom: still one GET for it.
    let app = app_with_token().spec(|spec| {
        spec.env_from = serde_json::from_value(serde_json::json!([
            {"secretRef": {"name": "todos-mongo"}},
        ]))
        .unwrap()
    });
    let cluster = applied_reading(&app.clone().build(), &[("token", "one"), ("other", "x")]);
    let app = app.settled_over(&cluster.deployments[0]).build();

    let script = vec![
        Expect::get(MONGO, secret("todos-mongo", &[("MONGO_URL", MONGO_URL)])),
        Expect::get(
            API,
            secret("todos-api", &[("token", "one"), ("other", "y")]),
        ),
    ];
    let transcript = cluster.reconcile(app, script).await;
    assert_eq!(transcript.writes(), Vec::<String>::new());
}
