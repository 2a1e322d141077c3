//! The Service in front of the app tier (never the workers).

use super::meta::{Component, app_name, child_meta, selector_labels};
use crate::api::MeteorApp;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub fn app_service(app: &MeteorApp) -> Service {
    let spec = &app.spec.service;
    let mut metadata = child_meta(app, app_name(app), Component::App.as_str());
    if !spec.annotations.is_empty() {
        metadata.annotations = Some(spec.annotations.clone());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(spec.type_.clone()),
            selector: Some(selector_labels(app, Component::App.as_str())),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: spec.port,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                app_protocol: Some("http".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}
