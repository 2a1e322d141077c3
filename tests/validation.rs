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
