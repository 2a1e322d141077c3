//! The pod template shared by the app and worker tiers: one Meteor process per pod, with the
//! environment Meteor expects, probes suited to its slow boot, a drain before SIGTERM, and the
//! `restricted` Pod Security Standard.

use super::meta::{CONFIG_HASH_ANNOTATION, Component, labels, selector_labels};
use super::quantity::memory_bytes;
use super::{Inputs, MongoWiring};
use crate::api::{MeteorApp, ProbeTiming};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapKeySelector, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, Lifecycle, LifecycleHandler, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecurityContext, SleepAction, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// Name of the Meteor container in every pod.
pub const CONTAINER_NAME: &str = "meteor";
/// Share of the memory limit given to the V8 heap (`--max-old-space-size`): the rest is for
/// buffers, native modules and the Node runtime itself.
const HEAP_SHARE_OF_MEMORY_LIMIT: f64 = 0.75;
/// uid/gid of the default security context: non-root, as `restricted` requires.
const DEFAULT_UID: i64 = 1000;

/// The pod template of one tier.
pub fn pod_template(app: &MeteorApp, component: Component, inputs: &Inputs) -> PodTemplateSpec {
    let spec = &app.spec;
    let mut pod_labels = spec.pod_labels.clone();
    pod_labels.extend(labels(app, component.as_str()));
    let mut annotations = spec.pod_annotations.clone();
    annotations.insert(CONFIG_HASH_ANNOTATION.into(), inputs.config_hash.clone());

    let resources = match component {
        Component::Worker => spec.workers.resources.clone(),
        Component::App | Component::Proxy => None,
    }
    .or_else(|| spec.resources.clone())
    .unwrap_or_else(default_resources);

    let container = Container {
        name: CONTAINER_NAME.into(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.clone(),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: spec.port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(environment(app, component, inputs, &resources)),
        env_from: (!spec.env_from.is_empty()).then(|| spec.env_from.clone()),
        resources: Some(resources),
        startup_probe: Some(http_probe(
            app,
            spec.health_check.startup_probe.as_ref(),
            PROBE_DEFAULTS_STARTUP,
        )),
        readiness_probe: Some(http_probe(
            app,
            spec.health_check.readiness_probe.as_ref(),
            PROBE_DEFAULTS_READINESS,
        )),
        liveness_probe: Some(http_probe(
            app,
            spec.health_check.liveness_probe.as_ref(),
            PROBE_DEFAULTS_LIVENESS,
        )),
        lifecycle: (spec.rollout.drain_seconds > 0).then(|| Lifecycle {
            // Keep serving while endpoints and balancers drop this pod, so no new session lands
            // on a process about to get SIGTERM. The native sleep needs no shell in the image.
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: i64::from(spec.rollout.drain_seconds),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        security_context: Some(
            spec.security_context
                .as_deref()
                .cloned()
                .unwrap_or_else(restricted_container_security_context),
        ),
        volume_mounts: Some(
            std::iter::once(VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..VolumeMount::default()
            })
            .chain(spec.volume_mounts.iter().cloned())
            .collect(),
        ),
        ..Container::default()
    };
    let containers = std::iter::once(container)
        .chain(spec.sidecars.iter().cloned().map(restricted_unless_set))
        .collect();
    let init_containers = (!spec.init_containers.is_empty()).then(|| {
        spec.init_containers
            .iter()
            .cloned()
            .map(restricted_unless_set)
            .collect()
    });

    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers,
            init_containers,
            volumes: Some(
                std::iter::once(Volume {
                    name: "tmp".into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                })
                .chain(spec.volumes.iter().cloned())
                .collect(),
            ),
            priority_class_name: spec.priority_class_name.clone(),
            image_pull_secrets: (!spec.image_pull_secrets.is_empty())
                .then(|| spec.image_pull_secrets.clone()),
            node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
            tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
            affinity: spec.affinity.clone(),
            topology_spread_constraints: Some(
                spec.topology_spread_constraints
                    .clone()
                    .unwrap_or_else(|| default_spread(app, component)),
            ),
            service_account_name: spec.service_account_name.clone(),
            // A Meteor app rarely talks to the Kubernetes API: no token unless an account is named.
            automount_service_account_token: Some(spec.service_account_name.is_some()),
            // Service links flood the environment with every Service in the namespace.
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(i64::from(
                spec.rollout.drain_seconds + spec.rollout.shutdown_seconds,
            )),
            security_context: Some(
                spec.pod_security_context
                    .as_deref()
                    .cloned()
                    .unwrap_or_else(restricted_pod_security_context),
            ),
            ..PodSpec::default()
        }),
    }
}

/// A container of the user's (sidecar, init container) with the `restricted` security context
/// when it sets none, so that it runs where the Meteor container does.
fn restricted_unless_set(mut container: Container) -> Container {
    container
        .security_context
        .get_or_insert_with(restricted_container_security_context);
    container
}

