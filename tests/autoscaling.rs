//! Autoscaling: the HorizontalPodAutoscaler built for each field, the `Autoscaled` condition
//! from the HPA's own conditions, and against a scripted API server: the HPA created and
//! deleted, and before a scale-down each app pod's `pod-deletion-cost` set from the sessions the
//! proxies (real HTTP servers on loopback) report, before the Deployment is written, and a
//! scale-down that goes ahead, with a Warning event, when the proxies do not answer.

mod support;

use http::{Method, StatusCode};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use meteor_operator::api::MeteorApp;
use meteor_operator::build::{self, horizontal_pod_autoscaler};
use meteor_operator::status::autoscaling::readiness;
use std::sync::Arc;
use support::cluster::Cluster;
use support::{DEPLOYMENT, Expect, PDB, SECRET, SERVICE, STATUS, TestApp, app, condition};
use support::{default_app, mongo_secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HPA: &str = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/todos";
const PODS: &str = "/api/v1/namespaces/default/pods";
const REPLICA_SETS: &str = "/apis/apps/v1/namespaces/default/replicasets";

/// The proxy-less app, autoscaled up to 10 replicas, with `extra` fields of `spec.autoscaling`.
fn autoscaled_with(extra: &str) -> TestApp {
    app().autoscaling(&format!("{{ maxReplicas: 10{extra} }}"))
}

fn autoscaled(extra: &str) -> MeteorApp {
    autoscaled_with(extra).build()
}

#[test]
fn the_hpa_scales_the_meteor_app_with_meteor_suited_defaults() {
    let hpa = horizontal_pod_autoscaler(&autoscaled("")).expect("an HPA");
    let spec = hpa.spec.unwrap();
    assert_eq!(spec.scale_target_ref.kind, "MeteorApp");
    assert_eq!(
        spec.scale_target_ref.api_version.as_deref(),
        Some("meteorfleet.dev/v1alpha1")
    );
    assert_eq!(spec.scale_target_ref.name, "todos");
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 10));
    let metrics = spec.metrics.unwrap();
    assert_eq!(metrics.len(), 1);
    let cpu = metrics[0].resource.as_ref().unwrap();
    assert_eq!(cpu.name, "cpu");
    assert_eq!(cpu.target.average_utilization, Some(70));
    let behavior = spec.behavior.unwrap();
    let down = behavior.scale_down.unwrap();
    assert_eq!(down.stabilization_window_seconds, Some(600));
    let policy = &down.policies.unwrap()[0];
    assert_eq!(
        (policy.type_.as_str(), policy.value, policy.period_seconds),
        ("Pods", 1, 120)
    );
    assert_eq!(
        behavior.scale_up.unwrap().stabilization_window_seconds,
        Some(0)
    );
    assert!(hpa.metadata.owner_references.is_some());

    let hpa = horizontal_pod_autoscaler(&autoscaled(
        ", minReplicas: 3, targetCPUUtilizationPercentage: 50, targetMemoryUtilizationPercentage: 80, sessionsPerReplica: 500, behavior: { scaleDown: { stabilizationWindowSeconds: 60 } }",
    ))
    .unwrap();
    let spec = hpa.spec.unwrap();
    assert_eq!(spec.min_replicas, Some(3));
    let metrics = spec.metrics.unwrap();
    assert_eq!(
        metrics[0]
            .resource
            .as_ref()
            .unwrap()
            .target
            .average_utilization,
        Some(50)
    );
    let memory = metrics[1].resource.as_ref().unwrap();
    assert_eq!(
        (memory.name.as_str(), memory.target.average_utilization),
        ("memory", Some(80))
    );
    let sessions = metrics[2].pods.as_ref().unwrap();
    assert_eq!(sessions.metric.name, build::SESSIONS_METRIC);
    assert_eq!(sessions.target.average_value.as_ref().unwrap().0, "500");
    let down = spec.behavior.unwrap().scale_down.unwrap();
    assert_eq!(
        down.stabilization_window_seconds,
        Some(60),
        "the user's behavior wins"
    );

    assert!(horizontal_pod_autoscaler(&default_app()).is_none());
}

/// The budget does not come and go as the autoscaler crosses 1 and 2 replicas.
#[test]
fn an_autoscaled_app_keeps_its_disruption_budget_at_one_replica() {
    let one = autoscaled_with(", minReplicas: 1").replicas(1).build();
    assert!(build::app_disruption_budget(&one).is_some());
    let plain = app().with_proxy().replicas(1).build();
    assert!(build::app_disruption_budget(&plain).is_none());
}

fn hpa_with(status: serde_json::Value) -> HorizontalPodAutoscaler {
    let mut hpa = horizontal_pod_autoscaler(&autoscaled("")).unwrap();
    hpa.status = Some(serde_json::from_value(status).unwrap());
    hpa
}

