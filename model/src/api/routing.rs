//! The `spec.routing` part of the API: the way in to the app (sticky proxy, TLS, Ingress or
//! Gateway API HTTPRoute) and the `status.routing` the operator reports about it.
//!
//! Proxy settings are optional fields without schema defaults (the defaults below are applied by
//! the builders), so a disabled proxy can refuse every other proxy setting: the operator never
//! accepts a field it would ignore.

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Default proxy replicas: two, so the balancer itself survives the loss of a node.
pub const DEFAULT_PROXY_REPLICAS: i32 = 2;
/// Default idle timeout of a proxied WebSocket or stream, well above SockJS's 25–45 s heartbeats
/// and Meteor's 60 s disconnect delay.
pub const DEFAULT_IDLE_TIMEOUT_SECONDS: i32 = 300;
/// Default name of the sticky cookie (the proxy's own default).
pub const DEFAULT_COOKIE_NAME: &str = "meteor-sticky";
/// Default lifetime of the sticky cookie: one day (the proxy's own default).
pub const DEFAULT_COOKIE_MAX_AGE_SECONDS: i32 = 86_400;
/// Default burst of the per-client-IP rate limit (the proxy's own default).
pub const DEFAULT_RATE_BURST: i32 = 100;

/// How clients reach the app.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.ingress) && has(self.gateway))")
    .message("routing: set at most one of ingress or gateway"))]
#[x_kube(validation = Rule::new("!has(self.tls) || !has(self.gateway)")
    .message("routing.tls: with gateway, TLS is configured on the Gateway's listener (certificateRefs); remove routing.tls"))]
#[x_kube(validation = Rule::new("!has(self.tls) || has(self.ingress) || !has(self.proxy) || self.proxy.enabled")
    .message("routing.tls: nothing would terminate TLS: enable routing.proxy or add routing.ingress"))]
pub struct Routing {
    /// The operator's sticky proxy (`<name>-proxy`), on by default.
    #[serde(default)]
    pub proxy: ProxySpec,
    /// TLS for the rootUrl host: terminated by the Ingress when there is one, else by the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// An Ingress `<name>` in front of the front Service; host and path come from rootUrl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// A Gateway API HTTPRoute `<name>` in front of the front Service; hostname and path come
    /// from rootUrl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewaySpec>,
}

impl Routing {
    /// Whether the proxy runs (the default).
    pub fn proxy_enabled(&self) -> bool {
        self.proxy.enabled
    }
}

/// The sticky proxy in front of the app pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.enabled || !(has(self.replicas) || has(self.resources) || has(self.cookie) || has(self.rateLimit) || has(self.idleTimeoutSeconds) || has(self.image) || has(self.nodeSelector) || has(self.tolerations) || has(self.affinity) || has(self.podAnnotations) || has(self.service) || has(self.rebalance) || has(self.podMonitor))")
    .message("routing.proxy: only enabled may be set while the proxy is off (enabled: false)"))]
pub struct ProxySpec {
    /// Run the proxy (default true). Off: the front Service selects the app pods and the
    /// Ingress or HTTPRoute is asked for stickiness instead.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Proxy processes. Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("must be at least 1 (turn the proxy off with enabled: false)"))]
    pub replicas: Option<i32>,
    /// Resources of each proxy. Default: 100m CPU and 64Mi requested, 256Mi limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The sticky cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<CookieSpec>,
    /// Per-client-IP rate limit; excess requests get 429. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Seconds a silent WebSocket or stream is kept open. Default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 60 && self <= 86400")
        .message("must be between 60 (above SockJS's heartbeats) and 86400"))]
    pub idle_timeout_seconds: Option<i32>,
    /// Proxy image. Default: the operator's own image (it carries `meteor-operator proxy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("must not be empty"))]
    pub image: Option<String>,
    /// Node selector of the proxy pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations of the proxy pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Affinity of the proxy pods. The pods are spread across nodes and zones in any case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Extra annotations on the proxy pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,
    /// The front Service `<name>` while the proxy is on. Unset fields take `spec.service`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ProxyServiceSpec>,
    /// Moving WebSockets to new app pods after a scale-up. Default: on, 5 closes a second per
    /// proxy replica, until every pod is within 20 % of the mean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<RebalanceSpec>,
    /// A Prometheus Operator PodMonitor `<name>-proxy` in the app's namespace for these proxy
    /// pods (port `admin`), for a Prometheus that picks monitors per namespace or by label.
    /// Default: none (the chart's `proxyPodMonitor` covers every app from the operator's
    /// namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_monitor: Option<ProxyPodMonitor>,
}

/// The proxy pods' PodMonitor.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProxyPodMonitor {
    /// Labels on the PodMonitor, for the Prometheus whose `podMonitorSelector` picks it (for
    /// example `release: prometheus`). The operator's own labels win.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Scrape interval, a Prometheus duration (`30s`, `1m`). Default: the Prometheus's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+(ms|s|m|h)$')")
        .message("must be a Prometheus duration such as 15s, 30s or 1m"))]
    pub interval: Option<String>,
}

