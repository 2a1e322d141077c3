//! The routing tier against a scripted API server: what one reconcile asks for on a first visit,
//! at rest, when the proxy is turned off and on, when the Ingress gives way to an HTTPRoute, on
//! a cluster without Gateway API, and when a name or the TLS Secret is not what it must be.
//! Every request is checked against the chart's RBAC, and a RoleBinding write against what the
//! operator itself holds (Kubernetes' escalation check).

mod support;

use http::{Method, StatusCode};
use meteor_operator::api::MeteorApp;
use meteor_operator::controller::stamped;
use meteor_operator::status::routing::{RouteState, RoutingObservation};
use support::cluster::{Cluster, reconcile_again};
use support::{DEPLOYMENT, Expect, PDB, Reply, SECRET, SERVICE, STATUS, app, condition};
use support::{default_app, minimal_app, mongo_secret};

const PROXY: &str = "/apis/apps/v1/namespaces/default/deployments/todos-proxy";
const APP_SERVICE: &str = "/api/v1/namespaces/default/services/todos-app";
const ACCOUNT: &str = "/api/v1/namespaces/default/serviceaccounts/todos-proxy";
const ROLE: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles/todos-proxy";
const BINDING: &str =
    "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings/todos-proxy";
const PROXY_PDB: &str = "/apis/policy/v1/namespaces/default/poddisruptionbudgets/todos-proxy";
const SECRETS: &str = "/api/v1/namespaces/default/secrets";
const COOKIE: &str = "/api/v1/namespaces/default/secrets/todos-proxy-cookie";
const TLS: &str = "/api/v1/namespaces/default/secrets/todos-tls";
const INGRESS: &str = "/apis/networking.k8s.io/v1/namespaces/default/ingresses/todos";
const ROUTE: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes/todos";
const CERTIFICATE: &str = "/apis/cert-manager.io/v1/namespaces/default/certificates/todos";
const POD_MONITOR: &str =
    "/apis/monitoring.coreos.com/v1/namespaces/default/podmonitors/todos-proxy";

fn serving() -> RoutingObservation {
    RoutingObservation {
        proxy_ready: 2,
        ..RoutingObservation::default()
    }
}

fn post(path: &str) -> Expect {
    Expect {
        method: Method::POST,
        path: path.into(),
        reply: Reply::Echo(|_| {}),
    }
}

/// A new proxy tier: each name looked up, the cookie Secret created, the objects applied with
/// the identity first and the Deployment last.
fn proxy_tier_created() -> Vec<Expect> {
    let mut script: Vec<Expect> = [PROXY, APP_SERVICE, ACCOUNT, BINDING, PROXY_PDB]
        .into_iter()
        .map(Expect::missing)
        .collect();
    script.push(post(SECRETS));
    for path in [ACCOUNT, BINDING, APP_SERVICE, PROXY_PDB, PROXY] {
        script.push(Expect::patch(path));
    }
    script
}

fn with_routing(yaml: &str) -> MeteorApp {
    app().routing(yaml).build()
}

