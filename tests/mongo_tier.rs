//! The managed-MongoDB tier's API traffic, against the scripted mock API server: credential
//! Secrets are created with POST only (never patched, never overwritten), a lost create race
//! keeps the winner's Secret, user-supplied Secrets are only read, and the StatefulSet is applied
//! last with the replicas the state machine allows.

mod support;

use http::{Method, StatusCode};
use meteor_operator::mongo::build::TierOptions;
use meteor_operator::mongo::tier;
use serde_json::{Value, json};
use support::{Expect, Reply, app_from_yaml, mock_client, not_found, secret_json};

const NS: &str = "/api/v1/namespaces/default";
const STS: &str = "/apis/apps/v1/namespaces/default/statefulsets/shop-mongo";

fn app(extra: &str) -> meteor_operator::api::MeteorApp {
    app_from_yaml(&format!(
        r#"
apiVersion: meteorfleet.dev/v1alpha1
kind: MeteorApp
metadata: {{ name: shop }}
spec:
  image: ghcr.io/example/shop:1.0.0
  rootUrl: https://shop.example.com
  mongo:
    managed:
      members: 3
{extra}
"#
    ))
}

fn post(path: &str) -> Expect {
    Expect {
        method: Method::POST,
        path: path.into(),
        reply: Reply::Echo(|_| {}),
    }
}

fn conflict() -> (StatusCode, Value) {
    (
        StatusCode::CONFLICT,
        json!({ "kind": "Status", "status": "Failure", "reason": "AlreadyExists", "code": 409,
                "message": "secrets already exists" }),
    )
}

/// GET then apply of the Service, PDB and NetworkPolicy, none existing.
fn tier_objects() -> Vec<Expect> {
    let svc = format!("{NS}/services/shop-mongo");
    let pdb = "/apis/policy/v1/namespaces/default/poddisruptionbudgets/shop-mongo";
    let np = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies/shop-mongo";
    vec![
        Expect::get(&svc, not_found("services", "shop-mongo")),
        Expect::patch(&svc),
        Expect::get(pdb, not_found("poddisruptionbudgets", "shop-mongo")),
        Expect::patch(pdb),
        Expect::get(np, not_found("networkpolicies", "shop-mongo")),
        Expect::patch(np),
    ]
}

