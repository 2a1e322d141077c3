//! Bad input: the CRD's CEL rules, evaluated client-side exactly as the apiserver evaluates them,
//! reject each mistake with a message naming the field; good input passes.

mod support;

use meteor_operator::validate::validate;
use support::app_from_yaml;

const VALID: &str = r#"
apiVersion: meteorfleet.dev/v1alpha1
kind: MeteorApp
metadata: { name: todos }
spec:
  image: todos:1
  rootUrl: https://todos.example.com
  mongo: { external: { url: { name: todos-mongo, key: MONGO_URL } } }
"#;

/// Validates VALID with one line replaced or added, and returns the error message.
fn error_with(edit: impl Fn(&mut serde_json::Value)) -> String {
    let mut value: serde_json::Value = serde_norway::from_str(VALID).unwrap();
    edit(&mut value);
    let yaml = serde_norway::to_string(&value).unwrap();
    match validate(&app_from_yaml(&yaml)) {
        Ok(()) => panic!("accepted: {yaml}"),
        Err(problem) => problem.to_string(),
    }
}

#[test]
fn the_examples_and_the_minimal_app_are_valid() {
    for yaml in [
        VALID,
        include_str!("../examples/minimal.yaml"),
        include_str!("../examples/production.yaml"),
        include_str!("../examples/routing-proxy.yaml"),
        include_str!("../examples/routing-ingress.yaml"),
        include_str!("../examples/routing-gateway.yaml"),
        include_str!("../examples/autoscaling.yaml"),
        include_str!("../examples/volumes-and-sidecars.yaml"),
    ] {
        validate(&app_from_yaml(yaml)).expect("valid");
    }
}

/// One change to the valid object.
type Edit = Box<dyn Fn(&mut serde_json::Value)>;

#[test]
fn each_mistake_is_rejected_naming_its_field() {
    let cases: Vec<(&str, Edit)> = vec![
        (
            "spec.replicas",
            Box::new(|v| v["spec"]["replicas"] = (-1).into()),
        ),
        ("spec.port", Box::new(|v| v["spec"]["port"] = 70000.into())),
        (
            "spec.rootUrl",
            Box::new(|v| v["spec"]["rootUrl"] = "ftp://todos".into()),
        ),
        (
            "spec.rootUrl",
            Box::new(|v| v["spec"]["rootUrl"] = "todos.example.com".into()),
        ),
        ("spec.image", Box::new(|v| v["spec"]["image"] = "".into())),
        (
            "spec.mongo.external.url.key",
            Box::new(|v| v["spec"]["mongo"]["external"]["url"]["key"] = "".into()),
        ),
        (
            "spec.env",
            Box::new(|v| v["spec"]["env"] = serde_json::json!([{"name": "PORT", "value": "1"}])),
        ),
        (
            "spec.workers.env",
            Box::new(|v| {
                v["spec"]["workers"] =
                    serde_json::json!({"replicas": 1, "env": [{"name": "PORT", "value": "1"}]})
            }),
        ),
        (
            "metadata.name",
            Box::new(|v| v["metadata"]["name"] = "a".repeat(41).into()),
        ),
        (
            "metadata.name",
            Box::new(|v| v["metadata"]["name"] = "9lives".into()),
        ),
        (
            "spec.settings",
            Box::new(|v| {
                v["spec"]["settings"] = serde_json::json!({
                    "secretKeyRef": {"name": "s", "key": "k"},
                    "configMapKeyRef": {"name": "c", "key": "k"},
                })
            }),
        ),
        (
            "spec.settings",
            Box::new(|v| v["spec"]["settings"] = serde_json::json!({})),
        ),
        (
            "spec.workers.replicas",
            Box::new(|v| v["spec"]["workers"] = serde_json::json!({"replicas": -2})),
        ),
        (
            "spec.service.type",
            Box::new(|v| v["spec"]["service"] = serde_json::json!({"type": "ExternalName"})),
        ),
        (
            "spec.rollout.drainSeconds",
            Box::new(|v| v["spec"]["rollout"] = serde_json::json!({"drainSeconds": 7200})),
        ),
        (
            "spec.healthCheck.path",
            Box::new(|v| v["spec"]["healthCheck"] = serde_json::json!({"path": "health"})),
        ),
        (
            "spec.healthCheck.readinessProbe.periodSeconds",
            Box::new(|v| {
                v["spec"]["healthCheck"] =
                    serde_json::json!({"readinessProbe": {"periodSeconds": 0}})
            }),
        ),
        (
            "spec.imagePullPolicy",
            Box::new(|v| v["spec"]["imagePullPolicy"] = "Sometimes".into()),
        ),
        (
            "spec.mongo",
            Box::new(|v| v["spec"]["mongo"] = serde_json::json!({})),
        ),
    ];
    for (field, edit) in cases {
        let message = error_with(edit);
        assert!(
            message.contains(field),
            "expected a message naming {field}, got: {message}"
        );
    }
}

