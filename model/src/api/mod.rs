//! The `MeteorApp` API (`meteorfleet.dev/v1alpha1`).
//!
//! These types are the single source of the CRD: `crds/meteorapps.yaml` is generated from them
//! (`meteor-operator crd`). Every constraint that can be known from the object alone is a CEL rule
//! (`x-kubernetes-validations`) with a message naming the field, so the apiserver rejects bad input
//! and `render`/reconcile evaluate the very same rules client-side (see `crate::validate`).

mod autoscaling;
pub mod bounds;
mod mongo;
mod routing;

pub use autoscaling::*;
pub use mongo::*;
pub use routing::*;

use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvFromSource, EnvVar, LocalObjectReference, PodSecurityContext,
    ResourceRequirements, SecurityContext, Toleration, TopologySpreadConstraint, Volume,
    VolumeMount,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The MeteorApp CRD as the API server gets it: derived from these types, with every string,
/// list and map bounded (see [`bounds`]).
pub fn crd() -> CustomResourceDefinition {
    let mut crd = MeteorApp::crd();
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        let mut value = serde_json::to_value(&*schema).expect("a schema serializes to JSON");
        bounds::apply(&mut value);
        *schema = serde_json::from_value(value).expect("a bounded schema is still a schema");
    }
    crd
}

/// Longest MeteorApp name: leaves room for `-worker`, `-mongo-N` and the StatefulSet
/// revision-hash label (63 characters) built from it.
pub const MAX_NAME_LENGTH: usize = 40;

/// A fleet of identical single-core Meteor processes, its optional worker tier, and its wiring.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "meteorfleet.dev",
    version = "v1alpha1",
    kind = "MeteorApp",
    plural = "meteorapps",
    shortname = "meteor",
    category = "all",
    namespaced,
    cel,
    status = "MeteorAppStatus",
    doc = "A Meteor.js app run as a fleet of identical single-core processes",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Replicas", type_ = "string", json_path = ".status.replicaSummary"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(
        "self.metadata.name.size() <= 40 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
    )
    .message("metadata.name: must be at most 40 characters of lowercase letters, digits and '-', starting with a letter")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.reactivity) || !('changeStreams' in self.reactivity) || !has(self.mongo.managed) || self.mongo.managed.version.matches('^([6-9]|[1-9][0-9])\\\\.')")
    .message("reactivity: changeStreams needs MongoDB 6.0 or later (mongo.managed.version)"))]
// A pattern, not `isIP(url(..).getHostname())`: the API server cannot size what a URL accessor
// returns, prices the rule as if the host were a whole request, and refuses the CRD.
#[x_kube(validation = Rule::new(r"!has(self.routing) || !has(self.routing.ingress) || !self.rootUrl.matches('^[^:/?#]+://([^/?#@]*@)?(\\[[0-9A-Fa-f:.]*\\]|[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+)(:[0-9]*)?([/?#]|$)')")
    .message("routing.ingress: rootUrl's host is an IP address; an Ingress routes by host name"))]
#[x_kube(validation = Rule::new("!has(self.volumeMounts) || self.volumeMounts.all(m, has(self.volumes) && self.volumes.exists(v, v.name == m.name))")
    .message("volumeMounts: each must name one of spec.volumes"))]
pub struct MeteorAppSpec {
    /// Container image of the Meteor app bundle (a Node server listening on `PORT`).
    #[x_kube(validation = Rule::new("self.size() > 0").message("must not be empty"))]
    pub image: String,

