//! Operator scale benchmark, on this machine, against an in-process mock API server that answers
//! at once. N MeteorApps (one replica, no workers, external MongoDB, each with its own Secret)
//! go from creation to Ready through the reconciles a real cluster triggers, in order:
//!
//! 1. **created**: the app's own watch event; every cache is empty.
//! 2. **Deployment seen**: its watch event is in, the Service's is not yet (the usual race).
//! 3. **pods started**: the Deployment controller reports the pod, not ready.
//! 4. **app pods ready**, then (with the proxy on, 11 s later) **4b. proxy pods ready**: the
//!    app becomes Ready.
//! 5. **resync**: the periodic pass of a settled fleet (must make no write).
//!
//! Then every app's `spec.image` changes, twice, the whole fleet at once (one `kubectl apply` of
//! every app, as a GitOps sync does):
//!
//! 6. **image change under pod churn** (generation 2): each app gets the reconciles a cluster
//!    triggers, in its own order: its new generation; the Deployment watch event of the operator's
//!    own apply; its new pod started, not ready, beside the old one; the new pod ready and the old
//!    one gone. The apps' triggers run in a fixed-seed random order that keeps each app's own, so
//!    apps already rolling are reconciled between other apps' first reconcile of the change.
//! 7. **the same, the operator restarted half-way** (generation 3): after half the triggers, what
//!    the operator process holds goes (its Context, caches, the writes it remembers); the new one
//!    lists every kind it caches, in pages as its watches do (start-up, counted apart), and
//!    reconciles every app, then the rest of the triggers follow.
//!
//! Prints requests per app by kind for each step, the totals from creation to Ready, and the
//! bytes each cached object kind costs (trimmed exactly as the controller trims them); for 6 and
//! 7, the lag from each app's change to the first status write reporting it (wall clock, and
//! reconciles of other apps in between) and the peak RSS of the phase.
//!
//! `cargo bench --bench scale` (N=1000), or `METEOR_BENCH_APPS=3000 cargo bench --bench scale`.
//! The apps run with `routing.proxy.enabled: false`; `METEOR_BENCH_PROXY=1` turns the proxy on
//! (the default of a MeteorApp): its tier's objects are then created, cached and counted too,
//! and their pods are ready in a step of their own (4b).
//! It measures the operator's own requests and memory; API-server latency, the kubelet's pace and
//! the controller queue's own scheduling (its timers, its order) are not modelled. Step 3 (pods
//! created, none ready) is quiet progress, which waits for the next write (at most until the
//! resync): the transition of step 4 carries it. It fails (panics) if a steady resync writes, if
//! an app is not Ready after step 4 (4b), if a request is refused by the chart's RBAC, or if in 6
//! or 7 an app's change is never reported, the lag exceeds 30 s at p99, or a LIST is sent after
//! start-up.

#[path = "../tests/support/mod.rs"]
mod support;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::client::Body;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use meteor_operator::api::MeteorApp;
use meteor_operator::build::meta::{Component, MANAGED_SELECTOR, TEMPLATE_HASH_LABEL};
use meteor_operator::controller::cached::{self, Cached};
use meteor_operator::controller::pods::CachedPod;
use meteor_operator::controller::{
    Context, ListedApp, Metrics, Optional, RoutingCaches, SharedIndex, reconcile, request_kind,
    trim,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CONCURRENCY: usize = 16;
/// Between an app's pods and its proxies becoming ready (step 4): longer than the operator's
/// 10 s pace of ready counts, as on a busy cluster, where tiers come ready seconds or minutes
/// apart.
const TIER_READY_APART: Duration = Duration::from_secs(11);
/// Counts live heap bytes, so cache sizes are measured exactly rather than read off RSS.
struct CountingAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// The request kinds the table counts (named by the operator's own request metric).
const KINDS: [&str; 6] = ["get", "list", "apply", "status", "event", "other"];

fn kind_of(method: &Method, uri: &http::Uri) -> &'static str {
    match request_kind(method, uri.path(), uri.query().unwrap_or("")) {
        kind if KINDS.contains(&kind) => kind,
        _ => "other",
    }
}

/// Every request but reads.
fn writes_of(counts: &BTreeMap<&str, u64>) -> u64 {
    counts
        .iter()
        .filter(|(kind, _)| !["get", "list"].contains(kind))
        .map(|(_, n)| n)
        .sum()
}

/// What the mock answered, so each step can be fed the previous one's results, and what it holds
/// between requests.
#[derive(Default)]
struct Recorded {
    deployments: Mutex<Vec<Deployment>>,
    services: Mutex<Vec<Service>>,
    budgets: Mutex<Vec<PodDisruptionBudget>>,
    accounts: Mutex<Vec<ServiceAccount>>,
    bindings: Mutex<Vec<RoleBinding>>,
    /// Secrets the operator created (the proxy's cookie Secret).
    created_secrets: Mutex<Vec<Secret>>,
    statuses: Mutex<HashMap<String, serde_json::Value>>,
    counts: Mutex<BTreeMap<&'static str, u64>>,
    version: AtomicU64,
    /// Requests the chart's RBAC refuses (answered 403, as the apiserver would).
    refused: Mutex<Vec<String>>,
    /// Each Deployment as the API server keeps it between writes.
    live: Mutex<HashMap<String, Live>>,
    /// The objects each collection holds (by path), for the LISTs of a restarted operator: each
    /// object's labels and its JSON.
    collections: Mutex<HashMap<String, Vec<(serde_json::Value, String)>>>,
    /// Objects the LISTs answered.
    listed: AtomicUsize,
    /// Apps waiting for a status write that reports their new generation.
    lags: Lags,
}

/// What the API server keeps of a Deployment between writes, so that a re-apply is answered as it
/// would be: the generation moves when the spec does; the uid and the status its controller
/// reported stay.
struct Live {
    uid: serde_json::Value,
    generation: i64,
    spec: u64,
    status: Option<serde_json::Value>,
}

