//! The controller's runtime against an in-process fake API server: leader election between two
//! lease managers built as `run` builds them, caches that fill on a standby, reconciles that
//! start once the Lease is won, and a repeated event patched rather than created again. Every
//! request passes the chart's RBAC check, so the verbs of watches, leases and events are in the
//! recorded list.

mod support;

use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use kube::Client;
use kube::client::Body;
use meteor_operator::controller::{
    LeaseSettings, LogFormat, RunArgs, holder_identity, lease_manager, reconcile, run_with,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use support::rbac;

/// The release namespace of manifests/install.yaml: the Role allows the Lease there only.
const OPERATOR_NAMESPACE: &str = "meteor-system";
const LEASE: &str = "meteor-operator";
const LEASE_PATH: &str =
    "/apis/coordination.k8s.io/v1/namespaces/meteor-system/leases/meteor-operator";

// --- the fake API server ---------------------------------------------------------------------

/// A request the fake answered.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    method: Method,
    path: String,
    query: String,
    accept: String,
    body: Value,
}

/// A successful write of the Lease.
#[derive(Clone, Debug)]
struct LeaseWrite {
    at: Instant,
    wall: SystemTime,
    holder: Option<String>,
    renew: Option<String>,
}

/// One stored Lease with server-side-apply field ownership of its spec (all scalar fields).
#[derive(Default)]
struct StoredLease {
    object: Value,
    /// Field -> managers that own it.
    owners: BTreeMap<String, BTreeSet<String>>,
    /// Manager -> fields its last apply set.
    applied: BTreeMap<String, BTreeSet<String>>,
}

/// An in-memory coordination.k8s.io/v1 Lease store that answers like a real apiserver: GET,
/// POST (409 AlreadyExists), PATCH as server-side apply (409 Conflict on a field another manager
/// owns with another value, unless forced) or as strategic-merge/merge patch (null removes a
/// field), PUT with a resourceVersion precondition (409 Conflict).
#[derive(Default)]
struct Leases {
    stored: BTreeMap<(String, String), StoredLease>,
    version: u64,
    history: Vec<LeaseWrite>,
}

type FakeBody = UnsyncBoxBody<Bytes, Infallible>;

/// Answers any LIST with an empty list of the right kind (MeteorApps: `apps`), holds every
/// WATCH open, answers a GET of a named object 404, echoes writes, and keeps Leases for real.
#[derive(Default)]
struct FakeApi {
    apps: Vec<Value>,
    /// The MeteorApp CRD is not installed: MeteorApps are not served (404).
    no_crd: bool,
    /// Requests to paths starting with this are never answered (an API server gone quiet).
    hang: Option<String>,
    leases: Mutex<Leases>,
    seen: Mutex<Vec<Seen>>,
    refused: Mutex<Vec<String>>,
}

impl FakeApi {
    fn new(apps: Vec<Value>) -> Arc<Self> {
        Arc::new(Self {
            apps,
            ..Self::default()
        })
    }

