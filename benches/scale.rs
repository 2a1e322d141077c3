//! Operator scale benchmark, on this machine, against an in-process mock API server that answers
//! at once. N MeteorApps (one replica, no workers, external MongoDB, each with its own Secret)
//! go from creation to Ready through the reconciles a real cluster triggers, in order:
//!
//! 1. **created**: the app's own watch event; every cache is empty.
//! 2. **Deployment seen**: its watch event is in, the Service's is not yet (the usual race).
//! 3. **pods started**: the Deployment controller reports the pod, not ready.
//! 4. **pods ready**: the app becomes Ready.
//! 5. **resync**: the periodic pass of a settled fleet (must make no write).
//!
//! Prints requests per app by kind for each step, the totals from creation to Ready, and the
//! bytes each cached object kind costs (trimmed exactly as the controller trims them).
//!
//! `cargo bench --bench scale` (N=1000), or `METEOR_BENCH_APPS=3000 cargo bench --bench scale`.
//! The apps run with `routing.proxy.enabled: false`; `METEOR_BENCH_PROXY=1` turns the proxy on
//! (the default of a MeteorApp): its tier's objects are then created, cached and counted too,
//! and step 4 has the proxy pods ready with the app's.
//! It measures the operator's own requests and memory; API-server latency and the kubelet's pace
//! are not modelled. Step 3 (pods created, none ready) is quiet progress, written at most once
//! a minute: the Ready transition of step 4 carries it.

#[path = "../tests/support/mod.rs"]
mod support;