impl Recorded {
    fn take_counts(&self) -> BTreeMap<&'static str, u64> {
        std::mem::take(&mut *self.counts.lock().unwrap())
    }

    fn next_version(&self) -> String {
        (self.version.fetch_add(1, Ordering::Relaxed) + 1).to_string()
    }

    /// A written Deployment as the API server answers it: generation, uid and status filled in.
    fn stored_deployment(&self, name: &str, body: &mut serde_json::Value) {
        let spec = hash_of(&body["spec"]);
        let mut live = self.live.lock().unwrap();
        let live = live.entry(name.to_string()).or_insert_with(|| Live {
            uid: body["metadata"]["uid"].clone(),
            generation: 0,
            spec: !spec,
            status: None,
        });
        if live.spec != spec {
            live.generation += 1;
            live.spec = spec;
        }
        body["metadata"]["generation"] = live.generation.into();
        body["metadata"]["uid"] = live.uid.clone();
        if let Some(status) = &live.status {
            body["status"] = status.clone();
        }
    }

    /// The status the Deployment controller reported for Deployment `name`.
    fn reported(&self, name: &str, status: &DeploymentStatus) {
        if let Some(live) = self.live.lock().unwrap().get_mut(name) {
            live.status = Some(serde_json::to_value(status).unwrap());
        }
    }

    /// Adds `objects` to the collection a LIST of their kind answers.
    fn serve<'a, K>(&self, objects: impl IntoIterator<Item = &'a K>)
    where
        K: Resource<DynamicType = ()> + serde::Serialize + 'a,
    {
        let json = objects
            .into_iter()
            .map(|o| serde_json::to_value(o).unwrap());
        self.serve_json(K::url_path(&(), None), json);
    }

    fn serve_json(&self, path: String, objects: impl IntoIterator<Item = serde_json::Value>) {
        let served = objects
            .into_iter()
            .map(|o| (o["metadata"]["labels"].clone(), o.to_string()));
        let mut collections = self.collections.lock().unwrap();
        collections.entry(path).or_default().extend(served);
    }

    /// The answer to a LIST of `path`: the objects of the collection that carry every label the
    /// query's (equality) selector asks for, a page of `limit` from offset `continue`.
    fn list(&self, path: &str, query: &str) -> Vec<u8> {
        let param = |name: &str| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.into_owned())
        };
        let labels = param("labelSelector").unwrap_or_default();
        let selector: Vec<(&str, &str)> = labels
            .split(',')
            .filter_map(|term| term.split_once('='))
            .collect();
        let from: usize = param("continue").map_or(0, |token| token.parse().unwrap());
        let limit: usize = param("limit").map_or(usize::MAX, |limit| limit.parse().unwrap());
        let collections = self.collections.lock().unwrap();
        let matching: Vec<&str> = collections
            .get(path)
            .into_iter()
            .flatten()
            .filter(|(labels, _)| selector.iter().all(|(k, v)| labels[*k] == *v))
            .map(|(_, json)| json.as_str())
            .collect();
        let items = &matching[from.min(matching.len())..matching.len().min(from + limit)];
        self.listed.fetch_add(items.len(), Ordering::Relaxed);
        let next = from + items.len();
        let more = if next < matching.len() {
            format!(r#","continue":"{next}""#)
        } else {
            String::new()
        };
        let version = self.next_version();
        format!(
            r#"{{"apiVersion":"v1","kind":"List","metadata":{{"resourceVersion":"{version}"{more}}},"items":[{}]}}"#,
            items.join(",")
        )
        .into_bytes()
    }
}

fn hash_of(value: &serde_json::Value) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.to_string().hash(&mut hasher);
    hasher.finish()
}

/// Each changed app's wait for the first status write that reports its new generation, from the
/// moment the change was made visible: in wall-clock time, and in reconciles of other apps.
#[derive(Default)]
struct Lags {
    /// Reconciles started, of every app.
    started: AtomicU64,
    waiting: Mutex<HashMap<String, Waiting>>,
    observed: Mutex<Vec<Lag>>,
}

struct Waiting {
    generation: i64,
    since: Instant,
    /// `started` then.
    started: u64,
    /// The app's own reconciles since.
    own: u64,
}

#[derive(Clone, Copy)]
struct Lag {
    wall: Duration,
    others: u64,
    own: u64,
}

impl Lags {
    fn changed(&self, app: &str, generation: i64) {
        let waiting = Waiting {
            generation,
            since: Instant::now(),
            started: self.started.load(Ordering::Relaxed),
            own: 0,
        };
        self.waiting.lock().unwrap().insert(app.into(), waiting);
    }

    fn reconcile_started(&self, app: &str) {
        self.started.fetch_add(1, Ordering::Relaxed);
        if let Some(waiting) = self.waiting.lock().unwrap().get_mut(app) {
            waiting.own += 1;
        }
    }

    fn status_written(&self, app: &str, status: &serde_json::Value) {
        let observed = status["observedGeneration"].as_i64();
        let mut waiting = self.waiting.lock().unwrap();
        match waiting.get(app) {
            Some(w) if observed >= Some(w.generation) => {}
            _ => return,
        }
        let w = waiting.remove(app).unwrap();
        let all = self.started.load(Ordering::Relaxed) - w.started;
        self.observed.lock().unwrap().push(Lag {
            wall: w.since.elapsed(),
            others: all - w.own,
            own: w.own,
        });
    }

    /// The lags observed, and how many changes were never reported.
    fn take(&self) -> (Vec<Lag>, usize) {
        let unobserved = std::mem::take(&mut *self.waiting.lock().unwrap()).len();
        (
            std::mem::take(&mut *self.observed.lock().unwrap()),
            unobserved,
        )
    }
}

fn keep<K: serde::de::DeserializeOwned>(into: &Mutex<Vec<K>>, body: &serde_json::Value) {
    into.lock()
        .unwrap()
        .push(serde_json::from_value(body.clone()).unwrap());
}

/// A mock API server that answers any request of a reconcile at once (after the RBAC check),
/// giving every written object a new resourceVersion as the apiserver does.
fn auto_client(recorded: Arc<Recorded>) -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let method = request.method().clone();
                let path = request.uri().path().to_string();
                let query = request.uri().query().unwrap_or("").to_string();
                let kind = kind_of(&method, request.uri());
                *recorded.counts.lock().unwrap().entry(kind).or_default() += 1;
                if let Err(refusal) = support::rbac::check(&request) {
                    recorded.refused.lock().unwrap().push(refusal.clone());
                    respond.send_response(support::forbidden(&refusal));
                    return;
                }
                if kind == "list" {
                    let list = Body::from(recorded.list(&path, &query));
                    respond.send_response(Response::builder().body(list).unwrap());
                    return;
                }
                let bytes = request.into_body().collect_bytes().await.unwrap();
                let mut body: serde_json::Value =
                    serde_json::from_slice(&bytes).unwrap_or_default();
                let version = recorded.version.fetch_add(1, Ordering::Relaxed) + 1;
                if body.is_object() {
                    body["metadata"]["resourceVersion"] = version.to_string().into();
                    body["metadata"]["uid"] = format!("uid-{version}").into();
                }
                let (status, reply) = if method == Method::GET && path.contains("/secrets/") {
                    let name = path.rsplit('/').next().unwrap();
                    let mut secret = support::secret_json(
                        name,
                        &[("MONGO_URL", "mongodb://db-0,db-1/app?replicaSet=rs0")],
                    );
                    secret["metadata"]["resourceVersion"] = "1".into();
                    (StatusCode::OK, secret)
                } else if method == Method::GET {
                    // The namesake check of a child not yet created: nothing there.
                    support::not_found("object", &path)
                } else if path.ends_with("/status") {
                    let name = path.rsplit('/').nth(1).unwrap().to_string();
                    recorded.lags.status_written(&name, &body["status"]);
                    recorded
                        .statuses
                        .lock()
                        .unwrap()
                        .insert(name, body["status"].clone());
                    let mut whole = serde_json::to_value(app(0, false)).unwrap();
                    whole["status"] = body["status"].clone();
                    (StatusCode::OK, whole)
                } else if path.contains("/deployments/") {
                    recorded.stored_deployment(path.rsplit('/').next().unwrap(), &mut body);
                    keep(&recorded.deployments, &body);
                    (StatusCode::OK, body)
                } else if path.contains("/services/") {
                    keep(&recorded.services, &body);
                    (StatusCode::OK, body)
                } else if path.contains("/poddisruptionbudgets/") {
                    keep(&recorded.budgets, &body);
                    (StatusCode::OK, body)
                } else if path.contains("/serviceaccounts/") {
                    keep(&recorded.accounts, &body);
                    (StatusCode::OK, body)
                } else if path.contains("/rolebindings/") {
                    keep(&recorded.bindings, &body);
                    (StatusCode::OK, body)
                } else if method == Method::POST && path.ends_with("/secrets") {
                    keep(&recorded.created_secrets, &body);
                    (StatusCode::CREATED, body)
                } else {
                    (StatusCode::OK, body)
                };
                respond.send_response(
                    Response::builder()
                        .status(status)
                        .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                        .unwrap(),
                );
            });
        }
    });
    Client::new(service, "default")
}

