//! Test fixtures and a scripted mock API server (kube-rs's tower-test pattern): each expected
//! request is matched in order on method and path, its body can be inspected, and any request
//! beyond the script is recorded as unexpected, which is how "no extra writes" is asserted.
//! Every request is also checked against the chart's RBAC ([`rbac`]).

#![allow(dead_code)]

pub mod app;
pub mod cluster;
pub mod rbac;

#[allow(unused_imports)]
pub use app::{TestApp, app};

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::client::Body;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Client, Resource};
use meteor_operator::api::MeteorApp;
use meteor_operator::controller::cached::{Cache, Cached, Compact};
use meteor_operator::controller::{Context, Metrics};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const UID: &str = "5b1c8f3e-0000-4000-8000-000000000001";

/// A MeteorApp as the API server would hand it to the controller.
pub fn app_from_yaml(yaml: &str) -> MeteorApp {
    let mut app: MeteorApp = serde_norway::from_str(yaml).expect("fixture parses");
    app.metadata
        .namespace
        .get_or_insert_with(|| "default".into());
    app.metadata.uid = Some(UID.into());
    app.metadata.generation = Some(1);
    app
}

/// The core's fixture: the app tier alone, without the routing proxy (`tests/routing_api.rs`
/// covers the proxy, which is on by default).
pub fn minimal_app() -> MeteorApp {
    app_from_yaml(
        r#"
apiVersion: meteorfleet.dev/v1alpha1
kind: MeteorApp
metadata: { name: todos }
spec:
  image: ghcr.io/example/todos:1.0.0
  rootUrl: https://todos.example.com
  mongo: { external: { url: { name: todos-mongo, key: MONGO_URL } } }
  routing: { proxy: { enabled: false } }
"#,
    )
}

/// The minimal app as a user writes it: routing as defaulted (the proxy on).
pub fn default_app() -> MeteorApp {
    let mut app = minimal_app();
    app.spec.routing = Default::default();
    app
}

/// `deployment` as its controller reports it once `replicas` pods of generation 1 are available.
pub fn rolled_out(mut deployment: Deployment, replicas: i32) -> Deployment {
    deployment.metadata.generation = Some(1);
    let uid = format!(
        "uid-{}",
        deployment.metadata.name.as_deref().unwrap_or_default()
    );
    deployment.metadata.uid.get_or_insert(uid);
    deployment.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(replicas),
        ready_replicas: Some(replicas),
        available_replicas: Some(replicas),
        updated_replicas: Some(replicas),
        ..DeploymentStatus::default()
    });
    deployment
}

/// A rollout of `deployment`'s template that gave up: two old pods still serve beside one new pod
/// that never became available, and the progress deadline passed.
pub fn stuck(deployment: Deployment) -> Deployment {
    let mut deployment = rolled_out(deployment, 2);
    let s = deployment.status.as_mut().unwrap();
    s.replicas = Some(3);
    s.updated_replicas = Some(1);
    s.conditions = Some(vec![k8s_openapi::api::apps::v1::DeploymentCondition {
        type_: "Progressing".into(),
        status: "False".into(),
        reason: Some("ProgressDeadlineExceeded".into()),
        ..Default::default()
    }]);
    deployment
}

/// A Secret as the API returns it.
pub fn secret_json(name: &str, data: &[(&str, &str)]) -> serde_json::Value {
    use base64::Engine;
    let data: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                base64::engine::general_purpose::STANDARD.encode(v).into(),
            )
        })
        .collect();
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": name, "namespace": "default" },
        "data": data,
    })
}

pub fn not_found(kind: &str, name: &str) -> (StatusCode, serde_json::Value) {
    (
        StatusCode::NOT_FOUND,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "message": format!("{kind} \"{name}\" not found"), "reason": "NotFound", "code": 404,
        }),
    )
}

/// A ready cache of children holding `objects`, each kept as the operator's watch keeps it.
pub fn cache_of<K: Compact>(objects: Vec<K>) -> Cache<K> {
    store_of(objects.into_iter().map(Cached::new).collect())
}

