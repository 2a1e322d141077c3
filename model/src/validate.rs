//! Static validation of a MeteorApp: the CRD's own CEL rules evaluated client-side, so `render`
//! and the reconcile backstop give the apiserver's verdict and messages. Reconcile needs this
//! because objects may predate a rule, or reach us from a cluster whose CRD is older.

use crate::api::{self, MeteorApp};
use crate::problem::Problem;
use kube::core::cel::{CompiledSchema, Validator, compile_schema};

/// The CRD's rules, compiled once for the process (compiling costs far more than evaluating, and
/// a copy per thread held about 0.6 MiB on each reconciling thread).
static RULES: std::sync::LazyLock<(Validator, CompiledSchema)> = std::sync::LazyLock::new(|| {
    let crd = api::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("the derived CRD has an openAPIV3Schema");
    let schema = serde_json::to_value(schema).expect("the CRD schema serializes to JSON");
    (Validator::new(), compile_schema(&schema))
});

/// Ok when every `x-kubernetes-validations` rule of the CRD holds for `app`.
pub fn validate(app: &MeteorApp) -> Result<(), Problem> {
    let object = serde_json::to_value(app).expect("a MeteorApp serializes to JSON");
    let (validator, rules) = &*RULES;
    validator
        .validate_compiled(rules, &object, None)
        .map_err(|errors| {
            let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
            Problem::InvalidSpec(messages.join("; "))
        })
}
