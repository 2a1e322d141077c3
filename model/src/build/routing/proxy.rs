//! The proxy Deployment `<name>-proxy`: `meteor-operator proxy` following the EndpointSlices of
//! `<name>-app`, its flags derived from the spec (see `docs/proxy.md`).
//!
//! Its pod template depends on `routing`, `healthCheck.path`, `rollout`'s drain timings, the
//! app's name and an `HTTP_FORWARDED_COUNT` in `env` only, so changing the app (image, other
//! env, replicas, port) never restarts the proxy.

use super::super::meta::{Component, child_meta, labels, proxy_name, selector_labels};
use super::super::pod::{
    default_spread, restricted_container_security_context, restricted_pod_security_context,
};
use super::{
    RoutingOptions, cookie_name_and_max_age, idle_timeout_seconds, proxy_replicas,
    proxy_terminates_tls, redirects_http, tls_secret_name,
};
use crate::api::{DEFAULT_RATE_BURST, MeteorApp};
use crate::build::meta::{app_only_service_name, namespace_of};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, Lifecycle, LifecycleHandler,
    PodSpec, PodTemplateSpec, Probe, ResourceFieldSelector, ResourceRequirements,
    SecretVolumeSource, SleepAction, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// Name of the proxy container.
pub const PROXY_CONTAINER_NAME: &str = "proxy";
/// Plain-HTTP listener (client traffic, or the redirect to HTTPS when the proxy terminates TLS).
pub const HTTP_PORT: i32 = 8080;
/// HTTPS listener when the proxy terminates TLS.
pub const HTTPS_PORT: i32 = 8443;
/// Admin listener: `/-/healthz`, `/-/status`, `/metrics`. On no Service.
pub const ADMIN_PORT: i32 = 9090;
/// The name of that port: probes and PodMonitors refer to it by name.
pub const ADMIN_PORT_NAME: &str = "admin";
/// Where the cookie Secret is mounted.
const COOKIE_DIR: &str = "/etc/meteor-proxy/cookie";
/// Where the TLS Secret is mounted.
const TLS_DIR: &str = "/etc/meteor-proxy/tls";
/// Seconds past `--shutdown-timeout` before SIGKILL, so the proxy exits by itself.
const EXIT_MARGIN_SECONDS: i32 = 5;