    /// Image pull policy: Always, IfNotPresent or Never (Kubernetes default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in ['Always', 'IfNotPresent', 'Never']")
        .message("must be one of Always, IfNotPresent, Never"))]
    pub image_pull_policy: Option<String>,

    /// Secrets used to pull the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// Number of app processes (one core each). 0 parks the app: pods stop, everything else stays.
    #[serde(default = "default_replicas")]
    #[x_kube(validation = Rule::new("self >= 0").message("must be 0 or more"))]
    pub replicas: i32,

    /// Public URL of the app (`ROOT_URL`); http or https.
    #[schemars(length(max = 2048))]
    // The scheme and a host by pattern: URL accessors return strings the API server cannot size.
    #[x_kube(validation = Rule::new(r"isURL(self) && self.matches('^(?i:https?)://([^/?#@]*@)?(\\[[^/?#@\\]]+\\]|[^/?#@:\\[\\]]+)(:[0-9]*)?([/?#]|$)')")
        .message("must be an absolute http:// or https:// URL"))]
    pub root_url: String,

    /// Port the Meteor process listens on (`PORT`).
    #[serde(default = "default_port")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("must be between 1 and 65535"))]
    pub port: i32,

    /// Where the settings JSON (`METEOR_SETTINGS`) comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<SettingsSource>,

    /// The app's MongoDB.
    pub mongo: MongoSpec,

    /// How Meteor observes changes, in order of preference (`METEOR_REACTIVITY_ORDER`).
    /// Unset: Meteor's default (`changeStreams,oplog,polling` in Meteor 3.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Bounded so the apiserver's CEL cost estimate of the rules over it stays small.
    #[schemars(length(max = 3))]
    #[x_kube(validation = Rule::new("self.size() > 0 && self.all(r, self.exists_one(x, x == r))")
        .message("must list changeStreams, oplog or polling, each at most once"))]
    pub reactivity: Option<Vec<Reactivity>>,

    /// Extra environment variables; they win over the operator's own, except `PORT`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("!self.exists(e, e.name == 'PORT')")
        .message("PORT is set from spec.port; remove it from env"))]
    pub env: Vec<EnvVar>,

    /// Extra environment from ConfigMaps and Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,

    /// Resources of each app process. Default: one core requested, 512Mi requested, 1Gi limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// How Kubernetes decides a process is started, ready and alive.
    #[serde(default)]
    pub health_check: HealthCheck,

    /// How new versions replace old ones without reconnect storms.
    #[serde(default)]
    pub rollout: Rollout,

    /// An optional worker tier: same image, no traffic, runs background jobs and cron.
    #[serde(default)]
    pub workers: Workers,

    /// The Service in front of the app processes.
    #[serde(default)]
    pub service: ServiceSpec,

    /// The way in: sticky proxy (on by default), TLS, Ingress or Gateway API HTTPRoute.
    #[serde(default)]
    pub routing: Routing,

    /// CPU-driven autoscaling: a HorizontalPodAutoscaler writes `replicas` through the scale
    /// subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Box<Autoscaling>>,

    /// Node selector for app and worker pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations for app and worker pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Affinity for app and worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Spread constraints for app pods. Default: spread across nodes and zones (best effort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,

    /// Extra labels on app and worker pods (the operator's own labels win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,

    /// Extra annotations on app and worker pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,

    /// ServiceAccount of the pods. Unset: the namespace default, with no API token mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// Pod security context. Default: the `restricted` Pod Security Standard, uid/gid 1000.
    // Boxed, as the other large parts most apps leave unset: every cached app holds its spec, and
    // an unset box costs 8 bytes where the struct costs hundreds (schema and JSON are the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<Box<PodSecurityContext>>,

    /// Container security context. Default: the `restricted` Pod Security Standard with a
    /// read-only root filesystem (a writable `/tmp` is mounted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<Box<SecurityContext>>,

    /// PriorityClass of app and worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub priority_class_name: Option<String>,

    /// Extra volumes of app and worker pods (a CA bundle, a PVC for uploads); `tmp` is the
    /// operator's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(v, v.name != 'tmp')")
        .message("tmp is the operator's own volume (mounted at /tmp); choose another name"))]
    #[x_kube(validation = Rule::new("self.all(v, self.exists_one(x, x.name == v.name))")
        .message("volume names must be unique"))]
    pub volumes: Vec<Volume>,

    /// Where the Meteor container mounts `volumes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(m, m.mountPath != '/tmp')")
        .message("/tmp is mounted by the operator"))]
    pub volume_mounts: Vec<VolumeMount>,

    /// Containers run before the Meteor process starts, in order. One with
    /// `restartPolicy: Always` is a native sidecar: it starts first and stops last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.all(c, c.name != 'meteor')")
        .message("meteor is the name of the app's own container"))]
    pub init_containers: Vec<Container>,

    /// Containers run beside the Meteor process in every app and worker pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.all(c, c.name != 'meteor')")
        .message("meteor is the name of the app's own container"))]
    pub sidecars: Vec<Container>,
}

fn default_replicas() -> i32 {
    2
}
fn default_port() -> i32 {
    3000
}