/// How the proxy spreads open WebSockets onto new app pods (`--rebalance-rate`,
/// `--rebalance-tolerance`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceSpec {
    /// WebSockets each proxy replica may close per second on an over-full pod (their clients
    /// reconnect to the emptiest). 0 turns rebalancing off. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 1000").message("must be between 0 (off) and 1000"))]
    pub closes_per_second: Option<i32>,
    /// A pod is over-full above the mean by more than this percentage. Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("must be between 1 and 100"))]
    pub tolerance_percent: Option<i32>,
}

impl Default for ProxySpec {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            replicas: None,
            resources: None,
            cookie: None,
            rate_limit: None,
            idle_timeout_seconds: None,
            image: None,
            node_selector: None,
            tolerations: None,
            affinity: None,
            pod_annotations: None,
            service: None,
            rebalance: None,
            pod_monitor: None,
        }
    }
}

fn default_enabled() -> bool {
    true
}

/// The sticky cookie the proxy sets.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CookieSpec {
    /// Cookie name. Default `meteor-sticky`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_-]+$')")
        .message("must be letters, digits, '_' or '-'"))]
    pub name: Option<String>,
    /// Cookie lifetime in seconds. Default 86400 (one day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("must be at least 1"))]
    pub max_age_seconds: Option<i32>,
}

/// A token bucket per client IP.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Requests per second allowed per client IP.
    #[x_kube(validation = Rule::new("self >= 1").message("must be at least 1 (remove rateLimit to turn it off)"))]
    pub requests_per_second: i32,
    /// Requests a client may make at once above the rate. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("must be at least 1"))]
    pub burst: Option<i32>,
}

/// The front Service while the proxy is on.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProxyServiceSpec {
    /// ClusterIP, NodePort or LoadBalancer. Default: `spec.service.type`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in ['ClusterIP', 'NodePort', 'LoadBalancer']")
        .message("must be one of ClusterIP, NodePort, LoadBalancer"))]
    pub type_: Option<String>,
    /// Plain-HTTP port. Default: `spec.service.port`. With TLS on the proxy, 443 serves HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("must be between 1 and 65535"))]
    pub port: Option<i32>,
    /// Annotations of the Service. Default: `spec.service.annotations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// `Cluster` or `Local` (keeps the client IP, NodePort and LoadBalancer only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in ['Cluster', 'Local']").message("must be Cluster or Local"))]
    pub external_traffic_policy: Option<String>,
    /// The cloud load balancer implementation (LoadBalancer only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("must not be empty"))]
    pub load_balancer_class: Option<String>,
}

/// TLS for the rootUrl host: exactly one of an existing Secret or a cert-manager issuer.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretName) != has(self.issuerRef)")
    .message("routing.tls: set exactly one of secretName or issuerRef"))]
pub struct TlsSpec {
    /// A `kubernetes.io/tls` Secret in the app's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("must not be empty"))]
    pub secret_name: Option<String>,
    /// A cert-manager issuer: the operator requests a Certificate `<name>` for the rootUrl host,
    /// stored in Secret `<name>-tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
    /// Answer plain HTTP with a redirect to HTTPS. Default true.
    #[serde(default = "default_redirect_http")]
    pub redirect_http: bool,
}

fn default_redirect_http() -> bool {
    true
}

/// A cert-manager Issuer or ClusterIssuer.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Issuer name.
    #[x_kube(validation = Rule::new("self.size() > 0").message("must not be empty"))]
    pub name: String,
    /// `Issuer` (default, in the app's namespace) or `ClusterIssuer`.
    #[serde(default = "default_issuer_kind")]
    #[x_kube(validation = Rule::new("self in ['Issuer', 'ClusterIssuer']").message("must be Issuer or ClusterIssuer"))]
    pub kind: String,
}

fn default_issuer_kind() -> String {
    "Issuer".into()
}

/// An Ingress in front of the front Service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// IngressClass. Unset: the cluster's default class. nginx, traefik and haproxy classes get
    /// stickiness and timeout annotations (see docs/routing.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("must not be empty"))]
    pub class_name: Option<String>,
    /// Annotations of the Ingress; they win over the operator's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A Gateway API HTTPRoute in front of the front Service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// The Gateways (listeners) the route attaches to.
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("must name at least one Gateway"))]
    pub parent_refs: Vec<GatewayParentRef>,
}

/// One Gateway, optionally one of its listeners.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayParentRef {
    /// Gateway name.
    #[x_kube(validation = Rule::new("self.size() > 0").message("must not be empty"))]
    pub name: String,
    /// Gateway namespace. Default: the app's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Listener name on the Gateway. Default: every listener that allows the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// What the operator observed of the way in.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RoutingStatus {
    /// Proxy pods wanted (absent with the proxy off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_replicas: Option<i32>,
    /// Proxy pods ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_ready_replicas: Option<i32>,
    /// The address clients use, as the Ingress, the HTTPRoute's Gateway or the front Service
    /// reports it (a hostname or an IP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}