/// The proxy Deployment (with the proxy on; [`super::tier`] decides).
pub fn proxy_deployment(app: &MeteorApp, options: &RoutingOptions) -> Deployment {
    let proxy = &app.spec.routing.proxy;
    let rollout = &app.spec.rollout;
    let annotations = proxy.pod_annotations.clone().unwrap_or_default();
    let tls = proxy_terminates_tls(app);

    let mut ports = vec![container_port("http", HTTP_PORT)];
    if tls {
        ports.push(container_port("https", HTTPS_PORT));
    }
    ports.push(container_port(ADMIN_PORT_NAME, ADMIN_PORT));

    let mut volumes = vec![secret_volume("cookie", super::cookie::secret_name(app))];
    let mut mounts = vec![mount("cookie", COOKIE_DIR)];
    if let Some(secret) = tls_secret_name(app).filter(|_| tls) {
        volumes.push(secret_volume("tls", secret));
        mounts.push(mount("tls", TLS_DIR));
    }

    let container = Container {
        name: PROXY_CONTAINER_NAME.into(),
        image: Some(
            proxy
                .image
                .clone()
                .unwrap_or_else(|| options.proxy_image.clone()),
        ),
        args: Some(args(app)),
        env: Some(vec![memory_limit_env()]),
        ports: Some(ports),
        resources: Some(
            proxy
                .resources
                .clone()
                .unwrap_or_else(default_proxy_resources),
        ),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/-/healthz".into()),
                port: IntOrString::String(ADMIN_PORT_NAME.into()),
                scheme: Some("HTTP".into()),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(5),
            timeout_seconds: Some(2),
            failure_threshold: Some(2),
            ..Probe::default()
        }),
        // Not `/-/healthz`: it answers 503 while draining, which must not restart the proxy.
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String(ADMIN_PORT_NAME.into()),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(20),
            timeout_seconds: Some(5),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        lifecycle: (rollout.drain_seconds > 0).then(|| Lifecycle {
            // Endpoints and edges drop this proxy before it stops accepting connections.
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: i64::from(rollout.drain_seconds),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        security_context: Some(restricted_container_security_context()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };

    let replicas = proxy_replicas(app).unwrap_or(1);
    Deployment {
        metadata: child_meta(app, proxy_name(app), Component::Proxy.as_str()),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(app, Component::Proxy.as_str())),
                ..LabelSelector::default()
            },
            // Surge-first: the new proxy is ready before an old one stops.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(5),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(app, Component::Proxy.as_str())),
                    annotations: (!annotations.is_empty()).then_some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    node_selector: proxy.node_selector.clone(),
                    tolerations: proxy.tolerations.clone(),
                    affinity: proxy.affinity.clone(),
                    topology_spread_constraints: Some(default_spread(app, Component::Proxy)),
                    service_account_name: Some(proxy_name(app)),
                    automount_service_account_token: Some(true),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(i64::from(
                        rollout.drain_seconds + rollout.shutdown_seconds + EXIT_MARGIN_SECONDS,
                    )),
                    security_context: Some(restricted_pod_security_context()),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The proxy's command line (`docs/proxy.md`, "Flags").
fn args(app: &MeteorApp) -> Vec<String> {
    let spec = &app.spec;
    let proxy = &spec.routing.proxy;
    let (cookie_name, cookie_max_age) = cookie_name_and_max_age(app);
    let tls = proxy_terminates_tls(app);
    let mut args: Vec<String> = vec!["proxy".into()];
    let mut flag = |name: &str, value: String| {
        args.push(format!("--{name}"));
        args.push(value);
    };
    let listen_port = if tls { HTTPS_PORT } else { HTTP_PORT };
    flag("listen", format!("0.0.0.0:{listen_port}"));
    flag("admin-listen", format!("0.0.0.0:{ADMIN_PORT}"));
    flag(
        "service",
        format!("{}/{}", namespace_of(app), app_only_service_name(app)),
    );
    flag("service-port", "http".into());
    flag("cookie-name", cookie_name);
    flag(
        "cookie-key-file",
        format!("{COOKIE_DIR}/{}", super::COOKIE_SECRET_KEY),
    );
    flag("cookie-max-age", cookie_max_age.to_string());
    flag("health-path", spec.health_check.path.clone());
    flag("idle-timeout", format!("{}s", idle_timeout_seconds(app)));
    // A terminating app pod keeps its sessions while it sleeps in preStop, then gets SIGTERM.
    flag("drain-timeout", format!("{}s", spec.rollout.drain_seconds));
    flag(
        "shutdown-timeout",
        format!("{}s", spec.rollout.shutdown_seconds),
    );
    // The hops in front of the proxy that the app trusts too (`HTTP_FORWARDED_COUNT`): the
    // proxy believes their X-Forwarded-* (client address, protocol) and nothing else.
    let hops = trusted_hops(app);
    if hops > 0 {
        flag("trusted-hops", hops.to_string());
    }
    if let Some(limit) = &proxy.rate_limit {
        flag("rate-limit", limit.requests_per_second.to_string());
        flag(
            "rate-burst",
            limit.burst.unwrap_or(DEFAULT_RATE_BURST).to_string(),
        );
    }
    if let Some(rebalance) = &proxy.rebalance {
        if let Some(rate) = rebalance.closes_per_second {
            flag("rebalance-rate", rate.to_string());
        }
        if let Some(tolerance) = rebalance.tolerance_percent {
            flag("rebalance-tolerance", tolerance.to_string());
        }
    }
    if tls {
        flag("tls-cert", format!("{TLS_DIR}/tls.crt"));
        flag("tls-key", format!("{TLS_DIR}/tls.key"));
        if redirects_http(app) {
            flag("redirect-listen", format!("0.0.0.0:{HTTP_PORT}"));
        }
    } else if super::RootUrl::of(app).https {
        // TLS ends in front of the proxy (Ingress, Gateway, cloud balancer).
        args.push("--cookie-secure".into());
    }
    args
}

/// Proxies in front of this one whose `X-Forwarded-For` element the proxy believes: the app's
/// `HTTP_FORWARDED_COUNT` (the user's literal value, else the operator's count of forwarding
/// proxies, [`super::forwarding_proxies`]) less the proxy's own hop. A value from a Secret or
/// ConfigMap cannot be read here: the operator's count stands in for it.
pub fn trusted_hops(app: &MeteorApp) -> u32 {
    let count = app
        .spec
        .env
        .iter()
        .find(|e| e.name == "HTTP_FORWARDED_COUNT")
        .and_then(|e| e.value.as_deref()?.trim().parse::<u32>().ok())
        .unwrap_or_else(|| super::forwarding_proxies(app));
    count.saturating_sub(1)
}

/// `METEOR_PROXY_MEMORY_LIMIT_BYTES` from the container's own `limits.memory` (downward API),
/// whoever set it: the proxy derives its connection cap from it (`docs/proxy.md`).
fn memory_limit_env() -> EnvVar {
    EnvVar {
        name: "METEOR_PROXY_MEMORY_LIMIT_BYTES".into(),
        value_from: Some(EnvVarSource {
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: Some(PROXY_CONTAINER_NAME.into()),
                resource: "limits.memory".into(),
                divisor: Some(Quantity("1".into())),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// A proxy is I/O-bound and small: 100m CPU and 64Mi requested, 256Mi limit.
pub fn default_proxy_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity("100m".into())),
            ("memory".into(), Quantity("64Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".into(),
            Quantity("256Mi".into()),
        )])),
        ..ResourceRequirements::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn secret_volume(name: &str, secret: String) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            // Owner and group (fsGroup) read only.
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}
