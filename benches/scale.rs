//! Operator scale benchmark, on this machine, against an in-process mock API server that answers
//! instantly: N MeteorApps created (first reconcile of each), then a full resync of the converged
//! fleet. Prints reconcile throughput, requests per app, writes on resync (must be 0), and the
//! memory of the caches holding the fleet (trimmed exactly as the controller trims them).
//!
//! `cargo bench --bench scale` (N=500), or `METEOR_BENCH_APPS=2000 cargo bench --bench scale`.
//! It measures the operator's own cost; API-server latency and kubelet speed are not modelled.

#[path = "../tests/support/mod.rs"]
mod support;

use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::client::Body;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use meteor_operator::api::MeteorApp;
use meteor_operator::controller::{Context, ListedApp, Metrics, reconcile, trim};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
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

/// Everything the mock answered, so phase 2 can be fed phase 1's results.
#[derive(Default)]
struct Recorded {
    deployments: Mutex<Vec<Deployment>>,
    services: Mutex<Vec<Service>>,
    budgets: Mutex<Vec<PodDisruptionBudget>>,
    statuses: Mutex<HashMap<String, serde_json::Value>>,
    requests: AtomicU64,
    writes: AtomicU64,
    /// Requests the chart's RBAC refuses (answered 403, as the apiserver would).
    refused: Mutex<Vec<String>>,
}