/// The proxy's objects missing from the caches are looked up, then created; the cookie Secret
/// with a fresh 256-bit key; `Ready` waits for a proxy pod.
#[tokio::test]
async fn a_first_visit_creates_the_proxy_tier_and_ready_waits_for_a_proxy() {
    let app = default_app();
    let mut script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::missing(DEPLOYMENT),
        Expect::missing(SERVICE),
        Expect::missing(PDB),
        Expect::patch(DEPLOYMENT),
        // The routing tier: are its names free? Then the proxy and its cookie key.
    ];
    script.extend(proxy_tier_created());
    script.extend([
        // A new front Service selects the proxy pods from the start: nothing served before.
        Expect::patch(SERVICE),
        Expect::patch(PDB),
        Expect::status(&app),
    ]);
    let transcript = Cluster::empty().reconcile(app, script).await;

    let cookie = transcript.body_of(Method::POST, SECRETS);
    assert_eq!(cookie["metadata"]["name"], "todos-proxy-cookie");
    assert_eq!(
        cookie["metadata"]["ownerReferences"][0]["uid"],
        support::UID
    );
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD
        .decode(cookie["data"]["cookie-key"].as_str().unwrap())
        .unwrap();
    assert_eq!(key.len(), 64, "32 random bytes, hex");
    assert!(key.iter().all(u8::is_ascii_hexdigit));
    assert_ne!(key, vec![b'0'; 64]);

    // The chart's proxy ClusterRole, granted in the app's namespace (the fake API server checks
    // that the operator holds its rules, as Kubernetes does before it accepts the binding).
    let binding = transcript.body_of(Method::PATCH, BINDING);
    assert_eq!(
        binding["roleRef"],
        serde_json::json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
            "name": "meteor-operator-proxy"})
    );
    let front = transcript.body_of(Method::PATCH, SERVICE);
    assert_eq!(
        front["spec"]["selector"]["app.kubernetes.io/component"],
        "proxy"
    );

    let status = transcript.body_of(Method::PATCH, STATUS);
    assert_eq!(condition(&status, "Routed")["status"], "False");
    assert_eq!(condition(&status, "Routed")["reason"], "ProxyNotReady");
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert_eq!(status["status"]["routing"]["proxyReplicas"], 2);
    assert_eq!(status["status"]["routing"]["proxyReadyReplicas"], 0);
}

/// A routed app whose objects all match: no write, and the cookie Secret is not created again.
#[tokio::test]
async fn a_routed_app_at_rest_writes_nothing() {
    let app = app().with_proxy().settled().build();
    let transcript = reconcile_again(&app, vec![Expect::get(SECRET, mongo_secret())]).await;
    assert_eq!(transcript.writes(), Vec::<String>::new());
    let status = app.status.as_ref().unwrap();
    let routed = status.conditions.iter().find(|c| c.type_ == "Routed");
    assert_eq!(routed.map(|c| c.status.as_str()), Some("True"));
}

/// Off: the proxy's objects go (the Deployment first), the front Service selects the app pods
/// and the app pods lose HTTP_FORWARDED_COUNT; the cookie Secret stays for a later turn on.
#[tokio::test]
async fn turning_the_proxy_off_deletes_its_tier_but_keeps_the_cookie_secret() {
    let on = default_app();
    let off = app().with_proxy().settled().without_proxy().build();
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::patch(DEPLOYMENT),
        Expect::delete(PROXY),
        Expect::delete(PROXY_PDB),
        Expect::delete(APP_SERVICE),
        Expect::delete(BINDING),
        Expect::delete(ACCOUNT),
        Expect::patch(SERVICE),
        Expect::status(&off),
    ];
    let transcript = Cluster::applied(&on, 2).reconcile(off, script).await;
    assert!(
        !transcript.writes().iter().any(|w| w.contains("/secrets")),
        "{:?}",
        transcript.writes()
    );
    let front = transcript.body_of(Method::PATCH, SERVICE);
    assert_eq!(
        front["spec"]["selector"]["app.kubernetes.io/component"],
        "app"
    );
    let app_pods = transcript.body_of(Method::PATCH, DEPLOYMENT);
    let env = &app_pods["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        !env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "HTTP_FORWARDED_COUNT"),
        "{env}"
    );
    let status = transcript.body_of(Method::PATCH, STATUS);
    assert_eq!(condition(&status, "Routed")["status"], "True");
    assert!(status["status"]["routing"].get("proxyReplicas").is_none());
}

/// A Role of todos's own named `todos-proxy` (`controlled_by` its uid, or another's), as the API
/// answers its metadata.
fn role_of(owner_uid: &str) -> (StatusCode, serde_json::Value) {
    (
        StatusCode::OK,
        serde_json::json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "todos-proxy", "namespace": "default", "uid": "role-uid",
                "resourceVersion": "7",
                "ownerReferences": [{"apiVersion": "meteorfleet.dev/v1alpha1", "kind": "MeteorApp",
                    "name": "todos", "uid": owner_uid, "controller": true}]},
        }),
    )
}

