//! meteor-model: the MeteorApp model of meteor-operator, with no Kubernetes client.
//!
//! The API types (and so the CRD), their client-side validation, the pure builders of every
//! child object, the rollout plan, status, and the managed MongoDB replica-set state machine
//! behind its `MongoAdmin` trait. Everything here is pure or reaches the outside only through a
//! trait the caller implements: the crate's `kube` has no `client` feature, so an import of
//! `kube::Client` (or of the operator's `controller`) does not compile here. The operator
//! (`meteor-operator`) re-exports every module under its old path.

pub mod api;
pub mod build;
pub mod mongo;
pub mod plan;
pub mod problem;
pub mod references;
pub mod status;
pub mod validate;