/// A key of a Secret in the MeteorApp's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretKeyRef {
    /// Secret name.
    #[x_kube(validation = Rule::new("self.size() > 0").message("must not be empty"))]
    pub name: String,
    /// Key inside the Secret.
    #[x_kube(validation = Rule::new("self.size() > 0").message("must not be empty"))]
    pub key: String,
}

/// A key of a ConfigMap in the MeteorApp's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConfigMapKeyRef {
    /// ConfigMap name.
    #[x_kube(validation = Rule::new("self.size() > 0").message("must not be empty"))]
    pub name: String,
    /// Key inside the ConfigMap.
    #[x_kube(validation = Rule::new("self.size() > 0").message("must not be empty"))]
    pub key: String,
}

/// Settings JSON from exactly one of a Secret key or a ConfigMap key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretKeyRef) != has(self.configMapKeyRef)")
    .message("set exactly one of secretKeyRef or configMapKeyRef"))]
pub struct SettingsSource {
    /// Settings JSON stored in a Secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// Settings JSON stored in a ConfigMap key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<ConfigMapKeyRef>,
}

/// Probe paths and timings. Meteor has no health endpoint of its own; like Galaxy and mup we
/// probe `GET /`. A Meteor process burns a core for tens of seconds after boot, hence the
/// generous startup allowance.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// HTTP path probed on the app port.
    #[serde(default = "default_health_path")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("must start with '/'"))]
    pub path: String,
    /// Startup probe. Default: every 10 s, 5 s timeout, 60 failures (10 minutes to boot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<ProbeTiming>,
    /// Readiness probe. Default: every 10 s, 5 s timeout, 3 failures (Galaxy's check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<ProbeTiming>,
    /// Liveness probe. Default: every 20 s, 5 s timeout, 6 failures (busy is not dead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<ProbeTiming>,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            path: default_health_path(),
            startup_probe: None,
            readiness_probe: None,
            liveness_probe: None,
        }
    }
}

fn default_health_path() -> String {
    "/".into()
}

/// Probe timings; unset fields take the probe's default.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProbeTiming {
    /// Seconds between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("must be at least 1"))]
    pub period_seconds: Option<i32>,
    /// Seconds before a probe times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("must be at least 1"))]
    pub timeout_seconds: Option<i32>,
    /// Consecutive failures before the probe fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("must be at least 1"))]
    pub failure_threshold: Option<i32>,
    /// Seconds after start before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("must be 0 or more"))]
    pub initial_delay_seconds: Option<i32>,
}

/// Rolling update and drain settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.maxSurge) || string(self.maxSurge).matches('^[0-9]+%?$')")
    .message("maxSurge: must be a number of pods (0 or more) or a percentage such as 25%"))]
#[x_kube(validation = Rule::new("!has(self.maxUnavailable) || string(self.maxUnavailable).matches('^([0-9]+|([0-9]|[1-9][0-9]|100)%)$')")
    .message("maxUnavailable: must be a number of pods (0 or more) or a percentage from 0% to 100%"))]
#[x_kube(validation = Rule::new("!(has(self.maxSurge) && string(self.maxSurge) in ['0', '0%'] && (!has(self.maxUnavailable) || string(self.maxUnavailable) in ['0', '0%']))")
    .message("maxSurge and maxUnavailable cannot both be 0: a rollout could never make progress"))]
#[x_kube(validation = Rule::new("self.minReadySeconds < self.progressDeadlineSeconds")
    .message("minReadySeconds must be less than progressDeadlineSeconds"))]
pub struct Rollout {
    /// Extra pods allowed during a rollout (number or percentage). Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
    /// Pods allowed to be unavailable during a rollout (number or percentage). Default 0: capacity
    /// never drops, so clients of a replaced process land on spare capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Seconds a new pod must stay ready before it counts as available.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0").message("must be 0 or more"))]
    pub min_ready_seconds: i32,
    /// Seconds a terminating pod keeps serving (preStop sleep) so balancers stop sending it new
    /// sessions before the process gets SIGTERM.
    #[serde(default = "default_drain_seconds")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 3600").message("must be between 0 and 3600"))]
    pub drain_seconds: i32,
    /// Seconds the process gets after SIGTERM to close connections before SIGKILL.
    #[serde(default = "default_shutdown_seconds")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 3600").message("must be between 0 and 3600"))]
    pub shutdown_seconds: i32,
    /// Seconds without rollout progress before the rollout is reported stuck (and, with
    /// `autoRollback`, rolled back).
    #[serde(default = "default_progress_deadline")]
    #[x_kube(validation = Rule::new("self >= 60").message("must be at least 60"))]
    pub progress_deadline_seconds: i32,
    /// Put the app Deployment back on the last pod template that was fully available when a
    /// rollout makes no progress within `progressDeadlineSeconds`, or a new pod restarts
    /// `rollbackOnRestarts` times. It stays there until the spec (or referenced data) changes.
    #[serde(default = "default_auto_rollback")]
    pub auto_rollback: bool,
    /// Restarts of one new pod that count as a failed rollout (a crash loop), with `autoRollback`.
    #[serde(default = "default_rollback_on_restarts")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("must be between 1 and 1000"))]
    pub rollback_on_restarts: i32,
}

