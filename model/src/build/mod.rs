//! Pure builders: from a MeteorApp and the facts resolved from its references to every object
//! the operator wants to exist. No API access here; the operator's `controller` applies what
//! these return and its `render` prints it.

mod autoscaling;
pub mod meta;
pub mod mongo;
mod monitoring;
mod pdb;
mod pod;
pub mod quantity;
pub mod routing;
mod service;
mod workloads;

pub use autoscaling::{SESSIONS_METRIC, default_behavior, horizontal_pod_autoscaler};
pub use mongo::MongoWiring;
pub use monitoring::{PodMonitor, PodMonitorSpec, pod_monitor, wanted_pod_monitor};
pub use pdb::{app_disruption_budget, proxy_disruption_budget};
pub use pod::{CONTAINER_NAME, default_resources, pod_template};
pub use routing::{RoutingOptions, RoutingTier};
pub use service::{HTTPS_SERVICE_PORT, app_only_service, front_service};
pub use workloads::{app_deployment, template_hash, worker_deployment};

use crate::api::MeteorApp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

/// What the builders need beyond the spec, resolved by the caller.
#[derive(Clone, Debug, PartialEq)]
pub struct Inputs {
    /// Checksum of the referenced settings and Mongo URL data; stamped on the pod template so a
    /// change of that data rolls the pods.
    pub config_hash: String,
    pub mongo: MongoWiring,
}

/// Every object a MeteorApp wants. `None` means "must not exist" (delete it if it does).
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub app: Deployment,
    /// The front door `<name>`: selects the proxy pods with the proxy on, else the app pods.
    pub service: Service,
    pub worker: Option<Deployment>,
    pub disruption_budget: Option<PodDisruptionBudget>,
    /// The proxy, Ingress, HTTPRoute and Certificate (`spec.routing`).
    pub routing: RoutingTier,
    /// HorizontalPodAutoscaler `<name>`, with `spec.autoscaling`.
    pub autoscaler: Option<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>,
    /// The managed MongoDB replica set (`spec.mongo.managed`).
    pub mongo: Option<mongo::MongoTier>,
    /// PodMonitor `<name>-proxy`, with `routing.proxy.podMonitor`.
    pub pod_monitor: Option<PodMonitor>,
}

/// Knobs that come from the operator's deployment rather than the MeteorApp.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub routing: RoutingOptions,
    pub mongo: mongo::TierOptions,
}

/// Builds every child of `app`, with the default [`Options`] and fresh credentials for the
/// Secrets of a managed MongoDB.
pub fn desired(app: &MeteorApp, inputs: &Inputs) -> Desired {
    desired_with(
        app,
        inputs,
        &Options::default(),
        &mut mongo::secrets::OsRandom,
    )
}

/// [`desired`] with the options of the operator's deployment (its proxy image, its namespace),
/// and generated credentials drawn from `secrets`. Those are written create-only: a credential
/// Secret that exists is never replaced.
pub fn desired_with(
    app: &MeteorApp,
    inputs: &Inputs,
    options: &Options,
    secrets: &mut impl mongo::secrets::SecretSource,
) -> Desired {
    Desired {
        app: app_deployment(app, inputs),
        service: front_service(app),
        worker: worker_deployment(app, inputs),
        disruption_budget: app_disruption_budget(app),
        routing: routing::tier(app, &options.routing),
        autoscaler: horizontal_pod_autoscaler(app),
        mongo: mongo::desired_with(app, &options.mongo, secrets),
        pod_monitor: pod_monitor(app),
    }
}
