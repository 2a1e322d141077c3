//! HTTPRoute `<name>` (Gateway API, `gateway.networking.k8s.io/v1`) in front of the front
//! Service; with the proxy off it asks the Gateway for cookie `sessionPersistence`.
//!
//! Typed here, with only the fields we write, because the `gateway-api` crate (0.22, the latest)
//! is built on kube 4 and k8s-openapi 0.28 while the operator uses kube 5 and k8s-openapi 0.29:
//! its types would not implement our kube's `Resource`. Field names follow the Gateway API
//! spec, so the JSON is the same. `sessionPersistence` is in the experimental channel: a cluster
//! with standard-channel CRDs prunes it, which the status reports as `StickinessUnsupported`.

use super::{RootUrl, cookie_name_and_max_age};
use crate::api::MeteorApp;
use crate::build::meta::{app_name, child_meta};
use crate::build::service::{front_component, front_http_port};
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// The subset of `HTTPRouteSpec` the operator writes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    plural = "httproutes",
    namespaced,
    status = "RouteStatus",
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteSpec {
    pub parent_refs: Vec<ParentReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    pub rules: Vec<HTTPRouteRule>,
}

/// What the Gateways report (`status.parents`), as far as the operator reads it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    #[serde(default)]
    pub parents: Vec<RouteParentStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    #[serde(default)]
    pub conditions: Vec<ForeignCondition>,
}

/// A condition written by another controller, read leniently: only type and status are sure
/// to be there.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ForeignCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    pub group: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteRule {
    pub matches: Vec<HTTPRouteMatch>,
    pub backend_refs: Vec<BackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<SessionPersistence>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct HTTPRouteMatch {
    pub path: PathMatch,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct PathMatch {
    #[serde(rename = "type")]
    pub type_: String,
    pub value: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct BackendRef {
    pub kind: String,
    pub name: String,
    pub port: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionPersistence {
    pub session_name: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub absolute_timeout: String,
    pub cookie_config: CookieConfig,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CookieConfig {
    pub lifetime_type: String,
}

/// The HTTPRoute, with `routing.gateway`.
pub fn http_route(app: &MeteorApp) -> Option<HTTPRoute> {
    let gateway = app.spec.routing.gateway.as_ref()?;
    let root = RootUrl::of(app);
    let (cookie, max_age) = cookie_name_and_max_age(app);
    let spec = HTTPRouteSpec {
        parent_refs: gateway
            .parent_refs
            .iter()
            .map(|p| ParentReference {
                group: "gateway.networking.k8s.io".into(),
                kind: "Gateway".into(),
                name: p.name.clone(),
                namespace: p.namespace.clone(),
                section_name: p.section_name.clone(),
            })
            .collect(),
        // Hostnames are DNS names only; an IP rootUrl matches whatever the listener accepts.
        hostnames: if root.host_is_ip {
            Vec::new()
        } else {
            vec![root.host.clone()]
        },
        rules: vec![HTTPRouteRule {
            matches: vec![HTTPRouteMatch {
                path: PathMatch {
                    type_: "PathPrefix".into(),
                    value: root.path,
                },
            }],
            backend_refs: vec![BackendRef {
                kind: "Service".into(),
                name: app_name(app),
                port: front_http_port(app),
            }],
            // In front of the proxy the proxy pins sessions; alone, the Gateway must.
            session_persistence: (!app.spec.routing.proxy_enabled()).then(|| SessionPersistence {
                session_name: cookie,
                type_: "Cookie".into(),
                absolute_timeout: gateway_duration(max_age),
                cookie_config: CookieConfig {
                    lifetime_type: "Permanent".into(),
                },
            }),
        }],
    };
    let mut route = HTTPRoute::new(&app_name(app), spec);
    route.metadata = child_meta(app, app_name(app), front_component(app).as_str());
    Some(route)
}

/// Longest Gateway API duration: at most five digits per unit (GEP-2257).
const MAX_GATEWAY_HOURS: i32 = 99_999;

/// Seconds as a Gateway API duration (`24h`, `1h30m`, `45s`): at most five digits per unit.
pub fn gateway_duration(seconds: i32) -> String {
    let seconds = seconds.clamp(1, MAX_GATEWAY_HOURS * 3600);
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    [(h, "h"), (m, "m"), (s, "s")]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect()
}