/// A reconcile of settled todos in the cluster an earlier operator left, its proxies bound to a
/// Role `todos-proxy` controlled by `role_owner`: the binding, whose `roleRef` cannot change in
/// place, is deleted, the Role looked at (and deleted when todos controls it), the binding
/// created anew; nothing else is written.
async fn replacing_a_binding_to_a_role_of(role_owner: &str) -> support::Transcript {
    let app = app().with_proxy().settled().build();
    let mut cluster = Cluster::applied(&app, 2);
    for binding in &mut cluster.bindings {
        binding.role_ref.kind = "Role".into();
        binding.role_ref.name = "todos-proxy".into();
    }
    let mut script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::delete(BINDING),
        Expect::get(ROLE, role_of(role_owner)),
    ];
    if role_owner == support::UID {
        script.push(Expect::delete(ROLE));
    }
    script.push(Expect::patch(BINDING));
    cluster.reconcile(app, script).await
}

/// An app from before the proxies shared the chart's ClusterRole: its binding is replaced, and
/// the Role of its own goes.
#[tokio::test]
async fn a_binding_to_a_role_of_its_own_is_replaced_and_that_role_deleted() {
    let transcript = replacing_a_binding_to_a_role_of(support::UID).await;
    assert_eq!(
        transcript.body_of(Method::PATCH, BINDING)["roleRef"]["kind"],
        "ClusterRole"
    );
    let deleted = transcript.body_of(Method::DELETE, ROLE);
    assert_eq!(deleted["preconditions"]["uid"], "role-uid", "{deleted}");
}

/// The same, but another object controls the Role `todos-proxy`: it is left alone.
#[tokio::test]
async fn a_role_of_that_name_that_todos_does_not_control_is_kept() {
    let transcript = replacing_a_binding_to_a_role_of("someone-else").await;
    assert!(
        !transcript.paths(Method::DELETE).contains(&ROLE.to_string()),
        "{:?}",
        transcript.writes()
    );
}

/// On: the proxy tier is created, but the front Service keeps selecting the app pods until a
/// proxy pod is ready; then it switches, with nothing else written.
#[tokio::test]
async fn turning_the_proxy_on_switches_the_front_service_once_a_proxy_is_ready() {
    let off = minimal_app();
    let on = app().settled().with_proxy().build();
    let mut script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::patch(DEPLOYMENT),
    ];
    script.extend(proxy_tier_created());
    script.extend([
        // No PATCH of the front Service: no proxy pod is ready.
        Expect::status(&on),
    ]);
    let transcript = Cluster::applied(&off, 0)
        .reconcile(on.clone(), script)
        .await;
    let status = transcript.body_of(Method::PATCH, STATUS);
    assert_eq!(condition(&status, "Routed")["reason"], "ProxyNotReady");

    // A proxy pod is ready: the front Service switches to the proxy pods.
    let mut cluster = Cluster::applied(&on, 1);
    cluster.services[0] = support::applied_children(&off).1;
    let on = app()
        .with_proxy()
        .settled_seeing(&RoutingObservation {
            proxy_ready: 1,
            ..RoutingObservation::default()
        })
        .build();
    let script = vec![Expect::get(SECRET, mongo_secret()), Expect::patch(SERVICE)];
    let transcript = cluster.reconcile(on, script).await;
    let front = transcript.body_of(Method::PATCH, SERVICE);
    assert_eq!(
        front["spec"]["selector"]["app.kubernetes.io/component"],
        "proxy"
    );
}

/// From an Ingress to an HTTPRoute: the route is created (its name checked first), the Ingress
/// deleted, and `Routed` waits for the Gateway to accept the route.
#[tokio::test]
async fn an_ingress_gives_way_to_an_http_route() {
    let ingress = with_routing("{ ingress: {} }");
    let gateway = app()
        .routing("{ ingress: {} }")
        .settled()
        .routing("{ gateway: { parentRefs: [{ name: edge, namespace: infra }] } }")
        .build();
    let mut cluster = Cluster::applied(&ingress, 2);
    cluster.gateway_api = true;
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::missing(ROUTE),
        Expect::delete(INGRESS),
        Expect::patch(ROUTE),
        Expect::status(&gateway),
    ];
    let transcript = cluster.reconcile(gateway, script).await;
    let route = transcript.body_of(Method::PATCH, ROUTE);
    assert_eq!(route["spec"]["parentRefs"][0]["name"], "edge");
    assert_eq!(route["spec"]["hostnames"][0], "todos.example.com");
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][0]["name"], "todos");
    let status = transcript.body_of(Method::PATCH, STATUS);
    assert_eq!(condition(&status, "Routed")["reason"], "RoutePending");
    assert_eq!(condition(&status, "Ready")["status"], "True");
}