/// Ready, filled caches holding `objects`.
pub fn store_of<K>(objects: Vec<K>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let (reader, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    reader
}

/// What the mock answers to one expected request.
pub enum Reply {
    /// Echo the request body back (what an apply or status patch returns), with `fill` applied.
    Echo(fn(&mut serde_json::Value)),
    /// A fixed answer.
    Json(StatusCode, serde_json::Value),
    /// `base` with the request body's top-level fields merged in (a status patch's answer).
    MergeInto(serde_json::Value),
}

/// One expected request.
pub struct Expect {
    pub method: Method,
    /// Path without the query string.
    pub path: String,
    pub reply: Reply,
}

impl Expect {
    pub fn get(path: &str, reply: (StatusCode, serde_json::Value)) -> Self {
        Self {
            method: Method::GET,
            path: path.into(),
            reply: Reply::Json(reply.0, reply.1),
        }
    }
    /// A GET answered 404: the object does not exist.
    pub fn missing(path: &str) -> Self {
        Self::get(path, not_found("object", path.rsplit('/').next().unwrap()))
    }
    pub fn patch(path: &str) -> Self {
        Self {
            method: Method::PATCH,
            path: path.into(),
            reply: Reply::Echo(|_| {}),
        }
    }
    pub fn delete(path: &str) -> Self {
        Self {
            method: Method::DELETE,
            path: path.into(),
            reply: Reply::Json(
                StatusCode::OK,
                serde_json::json!({"apiVersion": "v1", "kind": "Status", "status": "Success"}),
            ),
        }
    }
    /// The status patch of `app`, answered with the whole patched object as the API does.
    pub fn status(app: &MeteorApp) -> Self {
        let path = format!(
            "/apis/meteorfleet.dev/v1alpha1/namespaces/default/meteorapps/{}/status",
            app.metadata.name.as_deref().unwrap()
        );
        Self {
            method: Method::PATCH,
            path,
            reply: Reply::MergeInto(serde_json::to_value(app).unwrap()),
        }
    }
    pub fn event() -> Self {
        Self {
            method: Method::POST,
            path: "/apis/events.k8s.io/v1/namespaces/default/events".into(),
            reply: Reply::Echo(|_| {}),
        }
    }
}

/// A request the mock saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub body: serde_json::Value,
}

/// Everything the mock saw, and the requests it did not expect.
#[derive(Default, Clone)]
pub struct Transcript {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub unexpected: Arc<Mutex<Vec<String>>>,
}

impl Transcript {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    pub fn body_of(&self, method: Method, path: &str) -> serde_json::Value {
        self.seen()
            .into_iter()
            .find(|s| s.method == method && s.path == path)
            .unwrap_or_else(|| panic!("no {method} {path} was made"))
            .body
    }
    /// The body of the (first) event posted.
    pub fn event(&self) -> serde_json::Value {
        self.body_of(
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/default/events",
        )
    }
    /// The query string of the first request to `path`.
    pub fn query_of(&self, path: &str) -> String {
        self.seen()
            .into_iter()
            .find(|s| s.path == path)
            .unwrap_or_else(|| panic!("no request to {path} was made"))
            .query
    }
    /// The bodies of the `method` requests, in order.
    pub fn bodies(&self, method: Method) -> Vec<serde_json::Value> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == method)
            .map(|s| s.body)
            .collect()
    }
    /// The paths of the `method` requests, in order.
    pub fn paths(&self, method: Method) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == method)
            .map(|s| s.path)
            .collect()
    }
    pub fn writes(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|s| s.method != Method::GET)
            .map(|s| format!("{} {}", s.method, s.path))
            .collect()
    }
}