use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::client::Body;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher::Event;
use kube::{Client, Resource, ResourceExt};
use meteor_operator::api::MeteorApp;
use meteor_operator::controller::pods::CachedPod;
use meteor_operator::controller::{
    Context, ListedApp, Metrics, Optional, RoutingCaches, SharedIndex, reconcile, request_kind,
    trim,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const CONCURRENCY: usize = 16;

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
fn writes_of(counts: &BTreeMap<&'static str, u64>) -> u64 {
    counts
        .iter()
        .filter(|(kind, _)| !["get", "list"].contains(kind))
        .map(|(_, n)| n)
        .sum()
}

/// What the mock answered, so each step can be fed the previous one's results.
#[derive(Default)]
struct Recorded {
    deployments: Mutex<Vec<Deployment>>,
    services: Mutex<Vec<Service>>,
    budgets: Mutex<Vec<PodDisruptionBudget>>,
    accounts: Mutex<Vec<ServiceAccount>>,
    roles: Mutex<Vec<Role>>,
    bindings: Mutex<Vec<RoleBinding>>,
    /// Secrets the operator created (the proxy's cookie Secret).
    created_secrets: Mutex<Vec<Secret>>,
    statuses: Mutex<HashMap<String, serde_json::Value>>,
    counts: Mutex<BTreeMap<&'static str, u64>>,
    version: AtomicU64,
    /// Requests the chart's RBAC refuses (answered 403, as the apiserver would).
    refused: Mutex<Vec<String>>,
}

impl Recorded {
    fn take_counts(&self) -> BTreeMap<&'static str, u64> {
        std::mem::take(&mut *self.counts.lock().unwrap())
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
                *recorded
                    .counts
                    .lock()
                    .unwrap()
                    .entry(kind_of(&method, request.uri()))
                    .or_default() += 1;
                if let Err(refusal) = support::rbac::check(&request) {
                    recorded.refused.lock().unwrap().push(refusal.clone());
                    respond.send_response(support::forbidden(&refusal));
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
                    recorded
                        .statuses
                        .lock()
                        .unwrap()
                        .insert(name, body["status"].clone());
                    let mut whole = serde_json::to_value(app(0, false)).unwrap();
                    whole["status"] = body["status"].clone();
                    (StatusCode::OK, whole)
                } else if path.contains("/deployments/") {
                    body["metadata"]["generation"] = 1.into();
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
                } else if path.contains("/roles/") {
                    keep(&recorded.roles, &body);
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

fn deliver<K: Resource<DynamicType = ()> + Clone + 'static>(
    writer: &mut Writer<K>,
    objects: impl IntoIterator<Item = K>,
    trim: fn(&mut K),
) {
    for mut object in objects {
        trim(&mut object);
        writer.apply_watcher_event(&Event::Apply(object));
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
fn bytes_per_object<K>(objects: Vec<serde_json::Value>, trim: fn(&mut K)) -> (usize, f64)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + 'static,
{
    let n = objects.len().max(1);
    let before = live_bytes();
    let (reader, mut writer) = store::<K>();
    for json in &objects {
        let mut object: K = serde_json::from_value(json.clone()).unwrap();
        trim(&mut object);
        writer.apply_watcher_event(&Event::Apply(object));
    }
    let bytes = live_bytes().saturating_sub(before);
    drop((reader, writer));
    (objects.len(), bytes as f64 / n as f64)
}

/// The pods of `deployments` as the API holds them once running: the template's spec, the
/// ReplicaSet as owner, and a kubelet's status (conditions, container statuses).
fn running_pods(deployments: &[Deployment]) -> Vec<serde_json::Value> {
    let mut pods = Vec::new();
    for deployment in deployments {
        let spec = deployment.spec.as_ref().expect("a Deployment has a spec");
        let template = &spec.template;
        for i in 0..spec.replicas.unwrap_or(1) {
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
            let conditions: Vec<serde_json::Value> = [
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled",
            ]
            .iter()
            .map(|t| {
                serde_json::json!({ "type": t, "status": "True", "lastProbeTime": null,
                    "lastTransitionTime": "2026-12-06T10:00:05Z" })
            })
            .collect();
            let mut pod = serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": metadata,
                "spec": template.spec,
                "status": {
                    "phase": "Running", "podIP": "10.244.3.17", "hostIP": "10.0.0.4",
                    "podIPs": [{ "ip": "10.244.3.17" }], "qosClass": "Burstable",
                    "startTime": "2026-12-06T10:00:00Z",
                    "conditions": conditions,
                    "containerStatuses": [{ "name": "meteor", "ready": true, "started": true,
                        "restartCount": 0, "image": "registry.example.com/app:1",
                        "imageID": "registry.example.com/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                        "containerID": "containerd://0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                        "state": { "running": { "startedAt": "2026-12-06T10:00:02Z" } } }],
                },
            });
            pod["metadata"]["ownerReferences"] = serde_json::json!([{ "apiVersion": "apps/v1",
                "kind": "ReplicaSet", "name": format!("{}-5d8f7c9b4", deployment.name_any()),
                "uid": "rs-uid", "controller": true, "blockOwnerDeletion": true }]);
            pods.push(pod);
        }
    }
    pods
}

fn json_of<T: serde::Serialize>(objects: impl IntoIterator<Item = T>) -> Vec<serde_json::Value> {
    objects
        .into_iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect()
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
    let (deployments, mut deployment_writer) = store::<Deployment>();
    let (services, mut service_writer) = store::<Service>();
    let (budgets, mut budget_writer) = store::<PodDisruptionBudget>();
    let (accounts, mut account_writer) = store::<ServiceAccount>();
    let (roles, mut role_writer) = store::<Role>();
    let (bindings, mut binding_writer) = store::<RoleBinding>();
    let (owned_secrets, mut owned_secret_writer) = store::<PartialObjectMeta<Secret>>();
    let (secret_versions, mut secret_writer) = store::<PartialObjectMeta<Secret>>();
    let (config_map_versions, _config_map_writer) = store::<PartialObjectMeta<ConfigMap>>();
    deliver(
        &mut secret_writer,
        (0..n).map(secret_version),
        trim::version_only,
    );
    let index = SharedIndex::default();
    let mut observe = index.observer();
    let apps: Vec<Arc<MeteorApp>> = (0..n).map(|i| Arc::new(app(i, proxy))).collect();
    for app in &apps {
        observe(&Ok(Event::Apply(ListedApp::from_value(
            serde_json::to_value(&**app).unwrap(),
        ))));
    }
    let ctx = Arc::new(
        Context::new(
            auto_client(recorded.clone()),
            deployments,
            services,
            budgets,
            Arc::new(Metrics::default()),
        )
        .with_references(index, secret_versions, config_map_versions)
        .with_mongo_caches(store().0, store().0, owned_secrets)
        .with_routing_caches(RoutingCaches {
            ingresses: store().0,
            service_accounts: accounts,
            roles,
            role_bindings: bindings,
            http_routes: Optional::absent(),
            certificates: Optional::absent(),
        }),
    );

    let mut steps: Vec<(&str, BTreeMap<&'static str, u64>, f64)> = Vec::new();
    // 1. created
    let created_at = Instant::now();
    let secs = reconcile_all(&apps, ctx.clone()).await;
    steps.push(("1. created", recorded.take_counts(), secs));
    let apps = with_statuses(&apps, &recorded);
    // 2. the watch events of everything but the Services are in
    let applied: Vec<Deployment> = std::mem::take(&mut *recorded.deployments.lock().unwrap());
    deliver(&mut deployment_writer, applied.clone(), trim::deployment);
    let applied_budgets = std::mem::take(&mut *recorded.budgets.lock().unwrap());
    deliver(
        &mut budget_writer,
        applied_budgets.clone(),
        trim::disruption_budget,
    );
    let applied_accounts = std::mem::take(&mut *recorded.accounts.lock().unwrap());
    deliver(
        &mut account_writer,
        applied_accounts.clone(),
        trim::service_account,
    );
    let applied_roles = std::mem::take(&mut *recorded.roles.lock().unwrap());
    deliver(&mut role_writer, applied_roles.clone(), trim::role);
    let applied_bindings = std::mem::take(&mut *recorded.bindings.lock().unwrap());
    deliver(
        &mut binding_writer,
        applied_bindings.clone(),
        trim::role_binding,
    );
    let created_secrets: Vec<PartialObjectMeta<Secret>> =
        std::mem::take(&mut *recorded.created_secrets.lock().unwrap())
            .into_iter()
            .map(|secret| PartialObjectMeta {
                metadata: secret.metadata,
                ..Default::default()
            })
            .collect();
    deliver(
        &mut owned_secret_writer,
        created_secrets.clone(),
        trim::secret_metadata,
    );
    let secs = reconcile_all(&apps, ctx.clone()).await;
    steps.push(("2. Deployment seen", recorded.take_counts(), secs));
    let apps = with_statuses(&apps, &recorded);
    // 3. the Services are in; each Deployment's pod exists, not ready
    let applied_services: Vec<Service> = std::mem::take(&mut *recorded.services.lock().unwrap());
    deliver(&mut service_writer, applied_services.clone(), trim::service);
    let replicas = |d: &Deployment| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
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
    deliver(&mut deployment_writer, started, trim::deployment);
    let since_created = created_at.elapsed().as_secs_f64();
    let secs = reconcile_all(&apps, ctx.clone()).await;
    steps.push(("3. pods started", recorded.take_counts(), secs));
    let apps = with_statuses(&apps, &recorded);
    // 4. the pods are ready
    let ready: Vec<Deployment> = applied
        .iter()
        .cloned()
        .map(|d| {
            let n = replicas(&d);
            support::rolled_out(d, n)
        })
        .collect();
    deliver(&mut deployment_writer, ready.clone(), trim::deployment);
    let secs = reconcile_all(&apps, ctx.clone()).await;
    steps.push(("4. pods ready", recorded.take_counts(), secs));
    let apps = with_statuses(&apps, &recorded);
    let ready_count = apps
        .iter()
        .filter(|a| {
            meteor_operator::status::find(a.status.as_ref(), "Ready")
                .is_some_and(|c| c.status == "True")
        })
        .count();
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
    println!(
        "| step | {} | all | writes | reconciles/s |",
        KINDS.join(" | ")
    );
    println!("|---|{}---:|---:|---:|", "---:|".repeat(KINDS.len()));
    let per_app = |count: u64| count as f64 / n as f64;
    let mut to_ready: BTreeMap<&str, u64> = BTreeMap::new();
    for (step, counts, secs) in &steps {
        let all: u64 = counts.values().sum();
        let writes = writes_of(counts);
        if !step.contains("resync") {
            for (k, v) in counts {
                *to_ready.entry(k).or_default() += v;
            }
        }
        let cells: Vec<String> = KINDS
            .iter()
            .map(|k| format!("{:.2}", per_app(*counts.get(k).unwrap_or(&0))))
            .collect();
        println!(
            "| {step} | {} | {:.2} | {:.2} | {:.0} |",
            cells.join(" | "),
            per_app(all),
            per_app(writes),
            n as f64 / secs
        );
    }
    let all: u64 = to_ready.values().sum();
    let writes = writes_of(&to_ready);
    let cells: Vec<String> = KINDS
        .iter()
        .map(|k| format!("{:.2}", per_app(*to_ready.get(k).unwrap_or(&0))))
        .collect();
    println!(
        "| **creation → Ready (1–4)** | {} | **{:.2}** | **{:.2}** | |",
        cells.join(" | "),
        per_app(all),
        per_app(writes)
    );
    println!();
    println!("Apps Ready after step 4: {ready_count} of {n}");
    println!(
        "Step 3 began {since_created:.1} s after step 1 began: apps whose step 3 came more than \
         60 s after their first status write (the pacing of quiet progress) wrote their pod \
         counts then."
    );

    // Memory each cached kind costs, as the controller trims it.
    let rows = [
        (
            "MeteorApp (spec + status)",
            bytes_per_object::<ListedApp>(json_of(apps.iter().map(|a| &**a)), trim::app),
        ),
        (
            "Deployments (the app's, the proxy's)",
            bytes_per_object::<Deployment>(json_of(&ready), trim::deployment),
        ),
        (
            "Services (the app's, the proxy's `NAME-app`)",
            bytes_per_object::<Service>(json_of(applied_services), trim::service),
        ),
        (
            "PodDisruptionBudget (the proxy's)",
            bytes_per_object::<PodDisruptionBudget>(
                json_of(applied_budgets),
                trim::disruption_budget,
            ),
        ),
        (
            "ServiceAccount (the proxy's)",
            bytes_per_object::<ServiceAccount>(json_of(applied_accounts), trim::service_account),
        ),
        (
            "Role (the proxy's)",
            bytes_per_object::<Role>(json_of(applied_roles), trim::role),
        ),
        (
            "RoleBinding (the proxy's)",
            bytes_per_object::<RoleBinding>(json_of(applied_bindings), trim::role_binding),
        ),
        (
            "pods (the app's, the proxy's), as a kubelet reports them",
            bytes_per_object::<CachedPod>(running_pods(&ready), trim::pod),
        ),
        (
            "cookie Secret (metadata)",
            bytes_per_object::<PartialObjectMeta<Secret>>(
                json_of(created_secrets),
                trim::secret_metadata,
            ),
        ),
        (
            "referenced Secret (name and version)",
            bytes_per_object::<PartialObjectMeta<Secret>>(
                json_of((0..n).map(secret_version)),
                trim::version_only,
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
    println!();
    println!(
        "Bench process RSS at start / peak (includes the mock and its records): {} / {} MiB",
        rss_start / 1024,
        rss_kib("VmHWM:") / 1024
    );
    let resync_writes = writes_of(&resync);
    assert_eq!(resync_writes, 0, "a steady resync must not write");
    assert_eq!(ready_count, n, "every app is Ready after step 4");
    let refused = recorded.refused.lock().unwrap();
    assert!(refused.is_empty(), "{refused:#?}");
}