/// App `i`: one replica, its own MongoDB Secret, the proxy on or off.
fn app(i: usize, proxy: bool) -> MeteorApp {
    let mut app = support::app_from_yaml(&format!(
        r#"
apiVersion: meteorfleet.dev/v1alpha1
kind: MeteorApp
metadata: {{ name: app-{i:04}, namespace: default, generation: 1 }}
spec:
  image: ghcr.io/example/todos:1.0.0
  rootUrl: https://app-{i:04}.example.com
  replicas: 1
  mongo: {{ external: {{ url: {{ name: app-{i:04}-mongo, key: MONGO_URL }} }} }}
  routing: {{ proxy: {{ enabled: {proxy} }} }}
"#
    ));
    app.metadata.uid = Some(format!("00000000-0000-4000-8000-{i:012}"));
    app
}

/// A listed, empty store and its writer.
fn store<K: Resource<DynamicType = ()> + Clone + 'static>() -> (Store<K>, Writer<K>) {
    let (reader, mut writer) = reflector::store();
    writer.apply_watcher_event(&Event::Init);
    writer.apply_watcher_event(&Event::InitDone);
    (reader, writer)
}

/// Each of `objects` into the cache `writer` fills, kept as the controller keeps it.
fn deliver<K, C: Resource<DynamicType = ()> + Clone + 'static>(
    writer: &mut Writer<C>,
    objects: impl IntoIterator<Item = K>,
    keep: impl Fn(K) -> C,
) {
    for object in objects {
        writer.apply_watcher_event(&Event::Apply(keep(object)));
    }
}

/// What a cache keeps of an object its watch trims in place (MeteorApps, pods, versions).
fn trimmed<K>(trim: fn(&mut K)) -> impl Fn(K) -> K {
    move |mut object| {
        trim(&mut object);
        object
    }
}

fn secret_version(i: usize) -> PartialObjectMeta<Secret> {
    let mut meta = PartialObjectMeta::<Secret>::default();
    meta.metadata.name = Some(format!("app-{i:04}-mongo"));
    meta.metadata.namespace = Some("default".into());
    meta.metadata.resource_version = Some("1".into());
    meta.metadata.uid = Some(format!("secret-uid-{i}"));
    meta.metadata.labels = Some([("app".to_string(), format!("app-{i:04}"))].into());
    meta
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn reconcile_all(apps: &[Arc<MeteorApp>], ctx: Arc<Context>) -> f64 {
    let started = Instant::now();
    futures::stream::iter(apps.iter().cloned())
        .map(|app| reconcile(app, ctx.clone()))
        .buffer_unordered(CONCURRENCY)
        .for_each(|result| async move {
            result.expect("reconcile succeeds against the mock");
        })
        .await;
    started.elapsed().as_secs_f64()
}

/// The apps with the statuses the last step wrote.
fn with_statuses(apps: &[Arc<MeteorApp>], recorded: &Recorded) -> Vec<Arc<MeteorApp>> {
    let statuses = std::mem::take(&mut *recorded.statuses.lock().unwrap());
    apps.iter()
        .map(|a| match statuses.get(&a.name_any()) {
            Some(status) => {
                let mut a = (**a).clone();
                a.status = serde_json::from_value(status.clone()).ok();
                Arc::new(a)
            }
            None => a.clone(),
        })
        .collect()
}

/// How many objects, and the bytes a store holds per object: each is deserialized from its JSON,
/// trimmed and stored inside the measured region, so only what the store keeps counts.
fn bytes_per_object<K, C>(objects: Vec<serde_json::Value>, keep: impl Fn(K) -> C) -> (usize, f64)
where
    K: serde::de::DeserializeOwned,
    C: Resource<DynamicType = ()> + Clone + 'static,
{
    let n = objects.len().max(1);
    let before = live_bytes();
    let (reader, mut writer) = store::<C>();
    for json in &objects {
        let object: K = serde_json::from_value(json.clone()).unwrap();
        writer.apply_watcher_event(&Event::Apply(keep(object)));
    }
    let bytes = live_bytes().saturating_sub(before);
    drop((reader, writer));
    (objects.len(), bytes as f64 / n as f64)
}

/// The pods of `deployments` as the API holds them once running (or started, not `ready` yet):
/// the template's spec, the ReplicaSet as owner, and a kubelet's status (conditions, container
/// statuses). Numbered on from the pods of earlier generations of the template.
fn running_pods(deployments: &[Deployment], ready: bool) -> Vec<serde_json::Value> {
    let mut pods = Vec::new();
    for deployment in deployments {
        let spec = deployment.spec.as_ref().expect("a Deployment has a spec");
        let template = &spec.template;
        let replicas = spec.replicas.unwrap_or(1);
        let first = replicas * (deployment.metadata.generation.unwrap_or(1) as i32 - 1);
        for i in first..first + replicas {
            let name = format!("{}-5d8f7c9b4-{i:05}", deployment.name_any());
            let mut metadata = template.metadata.clone().unwrap_or_default();
            metadata.name = Some(name);
            metadata.namespace = deployment.namespace();
            metadata.uid = Some(format!("pod-uid-{}-{i}", deployment.name_any()));
            metadata.resource_version = Some("123456".into());
            metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert("pod-template-hash".into(), "5d8f7c9b4".into());
            pods.push(pod_json(deployment, metadata, ready));
        }
    }
    pods
}

/// A pod of `deployment`'s template, named by `metadata`, as the API holds it: the template's
/// spec, the ReplicaSet as owner, and a kubelet's status (conditions, container statuses).
fn pod_json(deployment: &Deployment, metadata: ObjectMeta, ready: bool) -> serde_json::Value {
    let spec = deployment.spec.as_ref().expect("a Deployment has a spec");
    let conditions: Vec<serde_json::Value> = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ]
    .iter()
    .map(|t| {
        let status = if ready || !t.ends_with("Ready") {
            "True"
        } else {
            "False"
        };
        serde_json::json!({ "type": t, "status": status, "lastProbeTime": null,
            "lastTransitionTime": "2026-12-06T10:00:05Z" })
    })
    .collect();
    let mut pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": metadata,
        "spec": spec.template.spec,
        "status": {
            "phase": "Running", "podIP": "10.244.3.17", "hostIP": "10.0.0.4",
            "podIPs": [{ "ip": "10.244.3.17" }], "qosClass": "Burstable",
            "startTime": "2026-12-06T10:00:00Z",
            "conditions": conditions,
            "containerStatuses": [{ "name": "meteor", "ready": ready, "started": true,
                "restartCount": 0, "image": "registry.example.com/app:1",
                "imageID": "registry.example.com/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "containerID": "containerd://0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "state": { "running": { "startedAt": "2026-12-06T10:00:02Z" } } }],
        },
    });
    pod["metadata"]["ownerReferences"] = serde_json::json!([{ "apiVersion": "apps/v1",
        "kind": "ReplicaSet", "name": format!("{}-5d8f7c9b4", deployment.name_any()),
        "uid": "rs-uid", "controller": true, "blockOwnerDeletion": true }]);
    pod
}

fn json_of<T: serde::Serialize>(objects: impl IntoIterator<Item = T>) -> Vec<serde_json::Value> {
    objects
        .into_iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect()
}