/// A client wired to a scripted mock; the script runs in a background task.
pub fn mock_client(script: Vec<Expect>) -> (Client, Transcript, tokio::task::JoinHandle<usize>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let transcript = Transcript::default();
    let record = transcript.clone();
    let task = tokio::spawn(async move {
        let mut script = script.into_iter();
        let mut matched = 0;
        while let Some((request, respond)) = handle.next_request().await {
            let permitted = rbac::check(&request);
            let method = request.method().clone();
            let path = request.uri().path().to_string();
            let query = request.uri().query().unwrap_or("").to_string();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body: serde_json::Value = if bytes.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
            };
            record.seen.lock().unwrap().push(Seen {
                method: method.clone(),
                path: path.clone(),
                query,
                body: body.clone(),
            });
            let permitted = permitted.and_then(|_| rbac::check_escalation(&method, &path, &body));
            if let Err(refusal) = permitted {
                // Answered as the apiserver would; the script does not advance.
                record.unexpected.lock().unwrap().push(refusal.clone());
                respond.send_response(forbidden(&refusal));
                continue;
            }
            let (status, reply) = match script.next() {
                Some(expect) if expect.method == method && expect.path == path => {
                    matched += 1;
                    match expect.reply {
                        Reply::Echo(fill) => {
                            let mut body = body;
                            fill(&mut body);
                            (StatusCode::OK, body)
                        }
                        Reply::Json(status, json) => (status, json),
                        Reply::MergeInto(mut base) => {
                            if let (Some(base), Some(patch)) =
                                (base.as_object_mut(), body.as_object())
                            {
                                for (key, value) in patch {
                                    base.insert(key.clone(), value.clone());
                                }
                            }
                            (StatusCode::OK, base)
                        }
                    }
                }
                other => {
                    let wanted = other
                        .map(|e| format!("{} {}", e.method, e.path))
                        .unwrap_or_else(|| "nothing".into());
                    record
                        .unexpected
                        .lock()
                        .unwrap()
                        .push(format!("{method} {path} (expected {wanted})"));
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        serde_json::json!({"kind": "Status", "code": 500, "message": "unexpected"}),
                    )
                }
            };
            respond.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
        matched
    });
    (client, transcript, task)
}

/// The apiserver's answer to a request RBAC refuses.
pub fn forbidden(message: &str) -> Response<Body> {
    let status = serde_json::json!({
        "apiVersion": "v1", "kind": "Status", "status": "Failure",
        "message": message, "reason": "Forbidden", "code": 403,
    });
    Response::builder()
        .status(StatusCode::FORBIDDEN)
        .body(Body::from(serde_json::to_vec(&status).unwrap()))
        .unwrap()
}

/// A Context over `client` with caches holding the given children (see also
/// [`cluster::Cluster::context`], which holds every kind).
pub fn context(
    client: Client,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    budgets: Vec<PodDisruptionBudget>,
) -> Arc<Context> {
    Arc::new(Context::new(
        client,
        cache_of(deployments),
        cache_of(services),
        cache_of(budgets),
        Arc::new(Metrics::default()),
    ))
}

/// Pods (JSON, as the API returns them) as the cache of the operator's pods holds them.
pub fn cached_pods(
    pods: Vec<serde_json::Value>,
) -> Vec<meteor_operator::controller::pods::CachedPod> {
    pods.into_iter()
        .map(|pod| {
            let mut pod: meteor_operator::controller::pods::CachedPod =
                serde_json::from_value(pod).expect("a pod");
            pod.keep();
            pod
        })
        .collect()
}

/// Once every client of the mock is dropped: the mock saw exactly `expected` requests, none
/// unscripted.
pub async fn mock_saw_exactly(
    transcript: &Transcript,
    task: tokio::task::JoinHandle<usize>,
    expected: usize,
) {
    let matched = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("mock stopped")
        .expect("mock task ran");
    let unexpected = transcript.unexpected.lock().unwrap().clone();
    assert!(
        unexpected.is_empty(),
        "unexpected requests: {unexpected:#?}"
    );
    assert_eq!(
        matched,
        expected,
        "expected {expected} requests, saw {:#?}",
        transcript
            .seen()
            .iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect::<Vec<_>>()
    );
}

// --- The minimal app's children and its settled status, shared by the reconcile tests ---------

pub const SECRET: &str = "/api/v1/namespaces/default/secrets/todos-mongo";
pub const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/default/deployments/todos";
pub const SERVICE: &str = "/api/v1/namespaces/default/services/todos";
pub const PDB: &str = "/apis/policy/v1/namespaces/default/poddisruptionbudgets/todos";
pub const STATUS: &str =
    "/apis/meteorfleet.dev/v1alpha1/namespaces/default/meteorapps/todos/status";
const MONGO_URL_VALUE: &str = "mongodb://db-0,db-1/todos?replicaSet=rs0";

