//! The Services: the front door `<name>` (what an Ingress, a Gateway or a user's own balancer
//! points at) and, with the proxy on, `<name>-app` selecting the app pods for the proxy.
//! The proxy's admin port is never on either.

use super::meta::{Component, app_name, app_only_service_name, child_meta, selector_labels};
use super::routing::{proxy_terminates_tls, redirects_http, service_annotations};
use crate::api::MeteorApp;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Port of the front Service for HTTPS when the proxy terminates TLS.
pub const HTTPS_SERVICE_PORT: i32 = 443;

/// Service `<name>`: the proxy pods with the proxy on, else the app pods. `spec.service` gives
/// its type, port and annotations; `routing.proxy.service` overrides them while the proxy is on.
pub fn front_service(app: &MeteorApp) -> Service {
    let routing = &app.spec.routing;
    let base = &app.spec.service;
    let overrides = routing.proxy.service.clone().unwrap_or_default();
    let proxied = routing.proxy_enabled();
    let component = front_component(app);
    let mut annotations = service_annotations(app);
    annotations.extend(
        overrides
            .annotations
            .clone()
            .unwrap_or_else(|| base.annotations.clone()),
    );
    let mut metadata = child_meta(app, app_name(app), component.as_str());
    if !annotations.is_empty() {
        metadata.annotations = Some(annotations);
    }
    let http_port = front_http_port(app);
    let ports = if proxied && proxy_terminates_tls(app) {
        let mut ports = vec![port("https", HTTPS_SERVICE_PORT, "https")];
        if redirects_http(app) {
            ports.push(port("http", http_port, "http"));
        }
        ports
    } else {
        vec![port("http", http_port, "http")]
    };
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(overrides.type_.unwrap_or_else(|| base.type_.clone())),
            selector: Some(selector_labels(app, component.as_str())),
            ports: Some(ports),
            external_traffic_policy: overrides.external_traffic_policy,
            load_balancer_class: overrides.load_balancer_class,
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The pods behind the front door: the proxy's with the proxy on, else the app's. Also the
/// component label of what leads to it (Ingress, HTTPRoute, Certificate).
pub fn front_component(app: &MeteorApp) -> Component {
    if app.spec.routing.proxy_enabled() {
        Component::Proxy
    } else {
        Component::App
    }
}

/// The front Service's plain-HTTP port, which an Ingress or HTTPRoute sends to.
pub fn front_http_port(app: &MeteorApp) -> i32 {
    let overrides = app.spec.routing.proxy.service.as_ref();
    overrides
        .and_then(|o| o.port)
        .filter(|_| app.spec.routing.proxy_enabled())
        .unwrap_or(app.spec.service.port)
}

/// Service `<name>-app`: app pods only, cluster-internal, for the proxy's EndpointSlice watch.
pub fn app_only_service(app: &MeteorApp) -> Service {
    Service {
        metadata: child_meta(app, app_only_service_name(app), Component::App.as_str()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(app, Component::App.as_str())),
            ports: Some(vec![port("http", app.spec.port, "http")]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// A TCP port forwarding to the named container port.
fn port(name: &str, port: i32, target: &str) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(target.into())),
        protocol: Some("TCP".into()),
        app_protocol: Some(if name == "https" { "https" } else { "http" }.into()),
        ..ServicePort::default()
    }
}
