//! The managed-MongoDB tier's API traffic, against the scripted mock API server: credential
//! Secrets are created with POST only (never patched, never overwritten), a lost create race
//! keeps the winner's Secret, user-supplied Secrets are only read, and the StatefulSet is applied
//! last with the replicas the state machine allows.

mod support;

use http::{Method, StatusCode};
use meteor_operator::api::MeteorApp;
use meteor_operator::build::mongo as mongo_build;
use meteor_operator::controller::mongo as tier;
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
  routing: {{ proxy: {{ enabled: false }} }}
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

/// Apply of the Service, PDB and NetworkPolicy (observed in the caches, empty here).
fn tier_objects() -> Vec<Expect> {
    let svc = format!("{NS}/services/shop-mongo");
    let pdb = "/apis/policy/v1/namespaces/default/poddisruptionbudgets/shop-mongo";
    let np = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies/shop-mongo";
    vec![Expect::patch(&svc), Expect::patch(pdb), Expect::patch(np)]
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
    script.push(Expect::patch(&urls));
    script.push(Expect::patch(STS));
    let expected = script.len();
    let (client, transcript, task) = mock_client(script);
    let ctx = support::context(client, vec![], vec![], vec![]);

    let report = reconcile_tier(&ctx, &app(""))
        .await
        .expect("no API error")
        .expect("a managed app has a tier");
    drop(ctx);
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
    script.push(Expect::patch(&urls));
    script.push(Expect::patch(STS));
    let expected = script.len();
    let (client, transcript, task) = mock_client(script);
    let ctx = support::context(client, vec![], vec![], vec![]);

    reconcile_tier(&ctx, &app("")).await.expect("no API error");
    drop(ctx);
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
    script.push(Expect::patch(STS));
    let expected = script.len();
    let (client, transcript, task) = mock_client(script);
    let ctx = support::context(client, vec![], vec![], vec![]);

    let report = reconcile_tier(&ctx, &app("      secrets: { root: my-root }"))
        .await
        .expect("no API error")
        .unwrap();
    drop(ctx);
    assert_eq!(task.await.unwrap(), expected, "{:?}", transcript.unexpected);
    assert!(transcript.unexpected.lock().unwrap().is_empty());
    assert_eq!(report.readiness.reason, "Provisioning");
}

#[tokio::test]
async fn external_mongo_makes_no_requests() {
    let (client, transcript, task) = mock_client(vec![]);
    let ctx = support::context(client, vec![], vec![], vec![]);
    let external = support::minimal_app();
    assert!(reconcile_tier(&ctx, &external).await.unwrap().is_none());
    drop(ctx);
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

    // A new managed tier: each of its names is looked up once, in case another owner holds it.
    let mut script = vec![
        Expect::get(STS, not_found("statefulsets", "shop-mongo")),
        Expect::get(
            &format!("{NS}/services/shop-mongo"),
            not_found("services", "shop-mongo"),
        ),
        Expect::get(
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets/shop-mongo",
            not_found("poddisruptionbudgets", "shop-mongo"),
        ),
        Expect::get(
            "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies/shop-mongo",
            not_found("networkpolicies", "shop-mongo"),
        ),
    ];
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
    script.push(Expect::patch(&urls));
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

/// Every member is down: each call fails as the driver's would.
struct AllDown;

impl meteor_operator::mongo::replset::MongoAdmin for AllDown {
    async fn hello(&self, h: &str) -> Result<meteor_operator::mongo::replset::Hello, Down> {
        Err(down(h))
    }
    async fn authenticate(&self, h: &str, _: Who) -> Result<(), Down> {
        Err(down(h))
    }
    async fn get_config(&self, h: &str, _: Who) -> Result<Option<Config>, Down> {
        Err(down(h))
    }
    async fn status(
        &self,
        h: &str,
        _: Who,
    ) -> Result<meteor_operator::mongo::replset::ReplStatus, Down> {
        Err(down(h))
    }
    async fn initiate(&self, h: &str, _: Who, _: &Config) -> Result<(), Down> {
        Err(down(h))
    }
    async fn reconfig(&self, h: &str, _: Who, _: &Config) -> Result<(), Down> {
        Err(down(h))
    }
    async fn step_down(&self, h: &str, _: Who) -> Result<(), Down> {
        Err(down(h))
    }
    async fn existing_users(
        &self,
        h: &str,
        _: Who,
        _: &[String],
    ) -> Result<std::collections::BTreeSet<String>, Down> {
        Err(down(h))
    }
    async fn create_user(
        &self,
        h: &str,
        _: Who,
        _: &meteor_operator::mongo::replset::UserSpec,
    ) -> Result<(), Down> {
        Err(down(h))
    }
}

type Down = meteor_operator::mongo::replset::AdminError;
type Who = meteor_operator::mongo::replset::Identity;
type Config = meteor_operator::mongo::replset::ReplConfig;

fn down(h: &str) -> Down {
    Down::Unreachable {
        host: h.into(),
        message: "no route".into(),
    }
}

fn existing_secrets() -> Vec<Expect> {
    let existing = |name: &str, kv: &[(&str, &str)]| {
        Expect::get(
            &format!("{NS}/secrets/{name}"),
            (StatusCode::OK, secret_json(name, kv)),
        )
    };
    vec![
        existing(
            "shop-mongo-keyfile",
            &[("keyfile", "aKeyfileOfEnoughLength")],
        ),
        existing(
            "shop-mongo-root",
            &[("username", "root"), ("password", "r")],
        ),
        existing("shop-mongo-app", &[("username", "app"), ("password", "a")]),
        existing(
            "shop-mongo-oplog",
            &[("username", "oplog"), ("password", "o")],
        ),
    ]
}

fn existing_statefulset() -> k8s_openapi::api::apps::v1::StatefulSet {
    serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": { "name": "shop-mongo", "namespace": "default" },
            "spec": {
                "replicas": 3, "serviceName": "shop-mongo", "selector": {}, "template": {},
                "volumeClaimTemplates": [{ "metadata": { "name": "data" }, "spec": {
                    "storageClassName": "fast",
                    "resources": { "requests": { "storage": "10Gi" } } } }],
            }
    }))
    .unwrap()
}

