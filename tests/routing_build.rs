//! Routing builders: every `spec.routing` field lands where docs/routing.md says, in each mode
//! (proxy alone, Ingress or Gateway in front of the proxy, Ingress or Gateway alone).

mod support;

use meteor_operator::api::MeteorApp;
use meteor_operator::build::mongo::secrets::Placeholder;
use meteor_operator::build::routing::{
    self, COOKIE_SECRET_KEY, DEFAULT_PROXY_IMAGE, RoutingOptions, STICKINESS_GAP,
};
use meteor_operator::build::{self, Desired, Inputs, MongoWiring};
use serde_json::{Value, json};
use support::{app_from_yaml, default_app};

/// The minimal example with `spec` fields merged in (JSON).
fn app_with(spec: Value) -> MeteorApp {
    let mut value: Value =
        serde_norway::from_str(include_str!("../examples/minimal.yaml")).unwrap();
    for (key, field) in spec.as_object().unwrap() {
        value["spec"][key] = field.clone();
    }
    let app = app_from_yaml(&serde_norway::to_string(&value).unwrap());
    meteor_operator::validate::validate(&app).expect("a valid MeteorApp");
    app
}

fn desired(app: &MeteorApp) -> Desired {
    let inputs = Inputs {
        config_hash: "0123456789abcdef".into(),
        mongo: MongoWiring::for_app(app).unwrap(),
    };
    build::desired(app, &inputs)
}

fn json_of<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).unwrap()
}

/// The proxy container's args as one string, for `contains` checks of flag and value.
fn proxy_args(d: &Desired) -> String {
    let deployment = json_of(&d.routing.proxy.as_ref().unwrap().deployment);
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    args.as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ")
}

fn app_env(d: &Desired, name: &str) -> Option<String> {
    let deployment = json_of(&d.app);
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| e["value"].as_str().unwrap().to_string())
}

fn port_names(service: &Value) -> Vec<(String, i64, String)> {
    service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["port"].as_i64().unwrap(),
                p["targetPort"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn by_default_a_proxy_pair_fronts_the_app() {
    let d = desired(&default_app());
    let proxy = d
        .routing
        .proxy
        .as_ref()
        .expect("the proxy is on by default");
    let deployment = json_of(&proxy.deployment);
    assert_eq!(deployment["metadata"]["name"], "todos-proxy");
    assert_eq!(
        deployment["metadata"]["labels"]["app.kubernetes.io/component"],
        "proxy"
    );
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 2);
    assert_eq!(
        spec["strategy"]["rollingUpdate"],
        json!({"maxSurge": 1, "maxUnavailable": 0})
    );
    let pod = &spec["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], DEFAULT_PROXY_IMAGE);
    assert_eq!(container["args"][0], "proxy");
    let args = proxy_args(&d);
    for expected in [
        "--listen 0.0.0.0:8080",
        "--admin-listen 0.0.0.0:9090",
        "--service default/todos-app",
        "--service-port http",
        "--cookie-name meteor-sticky",
        "--cookie-key-file /etc/meteor-proxy/cookie/cookie-key",
        "--cookie-max-age 86400",
        "--health-path /",
        "--idle-timeout 300s",
        "--drain-timeout 15s",
        "--shutdown-timeout 30s",
        // rootUrl is https and TLS ends in front of the proxy.
        "--cookie-secure",
    ] {
        assert!(args.contains(expected), "{expected:?} not in {args}");
    }
    assert!(!args.contains("--rate-limit"), "no rate limit by default");
    assert!(
        !args.contains("--rebalance"),
        "the proxy's own rebalancing defaults"
    );
    assert!(!args.contains("--tls-cert"), "no TLS by default");

    // Restricted Pod Security, read-only root FS, readiness on the admin port.
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({"path": "/-/healthz", "port": "admin", "scheme": "HTTP"})
    );
    assert_eq!(container["resources"]["requests"]["cpu"], "100m");
    // Drain: preStop, then the shutdown window, then a margin to exit by itself.
    assert_eq!(container["lifecycle"]["preStop"]["sleep"]["seconds"], 15);
    assert_eq!(pod["terminationGracePeriodSeconds"], 50);
    // Spread across nodes and zones.
    let keys: Vec<_> = pod["topologySpreadConstraints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["topologyKey"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    );
    assert_eq!(
        pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "proxy"
    );
    assert_eq!(pod["serviceAccountName"], "todos-proxy");
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"],
        "todos-proxy-cookie"
    );

    // Front Service `todos` → proxy pods; `todos-app` → app pods; admin port on neither.
    let front = json_of(&d.service);
    assert_eq!(front["metadata"]["name"], "todos");
    assert_eq!(
        front["spec"]["selector"]["app.kubernetes.io/component"],
        "proxy"
    );
    assert_eq!(port_names(&front), [("http".into(), 80, "http".into())]);
    let app_service = json_of(&proxy.app_service);
    assert_eq!(app_service["metadata"]["name"], "todos-app");
    assert_eq!(app_service["spec"]["type"], "ClusterIP");
    assert_eq!(
        app_service["spec"]["selector"]["app.kubernetes.io/component"],
        "app"
    );
    assert_eq!(
        port_names(&app_service),
        [("http".into(), 3000, "http".into())]
    );
    for service in [&front, &app_service] {
        assert!(!service.to_string().contains("admin"), "{service}");
    }

    // PDB with two replicas.
    let budget = json_of(
        proxy
            .disruption_budget
            .as_ref()
            .expect("2 replicas → a PDB"),
    );
    assert_eq!(budget["metadata"]["name"], "todos-proxy");
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    assert_eq!(
        budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
        "proxy"
    );
    // The chart's proxy ClusterRole (get/list/watch on EndpointSlices: hack/check-chart.py),
    // granted in the app's namespace only.
    let binding = json_of(&proxy.role_binding);
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
            "name": "meteor-operator-proxy"})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "todos-proxy", "namespace": "default"}])
    );
    assert_eq!(
        json_of(&proxy.service_account)["metadata"]["name"],
        "todos-proxy"
    );

    assert!(d.routing.ingress.is_none() && d.routing.http_route.is_none());
    assert!(d.routing.certificate.is_none());
    assert_eq!(app_env(&d, "HTTP_FORWARDED_COUNT").as_deref(), Some("1"));
}

