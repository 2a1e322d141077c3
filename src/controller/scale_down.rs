//! Before the app Deployment loses replicas (whatever lowered `spec.replicas`: the autoscaler,
//! `kubectl scale`, an edit), each app pod is given a `pod-deletion-cost` equal to its open
//! sessions, summed over every proxy replica's `/-/status`, so the ReplicaSet controller removes
//! the pods that hold the fewest users. Done once per scale-down; every proxy is asked at once,
//! each within [`ASK_LIMIT`]; when the proxies cannot all be read the scale-down goes ahead with
//! the costs unchanged, and a Warning event says so. With the proxy off nothing counts sessions,
//! and the ReplicaSet controller chooses as it always does.
//!
//! Only pods of the proxy tier's own ReplicaSets are asked, and an answer over
//! [`MAX_STATUS_BYTES`] counts as no answer: the operator serves every namespace, and a tenant's
//! pod must not be able to exhaust its memory or choose whose users are cut off.

use super::Context;
use super::pods::CachedPod;
use crate::api::MeteorApp;
use crate::build::meta::{Component, proxy_name, selector_labels};
use crate::plan::{self, BackendSessions, POD_DELETION_COST, PodFacts};
use http_body_util::{BodyExt, Empty, Limited};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Longest one proxy's status may take.
const ASK_LIMIT: Duration = Duration::from_secs(2);

/// Largest status a proxy may answer: a proxy reports one line per backend pod, a few hundred
/// bytes each.
const MAX_STATUS_BYTES: usize = 1 << 20;

/// Sets the deletion costs of `app`'s pods; the number of pods patched.
pub async fn set_deletion_costs(
    ctx: &Context,
    app: &MeteorApp,
    namespace: &str,
) -> Result<u64, kube::Error> {
    // Without the proxy nobody counts sessions: the ReplicaSet controller chooses as usual.
    if !app.spec.routing.proxy_enabled() {
        return Ok(0);
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let cached =
        |component: Component| ctx.pods_of(namespace, &selector_labels(app, component.as_str()));
    let mut app_pods = cached(Component::App);
    // In name order, so the patches go out in an order a reader (and a test) can follow.
    app_pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    // Only the proxy tier's own pods are asked: anyone in the namespace can label a pod as this
    // app's proxy, and what it answers decides which users lose their connection.
    let tier = super::apply::controlled_by(
        app.uid(),
        ctx.deployments
            .get(&ObjectRef::new(&proxy_name(app)).within(namespace)),
    );
    let proxy_pods = cached(Component::Proxy);
    let replica_sets = match tier.and_then(|d| d.uid()) {
        Some(tier) => tier_replica_sets(ctx, namespace, &tier, &proxy_pods).await?,
        None => Vec::new(),
    };
    let proxies: Vec<SocketAddr> = proxy_pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            controller_uid(&p.metadata).is_some_and(|rs| replica_sets.iter().any(|r| r == rs))
        })
        .filter_map(|p| p.ip())
        .map(|ip| SocketAddr::new(ip, ctx.proxy_admin_port))
        .collect();
    let answers = futures::future::join_all(proxies.iter().map(|addr| ask(*addr))).await;
    let failed: Vec<String> = proxies
        .iter()
        .zip(&answers)
        .filter_map(|(addr, answer)| answer.as_ref().err().map(|e| format!("{addr}: {e}")))
        .collect();
    if proxies.is_empty() || !failed.is_empty() {
        let why = if proxies.is_empty() {
            "no pod of the proxy tier's own ReplicaSets is running".to_string()
        } else {
            format!("proxies did not answer ({})", failed.join("; "))
        };
        warn(ctx, app, namespace, &why).await;
        return Ok(0);
    }
    let reports: Vec<Vec<BackendSessions>> = answers.into_iter().flatten().collect();
    let facts: Vec<PodFacts> = app_pods
        .iter()
        .map(|pod| PodFacts {
            name: pod.metadata.name.clone().unwrap_or_default(),
            ip: pod.ip(),
            cost: pod.deletion_cost().map(String::from),
            terminating: pod.metadata.deletion_timestamp.is_some(),
        })
        .collect();
    let mut patched = 0;
    for (name, cost) in plan::deletion_costs(&facts, &reports) {
        let patch = serde_json::json!({
            "metadata": { "annotations": { POD_DELETION_COST: cost.to_string() } }
        });
        match pods
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => patched += 1,
            // Gone meanwhile: nothing to keep.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(patched)
}

/// The uids of the ReplicaSets that the proxy pods name as their controller and that the proxy
/// tier's Deployment (uid `tier`) controls: one GET per name (one or two, mid-rollout), never a
/// LIST of the namespace's. A pod that names such a ReplicaSet with another uid is not the tier's
/// (the caller matches pods by uid).
async fn tier_replica_sets(
    ctx: &Context,
    namespace: &str,
    tier: &str,
    proxy_pods: &[Arc<CachedPod>],
) -> Result<Vec<String>, kube::Error> {
    let named: BTreeSet<&str> = proxy_pods
        .iter()
        .filter_map(|pod| Some(pod.replica_set()?.0))
        .collect();
    let api = Api::<ReplicaSet>::namespaced(ctx.client.clone(), namespace);
    let mut own = Vec::new();
    for name in named {
        let Some(replica_set) = api.get_metadata_opt(name).await? else {
            continue;
        };
        if controller_uid(&replica_set.metadata) == Some(tier) {
            own.extend(replica_set.metadata.uid);
        }
    }
    Ok(own)
}

/// The uid of the object's controller (its owner reference with `controller: true`).
fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
}

/// One proxy's backends, from `GET /-/status` on its admin port.
async fn ask(addr: SocketAddr) -> Result<Vec<BackendSessions>, String> {
    #[derive(serde::Deserialize)]
    struct Status {
        backends: Vec<BackendSessions>,
    }
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = http::Request::get("/-/status")
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<hyper::body::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        // A pod can answer anything (its image is the user's to set): never more than this.
        let body = Limited::new(response.into_body(), MAX_STATUS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("{e} (the answer may hold {MAX_STATUS_BYTES} bytes)"))?
            .to_bytes();
        serde_json::from_slice::<Status>(&body)
            .map(|s| s.backends)
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(ASK_LIMIT, exchange)
        .await
        .map_err(|_| format!("no answer within {} s", ASK_LIMIT.as_secs()))?
}

async fn warn(ctx: &Context, app: &MeteorApp, namespace: &str, why: &str) {
    let event = Event {
        type_: EventType::Warning,
        reason: "SessionsUnknown".into(),
        note: Some(format!(
            "scaling down without knowing which pods hold the fewest sessions: {why}"
        )),
        action: "ScaleDown".into(),
        secondary: None,
    };
    let reference = super::reconcile::reference(&app.metadata, namespace);
    if let Err(error) = ctx.recorder.publish(&event, &reference).await {
        tracing::warn!(%error, "could not record an event");
    }
}