impl Default for Rollout {
    fn default() -> Self {
        Self {
            max_surge: None,
            max_unavailable: None,
            min_ready_seconds: 0,
            drain_seconds: default_drain_seconds(),
            shutdown_seconds: default_shutdown_seconds(),
            progress_deadline_seconds: default_progress_deadline(),
            auto_rollback: default_auto_rollback(),
            rollback_on_restarts: default_rollback_on_restarts(),
        }
    }
}

/// Default `maxSurge`: one extra process at a time.
pub const DEFAULT_MAX_SURGE: IntOrString = IntOrString::Int(1);
/// Default `maxUnavailable`: never below the desired capacity.
pub const DEFAULT_MAX_UNAVAILABLE: IntOrString = IntOrString::Int(0);
fn default_drain_seconds() -> i32 {
    15
}
fn default_shutdown_seconds() -> i32 {
    30
}
fn default_progress_deadline() -> i32 {
    900
}
fn default_auto_rollback() -> bool {
    true
}
fn default_rollback_on_restarts() -> i32 {
    3
}

/// The worker tier: `<name>-worker`, no Service selects it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Workers {
    /// Number of worker processes; 0 (default) creates no worker Deployment.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0").message("must be 0 or more"))]
    pub replicas: i32,
    /// Environment for workers only; wins over `spec.env`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("!self.exists(e, e.name == 'PORT')")
        .message("PORT is set from spec.port; remove it from env"))]
    pub env: Vec<EnvVar>,
    /// Resources of each worker. Default: the app tier's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// The Service in front of the app processes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// ClusterIP (default), NodePort or LoadBalancer.
    #[serde(default = "default_service_type", rename = "type")]
    #[x_kube(validation = Rule::new("self in ['ClusterIP', 'NodePort', 'LoadBalancer']")
        .message("must be one of ClusterIP, NodePort, LoadBalancer"))]
    pub type_: String,
    /// Service port (forwards to the app port).
    #[serde(default = "default_service_port")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("must be between 1 and 65535"))]
    pub port: i32,
    /// Annotations on the Service (cloud load balancer settings and the like).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            type_: default_service_type(),
            port: default_service_port(),
            annotations: BTreeMap::new(),
        }
    }
}

fn default_service_type() -> String {
    "ClusterIP".into()
}
fn default_service_port() -> i32 {
    80
}

/// What the operator observed; conditions follow `metav1.Condition`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MeteorAppStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// App pods that exist (scale subresource).
    #[serde(default)]
    pub replicas: i32,
    /// App pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// App pods running the current pod template.
    #[serde(default)]
    pub updated_replicas: i32,
    /// `ready/desired`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_summary: Option<String>,
    /// Label selector of the app pods (scale subresource, HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The app's public URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Ready, Progressing, Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The managed replica set, when `spec.mongo.managed` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mongo: Option<MongoStatus>,
    /// The app tier's rollout history: what to roll back to, and what was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// The proxy's replicas and the address clients use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingStatus>,
    /// The autoscaler's replicas and CPU figure, with `spec.autoscaling`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingStatus>,
}

/// What the operator remembers of the app tier's rollouts (kept in status so it survives an
/// operator restart). Template hashes are the pods' `meteorfleet.dev/template-hash` label.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Template of the last rollout that completed: every pod updated and available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_template: Option<String>,
    /// Image of that template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_image: Option<String>,
    /// While rolled back: the template that never became available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_template: Option<String>,
    /// Image of the failed template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_image: Option<String>,
    /// Why it counted as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}