#[test]
fn every_proxy_field_lands_in_the_proxy_or_the_front_service() {
    let app = app_with(json!({
        "healthCheck": {"path": "/healthz"},
        "rollout": {"drainSeconds": 20, "shutdownSeconds": 45},
        "service": {"annotations": {"ignored": "while routing.proxy.service.annotations is set"}},
        "routing": {"proxy": {
            "replicas": 1,
            "resources": {"requests": {"cpu": "250m"}},
            "cookie": {"name": "todos_sticky", "maxAgeSeconds": 3600},
            "rateLimit": {"requestsPerSecond": 20},
            "idleTimeoutSeconds": 900,
            "image": "registry.example.com/meteor-operator:dev",
            "nodeSelector": {"pool": "edge"},
            "tolerations": [{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [
                    {"key": "pool", "operator": "In", "values": ["edge"]}]}}]}},
            "podAnnotations": {"prometheus.io/port": "9090"},
            "service": {"type": "LoadBalancer", "port": 8000,
                "annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "external"},
                "externalTrafficPolicy": "Local", "loadBalancerClass": "service.k8s.aws/nlb"},
        }},
    }));
    let d = desired(&app);
    let args = proxy_args(&d);
    for expected in [
        "--cookie-name todos_sticky",
        "--cookie-max-age 3600",
        "--rate-limit 20",
        "--rate-burst 100",
        "--idle-timeout 900s",
        "--health-path /healthz",
        "--drain-timeout 20s",
        "--shutdown-timeout 45s",
    ] {
        assert!(args.contains(expected), "{expected:?} not in {args}");
    }
    let proxy = d.routing.proxy.as_ref().unwrap();
    assert!(proxy.disruption_budget.is_none(), "1 replica → no PDB");
    let deployment = json_of(&proxy.deployment);
    assert_eq!(deployment["spec"]["replicas"], 1);
    let pod = &deployment["spec"]["template"];
    assert_eq!(
        pod["metadata"]["annotations"],
        json!({"prometheus.io/port": "9090"})
    );
    let pod = &pod["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"],
        "registry.example.com/meteor-operator:dev"
    );
    assert_eq!(container["resources"], json!({"requests": {"cpu": "250m"}}));
    assert_eq!(container["lifecycle"]["preStop"]["sleep"]["seconds"], 20);
    assert_eq!(pod["terminationGracePeriodSeconds"], 70);
    assert_eq!(pod["nodeSelector"], json!({"pool": "edge"}));
    assert_eq!(pod["tolerations"][0]["key"], "edge");
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"],
        1
    );

    let front = json_of(&d.service);
    assert_eq!(front["spec"]["type"], "LoadBalancer");
    assert_eq!(front["spec"]["externalTrafficPolicy"], "Local");
    assert_eq!(front["spec"]["loadBalancerClass"], "service.k8s.aws/nlb");
    assert_eq!(
        front["metadata"]["annotations"],
        json!({"service.beta.kubernetes.io/aws-load-balancer-type": "external"})
    );
    assert_eq!(port_names(&front), [("http".into(), 8000, "http".into())]);
}

