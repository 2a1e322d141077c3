//! The way in, as status: the `Routed` condition and `status.routing`, computed purely from what
//! the routing reconcile observed (passed in), and folded into the status the core computed.
//!
//! `Ready` requires what the operator runs (a serving proxy). What a third-party controller has
//! not answered yet (Ingress address, Certificate, route acceptance) shows in `Routed` without
//! blocking `Ready`; an explicit refusal (route not accepted, bad TLS Secret, a name taken by an
//! object we do not own) also sets `Degraded`.

use super::conditions::{DEGRADED, READY, hold_not_ready, upsert};
use super::conditions::{Readiness, condition_of};
use crate::api::{MeteorApp, MeteorAppStatus, RoutingStatus};
use crate::build::routing::{Certificate, ForeignCondition, HTTPRoute, RouteParentStatus};
use crate::build::routing::{STICKINESS_GAP, ingress_gaps, proxy_replicas, tls_secret_name};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition type of the way in.
pub const ROUTED: &str = "Routed";

/// Reasons of `Routed=False` that wait on the user, not on a controller: each is announced
/// with a Warning event.
const PROBLEMS: [&str; 6] = [
    "NameTaken",
    "RouteNotAccepted",
    "TLSSecretInvalid",
    "NoGatewayAPI",
    "NoCertManager",
    "StickinessUnsupported",
];

/// Whether `reason` of `Routed=False` is one the user must act on (else it is pending).
pub fn is_problem(reason: &str) -> bool {
    PROBLEMS.contains(&reason)
}

/// The TLS Secret in use, as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsSecretState {
    Missing,
    /// Not `kubernetes.io/tls`, or without `tls.crt` / `tls.key`: what is wrong.
    Invalid(String),
    Valid,
}

/// The cert-manager Certificate, as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateState {
    /// The cluster has no `certificates.cert-manager.io`.
    NoCertManager,
    /// Not `Ready=True` yet: cert-manager's message.
    NotReady(String),
    Ready,
}

/// The HTTPRoute, as its Gateway reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteState {
    /// The cluster has no `httproutes.gateway.networking.k8s.io`.
    NoGatewayAPI,
    /// No `Accepted` condition from the Gateway yet.
    Pending,
    /// `Accepted=False`: the Gateway's message.
    NotAccepted(String),
    /// Accepted. `session_persistence` is whether the stored route kept `sessionPersistence`
    /// (standard-channel CRDs prune it); only asked for with the proxy off.
    Accepted { session_persistence: bool },
}

/// The TLS Secret as read (`None`: not found).
pub fn tls_secret_state(secret: Option<&Secret>) -> TlsSecretState {
    let Some(secret) = secret else {
        return TlsSecretState::Missing;
    };
    let kind = secret.type_.as_deref().unwrap_or("Opaque");
    if kind != "kubernetes.io/tls" {
        return TlsSecretState::Invalid(format!("type is {kind}, not kubernetes.io/tls"));
    }
    let data = secret.data.as_ref();
    let has = |key: &str, marker: &[u8]| {
        data.and_then(|d| d.get(key))
            .is_some_and(|v| v.0.windows(marker.len()).any(|w| w == marker))
    };
    if !has("tls.crt", b"-----BEGIN CERTIFICATE-----") {
        return TlsSecretState::Invalid("tls.crt holds no PEM certificate".into());
    }
    if !has("tls.key", b"PRIVATE KEY-----") {
        return TlsSecretState::Invalid("tls.key holds no PEM private key".into());
    }
    TlsSecretState::Valid
}

/// The HTTPRoute as its Gateways report it: refused if any refuses, pending while any has not
/// answered.
pub fn route_state(route: &HTTPRoute) -> RouteState {
    let parents = route
        .status
        .as_ref()
        .map(|s| s.parents.as_slice())
        .unwrap_or_default();
    fn accepted(parent: &RouteParentStatus) -> Option<&ForeignCondition> {
        parent.conditions.iter().find(|c| c.type_ == "Accepted")
    }
    if let Some(refused) = parents
        .iter()
        .filter_map(accepted)
        .find(|c| c.status == "False")
    {
        return RouteState::NotAccepted(foreign_message(refused));
    }
    let expected = route.spec.parent_refs.len().max(1);
    let answered = parents.iter().filter_map(accepted).count();
    if answered < expected {
        return RouteState::Pending;
    }
    RouteState::Accepted {
        session_persistence: route
            .spec
            .rules
            .iter()
            .all(|r| r.session_persistence.is_some()),
    }
}

