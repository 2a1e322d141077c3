//! Secrets referenced from `spec.env` against the scripted mock API server: a missing one stops
//! the reconcile before any child is written, and a changed value rolls the app Deployment while
//! a change to another key of the same Secret writes nothing.

mod support;

use http::{Method, StatusCode};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use meteor_operator::api::MeteorApp;
use meteor_operator::build::{self, Inputs, MongoWiring};
use meteor_operator::controller::stamped;
use meteor_operator::references::{self, Fetched, SourceKind};
use std::collections::BTreeMap;
use support::*;

const MONGO: &str = "/api/v1/namespaces/default/secrets/todos-mongo";
const API: &str = "/api/v1/namespaces/default/secrets/todos-api";
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/default/deployments/todos";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
const MONGO_URL: &str = "mongodb://db-0,db-1/todos?replicaSet=rs0";
const HASH: &str = "meteorfleet.dev/config-hash";

/// The minimal app with `TOKEN` from key `token` of Secret `todos-api` as its third variable.
fn app_with_token() -> MeteorApp {
    let mut app = minimal_app();
    app.spec.env = serde_json::from_value(serde_json::json!([
        {"name": "A", "value": "a"},
        {"name": "B", "value": "b"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "todos-api", "key": "token"}}},
    ]))
    .unwrap();
    app
}

fn secret(name: &str, data: &[(&str, &str)]) -> (StatusCode, serde_json::Value) {
    (StatusCode::OK, secret_json(name, data))
}

/// The children a previous reconcile applied when `todos-api` held `api` (None: not read).
fn applied_children(
    app: &MeteorApp,
    api: Option<&[(&str, &str)]>,
) -> (Deployment, Service, Option<PodDisruptionBudget>) {
    let bytes = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect::<BTreeMap<_, _>>()
    };
    let mut fetched: Fetched = BTreeMap::from([(
        (SourceKind::Secret, "todos-mongo".to_string()),
        Some(bytes(&[("MONGO_URL", MONGO_URL)])),
    )]);
    if let Some(api) = api {
        fetched.insert((SourceKind::Secret, "todos-api".into()), Some(bytes(api)));
    }
    let inputs = Inputs {
        config_hash: references::resolve(app, &fetched).unwrap(),
        mongo: MongoWiring::for_app(app).unwrap(),
    };
    let desired = build::desired(app, &inputs);
    (
        rolled_out(stamped(desired.app), 2),
        stamped(desired.service),
        desired.disruption_budget.map(stamped),
    )
}

/// `app` with the status a previous reconcile wrote for `deployment`.
fn with_settled_status(mut app: MeteorApp, deployment: &Deployment) -> MeteorApp {
    let earlier = Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap());
    app.status = Some(support::settled(&app, deployment, &earlier));
    app
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
    let (deployment, service, budget) = applied_children(&minimal_app(), None);
    let mut app = with_settled_status(app_with_token(), &deployment);
    app.metadata.generation = Some(2);

    let script = vec![
        Expect::get(MONGO, secret("todos-mongo", &[("MONGO_URL", MONGO_URL)])),
        Expect::get(API, not_found("secrets", "todos-api")),
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
        .expect("a missing Secret is reported, not retried as an error");

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
    let (deployment, service, budget) =
        applied_children(&app, Some(&[("token", "one"), ("other", "x")]));
    let before = template_hash(&serde_json::to_value(&deployment).unwrap());
    let app = with_settled_status(app, &deployment);

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
        .expect("reconcile succeeds");
    let after = template_hash(&transcript.body_of(Method::PATCH, DEPLOYMENT));
    assert_ne!(after, before, "a new config hash rolls the pods");
}

#[tokio::test]
async fn another_key_of_the_env_secret_changing_writes_nothing_and_each_secret_is_read_once() {
    let mut app = app_with_token();
    // The Mongo Secret is also read whole through envFrom: still one GET for it.
    app.spec.env_from = serde_json::from_value(serde_json::json!([
        {"secretRef": {"name": "todos-mongo"}},
    ]))
    .unwrap();
    let (deployment, service, budget) =
        applied_children(&app, Some(&[("token", "one"), ("other", "x")]));
    let app = with_settled_status(app, &deployment);

    let script = vec![
        Expect::get(MONGO, secret("todos-mongo", &[("MONGO_URL", MONGO_URL)])),
        Expect::get(
            API,
            secret("todos-api", &[("token", "one"), ("other", "y")]),
        ),
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
        .expect("reconcile succeeds");
    assert_eq!(transcript.writes(), Vec::<String>::new());
}
