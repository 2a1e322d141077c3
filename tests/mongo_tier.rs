//! The managed-MongoDB tier's API traffic, against the scripted mock API server: credential
//! Secrets are created with POST only (never patched, never overwritten), a lost create race
//! keeps the winner's Secret, user-supplied Secrets are only read, and the StatefulSet is applied
//! last with the replicas the state machine allows.

mod support;

use http::{Method, StatusCode};
use meteor_operator::api::MeteorApp;
use meteor_operator::build::mongo as mongo_build;
use meteor_operator::controller::cached::Cached;
use meteor_operator::controller::mongo as tier;
use meteor_operator::status::mongo::TierReport;
use serde_json::{Value, json};
use support::cluster::Cluster;
use support::{Expect, Reply, Transcript, not_found, secret_json};

const NS: &str = "/api/v1/namespaces/default";
const STS: &str = "/apis/apps/v1/namespaces/default/statefulsets/shop-mongo";
const URLS: &str = "/api/v1/namespaces/default/secrets/shop-mongo-urls";

/// `shop`, with a managed replica set of three members (`spec.mongo.managed` as `managed`).
fn app(managed: &str) -> MeteorApp {
    support::app().named("shop").mongo_managed(managed).build()
}

/// `shop` with three members and every default.
fn shop() -> MeteorApp {
    support::app().named("shop").managed_mongo().build()
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

/// A new tier's writes: each credential Secret looked up and created, the tier's objects
/// applied, then the URLs Secret and the StatefulSet.
fn new_tier() -> Vec<Expect> {
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
    script.push(Expect::patch(URLS));
    script.push(Expect::patch(STS));
    script
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
    let (report, transcript) = reconcile_tier(Cluster::empty(), shop(), new_tier()).await;
    let report = report
        .expect("no API error")
        .expect("a managed app has a tier");

    assert_eq!(report.readiness.reason, "Provisioning");
    assert!(!report.readiness.ready);
    assert_eq!(report.writes, 4 + 3 + 1 + 1);

    // Credential Secrets were POSTed with fresh random passwords, and only POSTed.
    let posts = transcript.bodies(Method::POST);
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
    let urls_body = transcript.body_of(Method::PATCH, URLS);
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
    script.push(Expect::patch(URLS));
    script.push(Expect::patch(STS));
    let (report, transcript) = reconcile_tier(Cluster::empty(), shop(), script).await;
    report.expect("no API error");
    let mongo_url = decode(&transcript.body_of(Method::PATCH, URLS)["data"]["MONGO_URL"]);
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
    let app = app("{ members: 3, secrets: { root: my-root } }");
    let (report, _) = reconcile_tier(Cluster::empty(), app, script).await;
    let report = report.expect("no API error").unwrap();
    assert_eq!(report.readiness.reason, "Provisioning");
}

#[tokio::test]
async fn external_mongo_makes_no_requests() {
    let external = support::minimal_app();
    let (report, transcript) = reconcile_tier(Cluster::empty(), external, vec![]).await;
    assert!(report.unwrap().is_none());
    assert!(transcript.seen().is_empty());
}

#[tokio::test]
async fn reconcile_holds_ready_until_mongo_is_ready() {
    let app = shop();
    // The app tier is already rolled out and unchanged: the core alone would say Ready.
    let cluster = Cluster::applied(&app, 0);

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
    script.extend(new_tier());
    script.push(Expect::status(&app));
    let (action, transcript) = cluster.run(app.clone(), script).await;
    let action = action.expect("reconcile succeeds");
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
    async fn oplog_window(&self, h: &str, _: Who) -> Result<Option<i64>, Down> {
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

/// Member `i`'s volume of 10Gi, as the StatefulSet made it from its claim template (its labels).
fn pvc(i: usize) -> (StatusCode, Value) {
    (
        StatusCode::OK,
        json!({ "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": { "name": format!("data-shop-mongo-{i}"), "namespace": "default",
                              "labels": { "app.kubernetes.io/name": "meteor",
                                          "app.kubernetes.io/instance": "shop",
                                          "app.kubernetes.io/component": "mongo" } },
                "spec": { "storageClassName": "fast",
                          "resources": { "requests": { "storage": "10Gi" } } } }),
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
fn resized_app() -> MeteorApp {
    support::app()
        .named("shop")
        .mongo_managed("{ members: 1, storage: { size: 20Gi, storageClassName: fast } }")
        .status(meteor_operator::api::MeteorAppStatus {
            mongo: Some(meteor_operator::api::MongoStatus {
                members: 3,
                ..Default::default()
            }),
            ..Default::default()
        })
        .build()
}

async fn run_resize(allow: bool) -> (TierReport, Transcript) {
    let mut script = existing_secrets();
    script.extend(tier_objects());
    script.push(Expect::patch(URLS));
    // The members' volumes by name, until one is missing (the set had 3 members): no LIST.
    for i in 0..3 {
        script.push(Expect::get(
            &format!("{NS}/persistentvolumeclaims/data-shop-mongo-{i}"),
            pvc(i),
        ));
    }
    script.push(Expect::missing(&format!(
        "{NS}/persistentvolumeclaims/data-shop-mongo-3"
    )));
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
    let statefulset = Cached::new(existing_statefulset()).object();
    let cluster = Cluster {
        statefulsets: vec![statefulset],
        ..Cluster::default()
    };
    let (report, transcript) = reconcile_tier_all_down(cluster, resized_app(), script).await;
    (report.expect("no API error").unwrap(), transcript)
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
    let app = shop();
    let tier = desired_with(&app, &TierOptions::default(), &mut Placeholder).unwrap();
    let user = |name: &str, password: &str| Credentials {
        username: name.into(),
        password: password.into(),
    };
    // What earlier reconciles applied: in the caches, the URLs Secret by its metadata only.
    let urls = stamped(urls_secret(&app, &user("app", "a"), &user("oplog", "o")));
    let statefulset = Cached::new(tier.statefulset.clone()).object();
    let mut script = existing_secrets();
    // The StatefulSet gets the replicas the (unreachable) set allows: its one write here.
    script.push(Expect::patch(STS));
    let cluster = Cluster {
        services: vec![stamped(tier.service)],
        budgets: vec![stamped(tier.pdb)],
        statefulsets: vec![statefulset],
        network_policies: vec![stamped(tier.network_policy)],
        secrets: vec![urls.metadata.into_response_partial()],
        ..Cluster::default()
    };
    let (report, transcript) = reconcile_tier_all_down(cluster, app, script).await;
    let report = report.expect("no API error").unwrap();
    // No GET of the Service, PDB, NetworkPolicy, URLs Secret or StatefulSet, no PVC list (the
    // size is the claim template's).
    let gets = transcript.paths(Method::GET);
    assert_eq!(gets.len(), 4, "{gets:?}");
    assert!(
        gets.iter().all(|p| p.contains("/secrets/shop-mongo-")),
        "{gets:?}"
    );
    // The StatefulSet was found in the cache, so the replica-set step ran (every member down).
    assert_eq!(report.readiness.message, "waiting for mongod pods to start");
}

/// What the tier's reconcile returned, and the requests it made.
type TierVisit = (Result<Option<TierReport>, kube::Error>, Transcript);

/// The tier's reconcile of `app` over `cluster` (the tier built from `app` as a reconcile builds
/// it), checked to have made exactly the requests of `script`.
async fn reconcile_tier(cluster: Cluster, app: MeteorApp, script: Vec<Expect>) -> TierVisit {
    let run = |ctx: std::sync::Arc<_>| async move {
        tier::reconcile(&ctx, &app, mongo_build::desired(&app)).await
    };
    cluster.visit(script, run).await
}

/// [`reconcile_tier`] with every member of the replica set down.
async fn reconcile_tier_all_down(
    cluster: Cluster,
    app: MeteorApp,
    script: Vec<Expect>,
) -> TierVisit {
    let run = |ctx: std::sync::Arc<_>| async move {
        let desired = mongo_build::desired(&app);
        tier::reconcile_with(&ctx, &app, desired, |_, _| AllDown).await
    };
    cluster.visit(script, run).await
}