#[test]
fn spec_service_still_shapes_the_front_service_under_the_proxy() {
    let app = app_with(json!({"service": {"type": "NodePort", "port": 8081,
        "annotations": {"a": "b"}}}));
    let front = json_of(&desired(&app).service);
    assert_eq!(front["spec"]["type"], "NodePort");
    assert_eq!(front["metadata"]["annotations"], json!({"a": "b"}));
    assert_eq!(port_names(&front), [("http".into(), 8081, "http".into())]);
}

#[test]
fn changing_the_app_never_restarts_the_proxy() {
    let before = desired(&default_app());
    let app = app_with(
        json!({"image": "ghcr.io/example/todos:2.0.0", "replicas": 7,
        "port": 4000, "env": [{"name": "MAIL_URL", "value": "smtp://x"}],
        "resources": {"requests": {"cpu": "2"}}}),
    );
    let after = desired(&app);
    assert_ne!(before.app, after.app);
    assert_eq!(
        before.routing.proxy.as_ref().unwrap().deployment,
        after.routing.proxy.as_ref().unwrap().deployment
    );
}

#[test]
fn the_proxy_terminates_tls_alone_and_redirects_http() {
    let app = app_with(json!({"routing": {"tls": {"secretName": "todos-cert"}}}));
    let d = desired(&app);
    let args = proxy_args(&d);
    for expected in [
        "--listen 0.0.0.0:8443",
        "--tls-cert /etc/meteor-proxy/tls/tls.crt",
        "--tls-key /etc/meteor-proxy/tls/tls.key",
        "--redirect-listen 0.0.0.0:8080",
    ] {
        assert!(args.contains(expected), "{expected:?} not in {args}");
    }
    assert!(!args.contains("--cookie-secure"), "Secure comes with TLS");
    let deployment = json_of(&d.routing.proxy.as_ref().unwrap().deployment);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][1]["secret"]["secretName"], "todos-cert");
    let ports: Vec<_> = pod["containers"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["containerPort"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports, [("http", 8080), ("https", 8443), ("admin", 9090)]);
    assert_eq!(
        port_names(&json_of(&d.service)),
        [
            ("https".into(), 443, "https".into()),
            ("http".into(), 80, "http".into())
        ]
    );

    let app = app_with(json!({"routing": {"tls": {"secretName": "todos-cert",
        "redirectHttp": false}}}));
    let d = desired(&app);
    assert!(!proxy_args(&d).contains("--redirect-listen"));
    assert_eq!(
        port_names(&json_of(&d.service)),
        [("https".into(), 443, "https".into())]
    );
}

#[test]
fn an_issuer_gets_a_certificate_for_the_root_url_host() {
    let app = app_with(json!({"routing": {"tls": {"issuerRef":
        {"name": "letsencrypt", "kind": "ClusterIssuer"}}}}));
    let d = desired(&app);
    let certificate = json_of(d.routing.certificate.as_ref().expect("a Certificate"));
    assert_eq!(certificate["apiVersion"], "cert-manager.io/v1");
    assert_eq!(certificate["kind"], "Certificate");
    assert_eq!(certificate["metadata"]["name"], "todos");
    assert_eq!(
        certificate["spec"],
        json!({"secretName": "todos-tls", "dnsNames": ["todos.example.com"],
            "issuerRef": {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "letsencrypt"}})
    );
    let deployment = json_of(&d.routing.proxy.as_ref().unwrap().deployment);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["volumes"][1]["secret"]["secretName"],
        "todos-tls"
    );
}

#[test]
fn with_the_proxy_off_the_front_service_selects_the_app_as_before() {
    let app = app_with(json!({"routing": {"proxy": {"enabled": false}}}));
    let d = desired(&app);
    assert!(d.routing.proxy.is_none());
    let front = json_of(&d.service);
    assert_eq!(
        front["spec"]["selector"]["app.kubernetes.io/component"],
        "app"
    );
    assert_eq!(
        front["metadata"]["labels"]["app.kubernetes.io/component"],
        "app"
    );
    assert_eq!(port_names(&front), [("http".into(), 80, "http".into())]);
    assert!(front["metadata"].get("annotations").is_none());
    assert_eq!(
        app_env(&d, "HTTP_FORWARDED_COUNT"),
        None,
        "nothing forwards"
    );
}