    fn client(self: &Arc<Self>) -> Client {
        let fake = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let fake = fake.clone();
            async move { Ok::<_, Infallible>(fake.answer(request).await) }
        });
        Client::new(service, "default")
    }

    /// Serves this fake over HTTP on a loopback port, for a real `meteor-operator` process.
    async fn serve(self: &Arc<Self>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let fake = fake.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let fake = fake.clone();
                        async move {
                            let (parts, body) = request.into_parts();
                            let bytes = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let request = Request::from_parts(parts, Body::from(bytes.to_vec()));
                            Ok::<_, Infallible>(fake.answer(request).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn refused(&self) -> Vec<String> {
        self.refused.lock().unwrap().clone()
    }

    /// Another replica, `holder`, takes or renews the Lease for `seconds` from now.
    fn lease_held_by(&self, holder: &str, seconds: i64) {
        self.leases.lock().unwrap().write(
            OPERATOR_NAMESPACE,
            LEASE,
            "other-manager",
            &json!({
                "holderIdentity": holder, "leaseDurationSeconds": seconds,
                "acquireTime": now_micro(), "renewTime": now_micro(),
            }),
            Write::Update,
        )
    }

    fn lease_history(&self) -> Vec<LeaseWrite> {
        self.leases.lock().unwrap().history.clone()
    }

    fn holder(&self) -> Option<String> {
        let leases = self.leases.lock().unwrap();
        let stored = leases
            .stored
            .get(&(OPERATOR_NAMESPACE.to_string(), LEASE.to_string()))?;
        stored.object["spec"]["holderIdentity"]
            .as_str()
            .map(str::to_string)
    }

    /// The holders the Lease went through, in order, repeats folded.
    fn holders(&self) -> Vec<Option<String>> {
        let mut holders: Vec<Option<String>> = Vec::new();
        for write in self.lease_history() {
            if holders.last() != Some(&write.holder) {
                holders.push(write.holder);
            }
        }
        holders
    }

    async fn answer(&self, request: Request<Body>) -> Response<FakeBody> {
        let permitted = rbac::check(&request);
        let (parts, body) = request.into_parts();
        let header = |name: http::header::HeaderName| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let accept = header(http::header::ACCEPT);
        let content_type = header(http::header::CONTENT_TYPE);
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let method = parts.method.clone();
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or("").to_string();
        self.seen.lock().unwrap().push(Seen {
            at: Instant::now(),
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            accept: accept.clone(),
            body: body.clone(),
        });
        let permitted = permitted.and_then(|_| rbac::check_escalation(&method, &path, &body));
        if let Err(refusal) = permitted {
            self.refused.lock().unwrap().push(refusal.clone());
            return reply(
                StatusCode::FORBIDDEN,
                status_json(403, "Forbidden", &refusal),
            );
        }
        if self
            .hang
            .as_ref()
            .is_some_and(|prefix| path.starts_with(prefix))
        {
            return futures::future::pending().await;
        }
        let request = rbac::attributes(&method, &path, &query).expect("a resource path");
        if self.no_crd && request.resource == "meteorapps" {
            return reply(
                StatusCode::NOT_FOUND,
                status_json(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
            );
        }
        if request.resource == "leases" {
            let (status, body) = self.lease(&request, &content_type, &query, body);
            return reply(status, body);
        }
        match request.verb {
            "watch" => Response::new(
                StreamBody::new(futures::stream::pending::<Result<Frame<Bytes>, Infallible>>())
                    .boxed_unsync(),
            ),
            "list" => reply(
                StatusCode::OK,
                self.list(&request.resource, &accept, &query),
            ),
            "get" => reply(
                StatusCode::NOT_FOUND,
                status_json(404, "NotFound", &format!("{path} not found")),
            ),
            "patch" if request.subresource.as_deref() == Some("status") => {
                let name = request.name.as_deref().unwrap_or_default();
                let mut app = self
                    .apps
                    .iter()
                    .find(|a| a["metadata"]["name"] == name)
                    .cloned()
                    .unwrap_or_else(|| panic!("status of unknown app {name}"));
                app["status"] = body["status"].clone();
                reply(StatusCode::OK, app)
            }
            "patch" => reply(StatusCode::OK, body),
            "create" => reply(StatusCode::CREATED, body),
            verb => panic!("the fake API server does not answer {verb} {path}"),
        }
    }

    fn list(&self, resource: &str, accept: &str, query: &str) -> Value {
        let (api_version, kind) = match resource {
            _ if accept.contains("as=PartialObjectMetadataList") => {
                ("meta.k8s.io/v1", "PartialObjectMetadataList")
            }
            "meteorapps" => ("meteorfleet.dev/v1alpha1", "MeteorAppList"),
            "deployments" => ("apps/v1", "DeploymentList"),
            "statefulsets" => ("apps/v1", "StatefulSetList"),
            "networkpolicies" => ("networking.k8s.io/v1", "NetworkPolicyList"),
            "services" => ("v1", "ServiceList"),
            "secrets" => ("v1", "SecretList"),
            "configmaps" => ("v1", "ConfigMapList"),
            "poddisruptionbudgets" => ("policy/v1", "PodDisruptionBudgetList"),
            "ingresses" => ("networking.k8s.io/v1", "IngressList"),
            "serviceaccounts" => ("v1", "ServiceAccountList"),
            "rolebindings" => ("rbac.authorization.k8s.io/v1", "RoleBindingList"),
            "httproutes" => ("gateway.networking.k8s.io/v1", "HTTPRouteList"),
            "certificates" => ("cert-manager.io/v1", "CertificateList"),
            "podmonitors" => ("monitoring.coreos.com/v1", "PodMonitorList"),
            "horizontalpodautoscalers" => ("autoscaling/v2", "HorizontalPodAutoscalerList"),
            "pods" => ("v1", "PodList"),
            other => panic!("the fake API server cannot list {other}"),
        };
        let items = match resource {
            "meteorapps" => self.apps.clone(),
            // This cluster has every optional CRD the operator asks for (Gateway API,
            // cert-manager, the Prometheus Operator), so their watches start too.
            "customresourcedefinitions" => url::form_urlencoded::parse(query.as_bytes())
                .filter(|(key, _)| key == "fieldSelector")
                .filter_map(|(_, selector)| {
                    let name = selector.strip_prefix("metadata.name=")?.to_string();
                    Some(json!({
                        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                        "metadata": { "name": name, "resourceVersion": "1" },
                    }))
                })
                .collect(),
            _ => vec![],
        };
        json!({
            "apiVersion": api_version, "kind": kind,
            "metadata": { "resourceVersion": "1" },
            "items": items,
        })
    }

    fn lease(
        &self,
        request: &rbac::Attributes,
        content_type: &str,
        query: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let namespace = request.namespace.clone().expect("Leases are namespaced");
        let param = |key: &str| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        let manager = param("fieldManager").unwrap_or_else(|| "unknown".into());
        let force = param("force").as_deref() == Some("true");
        let mut leases = self.leases.lock().unwrap();
        match (request.verb, request.name.clone()) {
            ("get", Some(name)) => match leases.stored.get(&(namespace, name.clone())) {
                Some(stored) => (StatusCode::OK, stored.object.clone()),
                None => not_found(&name),
            },
            ("create", None) => {
                let name = body["metadata"]["name"]
                    .as_str()
                    .expect("a Lease has a name")
                    .to_string();
                if leases
                    .stored
                    .contains_key(&(namespace.clone(), name.clone()))
                {
                    return (
                        StatusCode::CONFLICT,
                        status_json(
                            409,
                            "AlreadyExists",
                            &format!("leases \"{name}\" already exists"),
                        ),
                    );
                }
                let spec = body.get("spec").cloned().unwrap_or(json!({}));
                leases.write(&namespace, &name, &manager, &spec, Write::Update);
                let object = leases.stored[&(namespace, name)].object.clone();
                (StatusCode::CREATED, object)
            }
            ("patch", Some(name)) => {
                let key = (namespace.clone(), name.clone());
                let spec = body.get("spec").cloned().unwrap_or(json!({}));
                if content_type.starts_with("application/apply-patch") {
                    // An apply creates a missing object.
                    if let Err(conflict) = leases.apply(&namespace, &name, &manager, &spec, force) {
                        return (
                            StatusCode::CONFLICT,
                            status_json(409, "Conflict", &conflict),
                        );
                    }
                } else if content_type.contains("merge-patch") {
                    let Some(stored) = leases.stored.get(&key) else {
                        return not_found(&name);
                    };
                    if let Some(version) = body["metadata"]["resourceVersion"].as_str()
                        && stored.object["metadata"]["resourceVersion"] != version
                    {
                        return stale(&name);
                    }
                    leases.write(&namespace, &name, &manager, &spec, Write::Update);
                } else {
                    return (
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        status_json(415, "UnsupportedMediaType", content_type),
                    );
                }
                (StatusCode::OK, leases.stored[&key].object.clone())
            }
            ("update", Some(name)) => {
                let key = (namespace.clone(), name.clone());
                let Some(stored) = leases.stored.get(&key) else {
                    return not_found(&name);
                };
                if stored.object["metadata"]["resourceVersion"]
                    != body["metadata"]["resourceVersion"]
                {
                    return stale(&name);
                }
                let spec = body.get("spec").cloned().unwrap_or(json!({}));
                leases.write(&namespace, &name, &manager, &spec, Write::Replace);
                (StatusCode::OK, leases.stored[&key].object.clone())
            }
            (verb, _) => panic!("the fake Lease API does not answer {verb}"),
        }
    }
}

/// How a non-apply write treats the fields it leaves out.
#[derive(PartialEq)]
enum Write {
    /// A patch: they stay.
    Update,
    /// A PUT: they go.
    Replace,
}

impl Leases {
    fn entry(&mut self, namespace: &str, name: &str) -> &mut StoredLease {
        self.stored
            .entry((namespace.to_string(), name.to_string()))
            .or_insert_with(|| StoredLease {
                object: json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": { "name": name, "namespace": namespace },
                    "spec": {},
                }),
                ..StoredLease::default()
            })
    }

    /// A patch or PUT by `manager`: it owns every field whose value it changed; null removes.
    fn write(&mut self, namespace: &str, name: &str, manager: &str, spec: &Value, how: Write) {
        let stored = self.entry(namespace, name);
        let fields = spec.as_object().cloned().unwrap_or_default();
        if how == Write::Replace {
            let current: Vec<String> = stored.object["spec"]
                .as_object()
                .map(|s| s.keys().cloned().collect())
                .unwrap_or_default();
            for field in current.iter().filter(|f| !fields.contains_key(*f)) {
                stored.remove(field);
            }
        }
        for (field, value) in fields {
            if value.is_null() {
                stored.remove(&field);
            } else if stored.object["spec"].get(&field) != Some(&value) {
                stored.set(&field, value, manager);
            }
        }
        self.written(namespace, name);
    }

    /// A server-side apply by `manager`.
    fn apply(
        &mut self,
        namespace: &str,
        name: &str,
        manager: &str,
        spec: &Value,
        force: bool,
    ) -> Result<(), String> {
        let stored = self.entry(namespace, name);
        let fields = spec.as_object().cloned().unwrap_or_default();
        let conflicts: Vec<String> = fields
            .iter()
            .filter(|(field, value)| {
                stored.object["spec"].get(*field) != Some(value)
                    && stored
                        .owners
                        .get(*field)
                        .is_some_and(|owners| owners.iter().any(|m| m != manager))
            })
            .map(|(field, _)| format!(".spec.{field}"))
            .collect();
        if !conflicts.is_empty() && !force {
            return Err(format!(
                "Apply failed with {} conflict(s): {}",
                conflicts.len(),
                conflicts.join(", ")
            ));
        }
        let previous = stored.applied.remove(manager).unwrap_or_default();
        for (field, value) in &fields {
            if stored.object["spec"].get(field) == Some(value) {
                stored
                    .owners
                    .entry(field.clone())
                    .or_default()
                    .insert(manager.to_string());
            } else {
                stored.set(field, value.clone(), manager);
            }
        }
        // Fields this manager applied before and no longer does: released, and removed when
        // nobody else owns them.
        for field in previous.iter().filter(|f| !fields.contains_key(*f)) {
            let orphaned = stored.owners.get_mut(field).is_some_and(|owners| {
                owners.remove(manager);
                owners.is_empty()
            });
            if orphaned {
                stored.remove(field);
            }
        }
        stored
            .applied
            .insert(manager.to_string(), fields.keys().cloned().collect());
        self.written(namespace, name);
        Ok(())
    }

    fn written(&mut self, namespace: &str, name: &str) {
        self.version += 1;
        let version = self.version.to_string();
        let stored = self.entry(namespace, name);
        stored.object["metadata"]["resourceVersion"] = version.into();
        let spec = stored.object["spec"].clone();
        self.history.push(LeaseWrite {
            at: Instant::now(),
            wall: SystemTime::now(),
            holder: spec["holderIdentity"].as_str().map(str::to_string),
            renew: spec["renewTime"].as_str().map(str::to_string),
        });
    }
}

impl StoredLease {
    /// `manager` changed `field`: it alone owns it now.
    fn set(&mut self, field: &str, value: Value, manager: &str) {
        self.object["spec"][field] = value;
        self.owners
            .insert(field.to_string(), BTreeSet::from([manager.to_string()]));
        for (other, fields) in self.applied.iter_mut() {
            if other != manager {
                fields.remove(field);
            }
        }
    }

    fn remove(&mut self, field: &str) {
        if let Some(spec) = self.object["spec"].as_object_mut() {
            spec.remove(field);
        }
        self.owners.remove(field);
        for fields in self.applied.values_mut() {
            fields.remove(field);
        }
    }
}

fn reply(status: StatusCode, body: Value) -> Response<FakeBody> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())).boxed_unsync())
        .unwrap()
}

fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Status", "status": "Failure",
        "message": message, "reason": reason, "code": code,
    })
}

fn not_found(name: &str) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        status_json(404, "NotFound", &format!("leases \"{name}\" not found")),
    )
}

fn stale(name: &str) -> (StatusCode, Value) {
    (
        StatusCode::CONFLICT,
        status_json(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on leases \"{name}\": the object has been modified"
            ),
        ),
    )
}

/// Polls `done` every 20 ms until it holds; fails the test naming `what` after `limit`.
async fn eventually(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn now_micro() -> Value {
    serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    ))
    .unwrap()
}

fn host_part(identity: &str) -> &str {
    identity.rsplit_once('_').expect("<name>_<uuid>").0
}

// --- the fake itself -------------------------------------------------------------------------

/// The fake Lease API holds the rules leader election relies on: an apply over another
/// manager's holder is refused, a force or a same-value apply is not, a stale PUT is refused.
#[test]
fn the_fake_lease_store_refuses_what_an_apiserver_refuses() {
    let mut leases = Leases::default();
    let holder = |id: &str| json!({ "holderIdentity": id, "leaseDurationSeconds": 2 });
    leases
        .apply(OPERATOR_NAMESPACE, LEASE, "a", &holder("a"), false)
        .unwrap();
    let conflict = leases
        .apply(OPERATOR_NAMESPACE, LEASE, "b", &holder("b"), false)
        .unwrap_err();
    assert!(conflict.contains(".spec.holderIdentity"), "{conflict}");
    // The same value is shared ownership, not a conflict: why two equal identities both "lead".
    leases
        .apply(OPERATOR_NAMESPACE, LEASE, "b", &holder("a"), false)
        .unwrap();
    // Released by a patch, the field is free for the next apply.
    let release = json!({ "holderIdentity": null, "leaseDurationSeconds": null });
    leases.write(OPERATOR_NAMESPACE, LEASE, "a", &release, Write::Update);
    leases
        .apply(OPERATOR_NAMESPACE, LEASE, "c", &holder("c"), false)
        .unwrap();
    leases
        .apply(OPERATOR_NAMESPACE, LEASE, "d", &holder("d"), true)
        .unwrap();
    let fake = FakeApi::default();
    *fake.leases.lock().unwrap() = leases;
    assert_eq!(fake.holder().as_deref(), Some("d"));
    let stale_put = rbac::attributes(&Method::PUT, LEASE_PATH, "").unwrap();
    let (status, _) = fake.lease(
        &stale_put,
        "application/json",
        "",
        json!({ "metadata": { "resourceVersion": "1" }, "spec": holder("e") }),
    );
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(fake.holder().as_deref(), Some("d"));
}