fn pvc_list() -> (StatusCode, Value) {
    let pvc = |i: usize| {
        json!({ "metadata": { "name": format!("data-shop-mongo-{i}"), "namespace": "default" },
                "spec": { "storageClassName": "fast",
                          "resources": { "requests": { "storage": "10Gi" } } } })
    };
    (
        StatusCode::OK,
        json!({ "apiVersion": "v1", "kind": "PersistentVolumeClaimList", "metadata": {},
                "items": [pvc(0), pvc(1), pvc(2)] }),
    )
}

fn storage_class(allow: bool) -> (StatusCode, Value) {
    (
        StatusCode::OK,
        json!({ "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": { "name": "fast" }, "provisioner": "example.com/csi",
                "allowVolumeExpansion": allow }),
    )
}

/// A set seen with 3 members before, now asked for 1 member and 20Gi, with every member down.
fn resized_app() -> meteor_operator::api::MeteorApp {
    let mut a = app("      storage: { size: 20Gi, storageClassName: fast }");
    if let Some(m) = a.spec.mongo.managed.as_mut() {
        m.members = 1;
    }
    a.status = Some(meteor_operator::api::MeteorAppStatus {
        mongo: Some(meteor_operator::api::MongoStatus {
            members: 3,
            ..Default::default()
        }),
        ..Default::default()
    });
    a
}

async fn run_resize(
    allow: bool,
) -> (
    meteor_operator::status::mongo::TierReport,
    support::Transcript,
) {
    let mut script = existing_secrets();
    script.extend(tier_objects());
    let urls = format!("{NS}/secrets/shop-mongo-urls");
    script.push(Expect::patch(&urls));
    script.push(Expect::get(
        &format!("{NS}/persistentvolumeclaims"),
        pvc_list(),
    ));
    script.push(Expect::get(
        "/apis/storage.k8s.io/v1/storageclasses/fast",
        storage_class(allow),
    ));
    if allow {
        for i in 0..3 {
            script.push(Expect::patch(&format!(
                "{NS}/persistentvolumeclaims/data-shop-mongo-{i}"
            )));
        }
    }
    script.push(Expect::patch(STS));
    let expected = script.len();
    let (client, transcript, task) = mock_client(script);
    let mut statefulset = existing_statefulset();
    meteor_operator::controller::trim::statefulset(&mut statefulset);
    let ctx = meteor_operator::controller::Context::new(
        client,
        support::store_of(vec![]),
        support::store_of(vec![]),
        support::store_of(vec![]),
        std::sync::Arc::new(meteor_operator::controller::Metrics::default()),
    )
    .with_mongo_caches(
        support::store_of(vec![statefulset]),
        support::store_of(vec![]),
        support::store_of(vec![]),
    );
    let app = resized_app();
    let report = tier::reconcile_with(
        &ctx,
        &app,
        meteor_operator::build::mongo::desired(&app),
        |_, _| AllDown,
    )
    .await
    .expect("no API error")
    .unwrap();
    drop(ctx);
    assert_eq!(task.await.unwrap(), expected, "{:?}", transcript.unexpected);
    assert!(transcript.unexpected.lock().unwrap().is_empty());
    (report, transcript)
}