fn ingress_json(app: &MeteorApp) -> Value {
    json_of(desired(app).routing.ingress.as_ref().expect("an Ingress"))
}

#[test]
fn an_nginx_ingress_alone_pins_sessions_with_its_cookie() {
    let app = app_with(json!({"rootUrl": "https://todos.example.com/chat",
        "routing": {"proxy": {"enabled": false}, "tls": {"secretName": "todos-cert"},
            "ingress": {"className": "nginx", "annotations":
                {"nginx.ingress.kubernetes.io/proxy-read-timeout": "7200", "extra": "yes"}}}}));
    let ingress = ingress_json(&app);
    assert_eq!(ingress["metadata"]["name"], "todos");
    let n = |key: &str| format!("nginx.ingress.kubernetes.io/{key}");
    let annotations = &ingress["metadata"]["annotations"];
    for (key, value) in [
        (n("affinity"), "cookie"),
        (n("affinity-mode"), "persistent"),
        (n("session-cookie-name"), "meteor-sticky"),
        (n("session-cookie-max-age"), "86400"),
        (n("proxy-send-timeout"), "300"),
        (n("ssl-redirect"), "true"),
        // The user's annotations win over the operator's.
        (n("proxy-read-timeout"), "7200"),
        ("extra".into(), "yes"),
    ] {
        assert_eq!(annotations[&key], value, "{key}");
    }
    let spec = &ingress["spec"];
    assert_eq!(spec["ingressClassName"], "nginx");
    assert_eq!(
        spec["rules"],
        json!([{"host": "todos.example.com", "http": {"paths": [{"path": "/chat",
            "pathType": "Prefix", "backend": {"service": {"name": "todos",
            "port": {"number": 80}}}}]}}])
    );
    assert_eq!(
        spec["tls"],
        json!([{"hosts": ["todos.example.com"], "secretName": "todos-cert"}])
    );
    assert_eq!(
        app_env(&desired(&app), "HTTP_FORWARDED_COUNT").as_deref(),
        Some("1")
    );
    assert!(routing::ingress_gaps(&app).is_empty());
}

#[test]
fn an_ingress_in_front_of_the_proxy_asks_for_no_stickiness_and_terminates_tls() {
    let app = app_with(json!({"routing": {"tls": {"issuerRef": {"name": "le"}},
        "ingress": {"className": "nginx"}}}));
    let d = desired(&app);
    let ingress = ingress_json(&app);
    let annotations = ingress["metadata"]["annotations"].as_object().unwrap();
    assert!(!annotations.contains_key("nginx.ingress.kubernetes.io/affinity"));
    assert_eq!(
        annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"],
        "300"
    );
    assert_eq!(ingress["spec"]["tls"][0]["secretName"], "todos-tls");
    // The Ingress terminates TLS; the proxy runs plain HTTP and marks its cookie Secure.
    let args = proxy_args(&d);
    assert!(args.contains("--listen 0.0.0.0:8080") && args.contains("--cookie-secure"));
    assert!(!args.contains("--tls-cert"), "{args}");
    assert_eq!(
        port_names(&json_of(&d.service)),
        [("http".into(), 80, "http".into())]
    );
    assert_eq!(app_env(&d, "HTTP_FORWARDED_COUNT").as_deref(), Some("2"));
}

#[test]
fn traefik_and_haproxy_get_their_own_stickiness_settings() {
    let app = app_with(json!({"routing": {"proxy": {"enabled": false},
        "tls": {"secretName": "c", "redirectHttp": false}, "ingress": {"className": "traefik"}}}));
    let d = desired(&app);
    let front = json_of(&d.service);
    let t = "traefik.ingress.kubernetes.io/service.sticky.cookie";
    assert_eq!(front["metadata"]["annotations"][t], "true");
    assert_eq!(
        front["metadata"]["annotations"][format!("{t}.name")],
        "meteor-sticky"
    );
    assert_eq!(
        front["metadata"]["annotations"][format!("{t}.secure")],
        "true"
    );
    assert_eq!(
        ingress_json(&app)["metadata"]["annotations"],
        json!({"traefik.ingress.kubernetes.io/router.tls": "true"})
    );
    assert!(routing::ingress_gaps(&app).is_empty());

    let app = app_with(json!({"routing": {"proxy": {"enabled": false},
        "ingress": {"className": "haproxy"}}}));
    assert_eq!(
        ingress_json(&app)["metadata"]["annotations"],
        json!({"haproxy.org/cookie-persistence": "meteor-sticky",
            "haproxy.org/timeout-tunnel": "300s"})
    );
}

