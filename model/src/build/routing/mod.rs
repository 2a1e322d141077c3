//! Pure builders of the way in (`spec.routing`): the sticky proxy and its RBAC, the cookie
//! Secret, the Ingress or HTTPRoute, the cert-manager Certificate. The front Service `<name>` and
//! the app-only Service `<name>-app` are in `super::service`; what the routing objects report is
//! folded into status by [`status`].

mod certificate;
mod cookie;
mod httproute;
mod ingress;
mod proxy;
mod rbac;

pub use certificate::{Certificate, CertificateSpec, CertificateStatus, certificate};
pub use cookie::{
    COOKIE_KEY_BYTES, COOKIE_SECRET_KEY, cookie_key_text, cookie_secret,
    secret_name as cookie_secret_name,
};
pub use httproute::{
    ForeignCondition, HTTPRoute, HTTPRouteSpec, RouteParentStatus, RouteStatus, gateway_duration,
    http_route,
};
pub use ingress::{IngressClassFamily, STICKINESS_GAP, ingress, ingress_gaps, service_annotations};
pub use proxy::{
    ADMIN_PORT, ADMIN_PORT_NAME, HTTP_PORT, HTTPS_PORT, PROXY_CONTAINER_NAME,
    default_proxy_resources, proxy_deployment,
};
pub use rbac::{proxy_role_binding, proxy_service_account};

use crate::api::{
    DEFAULT_COOKIE_MAX_AGE_SECONDS, DEFAULT_COOKIE_NAME, DEFAULT_IDLE_TIMEOUT_SECONDS, MeteorApp,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;

/// The operator's own image, which carries `meteor-operator proxy`: the default proxy image
/// until the chart hands the operator its real one.
pub const DEFAULT_PROXY_IMAGE: &str = concat!(
    "ghcr.io/meteorfleet/meteor-operator:",
    env!("CARGO_PKG_VERSION")
);

/// The ClusterRole the proxies are bound to when the operator is not told another: the chart's
/// `<release>-proxy` for a release named `meteor-operator`.
pub const DEFAULT_PROXY_CLUSTER_ROLE: &str = "meteor-operator-proxy";

/// Knobs of the routing tier that come from the operator's deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingOptions {
    /// Image of the proxy pods when `routing.proxy.image` is unset: the operator's own.
    pub proxy_image: String,
    /// The ClusterRole (get, list and watch on EndpointSlices) each app's RoleBinding
    /// `<name>-proxy` grants its proxies in the app's namespace; installed by the chart.
    pub proxy_cluster_role: String,
}

impl Default for RoutingOptions {
    fn default() -> Self {
        Self {
            proxy_image: DEFAULT_PROXY_IMAGE.into(),
            proxy_cluster_role: DEFAULT_PROXY_CLUSTER_ROLE.into(),
        }
    }
}

/// Everything the way in needs besides the front Service. `None` means "must not exist".
/// The cookie Secret is not here: it is created once ([`cookie_secret`]) and never rewritten.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutingTier {
    /// The proxy and what it runs with, when `routing.proxy.enabled`.
    pub proxy: Option<ProxyTier>,
    /// Ingress `<name>`, with `routing.ingress`.
    pub ingress: Option<Ingress>,
    /// HTTPRoute `<name>`, with `routing.gateway`.
    pub http_route: Option<HTTPRoute>,
    /// Certificate `<name>`, with `routing.tls.issuerRef`.
    pub certificate: Option<Certificate>,
}

/// The sticky proxy's objects.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyTier {
    /// `<name>-proxy`.
    pub deployment: Deployment,
    /// `<name>-app`: app pods only; the proxy follows its EndpointSlices.
    pub app_service: Service,
    /// `<name>-proxy`, with more than one proxy replica.
    pub disruption_budget: Option<PodDisruptionBudget>,
    /// `<name>-proxy`: the identity the proxy watches EndpointSlices with.
    pub service_account: ServiceAccount,
    /// `<name>-proxy`: the proxy ClusterRole (get, list and watch on EndpointSlices, nothing
    /// else) granted to the ServiceAccount in the app's namespace.
    pub role_binding: RoleBinding,
}