fn decode(v: &Value) -> String {
    use base64::Engine;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn first_reconcile_creates_secrets_once_and_the_tier() {
    let mut script = Vec::new();
    for kind in ["keyfile", "root", "app", "oplog"] {
        let name = format!("shop-mongo-{kind}");
        script.push(Expect::get(
            &format!("{NS}/secrets/{name}"),
            not_found("secrets", &name),
        ));
        script.push(post(&format!("{NS}/secrets")));
    }
    script.extend(tier_objects());
    let urls = format!("{NS}/secrets/shop-mongo-urls");
    script.push(Expect::get(&urls, not_found("secrets", "shop-mongo-urls")));
    script.push(Expect::patch(&urls));
    script.push(Expect::get(STS, not_found("statefulsets", "shop-mongo")));
    script.push(Expect::patch(STS));
    let expected = script.len();
    let (client, transcript, task) = mock_client(script);

    let report = tier::reconcile(&client, &app(""), &TierOptions::default())
        .await
        .expect("no API error")
        .expect("a managed app has a tier");
    drop(client);
    let matched = task.await.unwrap();
    assert!(
        transcript.unexpected.lock().unwrap().is_empty(),
        "{:?}",
        transcript.unexpected
    );
    assert_eq!(matched, expected);

    assert_eq!(report.readiness.reason, "Provisioning");
    assert!(!report.readiness.ready);
    assert_eq!(report.writes, 4 + 3 + 1 + 1);

    // Credential Secrets were POSTed with fresh random passwords, and only POSTed.
    let posts: Vec<Value> = transcript
        .seen()
        .into_iter()
        .filter(|s| s.method == Method::POST)
        .map(|s| s.body)
        .collect();
    assert_eq!(posts.len(), 4);
    let app_pw = decode(&posts[2]["data"]["password"]);
    assert_eq!(app_pw.len(), 48);
    assert_ne!(app_pw, decode(&posts[1]["data"]["password"]));
    assert!(
        transcript
            .writes()
            .iter()
            .all(|w| !w.starts_with("PATCH /api/v1/namespaces/default/secrets/shop-mongo-app"))
    );
    // Retain by default: no owner, so they outlive the MeteorApp.
    assert!(
        posts
            .iter()
            .all(|p| p["metadata"].get("ownerReferences").is_none())
    );

    // The URLs Secret carries the password just generated, never the pod spec.
    let urls_body = transcript.body_of(Method::PATCH, &urls);
    let mongo_url = decode(&urls_body["data"]["MONGO_URL"]);
    assert!(
        mongo_url.starts_with(&format!("mongodb://app:{app_pw}@shop-mongo-0.")),
        "{mongo_url}"
    );
    assert!(
        mongo_url.ends_with("/shop?replicaSet=shop&authSource=admin"),
        "{mongo_url}"
    );

    let sts = transcript.body_of(Method::PATCH, STS);
    assert_eq!(sts["spec"]["replicas"], 3);
}

#[tokio::test]
async fn existing_and_racing_secrets_are_never_overwritten() {
    let mut script = Vec::new();
    let existing = |name: &str, kv: &[(&str, &str)]| {
        Expect::get(
            &format!("{NS}/secrets/{name}"),
            (StatusCode::OK, secret_json(name, kv)),
        )
    };
    script.push(existing(
        "shop-mongo-keyfile",
        &[("keyfile", "aKeyfileOfEnoughLength")],
    ));
    script.push(existing(
        "shop-mongo-root",
        &[("username", "root"), ("password", "old-root")],
    ));
    // Another writer creates the app Secret between our GET and POST: theirs wins.
    script.push(Expect::get(
        &format!("{NS}/secrets/shop-mongo-app"),
        not_found("secrets", "shop-mongo-app"),
    ));
    script.push(Expect::get(&format!("{NS}/secrets"), conflict()));
    script.last_mut().unwrap().method = Method::POST;
    script.push(existing(
        "shop-mongo-app",
        &[("username", "app"), ("password", "winner")],
    ));
    script.push(existing(
        "shop-mongo-oplog",
        &[("username", "oplog"), ("password", "op")],
    ));
    script.extend(tier_objects());
    let urls = format!("{NS}/secrets/shop-mongo-urls");
    script.push(Expect::get(&urls, not_found("secrets", "shop-mongo-urls")));
    script.push(Expect::patch(&urls));
    script.push(Expect::get(STS, not_found("statefulsets", "shop-mongo")));
    script.push(Expect::patch(STS));
    let expected = script.len();
    let (client, transcript, task) = mock_client(script);

    tier::reconcile(&client, &app(""), &TierOptions::default())
        .await
        .expect("no API error");
    drop(client);
    assert_eq!(task.await.unwrap(), expected, "{:?}", transcript.unexpected);
    let mongo_url = decode(&transcript.body_of(Method::PATCH, &urls)["data"]["MONGO_URL"]);
    assert!(
        mongo_url.starts_with("mongodb://app:winner@"),
        "{mongo_url}"
    );
    let writes = transcript.writes();
    assert_eq!(
        writes
            .iter()
            .filter(|w| w.contains("/secrets/shop-mongo-") && !w.contains("urls"))
            .count(),
        0,
        "{writes:?}"
    );
}

#[tokio::test]
async fn a_missing_user_supplied_secret_is_reported_not_generated() {
    let mut script = vec![
        Expect::get(
            &format!("{NS}/secrets/shop-mongo-keyfile"),
            not_found("secrets", "shop-mongo-keyfile"),
        ),
        post(&format!("{NS}/secrets")),
        Expect::get(
            &format!("{NS}/secrets/my-root"),
            not_found("secrets", "my-root"),
        ),
    ];
    script.extend(tier_objects());
    // No credentials: no URLs Secret, and no StatefulSet scale-down on a guess.
    script.push(Expect::get(STS, not_found("statefulsets", "shop-mongo")));
    script.push(Expect::patch(STS));
    let expected = script.len();
    let (client, transcript, task) = mock_client(script);

    let report = tier::reconcile(
        &client,
        &app("      secrets: { root: my-root }"),
        &TierOptions::default(),
    )
    .await
    .expect("no API error")
    .unwrap();
    drop(client);
    assert_eq!(task.await.unwrap(), expected, "{:?}", transcript.unexpected);
    assert!(transcript.unexpected.lock().unwrap().is_empty());
    assert_eq!(report.readiness.reason, "Provisioning");
}

#[tokio::test]
async fn external_mongo_makes_no_requests() {
    let (client, transcript, task) = mock_client(vec![]);
    let external = support::minimal_app();
    assert!(
        tier::reconcile(&client, &external, &TierOptions::default())
            .await
            .unwrap()
            .is_none()
    );
    drop(client);
    assert_eq!(task.await.unwrap(), 0);
    assert!(transcript.seen().is_empty());
}

#[tokio::test]
async fn reconcile_holds_ready_until_mongo_is_ready() {
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use meteor_operator::build::{self, Inputs, MongoWiring};
    use meteor_operator::controller::stamped;
    use meteor_operator::references::{self, Fetched};

    let app = app("");
    // The app tier is already rolled out and unchanged: the core alone would say Ready.
    let inputs = Inputs {
        config_hash: references::resolve(&app, &Fetched::new()).unwrap(),
        mongo: MongoWiring::for_app(&app).unwrap(),
    };
    let desired = build::desired(&app, &inputs);
    let mut deployment = stamped(desired.app);
    deployment.metadata.generation = Some(1);
    deployment.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(2),
        ready_replicas: Some(2),
        available_replicas: Some(2),
        updated_replicas: Some(2),
        ..DeploymentStatus::default()
    });
    let budgets = desired.disruption_budget.map(stamped).into_iter().collect();

    let mut script = Vec::new();
    for kind in ["keyfile", "root", "app", "oplog"] {
        let name = format!("shop-mongo-{kind}");
        script.push(Expect::get(
            &format!("{NS}/secrets/{name}"),
            not_found("secrets", &name),
        ));
        script.push(post(&format!("{NS}/secrets")));
    }
    script.extend(tier_objects());
    let urls = format!("{NS}/secrets/shop-mongo-urls");
    script.push(Expect::get(&urls, not_found("secrets", "shop-mongo-urls")));
    script.push(Expect::patch(&urls));
    script.push(Expect::get(STS, not_found("statefulsets", "shop-mongo")));
    script.push(Expect::patch(STS));
    script.push(Expect::status(&app));
    let n = script.len();
    let (client, transcript, task) = mock_client(script);
    let ctx = support::context(
        client,
        vec![deployment],
        vec![stamped(desired.service)],
        budgets,
    );
    let action = support::reconcile_with(app.clone(), ctx, &transcript, task, n)
        .await
        .expect("reconcile succeeds");
    // The replica set asks to be looked at again soon, not at the 5-minute resync.
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(10))
    );

    let path = "/apis/meteorfleet.dev/v1alpha1/namespaces/default/meteorapps/shop/status";
    let status = transcript.body_of(Method::PATCH, path);
    let find = |t: &str| {
        status["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .cloned()
            .unwrap_or_else(|| panic!("no {t} in {status}"))
    };
    assert_eq!(find("MongoReady")["status"], "False");
    assert_eq!(find("MongoReady")["reason"], "Provisioning");
    assert_eq!(find("Ready")["status"], "False");
    assert_eq!(find("Ready")["reason"], "MongoNotReady");
}