/// Without Gateway API's CRDs no HTTPRoute is sent; `Routed` and a Warning event say why, and
/// the proxy keeps serving (`Ready` stays True).
#[tokio::test]
async fn without_gateway_api_no_route_is_sent_and_the_status_says_why() {
    let app = app()
        .routing("{ gateway: { parentRefs: [{ name: edge }] } }")
        .settled()
        .build();
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::status(&app),
        Expect::event(),
    ];
    let transcript = reconcile_again(&app, script).await;
    let status = transcript.body_of(Method::PATCH, STATUS);
    assert_eq!(condition(&status, "Routed")["status"], "False");
    assert_eq!(condition(&status, "Routed")["reason"], "NoGatewayAPI");
    assert_eq!(condition(&status, "Ready")["status"], "True");
    let event = transcript.event();
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "NoGatewayAPI");
    assert!(
        !transcript
            .seen()
            .iter()
            .any(|s| s.path.contains("httproutes"))
    );
}

/// A Secret of someone else under the cookie Secret's name: the create is refused (409), the
/// owner is checked, and nothing of the proxy is written: `NameTaken`, Degraded, one event.
#[tokio::test]
async fn a_foreign_secret_under_the_cookie_name_stops_the_proxy_tier() {
    let app = app().with_proxy().settled().build();
    let mut cluster = Cluster::applied(&app, 2);
    cluster.secrets.clear();
    let conflict = serde_json::json!({
        "apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 409,
        "reason": "AlreadyExists", "message": "secrets \"todos-proxy-cookie\" already exists",
    });
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect {
            method: Method::POST,
            path: SECRETS.into(),
            reply: Reply::Json(StatusCode::CONFLICT, conflict),
        },
        Expect::get(
            COOKIE,
            (
                StatusCode::OK,
                support::secret_json("todos-proxy-cookie", &[("cookie-key", "theirs")]),
            ),
        ),
        Expect::status(&app),
        Expect::event(),
    ];
    let transcript = cluster.reconcile(app, script).await;
    assert_eq!(
        transcript.writes(),
        vec![
            format!("POST {SECRETS}"),
            format!("PATCH {STATUS}"),
            "POST /apis/events.k8s.io/v1/namespaces/default/events".to_string()
        ]
    );
    let status = transcript.body_of(Method::PATCH, STATUS);
    assert_eq!(condition(&status, "Routed")["reason"], "NameTaken");
    assert_eq!(condition(&status, "Degraded")["status"], "True");
    assert_eq!(transcript.event()["reason"], "NameTaken");
}

/// A TLS Secret that is not `kubernetes.io/tls`: `Routed` and `Degraded` name it, one Warning
/// event (not two), and nothing is rewritten.
#[tokio::test]
async fn a_tls_secret_of_the_wrong_type_is_reported_once() {
    let app = app()
        .routing("{ tls: { secretName: todos-tls } }")
        .settled_seeing(&RoutingObservation {
            tls_secret: Some(meteor_operator::status::routing::TlsSecretState::Valid),
            ..serving()
        })
        .build();
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::get(
            TLS,
            (
                StatusCode::OK,
                support::secret_json("todos-tls", &[("tls.crt", "x"), ("tls.key", "y")]),
            ),
        ),
        Expect::status(&app),
        Expect::event(),
    ];
    let transcript = reconcile_again(&app, script).await;
    let status = transcript.body_of(Method::PATCH, STATUS);
    assert_eq!(condition(&status, "Routed")["reason"], "TLSSecretInvalid");
    assert_eq!(condition(&status, "Degraded")["reason"], "TLSSecretInvalid");
    let message = condition(&status, "Routed")["message"].as_str().unwrap();
    assert!(
        message.contains("todos-tls") && message.contains("kubernetes.io/tls"),
        "{message}"
    );
    assert_eq!(
        transcript
            .seen()
            .iter()
            .filter(|s| s.path.ends_with("/events"))
            .count(),
        1
    );
}