#[test]
fn autoscaled_carries_the_hpas_own_conditions() {
    let pending = readiness(None);
    assert_eq!((pending.ready, pending.reason), (false, "Pending"));

    let no_metrics = hpa_with(serde_json::json!({
        "desiredReplicas": 2,
        "conditions": [
            { "type": "AbleToScale", "status": "True", "reason": "SucceededGetScale" },
            { "type": "ScalingActive", "status": "False", "reason": "FailedGetResourceMetric",
              "message": "the HPA was unable to compute the replica count: failed to get cpu utilization: unable to get metrics for resource cpu: unable to fetch metrics from resource metrics API: the server could not find the requested resource (get pods.metrics.k8s.io)" },
        ],
    }));
    let verdict = readiness(Some(&no_metrics));
    assert_eq!(
        (verdict.ready, verdict.reason),
        (false, "MetricsUnavailable")
    );
    assert!(
        verdict.message.contains("FailedGetResourceMetric"),
        "{}",
        verdict.message
    );
    assert!(
        verdict.message.contains("pods.metrics.k8s.io"),
        "{}",
        verdict.message
    );

    let limited = hpa_with(serde_json::json!({
        "desiredReplicas": 10, "currentReplicas": 10,
        "currentMetrics": [{ "type": "Resource", "resource": { "name": "cpu", "current": { "averageUtilization": 96 } } }],
        "conditions": [
            { "type": "AbleToScale", "status": "True" },
            { "type": "ScalingActive", "status": "True", "reason": "ValidMetricFound" },
            { "type": "ScalingLimited", "status": "True", "reason": "TooManyReplicas",
              "message": "the desired replica count is more than the maximum replica count" },
        ],
    }));
    let verdict = readiness(Some(&limited));
    assert_eq!((verdict.ready, verdict.reason), (true, "ScalingLimited"));
    let status = meteor_operator::status::autoscaling::autoscaling_status(Some(&limited));
    assert_eq!(status.current_cpu_utilization_percentage, Some(96));
    assert_eq!(
        (status.current_replicas, status.desired_replicas),
        (Some(10), Some(10))
    );
}

#[tokio::test]
async fn a_first_visit_creates_the_hpa_and_autoscaled_waits_for_it() {
    let app = autoscaled("");
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::missing(DEPLOYMENT),
        Expect::missing(SERVICE),
        Expect::missing(HPA),
        Expect::missing(PDB),
        Expect::patch(DEPLOYMENT),
        Expect::patch(SERVICE),
        Expect::patch(PDB),
        Expect::patch(HPA),
        Expect::status(&app),
    ];
    let transcript = Cluster::empty().reconcile(app, script).await;
    let hpa = transcript.body_of(Method::PATCH, HPA);
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "MeteorApp");
    let status = transcript.body_of(Method::PATCH, STATUS);
    assert_eq!(condition(&status, "Autoscaled")["status"], "False");
    assert_eq!(condition(&status, "Autoscaled")["reason"], "Pending");
}

/// Off: the HPA goes and nothing else is written; `replicas` stays where the autoscaler left it.
#[tokio::test]
async fn turning_autoscaling_off_deletes_the_hpa_and_keeps_the_replicas() {
    let on = autoscaled("");
    let off = app().settled().build();
    let transcript = Cluster::applied(&on, 0)
        .reconcile(
            off,
            vec![Expect::get(SECRET, mongo_secret()), Expect::delete(HPA)],
        )
        .await;
    assert_eq!(transcript.writes(), vec![format!("DELETE {HPA}")]);
}

/// Proxies answering `/-/status` with `backends`, each on its own loopback address and all on
/// one port (as every proxy pod listens on the same one): that port, and the servers to stop.
async fn proxies(
    backends: Vec<(&str, serde_json::Value)>,
) -> (u16, Vec<tokio::task::JoinHandle<()>>) {
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let mut servers = Vec::new();
    for (ip, backends) in backends {
        let listener = tokio::net::TcpListener::bind((ip, port)).await.unwrap();
        let body = serde_json::json!({ "backends": backends }).to_string();
        servers.push(tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = vec![0u8; 4096];
                let _ = stream.read(&mut request).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            }
        }));
    }
    (port, servers)
}

/// The uid of the proxy tier's ReplicaSet in [`proxy_replica_sets`].
const PROXY_RS_UID: &str = "uid-todos-proxy-5d8f";

