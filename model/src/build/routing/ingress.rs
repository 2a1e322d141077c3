//! Ingress `<name>` in front of the front Service, with the annotations that make the common
//! Ingress controllers keep WebSockets open and, with the proxy off, pin sessions (docs/routing.md,
//! "Routing", the stickiness table). In front of the proxy no stickiness is asked for: the proxy
//! keeps it.

use super::{
    RootUrl, cookie_name_and_max_age, idle_timeout_seconds, redirects_http, tls_secret_name,
};
use crate::api::MeteorApp;
use crate::build::meta::{app_name, child_meta};
use crate::build::service::{front_component, front_http_port};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use std::collections::BTreeMap;

/// What [`ingress_gaps`] says when the edge cannot pin sessions.
pub const STICKINESS_GAP: &str = "sticky sessions";

/// The Ingress controllers the operator knows how to configure, recognised by a class name that
/// contains `nginx` (ingress-nginx), `traefik` or `haproxy` (HAProxy Technologies' controller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngressClassFamily {
    Nginx,
    Traefik,
    Haproxy,
}

impl IngressClassFamily {
    pub fn of(class_name: Option<&str>) -> Option<Self> {
        let class = class_name?.to_ascii_lowercase();
        [
            ("nginx", Self::Nginx),
            ("traefik", Self::Traefik),
            ("haproxy", Self::Haproxy),
        ]
        .into_iter()
        .find_map(|(word, family)| class.contains(word).then_some(family))
    }
}

fn family(app: &MeteorApp) -> Option<IngressClassFamily> {
    let ingress = app.spec.routing.ingress.as_ref()?;
    IngressClassFamily::of(ingress.class_name.as_deref())
}

/// Whether the edge has to pin sessions itself (no proxy behind it).
fn edge_pins(app: &MeteorApp) -> bool {
    !app.spec.routing.proxy_enabled()
}

/// The Ingress, with `routing.ingress`.
pub fn ingress(app: &MeteorApp) -> Option<Ingress> {
    let spec = app.spec.routing.ingress.as_ref()?;
    let root = RootUrl::of(app);
    let mut annotations = ingress_annotations(app);
    annotations.extend(spec.annotations.clone());
    let mut metadata = child_meta(app, app_name(app), front_component(app).as_str());
    metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: spec.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(root.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(root.path),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: app_name(app),
                                port: Some(ServiceBackendPort {
                                    number: Some(front_http_port(app)),
                                    ..ServiceBackendPort::default()
                                }),
                            }),
                            ..IngressBackend::default()
                        },
                    }],
                }),
            }]),
            tls: tls_secret_name(app).map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![root.host]),
                    secret_name: Some(secret),
                }]
            }),
            ..IngressSpec::default()
        }),
        status: None,
    })
}

/// The operator's annotations on the Ingress for its class (the user's win over them).
fn ingress_annotations(app: &MeteorApp) -> BTreeMap<String, String> {
    let idle = idle_timeout_seconds(app).to_string();
    let (cookie, max_age) = cookie_name_and_max_age(app);
    let tls = app.spec.routing.tls.is_some();
    let redirect = redirects_http(app).to_string();
    let mut out = BTreeMap::new();
    let mut set = |key: &str, value: &str| {
        out.insert(key.to_string(), value.to_string());
    };
    match family(app) {
        Some(IngressClassFamily::Nginx) => {
            let n = |key: &str| format!("nginx.ingress.kubernetes.io/{key}");
            set(&n("proxy-read-timeout"), &idle);
            set(&n("proxy-send-timeout"), &idle);
            if edge_pins(app) {
                set(&n("affinity"), "cookie");
                set(&n("affinity-mode"), "persistent");
                set(&n("session-cookie-name"), &cookie);
                set(&n("session-cookie-max-age"), &max_age.to_string());
            }
            if tls {
                set(&n("ssl-redirect"), &redirect);
            }
        }
        Some(IngressClassFamily::Traefik) if tls => {
            set("traefik.ingress.kubernetes.io/router.tls", "true");
        }
        Some(IngressClassFamily::Haproxy) => {
            set("haproxy.org/timeout-tunnel", &format!("{idle}s"));
            if edge_pins(app) {
                set("haproxy.org/cookie-persistence", &cookie);
            }
            if tls {
                set("haproxy.org/ssl-redirect", &redirect);
            }
        }
        Some(IngressClassFamily::Traefik) | None => {}
    }
    out
}

/// Annotations the class reads from the Service rather than the Ingress (Traefik's stickiness),
/// for the front Service. Empty unless the edge has to pin sessions.
pub fn service_annotations(app: &MeteorApp) -> BTreeMap<String, String> {
    if family(app) != Some(IngressClassFamily::Traefik) || !edge_pins(app) {
        return BTreeMap::new();
    }
    let (cookie, _) = cookie_name_and_max_age(app);
    let t = |key: &str| format!("traefik.ingress.kubernetes.io/service.sticky.cookie{key}");
    BTreeMap::from([
        (t(""), "true".to_string()),
        (t(".name"), cookie),
        (t(".httponly"), "true".to_string()),
        (t(".secure"), RootUrl::of(app).https.to_string()),
    ])
}

/// What the operator asked of the Ingress but cannot set for its class: said in the `Routed`
/// condition rather than pretended. [`STICKINESS_GAP`] among them means sessions are not pinned.
pub fn ingress_gaps(app: &MeteorApp) -> Vec<&'static str> {
    if app.spec.routing.ingress.is_none() {
        return Vec::new();
    }
    let tls_redirect = app.spec.routing.tls.is_some() && redirects_http(app);
    let mut gaps = Vec::new();
    match family(app) {
        Some(IngressClassFamily::Nginx | IngressClassFamily::Haproxy) => {}
        Some(IngressClassFamily::Traefik) => {
            if tls_redirect {
                gaps.push("HTTP to HTTPS redirect (a Traefik entrypoint setting)");
            }
        }
        None => {
            if edge_pins(app) {
                gaps.push(STICKINESS_GAP);
            }
            gaps.push("WebSocket timeouts");
            if tls_redirect {
                gaps.push("HTTP to HTTPS redirect");
            }
        }
    }
    gaps
}