/// A Gateway that accepted the route keeps `Routed` True; one that refuses it is a refusal.
#[test]
fn route_states_follow_the_gateways_conditions() {
    let app = with_routing("{ gateway: { parentRefs: [{ name: edge }] } }");
    let mut route = meteor_operator::build::routing::http_route(&app).unwrap();
    use meteor_operator::status::routing::route_state;
    assert_eq!(route_state(&route), RouteState::Pending);
    route.status = serde_json::from_value(serde_json::json!({
        "parents": [{ "conditions": [{ "type": "Accepted", "status": "True", "reason": "Accepted" }] }],
    }))
    .unwrap();
    assert!(matches!(route_state(&route), RouteState::Accepted { .. }));
    route.status = serde_json::from_value(serde_json::json!({
        "parents": [{ "conditions": [{ "type": "Accepted", "status": "False",
            "reason": "NotAllowedByListeners", "message": "no listener for todos.example.com" }] }],
    }))
    .unwrap();
    assert_eq!(
        route_state(&route),
        RouteState::NotAccepted("NotAllowedByListeners: no listener for todos.example.com".into())
    );
}

/// An Ingress class that terminates TLS with a certificate cert-manager issues: the TLS Secret
/// observed with the references, both created (their names checked first), the Ingress's address reported, `Routed` waiting for the
/// certificate without holding `Ready`.
#[tokio::test]
async fn an_ingress_and_its_certificate_are_created_and_the_address_reported() {
    let app = app()
        .routing("{ ingress: { className: nginx }, tls: { issuerRef: { name: letsencrypt, kind: ClusterIssuer } } }")
        .settled()
        .build();
    let mut cluster = Cluster::applied(&app, 2);
    cluster.ingresses.clear();
    cluster.certificates.clear();
    cluster.cert_manager = true;
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        // Observed with the references, before anything is written. cert-manager has not
        // filled it yet: not a refusal, since it is on its way.
        Expect::missing(TLS),
        Expect::missing(INGRESS),
        Expect::missing(CERTIFICATE),
        Expect {
            method: Method::PATCH,
            path: INGRESS.into(),
            reply: Reply::Echo(|ingress| {
                ingress["status"] =
                    serde_json::json!({ "loadBalancer": { "ingress": [{ "ip": "203.0.113.7" }] } });
            }),
        },
        Expect::patch(CERTIFICATE),
        Expect::status(&app),
    ];
    let transcript = cluster.reconcile(app, script).await;
    let ingress = transcript.body_of(Method::PATCH, INGRESS);
    assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
    assert_eq!(ingress["spec"]["tls"][0]["secretName"], "todos-tls");
    let certificate = transcript.body_of(Method::PATCH, CERTIFICATE);
    assert_eq!(certificate["spec"]["secretName"], "todos-tls");
    assert_eq!(certificate["spec"]["dnsNames"][0], "todos.example.com");
    assert_eq!(certificate["spec"]["issuerRef"]["kind"], "ClusterIssuer");
    let status = transcript.body_of(Method::PATCH, STATUS);
    assert_eq!(
        condition(&status, "Routed")["reason"],
        "CertificateNotReady"
    );
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(status["status"]["routing"]["address"], "203.0.113.7");
}

/// A route and a certificate the spec no longer asks for are deleted, and nothing else is.
#[tokio::test]
async fn a_route_and_a_certificate_no_longer_wanted_are_deleted() {
    let app = app().with_proxy().settled().build();
    let mut cluster = Cluster::applied(&app, 2);
    let before = with_routing("{ gateway: { parentRefs: [{ name: edge }] } }");
    let issued = with_routing("{ tls: { issuerRef: { name: letsencrypt } } }");
    cluster
        .routes
        .extend(meteor_operator::build::routing::http_route(&before).map(stamped));
    cluster
        .certificates
        .extend(meteor_operator::build::routing::certificate(&issued).map(stamped));
    cluster.gateway_api = true;
    cluster.cert_manager = true;
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::delete(ROUTE),
        Expect::delete(CERTIFICATE),
    ];
    let transcript = cluster.reconcile(app, script).await;
    assert_eq!(
        transcript.writes(),
        vec![format!("DELETE {ROUTE}"), format!("DELETE {CERTIFICATE}")]
    );
}