/// The Certificate as cert-manager reports it.
pub fn certificate_state(certificate: &Certificate) -> CertificateState {
    let ready = certificate
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    match ready {
        Some(c) if c.status == "True" => CertificateState::Ready,
        Some(c) => CertificateState::NotReady(foreign_message(c)),
        None => CertificateState::NotReady("cert-manager has not reported on it yet".into()),
    }
}

fn foreign_message(condition: &ForeignCondition) -> String {
    match (&condition.reason, &condition.message) {
        (Some(reason), Some(message)) => format!("{reason}: {message}"),
        (Some(text), None) | (None, Some(text)) => text.clone(),
        (None, None) => format!("{} is {}", condition.type_, condition.status),
    }
}

/// What the routing reconcile observed. `None` fields were not looked at (not configured).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RoutingObservation {
    /// Ready pods of the proxy Deployment.
    pub proxy_ready: i32,
    /// An object we do not own holds one of our names: which, and whose it is.
    pub name_taken: Option<String>,
    pub tls_secret: Option<TlsSecretState>,
    pub certificate: Option<CertificateState>,
    pub route: Option<RouteState>,
    /// The address the Ingress or the route's Gateway reports; None while unanswered.
    pub edge_address: Option<String>,
    /// The front Service's load-balancer address, if it has one.
    pub service_address: Option<String>,
}

/// Everything the way in contributes to status.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutingVerdict {
    /// Content of `Routed`.
    pub routed: Readiness,
    pub status: RoutingStatus,
    /// Why `Ready` must be False (nothing serves in front of the app).
    pub not_serving: Option<Readiness>,
    /// An explicit refusal, for `Degraded`.
    pub refusal: Option<Readiness>,
}

fn problem(reason: &'static str, message: String) -> Readiness {
    Readiness {
        ready: false,
        reason,
        message,
    }
}

/// The verdict for `app` from `seen`.
pub fn verdict(app: &MeteorApp, seen: &RoutingObservation) -> RoutingVerdict {
    let routing = &app.spec.routing;
    let desired_proxies = proxy_replicas(app);
    let proxy_down = (desired_proxies.is_some() && seen.proxy_ready == 0).then(|| {
        problem(
            "ProxyNotReady",
            format!(
                "no proxy pod ready (0/{})",
                desired_proxies.unwrap_or_default()
            ),
        )
    });
    let tls_secret = tls_secret_name(app).unwrap_or_default();
    let issued = routing.tls.as_ref().is_some_and(|t| t.issuer_ref.is_some());

    let refusal = if let Some(why) = &seen.name_taken {
        Some(problem("NameTaken", why.clone()))
    } else if let Some(RouteState::NotAccepted(message)) = &seen.route {
        Some(problem(
            "RouteNotAccepted",
            format!("HTTPRoute not accepted by its Gateway: {message}"),
        ))
    } else {
        match &seen.tls_secret {
            Some(TlsSecretState::Invalid(what)) => Some(problem(
                "TLSSecretInvalid",
                format!("Secret {tls_secret}: {what}"),
            )),
            // A missing Secret is a refusal only when nobody is going to fill it.
            Some(TlsSecretState::Missing) if !issued => Some(problem(
                "TLSSecretInvalid",
                format!("Secret {tls_secret} (spec.routing.tls.secretName) not found"),
            )),
            _ => None,
        }
    };

    let gaps = ingress_gaps(app);
    let pending = [
        (seen.route == Some(RouteState::NoGatewayAPI)).then(|| {
            problem(
                "NoGatewayAPI",
                "the cluster has no Gateway API (httproutes.gateway.networking.k8s.io): install its CRDs and an implementation".into(),
            )
        }),
        (seen.certificate == Some(CertificateState::NoCertManager)).then(|| {
            problem(
                "NoCertManager",
                "the cluster has no cert-manager (certificates.cert-manager.io) for spec.routing.tls.issuerRef".into(),
            )
        }),
        proxy_down.clone(),
        match &seen.certificate {
            Some(CertificateState::NotReady(message)) => Some(problem(
                "CertificateNotReady",
                format!("Certificate for Secret {tls_secret}: {message}"),
            )),
            _ => None,
        },
        (seen.route == Some(RouteState::Pending)).then(|| {
            problem(
                "RoutePending",
                "the Gateway has not accepted the HTTPRoute yet".into(),
            )
        }),
        (routing.ingress.is_some() && seen.edge_address.is_none()).then(|| {
            problem(
                "IngressPending",
                "the Ingress controller has not reported an address yet".into(),
            )
        }),
        stickiness_unsupported(app, seen, &gaps),
    ];

    let status = RoutingStatus {
        proxy_replicas: desired_proxies,
        proxy_ready_replicas: desired_proxies.map(|_| seen.proxy_ready),
        address: seen
            .edge_address
            .clone()
            .or_else(|| seen.service_address.clone()),
    };
    let routed = refusal
        .clone()
        .or_else(|| pending.into_iter().flatten().next())
        .unwrap_or_else(|| Readiness {
            ready: true,
            reason: "Routed",
            message: routed_message(app, &status, &gaps),
        });
    RoutingVerdict {
        not_serving: proxy_down,
        routed,
        status,
        refusal,
    }
}