/// The operator's caches, each with the writer its watch would feed it through.
struct Caches {
    deployments: Writer<Cached<Deployment>>,
    services: Writer<Cached<Service>>,
    budgets: Writer<Cached<PodDisruptionBudget>>,
    statefulsets: Writer<Cached<StatefulSet>>,
    network_policies: Writer<Cached<NetworkPolicy>>,
    owned_secrets: Writer<Cached<Secret>>,
    secret_versions: Writer<PartialObjectMeta<Secret>>,
    config_map_versions: Writer<PartialObjectMeta<ConfigMap>>,
    ingresses: Writer<Cached<Ingress>>,
    accounts: Writer<Cached<ServiceAccount>>,
    bindings: Writer<Cached<RoleBinding>>,
    autoscalers: Writer<Cached<HorizontalPodAutoscaler>>,
    pods: Writer<CachedPod>,
    index: SharedIndex,
}

impl Caches {
    /// Listed, all empty.
    fn empty() -> Self {
        Self {
            deployments: store().1,
            services: store().1,
            budgets: store().1,
            statefulsets: store().1,
            network_policies: store().1,
            owned_secrets: store().1,
            secret_versions: store().1,
            config_map_versions: store().1,
            ingresses: store().1,
            accounts: store().1,
            bindings: store().1,
            autoscalers: store().1,
            pods: store().1,
            index: SharedIndex::default(),
        }
    }

    /// As a starting operator fills them: each kind listed in pages through `client`; the CRDs
    /// of the optional kinds are listed too (the mock cluster has none: they stay absent).
    async fn listed(client: &Client) -> Self {
        let managed = || ListParams::default().labels(MANAGED_SELECTOR);
        for crd in [
            "httproutes.gateway.networking.k8s.io",
            "certificates.cert-manager.io",
            "podmonitors.monitoring.coreos.com",
        ] {
            let by_name = ListParams::default().fields(&format!("metadata.name={crd}"));
            let crds = all::<PartialObjectMeta<CustomResourceDefinition>>(client);
            pages(&crds, by_name, |_| panic!("the mock cluster has no {crd}")).await;
        }
        Self {
            deployments: relist(client, managed(), Cached::new).await,
            services: relist(client, managed(), Cached::new).await,
            budgets: relist(client, managed(), Cached::new).await,
            statefulsets: relist(client, managed(), Cached::new).await,
            network_policies: relist(client, managed(), Cached::new).await,
            owned_secrets: relist(client, managed(), cached::secret).await,
            secret_versions: relist(client, ListParams::default(), trimmed(trim::version_only))
                .await,
            config_map_versions: relist(client, ListParams::default(), trimmed(trim::version_only))
                .await,
            ingresses: relist(client, managed(), Cached::new).await,
            accounts: relist(client, managed(), Cached::new).await,
            bindings: relist(client, managed(), Cached::new).await,
            autoscalers: relist(client, managed(), Cached::new).await,
            pods: relist(client, managed(), trimmed(CachedPod::keep)).await,
            index: SharedIndex::default(),
        }
    }

    /// The controller's Context over these caches.
    fn context(&self, client: Client) -> Context {
        Context::new(
            client,
            self.deployments.as_reader(),
            self.services.as_reader(),
            self.budgets.as_reader(),
            Arc::new(Metrics::default()),
        )
        .with_references(
            self.index.clone(),
            self.secret_versions.as_reader(),
            self.config_map_versions.as_reader(),
        )
        .with_mongo_caches(
            self.statefulsets.as_reader(),
            self.network_policies.as_reader(),
            self.owned_secrets.as_reader(),
        )
        .with_routing_caches(RoutingCaches {
            ingresses: self.ingresses.as_reader(),
            service_accounts: self.accounts.as_reader(),
            role_bindings: self.bindings.as_reader(),
            http_routes: Optional::absent(),
            certificates: Optional::absent(),
            pod_monitors: Optional::absent(),
        })
        .with_autoscalers(self.autoscalers.as_reader())
        .with_pods(self.pods.as_reader())
    }
}

fn all<K: Resource<DynamicType = ()>>(client: &Client) -> Api<K> {
    Api::all(client.clone())
}

/// A cache filled from one LIST, as a watcher's initial list fills it.
async fn relist<K, C>(client: &Client, params: ListParams, keep: impl Fn(K) -> C) -> Writer<C>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + 'static,
    C: Resource<DynamicType = ()> + Clone + 'static,
{
    let (_, mut writer) = reflector::store();
    writer.apply_watcher_event(&Event::Init);
    pages(&all(client), params, |object| {
        writer.apply_watcher_event(&Event::InitApply(keep(object)));
    })
    .await;
    writer.apply_watcher_event(&Event::InitDone);
    writer
}

// Objects per page of a cache's initial list: the controller's own.
use meteor_operator::controller::LIST_PAGE;

/// Lists `api` in pages of [`LIST_PAGE`], as a watcher's initial list does, handing each object
/// to `each` before the next page is read.
async fn pages<K>(api: &Api<K>, params: ListParams, mut each: impl FnMut(K))
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut params = params.limit(LIST_PAGE);
    loop {
        let page = api.list(&params).await.expect("the mock lists");
        page.items.into_iter().for_each(&mut each);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return,
        }
    }
}

/// A MeteorApp watch event, as the operator's observers of that watch (the reference index, the
/// generations waiting) take it.
fn announce(index: &SharedIndex, ctx: &Context, event: Event<ListedApp>) {
    let event: Result<_, watcher::Error> = Ok(event);
    index.observer()(&event);
    ctx.generations.observer()(&event);
}

fn listed(app: &MeteorApp) -> ListedApp {
    ListedApp::from_value(serde_json::to_value(app).unwrap())
}

/// Children the fleet's creation wrote that an image change leaves as they are.
struct Unchanged {
    services: Vec<Service>,
    budgets: Vec<PodDisruptionBudget>,
    accounts: Vec<ServiceAccount>,
    bindings: Vec<RoleBinding>,
    cookie_secrets: Vec<PartialObjectMeta<Secret>>,
    /// The apps' MongoDB Secrets (name and version).
    mongo_secrets: Vec<PartialObjectMeta<Secret>>,
}

/// What makes a reconcile of one app happen in phases 6 and 7.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Trigger {
    /// The MeteorApp watch delivers the new generation.
    Generation,
    /// The Deployment watch delivers the operator's own apply.
    DeploymentSeen,
    /// The Deployment controller started the new pod, not ready; the old one still runs.
    PodStarted,
    /// The new pod is ready; the old one is gone.
    PodReady,
    /// A restarted operator reconciles every app it listed.
    Restarted,
}

/// An app's triggers for one image change, in the order a cluster makes them.
const ROLLOUT: [Trigger; 4] = [
    Trigger::Generation,
    Trigger::DeploymentSeen,
    Trigger::PodStarted,
    Trigger::PodReady,
];

/// SplitMix64: a fixed-seed generator, so every run interleaves the apps alike.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Every app's [`ROLLOUT`], the apps shuffled together (Fisher–Yates, fixed seed) with each app's
/// own order kept.
fn interleaved(apps: usize, seed: u64) -> Vec<(usize, Trigger)> {
    let mut slots: Vec<usize> = (0..apps).flat_map(|i| [i; ROLLOUT.len()]).collect();
    let mut random = SplitMix64(seed);
    for k in (1..slots.len()).rev() {
        slots.swap(k, (random.next() % (k as u64 + 1)) as usize);
    }
    let mut next = vec![0; apps];
    slots
        .into_iter()
        .map(|i| {
            next[i] += 1;
            (i, ROLLOUT[next[i] - 1])
        })
        .collect()
}