#[test]
fn an_unknown_ingress_class_alone_cannot_pin_sessions_and_says_so() {
    let app = app_with(json!({"routing": {"proxy": {"enabled": false},
        "ingress": {"className": "contour"}}}));
    assert!(ingress_json(&app)["metadata"].get("annotations").is_none());
    assert!(routing::ingress_gaps(&app).contains(&STICKINESS_GAP));
    // Behind the proxy the proxy pins sessions: only the timeouts are beyond reach.
    let app = app_with(json!({"routing": {"ingress": {}}}));
    assert!(!routing::ingress_gaps(&app).contains(&STICKINESS_GAP));
    assert!(!routing::ingress_gaps(&app).is_empty());
}

#[test]
fn a_gateway_alone_gets_an_httproute_with_session_persistence() {
    let app = app_with(json!({"rootUrl": "https://todos.example.com/app",
        "routing": {"proxy": {"enabled": false}, "gateway": {"parentRefs":
            [{"name": "public", "namespace": "gateways", "sectionName": "https"}]}}}));
    let d = desired(&app);
    let route = json_of(d.routing.http_route.as_ref().expect("an HTTPRoute"));
    assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(route["kind"], "HTTPRoute");
    assert_eq!(route["metadata"]["name"], "todos");
    assert_eq!(
        route["spec"],
        json!({
            "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                "name": "public", "namespace": "gateways", "sectionName": "https"}],
            "hostnames": ["todos.example.com"],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/app"}}],
                "backendRefs": [{"kind": "Service", "name": "todos", "port": 80}],
                "sessionPersistence": {"sessionName": "meteor-sticky", "type": "Cookie",
                    "absoluteTimeout": "24h", "cookieConfig": {"lifetimeType": "Permanent"}},
            }],
        })
    );
    assert!(d.routing.ingress.is_none());
    assert_eq!(app_env(&d, "HTTP_FORWARDED_COUNT").as_deref(), Some("1"));

    // In front of the proxy: no session persistence asked of the Gateway.
    let app = app_with(json!({"routing": {"gateway": {"parentRefs": [{"name": "public"}]}}}));
    let d = desired(&app);
    let route = json_of(d.routing.http_route.as_ref().unwrap());
    assert!(
        route["spec"]["rules"][0]
            .get("sessionPersistence")
            .is_none()
    );
    assert_eq!(app_env(&d, "HTTP_FORWARDED_COUNT").as_deref(), Some("2"));
}

#[test]
fn a_users_http_forwarded_count_wins() {
    let app = app_with(json!({"env": [{"name": "HTTP_FORWARDED_COUNT", "value": "3"}]}));
    assert_eq!(
        app_env(&desired(&app), "HTTP_FORWARDED_COUNT").as_deref(),
        Some("3")
    );
}

#[test]
fn the_cookie_secret_holds_the_key_it_is_given() {
    let app = default_app();
    let key = routing::cookie_key_text(&[0xab; routing::COOKIE_KEY_BYTES]);
    assert_eq!(key.len(), 64);
    let secret = json_of(&routing::cookie_secret(&app, &key));
    assert_eq!(secret["metadata"]["name"], "todos-proxy-cookie");
    assert_eq!(secret["type"], "Opaque");
    use base64::Engine;
    let stored = secret["data"][COOKIE_SECRET_KEY].as_str().unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(stored)
        .unwrap();
    assert_eq!(decoded, key.as_bytes());
}

#[test]
fn the_proxy_image_and_cluster_role_are_the_operators_deployments() {
    let app = default_app();
    let inputs = Inputs {
        config_hash: "x".into(),
        mongo: MongoWiring::for_app(&app).unwrap(),
    };
    let options = build::Options {
        routing: RoutingOptions {
            proxy_image: "registry.example.com/meteor-operator:0.2.0".into(),
            proxy_cluster_role: "fleet-a-meteor-operator-proxy".into(),
        },
        ..build::Options::default()
    };
    let d = build::desired_with(&app, &inputs, &options, &mut Placeholder);
    let proxy = d.routing.proxy.unwrap();
    let deployment = json_of(&proxy.deployment);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/meteor-operator:0.2.0"
    );
    assert_eq!(
        proxy.role_binding.role_ref.name,
        "fleet-a-meteor-operator-proxy"
    );
}