#[test]
fn valid_rollout_forms_pass() {
    for rollout in [
        serde_json::json!({"maxSurge": "25%", "maxUnavailable": "10%"}),
        serde_json::json!({"maxSurge": 0, "maxUnavailable": 1}),
        serde_json::json!({"maxSurge": 3, "minReadySeconds": 30, "progressDeadlineSeconds": 600}),
    ] {
        let mut value: serde_json::Value = serde_norway::from_str(VALID).unwrap();
        value["spec"]["rollout"] = rollout.clone();
        let yaml = serde_norway::to_string(&value).unwrap();
        validate(&app_from_yaml(&yaml)).unwrap_or_else(|e| panic!("{rollout} rejected: {e}"));
    }
}

#[test]
fn null_int_or_string_fields_parse_and_take_their_defaults() {
    // The schema marks them nullable, so the API server stores an explicit null: one such
    // object must not break deserialization of the whole MeteorApp list.
    let yaml = VALID.replace(
        "  image: todos:1",
        "  image: todos:1\n  rollout: { maxSurge: null, maxUnavailable: null }",
    );
    let app = app_from_yaml(&yaml);
    validate(&app).expect("valid");
    let inputs = meteor_operator::build::Inputs {
        config_hash: "x".into(),
        mongo: meteor_operator::build::MongoWiring::for_app(&app).unwrap(),
    };
    let deployment = meteor_operator::build::app_deployment(&app, &inputs);
    let rolling = deployment
        .spec
        .unwrap()
        .strategy
        .unwrap()
        .rolling_update
        .unwrap();
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
}

#[test]
fn the_committed_crd_is_what_the_code_generates() {
    let committed = include_str!("../crds/meteorapps.yaml");
    assert!(
        committed == meteor_operator::crd_yaml(),
        "crds/meteorapps.yaml is stale: run `cargo run -q -- crd > crds/meteorapps.yaml`"
    );
}

/// `spec.routing` with `routing` as given (JSON), validated; the error message if refused.
fn routing_verdict(routing: serde_json::Value, root_url: &str) -> Result<(), String> {
    let mut value: serde_json::Value = serde_norway::from_str(VALID).unwrap();
    value["spec"]["routing"] = routing;
    value["spec"]["rootUrl"] = root_url.into();
    let yaml = serde_norway::to_string(&value).unwrap();
    validate(&app_from_yaml(&yaml)).map_err(|problem| problem.to_string())
}