/// The operator's environment, then the user's: a user variable replaces ours of the same name
/// (the CRD forbids `PORT`), and worker env wins over app env.
fn environment(
    app: &MeteorApp,
    component: Component,
    inputs: &Inputs,
    resources: &ResourceRequirements,
) -> Vec<EnvVar> {
    let spec = &app.spec;
    let mut ours = vec![
        plain("PORT", spec.port.to_string()),
        plain("ROOT_URL", spec.root_url.clone()),
    ];
    let MongoWiring {
        url,
        oplog_url,
        reactivity_order,
    } = &inputs.mongo;
    ours.push(from_secret("MONGO_URL", &url.name, &url.key));
    if let Some(oplog) = oplog_url {
        ours.push(from_secret("MONGO_OPLOG_URL", &oplog.name, &oplog.key));
    }
    if let Some(order) = reactivity_order.clone() {
        ours.push(plain("METEOR_REACTIVITY_ORDER", order));
    }
    if let Some(settings) = &spec.settings {
        if let Some(secret) = &settings.secret_key_ref {
            ours.push(from_secret("METEOR_SETTINGS", &secret.name, &secret.key));
        } else if let Some(config_map) = &settings.config_map_key_ref {
            ours.push(EnvVar {
                name: "METEOR_SETTINGS".into(),
                value_from: Some(EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        name: config_map.name.clone(),
                        key: config_map.key.clone(),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            });
        }
    }
    if let Some(heap_mib) = heap_size_mib(resources) {
        ours.push(plain(
            "NODE_OPTIONS",
            format!("--max-old-space-size={heap_mib}"),
        ));
    }
    ours.push(plain("METEOR_ROLE", component.role().to_string()));
    // What `@meteorjs/ddp-graceful-shutdown` (and Galaxy) read: the seconds SIGTERM leaves.
    ours.push(plain(
        "METEOR_SIGTERM_GRACE_PERIOD_SECONDS",
        spec.rollout.shutdown_seconds.to_string(),
    ));
    // Meteor trusts this many X-Forwarded-For hops for `clientAddress`.
    let forwarding = super::routing::forwarding_proxies(app);
    if component == Component::App && forwarding > 0 {
        ours.push(plain("HTTP_FORWARDED_COUNT", forwarding.to_string()));
    }

    let mut user: Vec<EnvVar> = spec.env.clone();
    if component == Component::Worker {
        user.retain(|e| !spec.workers.env.iter().any(|w| w.name == e.name));
        user.extend(spec.workers.env.iter().cloned());
    }
    ours.retain(|e| e.name == "PORT" || !user.iter().any(|u| u.name == e.name));
    ours.extend(user);
    ours
}

fn plain(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..EnvVar::default()
    }
}

fn from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// V8 heap size for the memory limit, or None without a limit.
fn heap_size_mib(resources: &ResourceRequirements) -> Option<u64> {
    let limit = resources.limits.as_ref()?.get("memory")?;
    let bytes = memory_bytes(&limit.0)?;
    Some(((bytes as f64 * HEAP_SHARE_OF_MEMORY_LIMIT) / (1024.0 * 1024.0)) as u64)
}

/// One Node process per core: request a whole core, and cap memory (RAM is rarely the limit).
pub fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity("1".into())),
            ("memory".into(), Quantity("512Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".into(), Quantity("1Gi".into()))])),
        ..ResourceRequirements::default()
    }
}

/// Defaults of one probe: (period, timeout, failure threshold).
type ProbeDefaults = (i32, i32, i32);
/// Ten minutes to boot, like Galaxy gives new containers.
const PROBE_DEFAULTS_STARTUP: ProbeDefaults = (10, 5, 60);
/// Galaxy's check: every 10 s, 5 s timeout, 3 tries.
const PROBE_DEFAULTS_READINESS: ProbeDefaults = (10, 5, 3);
/// A CPU-bound process may answer slowly; only a long silence means it is dead.
const PROBE_DEFAULTS_LIVENESS: ProbeDefaults = (20, 5, 6);

fn http_probe(app: &MeteorApp, timing: Option<&ProbeTiming>, defaults: ProbeDefaults) -> Probe {
    let timing = timing.cloned().unwrap_or_default();
    let (period, timeout, failures) = defaults;
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(app.spec.health_check.path.clone()),
            port: IntOrString::String("http".into()),
            scheme: Some("HTTP".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(timing.period_seconds.unwrap_or(period)),
        timeout_seconds: Some(timing.timeout_seconds.unwrap_or(timeout)),
        failure_threshold: Some(timing.failure_threshold.unwrap_or(failures)),
        initial_delay_seconds: timing.initial_delay_seconds,
        ..Probe::default()
    }
}

/// Spread a tier over nodes and zones, best effort; `pod-template-hash` makes a rollout's new
/// pods spread among themselves rather than around the old ones.
pub(super) fn default_spread(
    app: &MeteorApp,
    component: Component,
) -> Vec<TopologySpreadConstraint> {
    ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
        .into_iter()
        .map(|topology_key| TopologySpreadConstraint {
            max_skew: 1,
            topology_key: topology_key.into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(app, component.as_str())),
                ..LabelSelector::default()
            }),
            match_label_keys: Some(vec!["pod-template-hash".into()]),
            ..TopologySpreadConstraint::default()
        })
        .collect()
}

pub(super) fn restricted_pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(DEFAULT_UID),
        run_as_group: Some(DEFAULT_UID),
        fs_group: Some(DEFAULT_UID),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..PodSecurityContext::default()
    }
}

pub(super) fn restricted_container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}
