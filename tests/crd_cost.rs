//! What the API server checks before it accepts the CRD, checked on every run: every string, list
//! and map of the schema has a size bound, and no CEL rule calls a function whose result the API
//! server cannot size. Either mistake makes the API server price a rule as if its input were a
//! whole request, and the CRD is refused (over the CEL cost budget). This cannot replace a real
//! API server (`../shared/cluster/admission-check.sh`), but it catches that class of mistake
//! without one.

use meteor_operator::api::bounds;
use serde_json::Value;

fn schema() -> Value {
    let crd = meteor_operator::api::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("the CRD has an openAPIV3Schema");
    serde_json::to_value(schema).unwrap()
}

/// Every `x-kubernetes-validations` rule of `node` and below, with the path of its node.
fn rules(node: &Value, path: &str, out: &mut Vec<(String, String)>) {
    let Some(object) = node.as_object() else {
        return;
    };
    for rule in object
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push((path.to_string(), rule["rule"].as_str().unwrap().to_string()));
    }
    if let Some(Value::Object(properties)) = object.get("properties") {
        for (name, child) in properties {
            rules(child, &format!("{path}.{name}"), out);
        }
    }
    if let Some(items) = object.get("items") {
        rules(items, &format!("{path}[]"), out);
    }
    if let Some(values) = object.get("additionalProperties") {
        rules(values, &format!("{path}{{}}"), out);
    }
}

/// Functions the API server's cost estimator gives no result size (Kubernetes
/// `staging/src/k8s.io/apiserver/pkg/cel/library/cost.go`, "url accessors"): whatever consumes
/// their result is priced as if it were a whole request.
const UNSIZED_RESULTS: [&str; 6] = [
    "getScheme",
    "getHostname",
    "getHost",
    "getPort",
    "getEscapedPath",
    "getQuery",
];

/// Whether `rule` calls one of [`UNSIZED_RESULTS`].
fn calls_unsized(rule: &str) -> bool {
    UNSIZED_RESULTS
        .iter()
        .any(|f| rule.contains(&format!(".{f}(")))
}

#[test]
fn every_string_list_and_map_of_the_schema_is_bounded() {
    let missing = bounds::unbounded(&schema());
    assert!(
        missing.is_empty(),
        "schema nodes without a size bound (give each one in model/src/api, or a default in \
         model/src/api/bounds.rs): {missing:#?}"
    );
}

#[test]
fn no_rule_calls_a_function_whose_result_the_api_server_cannot_size() {
    let mut found = Vec::new();
    rules(&schema(), "", &mut found);
    assert!(found.len() > 50, "only {} rules found", found.len());
    let offending: Vec<_> = found
        .iter()
        .filter(|(_, rule)| calls_unsized(rule))
        .collect();
    assert!(
        offending.is_empty(),
        "rules that call a URL accessor (the API server cannot size its result): {offending:#?}"
    );
}

/// The checks above must be able to fail: an unbounded node and a rule over a URL accessor are
/// found where they are.
#[test]
fn the_checks_find_what_they_look_for() {
    let schema = serde_json::json!({"type": "object", "properties": {"spec": {
        "type": "object",
        "x-kubernetes-validations": [{"rule": "!isIP(url(self.rootUrl).getHostname())"}],
        "properties": {
            "rootUrl": {"type": "string"},
            "env": {"type": "array", "maxItems": 2, "items": {"type": "string", "maxLength": 9}},
        },
    }}});
    assert_eq!(bounds::unbounded(&schema), [".spec.rootUrl (maxLength)"]);
    let mut found = Vec::new();
    rules(&schema, "", &mut found);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, ".spec");
    assert!(calls_unsized(&found[0].1));
    assert!(!calls_unsized("self.rootUrl.matches('^https?://')"));
}