/// One app as the cluster holds it.
struct Held {
    app: Arc<MeteorApp>,
    /// Its Deployments, whole, with the status their controller last reported.
    deployments: BTreeMap<String, Deployment>,
    /// Written by the operator, their watch event not delivered yet.
    unseen: BTreeSet<String>,
    /// The pods of each Deployment.
    pods: BTreeMap<String, Vec<CachedPod>>,
}

/// The fleet as the cluster holds it, and the operator process that watches it.
struct Fleet {
    held: Vec<Held>,
    unchanged: Unchanged,
    caches: Caches,
    ctx: Arc<Context>,
    recorded: Arc<Recorded>,
}

/// The app a child belongs to: app `i`'s uid ends in `i`.
fn owner_app(object: &impl Resource) -> usize {
    let uid = &object.owner_references()[0].uid;
    uid.rsplit('-').next().unwrap().parse().unwrap()
}

/// App `i` is named `app-{i:04}`.
fn app_number(name: &str) -> usize {
    name.trim_start_matches("app-").parse().unwrap()
}

fn template_of(meta: Option<&ObjectMeta>) -> Option<&String> {
    meta?.labels.as_ref()?.get(TEMPLATE_HASH_LABEL)
}

fn replicas(deployment: &Deployment) -> i32 {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
}

/// Its status as the Deployment controller reports it on its current generation: `total` pods,
/// `updated` of them on the current template, `ready` ready and available.
fn progress(deployment: &Deployment, total: i32, updated: i32, ready: i32) -> DeploymentStatus {
    DeploymentStatus {
        observed_generation: deployment.metadata.generation,
        replicas: Some(total),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(ready),
        ..DeploymentStatus::default()
    }
}

/// The pods of its current template, as the API holds them (every label: a restarted operator
/// lists them by `managed-by`), in the shape of the pod cache, untrimmed (its watch trims them).
fn cached_pods(deployment: &Deployment, ready: bool) -> Vec<CachedPod> {
    running_pods(std::slice::from_ref(deployment), ready)
        .into_iter()
        .map(|json| serde_json::from_value(json).unwrap())
        .collect()
}

/// The Deployment controller reports `status`; its watch event reaches the cache.
fn report(
    recorded: &Recorded,
    caches: &mut Caches,
    deployment: &mut Deployment,
    status: DeploymentStatus,
) {
    recorded.reported(&deployment.name_any(), &status);
    deployment.metadata.resource_version = Some(recorded.next_version());
    deployment.status = Some(status);
    deliver(&mut caches.deployments, [deployment.clone()], Cached::new);
}

impl Held {
    /// The Deployment watch delivers what the operator wrote.
    fn deployments_seen(&mut self, caches: &mut Caches) {
        for name in std::mem::take(&mut self.unseen) {
            let written = self.deployments[&name].clone();
            deliver(&mut caches.deployments, [written], Cached::new);
        }
    }

    /// Each Deployment with a template its controller has not seen yet starts that template's
    /// pods (not ready) beside the old ones.
    fn pods_started(&mut self, caches: &mut Caches, recorded: &Recorded) {
        for (name, deployment) in &mut self.deployments {
            let seen = deployment
                .status
                .as_ref()
                .and_then(|s| s.observed_generation);
            if seen >= deployment.metadata.generation {
                continue;
            }
            let n = replicas(deployment);
            report(
                recorded,
                caches,
                deployment,
                progress(deployment, 2 * n, n, n),
            );
            let started = cached_pods(deployment, false);
            deliver(&mut caches.pods, started.clone(), trimmed(CachedPod::keep));
            self.pods.entry(name.clone()).or_default().extend(started);
        }
    }

    /// Each Deployment with pods of an older template left: its new pods are ready, the old
    /// ones gone.
    fn pods_ready(&mut self, caches: &mut Caches, recorded: &Recorded) {
        for (name, deployment) in &mut self.deployments {
            let spec = deployment.spec.as_ref();
            let template = spec.and_then(|s| template_of(s.template.metadata.as_ref()));
            let pods = self.pods.entry(name.clone()).or_default();
            let old: Vec<CachedPod> = pods
                .extract_if(.., |pod| template_of(Some(&pod.metadata)) != template)
                .collect();
            if old.is_empty() {
                continue;
            }
            let n = replicas(deployment);
            report(recorded, caches, deployment, progress(deployment, n, n, n));
            for pod in old {
                caches.pods.apply_watcher_event(&Event::Delete(pod));
            }
            *pods = cached_pods(deployment, true);
            deliver(&mut caches.pods, pods.clone(), trimmed(CachedPod::keep));
        }
    }
}

impl Fleet {
    /// The fleet after step 5: every app Ready, its Deployments rolled out (`deployments`, with
    /// their controller's status), their pods running and in the pod cache.
    fn settled(
        apps: Vec<Arc<MeteorApp>>,
        deployments: Vec<Deployment>,
        unchanged: Unchanged,
        caches: Caches,
        ctx: Arc<Context>,
        recorded: Arc<Recorded>,
    ) -> Self {
        let mut fleet = Fleet {
            held: apps
                .into_iter()
                .map(|app| Held {
                    app,
                    deployments: BTreeMap::new(),
                    unseen: BTreeSet::new(),
                    pods: BTreeMap::new(),
                })
                .collect(),
            unchanged,
            caches,
            ctx,
            recorded,
        };
        for deployment in deployments {
            let status = deployment.status.clone().unwrap_or_default();
            fleet.recorded.reported(&deployment.name_any(), &status);
            let pods = cached_pods(&deployment, true);
            deliver(
                &mut fleet.caches.pods,
                pods.clone(),
                trimmed(CachedPod::keep),
            );
            let held = &mut fleet.held[owner_app(&deployment)];
            held.pods.insert(deployment.name_any(), pods);
            held.deployments.insert(deployment.name_any(), deployment);
        }
        fleet
    }

    /// Every app's image changes (to `generation`): its watch event is in, its wait begins.
    fn change_image(&mut self, generation: i64) {
        for held in &mut self.held {
            let app = Arc::make_mut(&mut held.app);
            app.spec.image = format!("ghcr.io/example/todos:{generation}.0.0");
            app.metadata.generation = Some(generation);
            self.recorded.lags.changed(&app.name_any(), generation);
            announce(&self.caches.index, &self.ctx, Event::Apply(listed(app)));
        }
    }

    /// What the operator wrote, as the API server now holds it: the statuses on the apps (the
    /// MeteorApp watch delivers them at once), the Deployments with their watch event pending.
    fn absorb_writes(&mut self) {
        let statuses = std::mem::take(&mut *self.recorded.statuses.lock().unwrap());
        for (name, status) in statuses {
            let app = Arc::make_mut(&mut self.held[app_number(&name)].app);
            app.status = serde_json::from_value(status).ok();
        }
        let written = std::mem::take(&mut *self.recorded.deployments.lock().unwrap());
        for deployment in written {
            let held = &mut self.held[owner_app(&deployment)];
            held.unseen.insert(deployment.name_any());
            held.deployments.insert(deployment.name_any(), deployment);
        }
    }