/// With the proxy off the edge must pin sessions: say so where it cannot.
fn stickiness_unsupported(
    app: &MeteorApp,
    seen: &RoutingObservation,
    gaps: &[&str],
) -> Option<Readiness> {
    if gaps.contains(&STICKINESS_GAP) {
        let class = app
            .spec
            .routing
            .ingress
            .as_ref()
            .and_then(|i| i.class_name.clone())
            .unwrap_or_else(|| "the default class".into());
        return Some(problem(
            "StickinessUnsupported",
            format!(
                "the operator cannot ask Ingress class {class} for {}; enable spec.routing.proxy or pin sessions in the controller",
                gaps.join(", ")
            ),
        ));
    }
    let dropped = seen.route
        == Some(RouteState::Accepted {
            session_persistence: false,
        });
    (dropped && !app.spec.routing.proxy_enabled()).then(|| {
        problem(
            "StickinessUnsupported",
            "the HTTPRoute's sessionPersistence was dropped (Gateway API standard channel): sessions are not pinned; enable spec.routing.proxy or install the experimental CRDs".into(),
        )
    })
}

fn routed_message(app: &MeteorApp, status: &RoutingStatus, gaps: &[&str]) -> String {
    let routing = &app.spec.routing;
    let edge = if routing.ingress.is_some() {
        "Ingress"
    } else if routing.gateway.is_some() {
        "HTTPRoute"
    } else {
        "Service"
    };
    let mut message = format!("{} through the {edge}", app.spec.root_url);
    if let (Some(ready), Some(desired)) = (status.proxy_ready_replicas, status.proxy_replicas) {
        message.push_str(&format!(" and the proxy ({ready}/{desired} ready)"));
    }
    if let Some(address) = &status.address {
        message.push_str(&format!(" at {address}"));
    }
    if !gaps.is_empty() {
        message.push_str(&format!(
            "; not set for this Ingress class: {}",
            gaps.join(", ")
        ));
    }
    message
}

/// Puts `Routed` and `status.routing` into `new` (computed by the core), holds `Ready` at False
/// while no proxy serves, and raises `Degraded` on a refusal. With no observation (the reconcile
/// stopped before routing), the previous `Routed` and `status.routing` are carried over.
pub fn fold_status(
    new: &mut MeteorAppStatus,
    app: &MeteorApp,
    seen: Option<&RoutingObservation>,
    now: &Time,
) {
    let previous = app.status.as_ref();
    let previous_condition =
        |type_: &str| previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == type_));
    let generation = app.metadata.generation;
    let Some(seen) = seen else {
        new.routing = previous.and_then(|s| s.routing.clone());
        if let Some(c) = previous_condition(ROUTED) {
            upsert(&mut new.conditions, c.clone());
        }
        return;
    };
    let verdict = verdict(app, seen);
    new.routing = Some(verdict.status);
    upsert(
        &mut new.conditions,
        condition_of(
            ROUTED,
            &verdict.routed,
            generation,
            previous_condition(ROUTED),
            now.clone(),
        ),
    );
    if let Some(down) = verdict.not_serving {
        hold_not_ready(
            &mut new.conditions,
            previous_condition(READY),
            down.reason,
            down.message,
            now,
        );
    }
    if let Some(refusal) = verdict.refusal {
        raise_degraded(
            &mut new.conditions,
            previous_condition(DEGRADED),
            &refusal,
            generation,
            now,
        );
    }
}

/// `Degraded=True` with the refusal, unless the core already reports a problem there.
fn raise_degraded(
    conditions: &mut Vec<Condition>,
    previous: Option<&Condition>,
    refusal: &Readiness,
    generation: Option<i64>,
    now: &Time,
) {
    if conditions
        .iter()
        .any(|c| c.type_ == DEGRADED && c.status == "True")
    {
        return;
    }
    // `Degraded=True` is the bad state: the condition's status is the refusal's negation.
    let degraded = Readiness {
        ready: true,
        reason: refusal.reason,
        message: refusal.message.clone(),
    };
    upsert(
        conditions,
        condition_of(DEGRADED, &degraded, generation, previous, now.clone()),
    );
}