// --- leader election -------------------------------------------------------------------------

/// Short timing so the test takes seconds (`run` uses LeaseSettings::new, 15 s / 5 s), with 4 s
/// between renewal and expiry so a loaded machine does not lose the Lease by being slow.
fn fast_settings() -> LeaseSettings {
    LeaseSettings {
        duration_seconds: 6,
        grace_seconds: 4,
        ..LeaseSettings::new(LEASE, OPERATOR_NAMESPACE)
    }
}

struct Replica {
    identity: String,
    leading: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
}

/// Two replicas of one host, started together.
async fn two_replicas(fake: &Arc<FakeApi>) -> Vec<Replica> {
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let (manager, identity) = lease_manager(fake.client(), &fast_settings())
            .await
            .expect("the lease manager starts");
        let (leading, task) = manager.watch().await;
        replicas.push(Replica {
            identity,
            leading,
            task,
        });
    }
    assert_ne!(replicas[0].identity, replicas[1].identity);
    assert_eq!(
        host_part(&replicas[0].identity),
        host_part(&replicas[1].identity),
        "same host, so only the random part tells them apart"
    );
    replicas
}

/// Waits until one replica leads; returns (leader, standby).
async fn one_leads(mut replicas: Vec<Replica>) -> (Replica, Replica) {
    eventually("a replica leads", Duration::from_secs(10), || {
        replicas.iter().any(|r| *r.leading.borrow())
    })
    .await;
    let first = usize::from(!*replicas[0].leading.borrow());
    let leader = replicas.remove(first);
    (leader, replicas.remove(0))
}