#[test]
fn each_routing_mistake_is_rejected_naming_its_field() {
    use serde_json::json;
    let url = "https://todos.example.com";
    let cases = [
        (
            json!({"ingress": {}, "gateway": {"parentRefs": [{"name": "public"}]}}),
            url,
            "routing: set at most one of ingress or gateway",
        ),
        (
            json!({"tls": {"secretName": "t", "issuerRef": {"name": "letsencrypt"}}}),
            url,
            "routing.tls: set exactly one of secretName or issuerRef",
        ),
        (
            json!({"tls": {}}),
            url,
            "routing.tls: set exactly one of secretName or issuerRef",
        ),
        (
            json!({"tls": {"issuerRef": {"name": "le", "kind": "Vault"}}}),
            url,
            "spec.routing.tls.issuerRef.kind",
        ),
        (
            json!({"ingress": {}}),
            "https://192.0.2.10",
            "routing.ingress: rootUrl's host is an IP address",
        ),
        (
            json!({"ingress": {}}),
            "http://[2001:db8::1]:8080/app",
            "routing.ingress: rootUrl's host is an IP address",
        ),
        (
            json!({"proxy": {"rateLimit": {"requestsPerSecond": -5}}}),
            url,
            "spec.routing.proxy.rateLimit.requestsPerSecond",
        ),
        (
            json!({"proxy": {"rateLimit": {"requestsPerSecond": 5, "burst": -1}}}),
            url,
            "spec.routing.proxy.rateLimit.burst",
        ),
        (
            json!({"proxy": {"replicas": -1}}),
            url,
            "spec.routing.proxy.replicas",
        ),
        (
            json!({"proxy": {"replicas": 0}}),
            url,
            "spec.routing.proxy.replicas",
        ),
        (
            json!({"gateway": {"parentRefs": []}}),
            url,
            "spec.routing.gateway.parentRefs: must name at least one Gateway",
        ),
        (
            json!({"gateway": {"parentRefs": [{"name": ""}]}}),
            url,
            "spec.routing.gateway.parentRefs[0].name",
        ),
        (
            json!({"proxy": {"enabled": false, "replicas": 3}}),
            url,
            "routing.proxy: only enabled may be set while the proxy is off",
        ),
        (
            json!({"tls": {"secretName": "t"}, "gateway": {"parentRefs": [{"name": "g"}]}}),
            url,
            "routing.tls: with gateway, TLS is configured on the Gateway's listener",
        ),
        (
            json!({"proxy": {"enabled": false}, "tls": {"secretName": "t"}}),
            url,
            "routing.tls: nothing would terminate TLS",
        ),
        (
            json!({"proxy": {"idleTimeoutSeconds": 30}}),
            url,
            "spec.routing.proxy.idleTimeoutSeconds",
        ),
        (
            json!({"proxy": {"cookie": {"name": "a b"}}}),
            url,
            "spec.routing.proxy.cookie.name",
        ),
        (
            json!({"proxy": {"cookie": {"maxAgeSeconds": 0}}}),
            url,
            "spec.routing.proxy.cookie.maxAgeSeconds",
        ),
        (
            json!({"proxy": {"service": {"type": "ExternalName"}}}),
            url,
            "spec.routing.proxy.service.type",
        ),
        (
            json!({"proxy": {"service": {"externalTrafficPolicy": "Nearest"}}}),
            url,
            "spec.routing.proxy.service.externalTrafficPolicy",
        ),
        (
            json!({"proxy": {"service": {"port": 0}}}),
            url,
            "spec.routing.proxy.service.port",
        ),
    ];
    for (routing, root_url, expected) in cases {
        match routing_verdict(routing.clone(), root_url) {
            Ok(()) => panic!("accepted {routing} with rootUrl {root_url}"),
            Err(message) => assert!(
                message.contains(expected),
                "{routing}: expected a message containing {expected:?}, got: {message}"
            ),
        }
    }
}