    /// Makes what `trigger` stands for happen to app `i`, in the cluster and the caches.
    fn happen(&mut self, i: usize, trigger: Trigger) {
        let Fleet {
            held,
            caches,
            recorded,
            ..
        } = self;
        let held = &mut held[i];
        match trigger {
            Trigger::Generation | Trigger::Restarted => {}
            Trigger::DeploymentSeen => held.deployments_seen(caches),
            Trigger::PodStarted => held.pods_started(caches, recorded),
            Trigger::PodReady => held.pods_ready(caches, recorded),
        }
    }

    /// A reconcile of app `i`, as the controller runs it; resolves to `i`.
    fn reconcile(&self, i: usize) -> impl Future<Output = usize> + use<> {
        let (app, ctx) = (self.held[i].app.clone(), self.ctx.clone());
        let recorded = self.recorded.clone();
        async move {
            recorded.lags.reconcile_started(&app.name_any());
            reconcile(app, ctx)
                .await
                .expect("reconcile succeeds against the mock");
            i
        }
    }

    /// Runs `triggers` in order, each made to happen just before its app's reconcile starts:
    /// [`CONCURRENCY`] reconciles at once and one per app at a time, as the controller runs them.
    /// Returns how many reconciles ran.
    async fn run(
        &mut self,
        triggers: impl IntoIterator<Item = (usize, Trigger)>,
        memory: &mut Memory,
    ) -> usize {
        let mut running = FuturesUnordered::new();
        let mut busy = HashSet::new();
        let mut count = 0;
        for (i, trigger) in triggers {
            while running.len() >= CONCURRENCY || busy.contains(&i) {
                busy.remove(&running.next().await.expect("a reconcile is running"));
                memory.sample();
            }
            self.absorb_writes();
            self.happen(i, trigger);
            busy.insert(i);
            running.push(self.reconcile(i));
            count += 1;
        }
        while running.next().await.is_some() {
            memory.sample();
        }
        self.absorb_writes();
        count
    }

    /// The operator process restarts: its Context, caches and every memory of its writes go; the
    /// new one lists each kind once and starts from the objects the cluster holds now. Returns
    /// the restarted fleet and the heap the new operator holds once started (its caches, index
    /// and Context).
    async fn restarted(self) -> (Self, usize) {
        let Fleet {
            held,
            unchanged,
            caches,
            ctx,
            recorded,
        } = self;
        drop((caches, ctx));
        let before = live_bytes();
        recorded.serve(held.iter().map(|h| &*h.app));
        recorded.serve(held.iter().flat_map(|h| h.deployments.values()));
        let pods = held.iter().flat_map(|h| {
            h.pods.iter().flat_map(|(deployment, pods)| {
                let deployment = &h.deployments[deployment];
                pods.iter()
                    .map(|pod| pod_json(deployment, pod.metadata.clone(), true))
            })
        });
        recorded.serve_json(CachedPod::url_path(&(), None), pods);
        recorded.serve(&unchanged.services);
        recorded.serve(&unchanged.budgets);
        recorded.serve(&unchanged.accounts);
        recorded.serve(&unchanged.bindings);
        recorded.serve(
            unchanged
                .cookie_secrets
                .iter()
                .chain(&unchanged.mongo_secrets),
        );
        let client = auto_client(recorded.clone());
        let caches = Caches::listed(&client).await;
        let ctx = Arc::new(caches.context(client.clone()));
        announce(&caches.index, &ctx, Event::Init);
        pages(&all(&client), ListParams::default(), |app| {
            announce(&caches.index, &ctx, Event::InitApply(app))
        })
        .await;
        announce(&caches.index, &ctx, Event::InitDone);
        recorded.collections.lock().unwrap().clear();
        let heap = live_bytes().saturating_sub(before);
        let fleet = Fleet {
            held,
            unchanged,
            caches,
            ctx,
            recorded,
        };
        (fleet, heap)
    }
}

/// The most memory a phase used: peak RSS (VmHWM, reset at the start where the kernel allows)
/// and the live heap, sampled after every reconcile.
struct Memory {
    rss_start_kib: u64,
    rss_reset: bool,
    heap_peak: usize,
}

impl Memory {
    fn start() -> Self {
        Self {
            rss_start_kib: rss_kib("VmRSS:"),
            rss_reset: std::fs::write("/proc/self/clear_refs", "5").is_ok(),
            heap_peak: live_bytes(),
        }
    }

    fn sample(&mut self) {
        self.heap_peak = self.heap_peak.max(live_bytes());
    }
}

/// What phase 6 or 7 measured.
struct Phase {
    name: &'static str,
    counts: BTreeMap<&'static str, u64>,
    reconciles: usize,
    secs: f64,
    lags: Vec<Lag>,
    unobserved: usize,
    /// Apps whose status reports the new generation, Ready, at the end.
    settled: usize,
    rss_start_kib: u64,
    peak_rss_kib: u64,
    rss_reset: bool,
    heap_end: usize,
    heap_peak: usize,
    startup: Option<Startup>,
}

/// A restarted operator's start-up: its LISTs, and the heap it holds once they are in.
struct Startup {
    counts: BTreeMap<&'static str, u64>,
    objects: usize,
    heap: usize,
}

const SEED: u64 = 20;

