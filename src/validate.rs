//! Static validation of a MeteorApp: the CRD's own CEL rules evaluated client-side, so `render`
//! and the reconcile backstop give the apiserver's verdict and messages. Reconcile needs this
//! because objects may predate a rule, or reach us from a cluster whose CRD is older.

use crate::api::MeteorApp;
use crate::problem::Problem;

/// Ok when every `x-kubernetes-validations` rule of the CRD holds for `app`.
pub fn validate(app: &MeteorApp) -> Result<(), Problem> {
    app.validate_cel().map_err(|errors| {
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        Problem::InvalidSpec(messages.join("; "))
    })
}