/// `routing.proxy.podMonitor` on a cluster with the Prometheus Operator: the PodMonitor's name
/// looked up, then applied, selecting this app's proxy pods only (port `admin`, the app's name as
/// `app`), with the user's labels beside the operator's own; `Monitored` says so.
#[tokio::test]
async fn a_pod_monitor_is_applied_where_the_prometheus_operator_is_installed() {
    let app = app()
        .routing(
            "{ proxy: { podMonitor: { labels: { release: prometheus, \"app.kubernetes.io/name\": other }, interval: 30s } } }",
        )
        .settled()
        .build();
    let mut cluster = Cluster::applied(&app, 2);
    cluster.pod_monitors.clear();
    cluster.prometheus_operator = true;
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::missing(POD_MONITOR),
        Expect::patch(POD_MONITOR),
        Expect::status(&app),
    ];
    let transcript = cluster.reconcile(app, script).await;
    let monitor = transcript.body_of(Method::PATCH, POD_MONITOR);
    assert_eq!(monitor["kind"], "PodMonitor");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    // The operator's labels win over the user's.
    assert_eq!(
        monitor["metadata"]["labels"]["app.kubernetes.io/name"],
        "meteor"
    );
    assert_eq!(
        monitor["metadata"]["ownerReferences"][0]["kind"],
        "MeteorApp"
    );
    let selector = &monitor["spec"]["selector"]["matchLabels"];
    assert_eq!(selector["app.kubernetes.io/instance"], "todos");
    assert_eq!(selector["app.kubernetes.io/component"], "proxy");
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "admin");
    assert_eq!(endpoint["interval"], "30s");
    assert_eq!(endpoint["honorLabels"], true);
    assert_eq!(endpoint["relabelings"][0]["targetLabel"], "app");
    let status = transcript.body_of(Method::PATCH, STATUS);
    let monitored = condition(&status, "Monitored");
    assert_eq!(monitored["status"], "True");
    assert_eq!(monitored["reason"], "PodMonitorApplied");
}

/// Without the PodMonitor CRD nothing is written for it: `Monitored=False NoPrometheusOperator`
/// and a Warning event say what is missing, and the app stays Ready (it serves unscraped).
#[tokio::test]
async fn without_the_prometheus_operator_monitored_says_what_is_missing() {
    let app = app()
        .routing("{ proxy: { podMonitor: {} } }")
        .settled()
        .build();
    let cluster = Cluster::applied(&app, 2);
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::status(&app),
        Expect::event(),
    ];
    let transcript = cluster.reconcile(app, script).await;
    let event = transcript.event();
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "NoPrometheusOperator");
    let status = transcript.body_of(Method::PATCH, STATUS);
    let monitored = condition(&status, "Monitored");
    assert_eq!(monitored["status"], "False");
    assert_eq!(monitored["reason"], "NoPrometheusOperator");
    assert!(
        monitored["message"]
            .as_str()
            .unwrap()
            .contains("routing.proxy.podMonitor")
    );
    assert_eq!(condition(&status, "Ready")["status"], "True");
}

/// A PodMonitor the spec no longer asks for is deleted; one of the same name that another owner
/// holds is not (the namesake check stops the pass before it writes).
#[tokio::test]
async fn a_pod_monitor_no_longer_wanted_is_deleted() {
    let app = app().with_proxy().settled().build();
    let mut cluster = Cluster::applied(&app, 2);
    let monitored = with_routing("{ proxy: { podMonitor: {} } }");
    cluster
        .pod_monitors
        .extend(meteor_operator::build::pod_monitor(&monitored).map(stamped));
    cluster.prometheus_operator = true;
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::delete(POD_MONITOR),
    ];
    let transcript = cluster.reconcile(app, script).await;
    assert_eq!(transcript.writes(), vec![format!("DELETE {POD_MONITOR}")]);
}