fn pod(name: &str, ip: &str, component: &str, cost: Option<&str>) -> serde_json::Value {
    let mut pod = serde_json::json!({
        "metadata": { "name": name, "namespace": "default",
            "labels": { "app.kubernetes.io/name": "meteor", "app.kubernetes.io/instance": "todos",
                "app.kubernetes.io/component": component } },
        "status": { "podIP": ip },
    });
    if component == "proxy" {
        pod["metadata"]["ownerReferences"] = serde_json::json!([{ "apiVersion": "apps/v1",
            "kind": "ReplicaSet", "name": "todos-proxy-5d8f", "uid": PROXY_RS_UID,
            "controller": true }]);
    }
    if let Some(cost) = cost {
        pod["metadata"]["annotations"] =
            serde_json::json!({ "controller.kubernetes.io/pod-deletion-cost": cost });
    }
    pod
}

/// A ReplicaSet's metadata as the API answers it, controlled by Deployment `todos-proxy` of uid
/// `owner`.
fn replica_set(name: &str, uid: &str, owner: &str) -> (StatusCode, serde_json::Value) {
    (
        StatusCode::OK,
        serde_json::json!({ "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": { "name": name, "namespace": "default", "uid": uid,
            "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "Deployment",
                "name": "todos-proxy", "uid": owner, "controller": true }] } }),
    )
}

/// The GET of the proxy tier's own ReplicaSet (controlled by the proxy Deployment of the
/// cache), which the real proxy pods name as their controller.
fn own_replica_set() -> Expect {
    Expect::get(
        &format!("{REPLICA_SETS}/todos-proxy-5d8f"),
        replica_set("todos-proxy-5d8f", PROXY_RS_UID, "uid-todos-proxy"),
    )
}

/// The cache of the operator's pods: the four app pods and `proxies`.
fn cached_pods(
    proxies: Vec<serde_json::Value>,
) -> Vec<meteor_operator::controller::pods::CachedPod> {
    let pods = [
        pod("todos-a", "10.0.0.1", "app", None),
        pod("todos-b", "10.0.0.2", "app", Some("0")),
        pod("todos-c", "10.0.0.3", "app", Some("9")),
        pod("todos-d", "10.0.0.4", "app", None),
    ]
    .into_iter()
    .chain(proxies)
    .collect();
    support::cached_pods(pods)
}

/// A routed app going from 4 to 2 replicas (the autoscaler, or `kubectl scale`).
fn scaling_down() -> (MeteorApp, Cluster) {
    let four = app().with_proxy().replicas(4).settled();
    let cluster = Cluster::applied(&four.clone().build(), 2);
    (four.replicas(2).build(), cluster)
}

#[tokio::test]
async fn before_a_scale_down_each_pod_costs_its_sessions_over_every_proxy() {
    let (two, mut cluster) = scaling_down();
    // Two proxies, each on its own loopback address, on one port.
    let (port, servers) = proxies(vec![
        (
            "127.0.0.1",
            serde_json::json!([
                { "id": "10.0.0.1:3000", "active": 5 },
                { "id": "10.0.0.2:3000", "active": 0 },
                { "id": "10.0.0.3:3000", "active": 2, "terminating": false },
            ]),
        ),
        (
            "127.0.0.2",
            serde_json::json!([
                { "id": "10.0.0.1:3000", "active": 3 },
                { "id": "10.0.0.4:3000", "active": 7 },
                // Draining: whatever it holds is leaving anyway.
                { "id": "10.0.0.2:3000", "active": 40, "terminating": true },
            ]),
        ),
        // A pod labelled as a proxy of this app, not of the proxy tier: never asked (it would
        // claim that todos-c holds everyone).
        (
            "127.0.0.3",
            serde_json::json!([{ "id": "10.0.0.3:3000", "active": 100000 }]),
        ),
    ])
    .await;
    let mut forged = pod("todos-proxy-x", "127.0.0.3", "proxy", None);
    forged["metadata"]["ownerReferences"][0]["name"] = "todos-proxy-6666".into();
    forged["metadata"]["ownerReferences"][0]["uid"] = "uid-forged-rs".into();
    // And one that names the tier's own ReplicaSet, with another uid.
    let mut impostor = pod("todos-proxy-y", "127.0.0.3", "proxy", None);
    impostor["metadata"]["ownerReferences"][0]["uid"] = "uid-impostor".into();
    cluster.admin_port = Some(port);
    cluster.pods = cached_pods(vec![
        pod("todos-proxy-1", "127.0.0.1", "proxy", None),
        pod("todos-proxy-2", "127.0.0.2", "proxy", None),
        forged,
        impostor,
    ]);
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        // Each ReplicaSet a proxy pod names, by name (never a LIST): the tier's own, and one
        // that someone else's Deployment controls.
        own_replica_set(),
        Expect::get(
            &format!("{REPLICA_SETS}/todos-proxy-6666"),
            replica_set("todos-proxy-6666", "uid-forged-rs", "uid-someone-else"),
        ),
        Expect::patch(&format!("{PODS}/todos-a")),
        Expect::patch(&format!("{PODS}/todos-c")),
        Expect::patch(&format!("{PODS}/todos-d")),
        Expect::patch(DEPLOYMENT),
        Expect::status(&two),
    ];
    let transcript = cluster.reconcile(two, script).await;
    servers.iter().for_each(|server| server.abort());
    let cost = |name: &str| {
        transcript.body_of(Method::PATCH, &format!("{PODS}/{name}"))["metadata"]["annotations"]
            ["controller.kubernetes.io/pod-deletion-cost"]
            .clone()
    };
    assert_eq!(cost("todos-a"), "8", "5 + 3 over both proxies");
    assert_eq!(cost("todos-c"), "2");
    assert_eq!(cost("todos-d"), "7");
    let deployment = transcript.body_of(Method::PATCH, DEPLOYMENT);
    assert_eq!(deployment["spec"]["replicas"], 2);
}