/// Phase 6 (`restart` false) or 7: every app's image changes to `generation`, then the triggers
/// run interleaved; with `restart`, the operator restarts after half of them.
async fn image_change(
    mut fleet: Fleet,
    name: &'static str,
    generation: i64,
    restart: bool,
) -> (Fleet, Phase) {
    let recorded = fleet.recorded.clone();
    let mut memory = Memory::start();
    let started = Instant::now();
    fleet.change_image(generation);
    let queue = interleaved(fleet.held.len(), SEED + generation as u64);
    let (before, after) = queue.split_at(if restart {
        queue.len() / 2
    } else {
        queue.len()
    });
    let mut reconciles = fleet.run(before.iter().copied(), &mut memory).await;
    let mut counts = recorded.take_counts();
    let mut startup = None;
    if restart {
        let listed_before = recorded.listed.load(Ordering::Relaxed);
        let heap;
        (fleet, heap) = fleet.restarted().await;
        startup = Some(Startup {
            counts: recorded.take_counts(),
            objects: recorded.listed.load(Ordering::Relaxed) - listed_before,
            heap,
        });
        let initial = (0..fleet.held.len()).map(|i| (i, Trigger::Restarted));
        let rest = initial.chain(after.iter().copied());
        reconciles += fleet.run(rest, &mut memory).await;
        for (kind, count) in recorded.take_counts() {
            *counts.entry(kind).or_default() += count;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let (lags, unobserved) = recorded.lags.take();
    memory.sample();
    let settled = fleet
        .held
        .iter()
        .filter(|h| ready_on(&h.app, generation))
        .count();
    let phase = Phase {
        name,
        counts,
        reconciles,
        secs,
        lags,
        unobserved,
        settled,
        rss_start_kib: memory.rss_start_kib,
        peak_rss_kib: rss_kib("VmHWM:"),
        rss_reset: memory.rss_reset,
        heap_end: live_bytes(),
        heap_peak: memory.heap_peak,
        startup,
    };
    (fleet, phase)
}

/// Whether `app`'s status reports `generation` and Ready.
fn ready_on(app: &MeteorApp, generation: i64) -> bool {
    let status = app.status.as_ref();
    status.and_then(|s| s.observed_generation) == Some(generation)
        && meteor_operator::status::find(status, "Ready").is_some_and(|c| c.status == "True")
}

/// The table header of requests per app by kind.
fn print_requests_header() {
    println!(
        "| step | {} | all | writes | reconciles/s |",
        KINDS.join(" | ")
    );
    println!("|---|{}---:|---:|---:|", "---:|".repeat(KINDS.len()));
}

/// A row's figures per app: the cells of every kind, all requests, writes.
fn per_app(counts: &BTreeMap<&str, u64>, n: usize) -> (String, f64, f64) {
    let per_app = |count: u64| count as f64 / n as f64;
    let cells: Vec<String> = KINDS
        .iter()
        .map(|k| format!("{:.2}", per_app(*counts.get(k).unwrap_or(&0))))
        .collect();
    (
        cells.join(" | "),
        per_app(counts.values().sum()),
        per_app(writes_of(counts)),
    )
}

fn print_requests_row(label: &str, counts: &BTreeMap<&str, u64>, n: usize, per_second: f64) {
    let (cells, all, writes) = per_app(counts, n);
    println!("| {label} | {cells} | {all:.2} | {writes:.2} | {per_second:.0} |");
}

/// The value below which a share `q` of `sorted` lies (nearest rank).
fn percentile<T: Copy>(sorted: &[T], q: f64) -> T {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50 / p99 / max of `values` (zeros if none).
fn spread<T: Copy + Ord + Default>(mut values: Vec<T>) -> [T; 3] {
    if values.is_empty() {
        return [T::default(); 3];
    }
    values.sort_unstable();
    [0.5, 0.99, 1.0].map(|q| percentile(&values, q))
}

fn mib(bytes: f64) -> f64 {
    bytes / 1024.0 / 1024.0
}

fn print_phases(n: usize, phases: &[Phase]) {
    println!();
    println!(
        "Fleet-wide image change, all {n} apps at once, their triggers interleaved (fixed seed), requests per app:"
    );
    println!();
    print_requests_header();
    for phase in phases {
        let per_second = phase.reconciles as f64 / phase.secs;
        print_requests_row(phase.name, &phase.counts, n, per_second);
    }
    for phase in phases {
        if let Some(startup) = &phase.startup {
            print_startup(phase.name, startup);
        }
    }
    println!();
    println!(
        "| phase | reconciles | change → observedGeneration, ms (p50 / p99 / max) | other apps' reconciles in between (p50 / p99 / max) | own reconciles (max) | apps Ready on the new generation | RSS at start → peak (MiB) | live heap at end / peak (MiB) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for phase in phases {
        print_lag_row(n, phase);
    }
}

fn print_startup(phase: &str, startup: &Startup) {
    let requests: u64 = startup.counts.values().sum();
    let lists = startup.counts.get("list").copied().unwrap_or(0);
    println!();
    println!(
        "Restart start-up ({phase}): {requests} requests ({lists} LISTs: every cached kind in pages of {LIST_PAGE}, and the optional kinds' CRDs), {} objects listed, not counted above; the restarted operator's heap once they are in (caches, index, Context): {:.1} MiB.",
        startup.objects,
        mib(startup.heap as f64)
    );
}

fn print_lag_row(n: usize, phase: &Phase) {
    let [wall50, wall99, wall_max] = phase.wall_lags().map(|d| d.as_secs_f64() * 1e3);
    let [others50, others99, others_max] = spread(phase.lags.iter().map(|l| l.others).collect());
    let own_max = phase.lags.iter().map(|l| l.own).max().unwrap_or(0);
    let peak = if phase.rss_reset {
        ""
    } else {
        " (process peak)"
    };
    println!(
        "| {} | {} | {wall50:.1} / {wall99:.1} / {wall_max:.1} | {others50} / {others99} / {others_max} | {own_max} | {} of {n} | {:.0} → {:.0}{peak} | {:.1} / {:.1} |",
        phase.name,
        phase.reconciles,
        phase.settled,
        phase.rss_start_kib as f64 / 1024.0,
        phase.peak_rss_kib as f64 / 1024.0,
        mib(phase.heap_end as f64),
        mib(phase.heap_peak as f64),
    );
}

impl Phase {
    /// p50 / p99 / max of the wall-clock lags.
    fn wall_lags(&self) -> [Duration; 3] {
        spread(self.lags.iter().map(|l| l.wall).collect())
    }
}

/// Fails the bench when a phase left a change unreported, took longer than 30 s at p99 to report
/// it, or sent a LIST after start-up.
fn check_phase(phase: &Phase) {
    assert_eq!(
        phase.unobserved, 0,
        "{}: every app's new generation is reported",
        phase.name
    );
    let [_, p99, _] = phase.wall_lags();
    assert!(
        p99 <= Duration::from_secs(30),
        "{}: change → observedGeneration p99 {p99:?} exceeds 30 s",
        phase.name
    );
    assert_eq!(
        phase.counts.get("list").copied().unwrap_or(0),
        0,
        "{}: no LIST after start-up",
        phase.name
    );
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("METEOR_BENCH_APPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let proxy = std::env::var("METEOR_BENCH_PROXY").is_ok_and(|v| v == "1");
    let rss_start = rss_kib("VmRSS:");

    let recorded = Arc::new(Recorded::default());
    let mut caches = Caches::empty();
    deliver(
        &mut caches.secret_versions,
        (0..n).map(secret_version),
        trimmed(trim::version_only),
    );
    let mut observe = caches.index.observer();
    let apps: Vec<Arc<MeteorApp>> = (0..n).map(|i| Arc::new(app(i, proxy))).collect();
    for app in &apps {
        observe(&Ok(Event::Apply(listed(app))));
    }
    let ctx = Arc::new(caches.context(auto_client(recorded.clone())));

    let mut steps: Vec<(&str, BTreeMap<&'static str, u64>, f64)> = Vec::new();
    // 1. created
    let created_at = Instant::now();
    let secs = reconcile_all(&apps, ctx.clone()).await;
    steps.push(("1. created", recorded.take_counts(), secs));
    let apps = with_statuses(&apps, &recorded);
    // 2. the watch events of everything but the Services are in
    let applied: Vec<Deployment> = std::mem::take(&mut *recorded.deployments.lock().unwrap());
    deliver(&mut caches.deployments, applied.clone(), Cached::new);
    let applied_budgets = std::mem::take(&mut *recorded.budgets.lock().unwrap());
    deliver(&mut caches.budgets, applied_budgets.clone(), Cached::new);
    let applied_accounts = std::mem::take(&mut *recorded.accounts.lock().unwrap());
    deliver(&mut caches.accounts, applied_accounts.clone(), Cached::new);
    let applied_bindings = std::mem::take(&mut *recorded.bindings.lock().unwrap());
    deliver(&mut caches.bindings, applied_bindings.clone(), Cached::new);
    let created_secrets: Vec<PartialObjectMeta<Secret>> =
        std::mem::take(&mut *recorded.created_secrets.lock().unwrap())
            .into_iter()
            .map(|secret| PartialObjectMeta {
                metadata: secret.metadata,
                ..Default::default()
            })
            .collect();
    deliver(
        &mut caches.owned_secrets,
        created_secrets.clone(),
        cached::secret,
    );
    let secs = reconcile_all(&apps, ctx.clone()).await;
    steps.push(("2. Deployment seen", recorded.take_counts(), secs));
    let apps = with_statuses(&apps, &recorded);
    // 3. the Services are in; each Deployment's pod exists, not ready
    let applied_services: Vec<Service> = std::mem::take(&mut *recorded.services.lock().unwrap());
    deliver(&mut caches.services, applied_services.clone(), Cached::new);
    let started = applied.iter().cloned().map(|mut d| {
        let n = replicas(&d);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(n),
            updated_replicas: Some(n),
            unavailable_replicas: Some(n),
            ..DeploymentStatus::default()
        });
        d
    });
    deliver(&mut caches.deployments, started, Cached::new);
    let since_created = created_at.elapsed().as_secs_f64();
    let secs = reconcile_all(&apps, ctx.clone()).await;
    steps.push(("3. pods started", recorded.take_counts(), secs));
    let apps = with_statuses(&apps, &recorded);
    // 4. the pods are ready, one tier at a time as a real cluster readies them (the app's pod,
    // then its proxies'), farther apart than the pace of ready counts so no write is saved by
    // the clock
    let (proxies, app_tier): (Vec<Deployment>, Vec<Deployment>) = applied
        .into_iter()
        .map(|d| {
            let n = replicas(&d);
            support::rolled_out(d, n)
        })
        .partition(|d| {
            d.labels()
                .get("app.kubernetes.io/component")
                .map(String::as_str)
                == Some(Component::Proxy.as_str())
        });
    deliver(&mut caches.deployments, app_tier.clone(), Cached::new);
    let secs = reconcile_all(&apps, ctx.clone()).await;
    steps.push(("4. app pods ready", recorded.take_counts(), secs));
    let mut apps = with_statuses(&apps, &recorded);
    if proxy {
        tokio::time::sleep(TIER_READY_APART).await;
        deliver(&mut caches.deployments, proxies.clone(), Cached::new);
        let secs = reconcile_all(&apps, ctx.clone()).await;
        steps.push(("4b. proxy pods ready", recorded.take_counts(), secs));
        apps = with_statuses(&apps, &recorded);
    }
    let ready: Vec<Deployment> = app_tier.into_iter().chain(proxies).collect();
    let ready_count = apps.iter().filter(|a| ready_on(a, 1)).count();
    // 5. resync
    let secs = reconcile_all(&apps, ctx.clone()).await;
    let resync = recorded.take_counts();
    steps.push(("5. resync", resync.clone(), secs));

    let routing = if proxy { "proxy on" } else { "proxy off" };
    println!(
        "meteor-operator scale benchmark: {n} MeteorApps (1 replica, external MongoDB, {routing}), concurrency {CONCURRENCY}, instant mock API server"
    );
    println!();
    println!("Requests per app, by step and kind:");
    println!();
    print_requests_header();
    let mut to_ready: BTreeMap<&str, u64> = BTreeMap::new();
    for (step, counts, secs) in &steps {
        if !step.contains("resync") {
            for (k, v) in counts {
                *to_ready.entry(k).or_default() += v;
            }
        }
        print_requests_row(step, counts, n, n as f64 / secs);
    }
    let (cells, all, writes) = per_app(&to_ready, n);
    println!("| **creation → Ready (1–4)** | {cells} | **{all:.2}** | **{writes:.2}** | |");
    println!();
    println!("Apps Ready after step 4 (4b with the proxy on): {ready_count} of {n}");
    println!(
        "Step 3 began {since_created:.1} s after step 1 began; the proxies were ready {} s after \
         the app's pods (with the proxy on).",
        TIER_READY_APART.as_secs()
    );

    let unchanged = Unchanged {
        services: applied_services,
        budgets: applied_budgets,
        accounts: applied_accounts,
        bindings: applied_bindings,
        cookie_secrets: created_secrets,
        mongo_secrets: (0..n).map(secret_version).collect(),
    };
    print_cache_memory(n, &apps, &ready, &unchanged);
    println!();
    println!(
        "Bench process RSS at start / peak (includes the mock and its records): {} / {} MiB",
        rss_start / 1024,
        rss_kib("VmHWM:") / 1024
    );
    let resync_writes = writes_of(&resync);
    assert_eq!(resync_writes, 0, "a steady resync must not write");
    assert_eq!(ready_count, n, "every app is Ready after step 4");

    // 6 and 7: the fleet-wide image changes.
    let fleet = Fleet::settled(apps, ready, unchanged, caches, ctx, recorded.clone());
    let (fleet, churn) = image_change(fleet, "6. image change under pod churn", 2, false).await;
    let (_, restart) = image_change(fleet, "7. the same, restarted half-way", 3, true).await;
    let phases = [churn, restart];
    print_phases(n, &phases);
    phases.iter().for_each(check_phase);
    let refused = recorded.refused.lock().unwrap();
    assert!(refused.is_empty(), "{refused:#?}");
}

/// Memory each cached kind costs, as the controller trims it.
fn print_cache_memory(
    n: usize,
    apps: &[Arc<MeteorApp>],
    ready: &[Deployment],
    unchanged: &Unchanged,
) {
    let rows = [
        (
            "MeteorApp (identity and JSON)",
            bytes_per_object::<ListedApp, _>(
                json_of(apps.iter().map(|a| &**a)),
                |app: ListedApp| app,
            ),
        ),
        (
            "Deployments (the app's, the proxy's)",
            bytes_per_object::<Deployment, _>(json_of(ready), Cached::new),
        ),
        (
            "Services (the app's, the proxy's `NAME-app`)",
            bytes_per_object::<Service, _>(json_of(&unchanged.services), Cached::new),
        ),
        (
            "PodDisruptionBudget (the proxy's)",
            bytes_per_object::<PodDisruptionBudget, _>(json_of(&unchanged.budgets), Cached::new),
        ),
        (
            "ServiceAccount (the proxy's)",
            bytes_per_object::<ServiceAccount, _>(json_of(&unchanged.accounts), Cached::new),
        ),
        (
            "RoleBinding (the proxy's)",
            bytes_per_object::<RoleBinding, _>(json_of(&unchanged.bindings), Cached::new),
        ),
        (
            "pods (the app's, the proxy's), as a kubelet reports them",
            bytes_per_object::<CachedPod, _>(running_pods(ready, true), trimmed(CachedPod::keep)),
        ),
        (
            "cookie Secret (metadata)",
            bytes_per_object::<PartialObjectMeta<Secret>, _>(
                json_of(&unchanged.cookie_secrets),
                cached::secret,
            ),
        ),
        (
            "referenced Secret (name and version)",
            bytes_per_object::<PartialObjectMeta<Secret>, _>(
                json_of(&unchanged.mongo_secrets),
                trimmed(trim::version_only),
            ),
        ),
    ];
    println!();
    println!("Cache memory (heap bytes, trimmed as the controller trims):");
    println!();
    println!("| cached kind | objects per app | bytes per object | bytes per app |");
    println!("|---|---:|---:|---:|");
    let mut total = 0.0;
    for (kind, (objects, bytes)) in rows {
        if objects == 0 {
            continue;
        }
        let per_app = bytes * objects as f64 / n as f64;
        total += per_app;
        let objects_per_app = objects as f64 / n as f64;
        println!("| {kind} | {objects_per_app:.0} | {bytes:.0} | {per_app:.0} |");
    }
    println!(
        "| **one app** | | | **{total:.0}** ({:.1} KiB; {:.1} MiB for {n} apps) |",
        total / 1024.0,
        total * n as f64 / 1024.0 / 1024.0
    );
    println!();
    println!(
        "Inline struct sizes, before any field's own heap data: Deployment {} B, Service {} B, \
         MeteorApp {} B, PartialObjectMeta {} B.",
        std::mem::size_of::<Deployment>(),
        std::mem::size_of::<Service>(),
        std::mem::size_of::<MeteorApp>(),
        std::mem::size_of::<PartialObjectMeta<Secret>>()
    );
}