/// For `period` (several renewals), `standby` never leads and the Lease names `leader`.
async fn stays_standby(fake: &FakeApi, leader: &Replica, standby: &Replica, period: Duration) {
    let until = Instant::now() + period;
    while Instant::now() < until {
        assert!(*leader.leading.borrow(), "the leader lost the lease");
        assert!(
            !*standby.leading.borrow(),
            "both replicas lead: {} and {}",
            leader.identity,
            standby.identity
        );
        assert_eq!(fake.holder().as_ref(), Some(&leader.identity));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_replicas_one_leads_and_the_other_only_after_it_releases() {
    let fake = FakeApi::new(vec![]);
    let (leader, mut standby) = one_leads(two_replicas(&fake).await).await;
    stays_standby(&fake, &leader, &standby, Duration::from_secs(3)).await;

    // Dropping the receiver is how `run` lets go: the manager releases the Lease and ends.
    let Replica { leading, task, .. } = leader;
    drop(leading);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the leader releases in time")
        .expect("its task ran")
        .expect("the release succeeded");
    let released = fake.lease_history().last().cloned().unwrap();
    assert_eq!(released.holder, None, "released");
    assert!(!*standby.leading.borrow());

    tokio::time::timeout(Duration::from_secs(15), standby.leading.wait_for(|l| *l))
        .await
        .expect("the standby takes over in time")
        .unwrap();
    assert_eq!(fake.holder().as_ref(), Some(&standby.identity));
    // Never straight from one holder to the other: a release came in between.
    let holders = fake.holders();
    let leader_id = holders[1].clone().expect("the first holder");
    assert_eq!(
        holders,
        [None, Some(leader_id), None, Some(standby.identity.clone())]
    );
    assert_eq!(fake.refused(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leaders_lease_is_taken_only_once_it_expired() {
    let fake = FakeApi::new(vec![]);
    let (leader, mut standby) = one_leads(two_replicas(&fake).await).await;
    stays_standby(&fake, &leader, &standby, Duration::from_secs(3)).await;

    // A crash: the leader stops renewing and never releases.
    leader.task.abort();
    let _ = leader.task.await;
    let crashed_at = Instant::now();
    let last_renew = fake
        .lease_history()
        .iter()
        .rev()
        .find(|w| w.holder.as_ref() == Some(&leader.identity))
        .and_then(|w| w.renew.clone())
        .expect("the leader renewed");
    let last_renew: k8s_openapi::jiff::Timestamp = last_renew.parse().unwrap();
    let expiry =
        SystemTime::from(last_renew) + Duration::from_secs(fast_settings().duration_seconds);

    tokio::time::timeout(Duration::from_secs(15), standby.leading.wait_for(|l| *l))
        .await
        .expect("the standby takes over in time")
        .unwrap();
    let took_over = fake
        .lease_history()
        .into_iter()
        .find(|w| w.at > crashed_at && w.holder.as_ref() == Some(&standby.identity))
        .expect("the standby's lock is a write");
    assert!(
        took_over.wall >= expiry,
        "took over {:?} before the crashed leader's lease expired",
        expiry.duration_since(took_over.wall).unwrap_or_default()
    );
    assert_eq!(fake.refused(), Vec::<String>::new());
}

// --- caches and reconciles of `run` ----------------------------------------------------------

fn todos() -> Value {
    serde_json::to_value(support::minimal_app()).unwrap()
}

/// The cluster-wide watches `run` starts, one per kind it caches or watches (Secrets twice, both
/// metadata only: every Secret for references, the operator's own for managed MongoDB and the
/// proxy's cookie; CRDs three times, by name: Gateway API's, cert-manager's and the Prometheus
/// Operator's PodMonitor, whose kinds are watched once they exist).
const WATCHED: [&str; 17] = [
    "/apis/meteorfleet.dev/v1alpha1/meteorapps",
    "/apis/apps/v1/deployments",
    "/api/v1/services",
    "/apis/policy/v1/poddisruptionbudgets",
    "/apis/apps/v1/statefulsets",
    "/apis/networking.k8s.io/v1/networkpolicies",
    "/api/v1/secrets",
    "/api/v1/configmaps",
    "/apis/networking.k8s.io/v1/ingresses",
    "/api/v1/serviceaccounts",
    "/apis/rbac.authorization.k8s.io/v1/rolebindings",
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
    "/apis/gateway.networking.k8s.io/v1/httproutes",
    "/apis/cert-manager.io/v1/certificates",
    "/apis/monitoring.coreos.com/v1/podmonitors",
    "/apis/autoscaling/v2/horizontalpodautoscalers",
    "/api/v1/pods",
];

/// The settings of an operator run in this process: leader election on the test's Lease, every
/// namespace, default grace.
fn run_args() -> RunArgs {
    RunArgs {
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        log_format: LogFormat::Text,
        leader_elect: true,
        lease_name: LEASE.into(),
        lease_namespace: Some(OPERATOR_NAMESPACE.into()),
        concurrency: 2,
        max_upgrade_rollouts: meteor_operator::controller::DEFAULT_UPGRADE_ROLLOUTS,
        namespace: None,
        cluster_domain: "cluster.local".into(),
        proxy_image: "ghcr.io/example/meteor-operator:test".into(),
        proxy_cluster_role: "meteor-operator-proxy".into(),
        shutdown_grace_seconds: meteor_operator::controller::DEFAULT_SHUTDOWN_GRACE_SECONDS,
    }
}

/// `run_with` on the fake's client, in this process, until [`InProcess::stop`].
struct InProcess {
    stop: tokio::sync::oneshot::Sender<()>,
    run: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    fn start(fake: &Arc<FakeApi>, args: RunArgs) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(run_with(
            fake.client(),
            Default::default(),
            args,
            async move {
                let _ = stopped.await;
            },
        ));
        Self { stop, run }
    }

    /// Shuts it down as SIGTERM does; what `run_with` returned, within 10 s.
    async fn stop(self) -> anyhow::Result<()> {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.run)
            .await
            .expect("run stops in time")
            .expect("run's task ran")
    }
}

fn is_watch(seen: &Seen) -> bool {
    seen.query.split('&').any(|p| p == "watch=true")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_fill_on_a_standby_and_reconciles_start_once_it_leads() {
    let fake = FakeApi::new(vec![todos()]);
    // Another replica holds the Lease, renewing it every 200 ms of its 3 s.
    let other = "other-replica_0";
    let renewing = Arc::new(AtomicBool::new(true));
    let renew = move |fake: &FakeApi| fake.lease_held_by(other, 3);
    renew(&fake);
    let renewer = tokio::spawn({
        let (fake, renewing) = (fake.clone(), renewing.clone());
        async move {
            while renewing.load(Ordering::Relaxed) {
                renew(&fake);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });

    let run = InProcess::start(&fake, run_args());

    // Standing by, every cache lists and then watches (a reflector watches only after its list
    // is stored: the cache is ready).
    eventually(
        "every kind listed and watched",
        Duration::from_secs(20),
        || {
            let seen = fake.seen();
            WATCHED.iter().all(|path| {
                seen.iter().any(|s| s.path == *path && !is_watch(s))
                    && seen.iter().any(|s| s.path == *path && is_watch(s))
            })
        },
    )
    .await;
    assert_eq!(fake.holder().as_deref(), Some(other), "still the other's");
    for seen in fake.seen() {
        assert!(
            WATCHED.contains(&seen.path.as_str()) || seen.path == LEASE_PATH,
            "a standby made {} {}",
            seen.method,
            seen.path
        );
        // Every initial list comes in pages (a restart's memory peak is a page per kind), never
        // whole from the API server's cache (`resourceVersion=0`, where `limit` is ignored). (The
        // optional kinds' CRDs are watched by name: one object.)
        let by_name = seen.query.contains("fieldSelector=metadata.name");
        if WATCHED.contains(&seen.path.as_str()) && !is_watch(&seen) && !by_name {
            let params: Vec<&str> = seen.query.split('&').collect();
            assert!(
                params.contains(&"limit=100") && !params.contains(&"resourceVersion=0"),
                "list of {} not paged: {}",
                seen.path,
                seen.query
            );
        }
        // Secrets and ConfigMaps: metadata only, never their data.
        if seen.path == "/api/v1/secrets" || seen.path == "/api/v1/configmaps" {
            assert!(
                seen.accept.contains("as=PartialObjectMetadata"),
                "{} {}",
                seen.path,
                seen.accept
            );
        }
    }

    // The other replica dies: once its Lease expires, this one takes it.
    renewing.store(false, Ordering::Relaxed);
    renewer.await.unwrap();
    let released_by_other = Instant::now();
    eventually(
        "this replica holds the Lease",
        Duration::from_secs(10),
        || fake.holder().is_some_and(|h| h != other),
    )
    .await;
    let ours = fake.holder().unwrap();
    assert_eq!(host_part(&ours), host_part(&holder_identity()));
    let won = fake
        .lease_history()
        .into_iter()
        .find(|w| w.holder.as_ref() == Some(&ours))
        .unwrap()
        .at;
    assert!(won > released_by_other);

    // Leading, it reconciles every cached app at once: the app's Secret is read, its status set.
    const SECRET: &str = "/api/v1/namespaces/default/secrets/todos-mongo";
    const STATUS: &str =
        "/apis/meteorfleet.dev/v1alpha1/namespaces/default/meteorapps/todos/status";
    eventually("the app is reconciled", Duration::from_secs(10), || {
        fake.seen().iter().any(|s| s.path == STATUS)
    })
    .await;
    let seen = fake.seen();
    let read = seen
        .iter()
        .find(|s| s.path == SECRET)
        .expect("the Secret read");
    assert!(read.at > won, "a reconcile before the Lease was won");
    assert!(
        read.at - won < Duration::from_secs(5),
        "first reconcile {:?} after winning the Lease",
        read.at - won
    );
    let status = &seen.iter().find(|s| s.path == STATUS).unwrap().body;
    assert_eq!(status["status"]["observedGeneration"], 1);

    // Shutting down releases the Lease.
    run.stop().await.expect("run ends without error");
    assert_eq!(fake.holder(), None, "released on shutdown");
    assert_eq!(fake.refused(), Vec::<String>::new());
}

// --- events ----------------------------------------------------------------------------------

/// The same Warning twice is one event patched with a count (kube-runtime's Recorder), which is
/// why the ClusterRole grants events `patch` besides `create`.
#[tokio::test]
async fn a_repeated_warning_is_patched_onto_the_first_event() {
    let fake = FakeApi::new(vec![todos()]);
    let ctx = support::context(fake.client(), vec![], vec![], vec![]);
    let app = Arc::new(support::minimal_app());
    for _ in 0..2 {
        // The Secret is missing (the fake answers 404): ReferenceNotFound, a Warning.
        reconcile(app.clone(), ctx.clone())
            .await
            .expect("reconcile succeeds");
    }
    const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
    let events: Vec<Seen> = fake
        .seen()
        .into_iter()
        .filter(|s| s.path.starts_with(EVENTS))
        .collect();
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(
        (&events[0].method, events[0].path.as_str()),
        (&Method::POST, EVENTS)
    );
    assert_eq!(events[0].body["type"], "Warning");
    let name = events[0].body["metadata"]["name"].as_str().unwrap();
    assert_eq!(events[1].method, Method::PATCH);
    assert_eq!(events[1].path, format!("{EVENTS}/{name}"));
    assert_eq!(events[1].body["series"]["count"], 2);
    assert_eq!(fake.refused(), Vec::<String>::new());
}

// --- shutdown ----------------------------------------------------------------------------------

/// A real `meteor-operator run` process against an API server at `server`.
struct Operator {
    child: std::process::Child,
    admin: std::net::SocketAddr,
    log: std::path::PathBuf,
}

impl Operator {
    fn start(server: &str, leader_elect: bool, grace_seconds: u64) -> Operator {
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "meteor-sigterm-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"{server}\"}}}}]\n\
                 users: [{{name: u, user: {{}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n\
                 current-context: c\n"
            ),
        )
        .unwrap();
        let admin = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let log = dir.join("operator.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_meteor-operator"))
            .args(["run", "--admin-addr", &admin.to_string()])
            .arg(format!("--leader-elect={leader_elect}"))
            .arg(format!("--shutdown-grace-seconds={grace_seconds}"))
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAMESPACE", OPERATOR_NAMESPACE)
            .env("POD_NAME", "sigterm-test")
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("meteor-operator starts");
        Operator { child, admin, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The status `/readyz` answers.
    async fn readyz(&self) -> Option<u16> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.admin).await.ok()?;
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: operator\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    }

    /// Sends SIGTERM and returns how long the process took to exit (at most 30 s; past that it
    /// is killed and the test fails).
    async fn terminate(mut self) -> Duration {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "exited before SIGTERM:\n{}",
            self.log()
        );
        let sent = Instant::now();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        while sent.elapsed() < Duration::from_secs(30) {
            if self.child.try_wait().unwrap().is_some() {
                return sent.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.child.kill().unwrap();
        panic!("still running 30 s after SIGTERM:\n{}", self.log());
    }
}

impl Drop for Operator {
    /// Never leaves a process or its files behind, whatever the test did.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.log.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Operator {
    /// Sends SIGTERM and checks the process is gone within 5 s: no grace was waited for.
    async fn terminates_at_once(self) {
        let took = self.terminate().await;
        assert!(
            took < Duration::from_secs(5),
            "exited {took:?} after SIGTERM"
        );
    }
}

/// A loopback address nothing listens on.
fn closed_port() -> String {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    format!("http://{addr}")
}

fn lists_of_apps(fake: &FakeApi) -> Vec<Instant> {
    fake.seen()
        .iter()
        .filter(|s| s.path == "/apis/meteorfleet.dev/v1alpha1/meteorapps" && !is_watch(s))
        .map(|s| s.at)
        .collect()
}

/// The CRD missing: not ready, one clear line per retry, retries spaced more and more, and
/// SIGTERM ends the process at once (kube-runtime alone would wait for a MeteorApp list that
/// never comes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_process_whose_crd_is_missing_and_it_says_why() {
    let fake = Arc::new(FakeApi {
        no_crd: true,
        ..FakeApi::default()
    });
    let server = format!("http://{}", fake.serve().await);
    let operator = Operator::start(&server, false, 60);
    eventually("three lists of MeteorApps", Duration::from_secs(20), || {
        lists_of_apps(&fake).len() >= 3
    })
    .await;
    let lists = lists_of_apps(&fake);
    let (first, second) = (lists[1] - lists[0], lists[2] - lists[1]);
    assert!(second > first, "retries after {first:?}, then {second:?}");
    assert_eq!(
        operator.readyz().await,
        Some(503),
        "ready without MeteorApps"
    );
    let log = operator.log();
    assert!(
        log.contains("the MeteorApp CRD (meteorapps.meteorfleet.dev) is not installed"),
        "{log}"
    );
    operator.terminates_at_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_process_whose_api_server_is_gone() {
    let operator = Operator::start(&closed_port(), true, 60);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(operator.readyz().await, Some(503));
    operator.terminates_at_once().await;
}

/// An API server that accepts requests and never answers: the Lease cannot even be read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_process_whose_api_server_never_answers() {
    let fake = Arc::new(FakeApi {
        hang: Some("/".into()),
        ..FakeApi::default()
    });
    let server = format!("http://{}", fake.serve().await);
    let operator = Operator::start(&server, true, 60);
    eventually("the Lease asked for", Duration::from_secs(20), || {
        fake.seen().iter().any(|s| s.path == LEASE_PATH)
    })
    .await;
    operator.terminates_at_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_standby_at_once_and_leaves_the_lease_alone() {
    let fake = FakeApi::new(vec![todos()]);
    let other = "other-replica_0";
    fake.lease_held_by(other, 3600);
    let server = format!("http://{}", fake.serve().await);
    let operator = Operator::start(&server, true, 60);
    let mut ready = None;
    for _ in 0..100 {
        ready = operator.readyz().await;
        if ready == Some(200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, Some(200), "a listed standby is ready");
    operator.terminates_at_once().await;
    assert_eq!(fake.holder().as_deref(), Some(other));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_leader_at_rest_at_once_and_releases_the_lease() {
    let fake = FakeApi::new(vec![]);
    let server = format!("http://{}", fake.serve().await);
    let operator = Operator::start(&server, true, 60);
    eventually("the Lease is held", Duration::from_secs(20), || {
        fake.holder().is_some()
    })
    .await;
    operator.terminates_at_once().await;
    assert_eq!(fake.holder(), None, "released on shutdown");
}

/// A reconcile waits on a request the API server never answers: SIGTERM gives it the grace,
/// then the process exits anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_leader_stuck_in_a_reconcile_after_its_grace() {
    let secret = "/api/v1/namespaces/default/secrets/todos-mongo";
    let fake = Arc::new(FakeApi {
        apps: vec![todos()],
        hang: Some(secret.into()),
        ..FakeApi::default()
    });
    let server = format!("http://{}", fake.serve().await);
    let operator = Operator::start(&server, true, 3);
    eventually(
        "the reconcile reads the Secret",
        Duration::from_secs(20),
        || fake.seen().iter().any(|s| s.path == secret),
    )
    .await;
    let took = operator.terminate().await;
    assert!(
        (Duration::from_secs(3)..Duration::from_secs(7)).contains(&took),
        "exited {took:?} after SIGTERM, with a grace of 3 s"
    );
}

/// A TCP forwarder to `upstream` that stops forwarding (keeping every connection open) once
/// `stall` is set: a network that silently drops a process's traffic.
async fn stalling_forwarder(upstream: std::net::SocketAddr, stall: Arc<AtomicBool>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            for (mut from, mut to) in [(client_read, server_write), (server_read, client_write)] {
                let stall = stall.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 16 * 1024];
                    loop {
                        let Ok(n) = from.read(&mut buffer).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        while stall.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        if to.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    format!("http://{addr}")
}

/// The leader's network stalls: its renewals hang, and it exits before the standby, which
/// still reaches the API server, can take the Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_stops_before_the_standby_takes_over() {
    let fake = FakeApi::new(vec![]);
    let direct = fake.serve().await;
    let stall = Arc::new(AtomicBool::new(false));
    let through = stalling_forwarder(direct, stall.clone()).await;
    let mut leader = Operator::start(&through, true, 60);
    eventually("the first process leads", Duration::from_secs(20), || {
        fake.holder().is_some()
    })
    .await;
    let leader_identity = fake.holder().unwrap();
    let standby = Operator::start(&format!("http://{direct}"), true, 60);
    eventually("the standby is listed", Duration::from_secs(20), || {
        fake.seen().iter().filter(|s| s.path == LEASE_PATH).count() >= 3
    })
    .await;

    stall.store(true, Ordering::Relaxed);
    let stalled = Instant::now();
    let exited = loop {
        if let Some(status) = leader.child.try_wait().unwrap() {
            assert!(
                !status.success(),
                "a leader that lost its Lease exits with a failure"
            );
            break Instant::now();
        }
        assert!(
            stalled.elapsed() < Duration::from_secs(30),
            "the cut-off leader still runs:\n{}",
            leader.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eventually(
        "the standby takes the Lease",
        Duration::from_secs(30),
        || fake.holder().is_some_and(|h| h != leader_identity),
    )
    .await;
    let taken = fake
        .lease_history()
        .into_iter()
        .find(|w| w.holder.as_ref().is_some_and(|h| *h != leader_identity))
        .unwrap()
        .at;
    assert!(
        exited < taken,
        "the old leader exited {:?} after the stall, the standby took over {:?} after it",
        exited - stalled,
        taken - stalled
    );
    assert!(
        leader
            .log()
            .contains("could not renew the leader lease in time")
    );
    standby.terminate().await;
}

/// With `--namespace`, every request stays in that namespace but for the two cluster-scoped
/// kinds the chart then still binds cluster-wide (CRDs, StorageClasses): what lets the chart's
/// `watchNamespace` replace the ClusterRole by a Role there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespaced_operator_asks_only_in_its_namespace() {
    let fake = FakeApi::new(vec![todos()]);
    let args = RunArgs {
        leader_elect: false,
        lease_namespace: None,
        namespace: Some("default".into()),
        shutdown_grace_seconds: 5,
        ..run_args()
    };
    let run = InProcess::start(&fake, args);
    const STATUS: &str =
        "/apis/meteorfleet.dev/v1alpha1/namespaces/default/meteorapps/todos/status";
    eventually("the app is reconciled", Duration::from_secs(20), || {
        fake.seen().iter().any(|s| s.path == STATUS)
    })
    .await;
    run.stop().await.unwrap();
    let seen = fake.seen();
    let kinds = seen.iter().filter(|s| is_watch(s)).count();
    assert!(kinds >= 15, "only {kinds} watches");
    for request in seen {
        let in_namespace = request.path.starts_with("/api/v1/namespaces/default/")
            || request.path.contains("/namespaces/default/");
        let cluster_scoped = request.path
            == "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
            || request
                .path
                .starts_with("/apis/storage.k8s.io/v1/storageclasses");
        assert!(
            in_namespace || cluster_scoped,
            "{} {} leaves namespace default",
            request.method,
            request.path
        );
    }
    assert_eq!(fake.refused(), Vec::<String>::new());
}
