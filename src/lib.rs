//! meteor-operator: runs fleets of Meteor.js apps on Kubernetes.

pub mod api;
pub mod build;
pub mod controller;
pub mod mongo;
pub mod plan;
pub mod problem;
pub mod references;
pub mod render;
pub mod status;
pub mod validate;

/// The MeteorApp CRD as YAML, exactly as committed in `crds/meteorapps.yaml`.
pub fn crd_yaml() -> String {
    serde_norway::to_string(&api::crd()).expect("the CRD serializes to YAML")
}