/// Every routing object of `app`.
pub fn tier(app: &MeteorApp, options: &RoutingOptions) -> RoutingTier {
    let routing = &app.spec.routing;
    RoutingTier {
        proxy: routing.proxy_enabled().then(|| ProxyTier {
            deployment: proxy_deployment(app, options),
            app_service: super::service::app_only_service(app),
            disruption_budget: super::pdb::proxy_disruption_budget(app),
            service_account: proxy_service_account(app),
            role_binding: proxy_role_binding(app, options),
        }),
        ingress: ingress(app),
        http_route: http_route(app),
        certificate: certificate(app),
    }
}

/// Host and path of `rootUrl` (validated by the CRD; an unparsable one gives `localhost`, `/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootUrl {
    /// Host name or IP, without brackets or port.
    pub host: String,
    /// Whether `host` is an IP address (no Ingress host, HTTPRoute hostname or DNS name).
    pub host_is_ip: bool,
    /// Path prefix, at least `/`.
    pub path: String,
    /// `https` scheme.
    pub https: bool,
}

impl RootUrl {
    pub fn of(app: &MeteorApp) -> Self {
        let parsed = url::Url::parse(&app.spec.root_url).ok();
        let host = parsed.as_ref().and_then(|u| u.host());
        Self {
            host_is_ip: matches!(host, Some(url::Host::Ipv4(_) | url::Host::Ipv6(_))),
            host: match host {
                Some(url::Host::Ipv6(ip)) => ip.to_string(),
                Some(host) => host.to_string(),
                None => "localhost".into(),
            },
            path: parsed
                .as_ref()
                .map_or_else(|| "/".into(), |u| u.path().to_string()),
            https: parsed.as_ref().is_some_and(|u| u.scheme() == "https"),
        }
    }
}

/// Proxies that add `X-Forwarded-For` in front of the app pods (`HTTP_FORWARDED_COUNT`): ours,
/// and the Ingress controller or Gateway in front of it.
pub fn forwarding_proxies(app: &MeteorApp) -> u32 {
    let routing = &app.spec.routing;
    let edge = routing.ingress.is_some() || routing.gateway.is_some();
    u32::from(routing.proxy_enabled()) + u32::from(edge)
}

/// The TLS Secret in use: the named one, or the one the Certificate fills.
pub fn tls_secret_name(app: &MeteorApp) -> Option<String> {
    let tls = app.spec.routing.tls.as_ref()?;
    Some(
        tls.secret_name
            .clone()
            .unwrap_or_else(|| format!("{}-tls", app.name_any())),
    )
}

/// Whether the proxy terminates TLS: TLS is asked for and no Ingress does it in front.
pub fn proxy_terminates_tls(app: &MeteorApp) -> bool {
    let routing = &app.spec.routing;
    routing.proxy_enabled() && routing.tls.is_some() && routing.ingress.is_none()
}

/// Whether HTTP is answered with a redirect to HTTPS.
pub fn redirects_http(app: &MeteorApp) -> bool {
    app.spec
        .routing
        .tls
        .as_ref()
        .is_some_and(|t| t.redirect_http)
}

/// The sticky cookie's name and lifetime (the proxy's, or the edge's with the proxy off).
pub fn cookie_name_and_max_age(app: &MeteorApp) -> (String, i32) {
    let cookie = app.spec.routing.proxy.cookie.clone().unwrap_or_default();
    (
        cookie.name.unwrap_or_else(|| DEFAULT_COOKIE_NAME.into()),
        cookie
            .max_age_seconds
            .unwrap_or(DEFAULT_COOKIE_MAX_AGE_SECONDS),
    )
}

/// Seconds a silent WebSocket may live, at the proxy and at the edge in front of it.
pub fn idle_timeout_seconds(app: &MeteorApp) -> i32 {
    app.spec
        .routing
        .proxy
        .idle_timeout_seconds
        .unwrap_or(DEFAULT_IDLE_TIMEOUT_SECONDS)
}

/// Proxy replicas, with the proxy on.
pub fn proxy_replicas(app: &MeteorApp) -> Option<i32> {
    let proxy = &app.spec.routing.proxy;
    proxy
        .enabled
        .then(|| proxy.replicas.unwrap_or(crate::api::DEFAULT_PROXY_REPLICAS))
}