#[test]
fn gateway_durations_stay_within_five_digits_per_unit() {
    assert_eq!(routing::gateway_duration(86_400), "24h");
    assert_eq!(routing::gateway_duration(5_445), "1h30m45s");
    assert_eq!(routing::gateway_duration(45), "45s");
    assert_eq!(routing::gateway_duration(i32::MAX), "99999h");
}

#[test]
fn rebalancing_settings_reach_the_proxy_flags() {
    let app = app_with(json!({
        "routing": { "proxy": { "rebalance": { "closesPerSecond": 0, "tolerancePercent": 35 } } }
    }));
    let args = proxy_args(&desired(&app));
    assert!(args.contains("--rebalance-rate 0"), "{args}");
    assert!(args.contains("--rebalance-tolerance 35"), "{args}");
}

/// The proxy's env var (`value` or the downward API's `resourceFieldRef`).
fn proxy_env(d: &Desired, name: &str) -> Option<Value> {
    let deployment = json_of(&d.routing.proxy.as_ref().unwrap().deployment);
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
}

/// The proxy believes exactly the `X-Forwarded-*` hops the app believes (issue 18, item 2):
/// `--trusted-hops` is the app's `HTTP_FORWARDED_COUNT` less the proxy's own hop, so with the
/// proxy's own LoadBalancer nothing a client sends is believed, and behind an Ingress or a
/// Gateway the edge's hop is.
#[test]
fn the_proxy_trusts_the_forwarding_hops_the_app_trusts() {
    let hops = |d: &Desired| {
        let args = proxy_args(d);
        let words: Vec<&str> = args.split(' ').collect();
        let at = words.iter().position(|w| *w == "--trusted-hops");
        at.map(|i| words[i + 1].to_string())
    };
    let alone = desired(&default_app());
    assert_eq!(
        app_env(&alone, "HTTP_FORWARDED_COUNT").as_deref(),
        Some("1")
    );
    assert_eq!(
        hops(&alone),
        None,
        "no edge: the default, 0, trusts no client header"
    );
    for routing in [
        json!({"ingress": {"className": "nginx"}}),
        json!({"gateway": {"parentRefs": [{"name": "public"}]}}),
    ] {
        let d = desired(&app_with(json!({"routing": routing})));
        assert_eq!(app_env(&d, "HTTP_FORWARDED_COUNT").as_deref(), Some("2"));
        assert_eq!(hops(&d).as_deref(), Some("1"), "{routing}");
    }
    // A user's count (a CDN in front, say) wins in the app, and the proxy follows it.
    let app = app_with(
        json!({"env": [{"name": "HTTP_FORWARDED_COUNT", "value": "3"}],
        "routing": {"ingress": {}}}),
    );
    let d = desired(&app);
    assert_eq!(app_env(&d, "HTTP_FORWARDED_COUNT").as_deref(), Some("3"));
    assert_eq!(hops(&d).as_deref(), Some("2"));
    let app = app_with(json!({"env": [{"name": "HTTP_FORWARDED_COUNT", "value": "0"}]}));
    assert_eq!(hops(&desired(&app)), None);
}

/// The proxy sizes its connection cap from its own memory limit (issue 18, item 4): the
/// container's `limits.memory` through the downward API, so a user-set limit is honoured.
#[test]
fn the_proxy_reads_its_memory_limit_from_the_downward_api() {
    let expected = json!({"name": "METEOR_PROXY_MEMORY_LIMIT_BYTES", "valueFrom": {
        "resourceFieldRef": {"containerName": "proxy", "resource": "limits.memory",
            "divisor": "1"}}});
    let d = desired(&default_app());
    assert_eq!(
        proxy_env(&d, "METEOR_PROXY_MEMORY_LIMIT_BYTES"),
        Some(expected.clone())
    );
    let app = app_with(json!({"routing": {"proxy": {"resources": {
        "limits": {"memory": "1Gi"}}}}}));
    let d = desired(&app);
    assert_eq!(
        proxy_env(&d, "METEOR_PROXY_MEMORY_LIMIT_BYTES"),
        Some(expected)
    );
    assert!(
        !proxy_args(&d).contains("--max-connections"),
        "derived by the proxy"
    );
}