/// The GET answer for the minimal app's Mongo URL Secret.
/// The requests of the minimal app's first visit, every cache empty: its Secret, the three
/// name-conflict checks, the three applies, the status.
pub fn first_visit_script() -> Vec<Expect> {
    vec![
        Expect::get(SECRET, mongo_secret()),
        // Children missing from the cache: is the name taken by someone else's object?
        Expect::get(DEPLOYMENT, not_found("deployments", "todos")),
        Expect::get(SERVICE, not_found("services", "todos")),
        Expect::get(PDB, not_found("poddisruptionbudgets", "todos")),
        Expect::patch(DEPLOYMENT),
        Expect::patch(SERVICE),
        Expect::patch(PDB),
        Expect::status(&minimal_app()),
    ]
}

pub fn mongo_secret() -> (StatusCode, serde_json::Value) {
    (
        StatusCode::OK,
        secret_json("todos-mongo", &[("MONGO_URL", MONGO_URL_VALUE)]),
    )
}

/// The children exactly as a previous reconcile applied them (hash annotations included).
pub fn applied_children(app: &MeteorApp) -> (Deployment, Service, Option<PodDisruptionBudget>) {
    let desired = desired_children(app);
    use meteor_operator::controller::stamped;
    (
        stamped(desired.app),
        stamped(desired.service),
        desired.disruption_budget.map(stamped),
    )
}

/// Every child a reconcile of `app` builds (its Mongo URL Secret as [`mongo_secret`]).
pub fn desired_children(app: &MeteorApp) -> meteor_operator::build::Desired {
    desired_children_reading(app, &[])
}

/// Every child a reconcile of `app` builds when it reads the Mongo URL Secret as
/// [`mongo_secret`] and each of `secrets` (name, data) as given.
pub fn desired_children_reading(
    app: &MeteorApp,
    secrets: &[(&str, &[(&str, &str)])],
) -> meteor_operator::build::Desired {
    use meteor_operator::build::{self, Inputs, MongoWiring};
    use meteor_operator::references::{self, Fetched, SourceKind};
    use std::collections::BTreeMap;
    let bytes = |data: &[(&str, &str)]| {
        data.iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect::<BTreeMap<_, _>>()
    };
    let fetched: Fetched = std::iter::once(("todos-mongo", &[("MONGO_URL", MONGO_URL_VALUE)][..]))
        .chain(secrets.iter().copied())
        .map(|(name, data)| ((SourceKind::Secret, name.to_string()), Some(bytes(data))))
        .collect();
    let inputs = Inputs {
        config_hash: references::resolve(app, &fetched).unwrap(),
        mongo: MongoWiring::for_app(app).unwrap(),
    };
    build::desired(app, &inputs)
}

/// The status a reconcile wrote for `app` running `deployment`, with rollout `history`.
pub fn settled_with(
    app: &MeteorApp,
    deployment: &Deployment,
    history: meteor_operator::api::RolloutStatus,
    at: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> meteor_operator::api::MeteorAppStatus {
    use meteor_operator::status::{self, RolloutState, Verdict};
    let mut settled = status::compute(
        app,
        &Verdict::Applied(RolloutState::AsSpecified),
        Some(deployment),
        None,
        Some(history),
        at,
    );
    // The way in as a proxy-less app's reconcile sees it: only the front Service.
    let seen = meteor_operator::status::routing::RoutingObservation::default();
    meteor_operator::status::routing::fold_status(&mut settled, app, Some(&seen), at);
    settled
}

/// The status a previous reconcile wrote once `deployment` had rolled out: the conditions and the
/// rollout history that remembers its template as the last available one.
pub fn settled(
    app: &MeteorApp,
    deployment: &Deployment,
    at: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> meteor_operator::api::MeteorAppStatus {
    let facts = meteor_operator::plan::TierFacts::of(deployment);
    let history = meteor_operator::api::RolloutStatus {
        available_template: facts.template,
        available_image: facts.image,
        ..Default::default()
    };
    settled_with(app, deployment, history, at)
}

/// The condition of `type_` in a status patch body.
pub fn condition<'a>(status: &'a serde_json::Value, type_: &str) -> &'a serde_json::Value {
    status["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}