/// A mock API server that answers any request of a reconcile at once (after the RBAC check).
fn auto_client(recorded: Arc<Recorded>) -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let recorded = recorded.clone();
            tokio::spawn(async move {
                recorded.requests.fetch_add(1, Ordering::Relaxed);
                if let Err(refusal) = support::rbac::check(&request) {
                    recorded.refused.lock().unwrap().push(refusal.clone());
                    respond.send_response(support::forbidden(&refusal));
                    return;
                }
                let method = request.method().clone();
                let path = request.uri().path().to_string();
                let bytes = request.into_body().collect_bytes().await.unwrap();
                let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                if method != Method::GET {
                    recorded.writes.fetch_add(1, Ordering::Relaxed);
                }
                let (status, reply) = if method == Method::GET && path.contains("/secrets/") {
                    (
                        StatusCode::OK,
                        support::secret_json(
                            "mongo",
                            &[("MONGO_URL", "mongodb://db-0,db-1/app?replicaSet=rs0")],
                        ),
                    )
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
                    let mut whole = serde_json::to_value(app(0)).unwrap();
                    whole["status"] = body["status"].clone();
                    (StatusCode::OK, whole)
                } else if path.contains("/deployments/") {
                    let mut deployment: Deployment = serde_json::from_value(body.clone()).unwrap();
                    deployment.metadata.generation = Some(1);
                    recorded.deployments.lock().unwrap().push(deployment);
                    (StatusCode::OK, body)
                } else if path.contains("/services/") {
                    recorded
                        .services
                        .lock()
                        .unwrap()
                        .push(serde_json::from_value(body.clone()).unwrap());
                    (StatusCode::OK, body)
                } else if path.contains("/poddisruptionbudgets/") {
                    recorded
                        .budgets
                        .lock()
                        .unwrap()
                        .push(serde_json::from_value(body.clone()).unwrap());
                    (StatusCode::OK, body)
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

fn app(i: usize) -> MeteorApp {
    let mut app = support::minimal_app();
    app.metadata.name = Some(format!("app-{i:04}"));
    app.metadata.uid = Some(format!("00000000-0000-4000-8000-{i:012}"));
    app
}

fn store_of<K: Resource<DynamicType = ()> + Clone + 'static>(
    objects: Vec<K>,
    trim: fn(&mut K),
) -> Store<K> {
    let (reader, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for mut object in objects {
        trim(&mut object);
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    reader
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

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("METEOR_BENCH_APPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let rss_start = rss_kib("VmRSS:");

    // Phase 1: a fleet created at once, empty caches.
    let created = Arc::new(Recorded::default());
    let ctx = Arc::new(Context::new(
        auto_client(created.clone()),
        store_of(vec![], trim::deployment),
        store_of(vec![], trim::service),
        store_of(vec![], trim::disruption_budget),
        Arc::new(Metrics::default()),
    ));
    let apps: Vec<Arc<MeteorApp>> = (0..n).map(|i| Arc::new(app(i))).collect();
    let create_secs = reconcile_all(&apps, ctx).await;
    let create_requests = created.requests.load(Ordering::Relaxed);

    // Phase 2: the converged fleet in the caches (Deployments rolled out), statuses stored.
    let deployments: Vec<Deployment> = std::mem::take(&mut *created.deployments.lock().unwrap())
        .into_iter()
        .map(|d| {
            let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            support::rolled_out(d, replicas)
        })
        .collect();
    let statuses = std::mem::take(&mut *created.statuses.lock().unwrap());
    let converged: Vec<Arc<MeteorApp>> = apps
        .iter()
        .map(|a| {
            let mut a = (**a).clone();
            a.status = serde_json::from_value(statuses[&a.name_any()].clone()).ok();
            Arc::new(a)
        })
        .collect();
    let services = std::mem::take(&mut *created.services.lock().unwrap());
    let budgets = std::mem::take(&mut *created.budgets.lock().unwrap());
    // The caches a running operator holds for this fleet: apps and their three kinds of child.
    // Fresh copies go in, so the delta is what the caches hold, not what moved.
    let before_caches = live_bytes();
    let app_cache = store_of(
        converged
            .iter()
            .map(|a| ListedApp::from_value(serde_json::to_value(&**a).unwrap()))
            .collect(),
        trim::app,
    );
    let deployment_cache = store_of(deployments.clone(), trim::deployment);
    let service_cache = store_of(services.clone(), trim::service);
    let budget_cache = store_of(budgets.clone(), trim::disruption_budget);
    let cache_bytes = live_bytes().saturating_sub(before_caches);
    drop((deployments, services, budgets));
    assert_eq!(app_cache.len(), n);
    let resync = Arc::new(Recorded::default());
    let ctx = Arc::new(Context::new(
        auto_client(resync.clone()),
        deployment_cache,
        service_cache,
        budget_cache,
        Arc::new(Metrics::default()),
    ));
    // First resync writes the Ready status (the Deployments became available); the second is
    // the steady state.
    let ready_secs = reconcile_all(&converged, ctx.clone()).await;
    let ready_writes = resync.writes.swap(0, Ordering::Relaxed);
    resync.requests.store(0, Ordering::Relaxed);
    let statuses = std::mem::take(&mut *resync.statuses.lock().unwrap());
    let steady: Vec<Arc<MeteorApp>> = converged
        .iter()
        .map(|a| {
            let mut a = (**a).clone();
            if let Some(status) = statuses.get(&a.name_any()) {
                a.status = serde_json::from_value(status.clone()).ok();
            }
            Arc::new(a)
        })
        .collect();
    let steady_secs = reconcile_all(&steady, ctx).await;
    let steady_requests = resync.requests.load(Ordering::Relaxed);
    let steady_writes = resync.writes.load(Ordering::Relaxed);

    println!(
        "meteor-operator scale benchmark: {n} MeteorApps, concurrency {CONCURRENCY}, instant mock API server"
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!("| create: reconciles/s | {:.0} |", n as f64 / create_secs);
    println!(
        "| create: requests per app | {:.1} |",
        create_requests as f64 / n as f64
    );
    println!(
        "| becoming Ready: writes per app | {:.1} |",
        ready_writes as f64 / n as f64
    );
    println!(
        "| status-to-Ready resync: reconciles/s | {:.0} |",
        n as f64 / ready_secs
    );
    println!(
        "| steady resync: reconciles/s | {:.0} |",
        n as f64 / steady_secs
    );
    println!(
        "| steady resync: requests per app | {:.1} |",
        steady_requests as f64 / n as f64
    );
    println!("| steady resync: write requests (must be 0) | {steady_writes} |");
    println!(
        "| caches (app + children, trimmed): KiB per app | {:.1} |",
        cache_bytes as f64 / 1024.0 / n as f64
    );
    println!(
        "| caches for the whole fleet | {:.1} MiB |",
        cache_bytes as f64 / 1024.0 / 1024.0
    );
    println!(
        "| bench process RSS at start / peak (includes the mock and its records) | {} / {} MiB |",
        rss_start / 1024,
        rss_kib("VmHWM:") / 1024
    );
    assert_eq!(steady_writes, 0, "a steady resync must not write");
    for recorded in [&created, &resync] {
        let refused = recorded.refused.lock().unwrap();
        assert!(refused.is_empty(), "{refused:#?}");
    }
}