#[tokio::test]
async fn growth_patches_each_pvc_where_the_class_allows_it() {
    let (report, transcript) = run_resize(true).await;
    for i in 0..3 {
        let body = transcript.body_of(
            Method::PATCH,
            &format!("{NS}/persistentvolumeclaims/data-shop-mongo-{i}"),
        );
        assert_eq!(
            body,
            json!({ "spec": { "resources": { "requests": { "storage": "20Gi" } } } })
        );
    }
    let sts = transcript.body_of(Method::PATCH, STS);
    // The immutable claim template keeps the size the set was created with.
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "10Gi"
    );
    // Members unreachable: the config is unknown, so no scale-down to 1 on a guess.
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(report.readiness.reason, "Unreachable");
    assert_eq!(report.storage.as_ref().map(|s| s.reason), Some("Expanding"));
}

#[tokio::test]
async fn growth_is_refused_without_volume_expansion() {
    let (report, transcript) = run_resize(false).await;
    assert!(
        transcript
            .writes()
            .iter()
            .all(|w| !w.contains("persistentvolumeclaims"))
    );
    let storage = report.storage.expect("a storage condition");
    assert_eq!((storage.ready, storage.reason), (false, "ResizeRefused"));
    assert!(
        storage
            .message
            .contains("fast does not allow volume expansion"),
        "{}",
        storage.message
    );
}

#[tokio::test]
async fn a_settled_tier_reads_only_the_credential_secrets() {
    use kube::core::PartialObjectMetaExt;
    use meteor_operator::build::mongo::secrets::{Credentials, Placeholder};
    use meteor_operator::build::mongo::{TierOptions, desired_with, urls_secret};
    use meteor_operator::controller::stamped;
    let app = app("");
    let tier = desired_with(&app, &TierOptions::default(), &mut Placeholder).unwrap();
    let user = |name: &str, password: &str| Credentials {
        username: name.into(),
        password: password.into(),
    };
    // What earlier reconciles applied: in the caches, the URLs Secret by its metadata only.
    let urls = stamped(urls_secret(&app, &user("app", "a"), &user("oplog", "o")));
    let mut statefulset = tier.statefulset.clone();
    meteor_operator::controller::trim::statefulset(&mut statefulset);
    let mut script = existing_secrets();
    // The StatefulSet gets the replicas the (unreachable) set allows: its one write here.
    script.push(Expect::patch(STS));
    let expected = script.len();
    let (client, transcript, task) = mock_client(script);
    let ctx = meteor_operator::controller::Context::new(
        client,
        support::store_of(vec![]),
        support::store_of(vec![stamped(tier.service)]),
        support::store_of(vec![stamped(tier.pdb)]),
        std::sync::Arc::new(meteor_operator::controller::Metrics::default()),
    )
    .with_mongo_caches(
        support::store_of(vec![statefulset]),
        support::store_of(vec![stamped(tier.network_policy)]),
        support::store_of(vec![urls.metadata.into_response_partial()]),
    );
    let report = tier::reconcile_with(
        &ctx,
        &app,
        meteor_operator::build::mongo::desired(&app),
        |_, _| AllDown,
    )
    .await
    .expect("no API error")
    .unwrap();
    drop(ctx);
    assert_eq!(task.await.unwrap(), expected, "{:?}", transcript.unexpected);
    assert!(transcript.unexpected.lock().unwrap().is_empty());
    // No GET of the Service, PDB, NetworkPolicy, URLs Secret or StatefulSet, no PVC list (the
    // size is the claim template's).
    let gets: Vec<String> = transcript
        .seen()
        .into_iter()
        .filter(|s| s.method == Method::GET)
        .map(|s| s.path)
        .collect();
    assert_eq!(gets.len(), 4, "{gets:?}");
    assert!(
        gets.iter().all(|p| p.contains("/secrets/shop-mongo-")),
        "{gets:?}"
    );
    // The StatefulSet was found in the cache, so the replica-set step ran (every member down).
    assert_eq!(report.readiness.message, "waiting for mongod pods to start");
}

/// The tier's reconcile of `app`, with the tier built from `app` as a reconcile builds it.
async fn reconcile_tier(
    ctx: &meteor_operator::controller::Context,
    app: &MeteorApp,
) -> Result<Option<meteor_operator::status::mongo::TierReport>, kube::Error> {
    tier::reconcile(ctx, app, mongo_build::desired(app)).await
}