#[test]
fn every_routing_mode_is_accepted() {
    use serde_json::json;
    for routing in [
        json!({}),
        json!({"proxy": {"enabled": false}}),
        json!({"proxy": {"replicas": 3, "rateLimit": {"requestsPerSecond": 20, "burst": 40},
            "cookie": {"name": "sticky_1", "maxAgeSeconds": 3600}, "idleTimeoutSeconds": 600,
            "service": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                "loadBalancerClass": "service.k8s.aws/nlb", "port": 8080}}}),
        json!({"tls": {"secretName": "todos-tls"}}),
        json!({"tls": {"issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"}, "redirectHttp": false}}),
        json!({"ingress": {"className": "nginx"}, "tls": {"secretName": "todos-tls"}}),
        json!({"proxy": {"enabled": false}, "ingress": {"className": "traefik"},
            "tls": {"issuerRef": {"name": "letsencrypt"}}}),
        json!({"gateway": {"parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}]}}),
        json!({"proxy": {"enabled": false}, "gateway": {"parentRefs": [{"name": "public"}]}}),
    ] {
        routing_verdict(routing.clone(), "https://todos.example.com")
            .unwrap_or_else(|e| panic!("{routing} rejected: {e}"));
    }
    // An IP host is fine without an Ingress: the proxy or a Gateway does not route by host.
    routing_verdict(json!({}), "http://192.0.2.10:8080").expect("IP rootUrl with the proxy");
    // Host names that merely start like an address are names.
    for url in [
        "https://192.0.2.10.nip.io",
        "https://10-0-0-1.example.com:8443/app",
        "HTTPS://todos.example.com",
    ] {
        routing_verdict(json!({"ingress": {}}), url)
            .unwrap_or_else(|e| panic!("{url} with an Ingress rejected: {e}"));
    }
}

/// The rootUrl rules are patterns (the API server cannot price URL accessors): each form of
/// address they must see through.
#[test]
fn root_url_patterns_see_through_ports_user_info_and_brackets() {
    use serde_json::json;
    for url in [
        "http://user:pw@192.0.2.1/",
        "https://192.0.2.1:8443",
        "https://[::1]",
        "http://[2001:db8::1]?q=1",
    ] {
        let error = routing_verdict(json!({"ingress": {}}), url)
            .expect_err(&format!("{url} with an Ingress accepted"));
        assert!(
            error.contains("rootUrl's host is an IP address"),
            "{url}: {error}"
        );
    }
    for url in [
        "http://",
        "https:///todos",
        "https://user@/",
        "ws://todos.example.com",
    ] {
        let error = routing_verdict(json!({}), url).expect_err(&format!("{url} accepted"));
        assert!(error.contains("spec.rootUrl"), "{url}: {error}");
    }
}

#[test]
fn each_autoscaling_mistake_is_rejected_naming_its_field() {
    use serde_json::json;
    let cases = [
        (
            json!({"maxReplicas": 4, "minReplicas": 0}),
            "spec.autoscaling.minReplicas",
        ),
        (
            json!({"maxReplicas": 2, "minReplicas": 3}),
            "autoscaling.minReplicas: must not exceed maxReplicas",
        ),
        (json!({"maxReplicas": 0}), "spec.autoscaling.maxReplicas"),
        (json!({"maxReplicas": 5000}), "spec.autoscaling.maxReplicas"),
        (
            json!({"maxReplicas": 4, "targetCPUUtilizationPercentage": 101}),
            "spec.autoscaling.targetCPUUtilizationPercentage",
        ),
        (
            json!({"maxReplicas": 4, "targetMemoryUtilizationPercentage": 0}),
            "spec.autoscaling.targetMemoryUtilizationPercentage",
        ),
        (
            json!({"maxReplicas": 4, "sessionsPerReplica": 0}),
            "spec.autoscaling.sessionsPerReplica",
        ),
    ];
    for (autoscaling, field) in cases {
        let message = error_with(|v| v["spec"]["autoscaling"] = autoscaling.clone());
        assert!(message.contains(field), "{autoscaling}: {message}");
    }
}

#[test]
fn rebalancing_is_bounded_and_refused_with_the_proxy_off() {
    use serde_json::json;
    let url = "https://todos.example.com";
    let too_fast = routing_verdict(
        json!({"proxy": {"rebalance": {"closesPerSecond": 5000}}}),
        url,
    );
    assert!(
        too_fast
            .unwrap_err()
            .contains("spec.routing.proxy.rebalance.closesPerSecond")
    );
    let off = routing_verdict(
        json!({"proxy": {"enabled": false, "rebalance": {"tolerancePercent": 10}}}),
        url,
    );
    assert!(
        off.unwrap_err()
            .contains("routing.proxy: only enabled may be set")
    );
}

#[test]
fn each_volume_and_container_mistake_is_rejected_naming_its_field() {
    use serde_json::json;
    let cases = [
        (
            json!({"volumes": [{"name": "tmp", "emptyDir": {}}]}),
            "spec.volumes: tmp is the operator's own volume",
        ),
        (
            json!({"volumes": [{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}]}),
            "spec.volumes: volume names must be unique",
        ),
        (
            json!({"volumes": [{"name": "a", "emptyDir": {}}],
                   "volumeMounts": [{"name": "a", "mountPath": "/tmp"}]}),
            "spec.volumeMounts: /tmp is mounted by the operator",
        ),
        (
            json!({"volumeMounts": [{"name": "nowhere", "mountPath": "/data"}]}),
            "volumeMounts: each must name one of spec.volumes",
        ),
        (
            json!({"sidecars": [{"name": "meteor", "image": "x"}]}),
            "spec.sidecars: meteor is the name of the app's own container",
        ),
        (
            json!({"initContainers": [{"name": "meteor", "image": "x"}]}),
            "spec.initContainers: meteor is the name of the app's own container",
        ),
    ];
    for (spec, expected) in cases {
        let message = error_with(|v| {
            for (key, value) in spec.as_object().unwrap() {
                v["spec"][key] = value.clone();
            }
        });
        assert!(
            message.contains(expected),
            "{spec}: expected {expected:?}, got: {message}"
        );
    }
}
