//! meteor-operator: runs fleets of Meteor.js apps on Kubernetes.
//!
//! The pure model (API types, validation, builders, plan, status, the replica-set state machine)
//! is its own crate, `meteor-model` (model/), with no Kubernetes client; it is re-exported here
//! under its old paths. This crate adds the I/O: the controller, the `mongodb` driver, render.

pub use meteor_model::{api, build, plan, problem, references, status, validate};

pub mod controller;
pub mod mongo;
pub mod render;

/// The MeteorApp CRD as YAML, exactly as committed in `crds/meteorapps.yaml`.
pub fn crd_yaml() -> String {
    serde_norway::to_string(&api::crd()).expect("the CRD serializes to YAML")
}