/// The requests of a scale-down whose sessions are unknown: the proxy tier's ReplicaSets, a
/// Warning event, then the Deployment and the status.
fn scale_down_unknown_sessions(two: &MeteorApp) -> Vec<Expect> {
    vec![
        Expect::get(SECRET, mongo_secret()),
        own_replica_set(),
        Expect::event(),
        Expect::patch(DEPLOYMENT),
        Expect::status(two),
    ]
}

#[tokio::test]
async fn a_scale_down_goes_ahead_with_a_warning_when_the_proxies_do_not_answer() {
    let (two, mut cluster) = scaling_down();
    // Nothing listens there.
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    cluster.admin_port = Some(probe.local_addr().unwrap().port());
    drop(probe);
    cluster.pods = cached_pods(vec![pod("todos-proxy-1", "127.0.0.1", "proxy", None)]);
    let script = scale_down_unknown_sessions(&two);
    let transcript = cluster.reconcile(two, script).await;
    let event = transcript.event();
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "SessionsUnknown");
    assert!(
        event["note"].as_str().unwrap().contains("did not answer"),
        "{event}"
    );
}

/// A proxy's admin port that streams an endless status (its image is the user's): the operator
/// reads at most 1 MiB of it, takes it as no answer, warns, and scales down all the same.
#[tokio::test]
async fn an_endless_status_is_cut_at_its_limit_and_counts_as_no_answer() {
    let (two, mut cluster) = scaling_down();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    cluster.admin_port = Some(listener.local_addr().unwrap().port());
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let endless = tokio::spawn({
        let sent = sent.clone();
        async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = vec![0u8; 4096];
                let _ = stream.read(&mut request).await;
                let head =
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"backends\": [";
                if stream.write_all(head.as_bytes()).await.is_err() {
                    continue;
                }
                let chunk = "{\"id\": \"10.0.0.1:3000\", \"active\": 1},".repeat(1000);
                while stream.write_all(chunk.as_bytes()).await.is_ok() {
                    sent.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    });
    cluster.pods = cached_pods(vec![pod("todos-proxy-1", "127.0.0.1", "proxy", None)]);
    let script = scale_down_unknown_sessions(&two);
    let transcript = cluster.reconcile(two, script).await;
    endless.abort();
    let note = transcript.event()["note"].as_str().unwrap().to_string();
    assert!(note.contains("1048576 bytes"), "{note}");
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        sent < 64 << 20,
        "{sent} bytes were sent: the reading stopped late"
    );
}

/// An HPA that cannot read metrics: `Autoscaled=False` with its message, and a Warning event.
#[tokio::test]
async fn missing_metrics_are_reported_with_the_hpas_message_and_an_event() {
    let app = autoscaled_with("").settled().build();
    let mut cluster = Cluster::applied(&app, 0);
    cluster.autoscalers[0].status = hpa_with(serde_json::json!({
        "desiredReplicas": 2,
        "conditions": [{ "type": "ScalingActive", "status": "False",
            "reason": "FailedGetResourceMetric", "message": "no metrics returned from resource metrics API" }],
    }))
    .status;
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::status(&app),
        Expect::event(),
    ];
    let transcript = cluster.reconcile(app, script).await;
    let status = transcript.body_of(Method::PATCH, STATUS);
    assert_eq!(
        condition(&status, "Autoscaled")["reason"],
        "MetricsUnavailable"
    );
    assert_eq!(status["status"]["autoscaling"]["desiredReplicas"], 2);
    let event = transcript.event();
    assert_eq!(event["reason"], "MetricsUnavailable");
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .contains("no metrics returned"),
        "{event}"
    );
}
