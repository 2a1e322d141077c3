//! The routing tier's I/O within one reconcile (`spec.routing`): the only code that reads and
//! writes the proxy, its RBAC and cookie Secret, the Ingress, HTTPRoute and Certificate. The
//! builders are in `crate::build::routing`, the status they lead to in `crate::status::routing`.
//!
//! Per reconcile:
//! 1. Names missing from the caches are looked up once: an object we do not control under one
//!    of our names stops the tier (`NameTaken`) with nothing written.
//! 2. With the proxy on: the cookie Secret is created once (never rewritten: a new key would
//!    unpin every session), then ServiceAccount, RoleBinding (to the proxy ClusterRole the chart
//!    installs), the app-only Service, the PodDisruptionBudget and the Deployment are applied
//!    when changed. With it off they are deleted (the cookie Secret stays, so turning it back on
//!    keeps the sessions' key).
//! 3. The TLS Secret's type and keys, read by the observe step once per resource version, go to
//!    the status.
//! 4. Ingress, HTTPRoute and Certificate are applied, or deleted when no longer wanted; the
//!    last two only on a cluster that has their CRDs, else the status says what is missing.

use super::Context;
use super::apply::namesake as taken_name;
use super::optional::{Optionally, WHILE_LISTING, apply_or_delete as optional_child};
use super::reconcile::owned;
use crate::api::MeteorApp;
use crate::build::meta::{app_name, app_only_service_name, proxy_name};
use crate::build::routing::{
    COOKIE_KEY_BYTES, ProxyTier, RoutingTier, cookie_key_text, cookie_secret, cookie_secret_name,
    tls_secret_name,
};
use crate::references::SourceKind;
use crate::status::routing::{
    self, CertificateState, RouteState, RoutingObservation, TlsSecretState,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;
use kube::api::Api;
use std::sync::Arc;
use std::time::Duration;

/// What the routing tier did and saw.
pub struct RoutingReport {
    pub seen: RoutingObservation,
    pub writes: u64,
    /// Whether the spec wants the proxy.
    proxy_wanted: bool,
    /// Come back this soon (an optional kind's cache has not listed yet).
    pub requeue: Option<Duration>,
}

impl RoutingReport {
    /// Keep the front Service as it is this pass: the proxy is wanted but none of its pods is
    /// ready, so a front Service that exists keeps selecting what serves now (the app pods,
    /// when the proxy was just turned on) instead of switching to pods that cannot answer.
    pub fn hold_front_service(&self) -> bool {
        self.proxy_wanted && self.seen.proxy_ready == 0
    }
}

/// Reconciles the way in of `app` from its built `tier`.
pub async fn reconcile(
    ctx: &Context,
    app: &MeteorApp,
    namespace: &str,
    tier: RoutingTier,
    tls_secret: Option<TlsSecretState>,
) -> Result<RoutingReport, kube::Error> {
    let mut report = RoutingReport {
        seen: RoutingObservation::default(),
        writes: 0,
        proxy_wanted: tier.proxy.is_some(),
        requeue: None,
    };
    let observed_proxy = ctx.observed(&ctx.deployments, namespace, &proxy_name(app));
    // As observed; replaced by the API's answer when the proxy Deployment is written below.
    if report.proxy_wanted {
        report.seen.proxy_ready = ready_replicas(observed_proxy.as_deref());
    }
    report.seen.service_address = ctx
        .observed(&ctx.services, namespace, &app_name(app))
        .and_then(|s| service_address(&s));
    if let Some(taken) = super::namesakes::of_routing(ctx, app, &tier).await? {
        report.seen.name_taken = Some(taken);
        return Ok(report);
    }

    let applier = &ctx.applier;
    match tier.proxy {
        Some(proxy) => {
            match create_cookie_secret(ctx, app, namespace).await? {
                CookieSecret::Ours(writes) => report.writes += writes,
                CookieSecret::Taken(message) => {
                    report.seen.name_taken = Some(message);
                    return Ok(report);
                }
            }
            let written = apply_proxy(ctx, app, namespace, proxy, &mut report.writes).await?;
            if let Some(written) = &written {
                report.seen.proxy_ready = ready_replicas(Some(written));
            }
        }
        None => report.writes += delete_proxy(ctx, app, namespace, observed_proxy).await?,
    }

    report.seen.tls_secret = tls_secret;

    let name = app_name(app);
    match tier.ingress {
        Some(ingress) => {
            let applied = applier
                .apply_cached(&ctx.routing.ingresses, ingress)
                .await?;
            report.writes += applied.writes();
            let current = applied
                .written()
                .map(std::sync::Arc::new)
                .or_else(|| ctx.observed(&ctx.routing.ingresses, namespace, &name));
            report.seen.edge_address = current.and_then(|i| ingress_address(&i));
        }
        None => {
            let observed = ctx.observed(&ctx.routing.ingresses, namespace, &name);
            report.writes += u64::from(applier.delete(owned(app, observed)).await?);
        }
    }

    let route = optional_child(
        ctx,
        app,
        namespace,
        &ctx.routing.http_routes,
        &name,
        tier.http_route,
    )
    .await?;
    report.writes += route.writes;
    report.seen.route = match &route.state {
        Optionally::NotWanted => None,
        Optionally::NotInstalled => Some(RouteState::NoGatewayAPI),
        Optionally::Listing => Some(RouteState::Pending),
        Optionally::Seen(route) => Some(routing::route_state(route)),
    };
    let certificate = optional_child(
        ctx,
        app,
        namespace,
        &ctx.routing.certificates,
        &name,
        tier.certificate,
    )
    .await?;
    report.writes += certificate.writes;
    report.seen.certificate = match &certificate.state {
        Optionally::NotWanted => None,
        Optionally::NotInstalled => Some(CertificateState::NoCertManager),
        Optionally::Listing => Some(CertificateState::NotReady(
            "the operator has not listed Certificates yet".into(),
        )),
        Optionally::Seen(certificate) => Some(routing::certificate_state(certificate)),
    };
    if route.listing() || certificate.listing() {
        report.requeue = Some(WHILE_LISTING);
    }
    Ok(report)
}

/// Applies the proxy's objects; the Deployment as the API answered, when written.
async fn apply_proxy(
    ctx: &Context,
    app: &MeteorApp,
    namespace: &str,
    proxy: ProxyTier,
    writes: &mut u64,
) -> Result<Option<Deployment>, kube::Error> {
    let applier = &ctx.applier;
    // Its identity first: the pods start with the ServiceAccount and can watch at once.
    *writes += applier
        .apply_cached(&ctx.routing.service_accounts, proxy.service_account)
        .await?
        .writes();
    let replaced = replace_role_binding(ctx, app, namespace, &proxy.role_binding).await?;
    *writes += replaced;
    let binding = if replaced > 0 {
        // Deleted just now: written whatever the cache still shows.
        applier.apply(proxy.role_binding, None).await?
    } else {
        applier
            .apply_cached(&ctx.routing.role_bindings, proxy.role_binding)
            .await?
    };
    *writes += binding.writes();
    *writes += applier
        .apply_cached(&ctx.services, proxy.app_service)
        .await?
        .writes();
    match proxy.disruption_budget {
        Some(budget) => *writes += applier.apply_cached(&ctx.budgets, budget).await?.writes(),
        None => {
            let observed = ctx.observed(&ctx.budgets, namespace, &proxy_name(app));
            *writes += u64::from(applier.delete(owned(app, observed)).await?);
        }
    }
    let applied = applier
        .apply_cached(&ctx.deployments, proxy.deployment)
        .await?;
    *writes += applied.writes();
    Ok(applied.written())
}

/// Deletes the proxy's objects (the Deployment first, so no pod outlives its permissions).
async fn delete_proxy(
    ctx: &Context,
    app: &MeteorApp,
    namespace: &str,
    observed_proxy: Option<Arc<Deployment>>,
) -> Result<u64, kube::Error> {
    let applier = &ctx.applier;
    let name = proxy_name(app);
    let mut deletes = u64::from(applier.delete(owned(app, observed_proxy)).await?);
    let observed = ctx.observed(&ctx.budgets, namespace, &name);
    deletes += u64::from(applier.delete(owned(app, observed)).await?);
    let observed = ctx.observed(&ctx.services, namespace, &app_only_service_name(app));
    deletes += u64::from(applier.delete(owned(app, observed)).await?);
    if let Some(binding) = owned(
        app,
        ctx.observed(&ctx.routing.role_bindings, namespace, &name),
    ) {
        deletes += delete_role_binding(ctx, app, namespace, binding).await?;
    }
    let observed = ctx.observed(&ctx.routing.service_accounts, namespace, &name);
    deletes += u64::from(applier.delete(owned(app, observed)).await?);
    Ok(deletes)
}

/// Deletes our RoleBinding `<name>-proxy` when it is bound to anything but `desired`'s role: a
/// binding's `roleRef` cannot change in place, so the apply that follows creates it anew. That
/// happens once per app created before the proxies shared the chart's ClusterRole (each had a
/// Role `<name>-proxy` of its own, which goes too), or after `--proxy-cluster-role` changed.
/// Requests made.
async fn replace_role_binding(
    ctx: &Context,
    app: &MeteorApp,
    namespace: &str,
    desired: &RoleBinding,
) -> Result<u64, kube::Error> {
    let observed = ctx.observed(&ctx.routing.role_bindings, namespace, &desired.name_any());
    match owned(app, observed) {
        Some(binding) if binding.role_ref != desired.role_ref => {
            delete_role_binding(ctx, app, namespace, binding).await
        }
        _ => Ok(0),
    }
}

/// Deletes `binding`, and the Role of its own it granted, if this app controls that Role (see
/// [`replace_role_binding`]). Requests made: the binding's delete, and the Role's.
async fn delete_role_binding(
    ctx: &Context,
    app: &MeteorApp,
    namespace: &str,
    binding: Arc<RoleBinding>,
) -> Result<u64, kube::Error> {
    let own_role = (binding.role_ref.kind == "Role").then(|| binding.role_ref.name.clone());
    let mut deletes = u64::from(ctx.applier.delete(Some(binding)).await?);
    if let Some(role) = own_role {
        // Not cached: read once, deleted like any child, only if this app controls it.
        let observed = Api::<Role>::namespaced(ctx.client.clone(), namespace)
            .get_metadata_opt(&role)
            .await?
            .map(Arc::new);
        deletes += u64::from(ctx.applier.delete(owned(app, observed)).await?);
    }
    Ok(deletes)
}

enum CookieSecret {
    /// Ours (requests made: 1 when created now).
    Ours(u64),
    /// Someone else's Secret holds the name.
    Taken(String),
}

/// Creates the cookie Secret when the cache of the operator's Secrets lacks it. Create-only: a
/// `409` means it exists, and it is ours only if this MeteorApp controls it.
async fn create_cookie_secret(
    ctx: &Context,
    app: &MeteorApp,
    namespace: &str,
) -> Result<CookieSecret, kube::Error> {
    let name = cookie_secret_name(app);
    let expected = ctx.applier.expected();
    if expected
        .observed(&ctx.owned_secrets, namespace, &name)
        .is_some()
    {
        return Ok(CookieSecret::Ours(0));
    }
    let mut random = [0u8; COOKIE_KEY_BYTES];
    getrandom::fill(&mut random).expect("the OS random number generator works");
    let secret = cookie_secret(app, &cookie_key_text(&random));
    match ctx.applier.create_once(&secret).await? {
        Some(created) => {
            tracing::info!(app = %app.name_any(), secret = %name, "generated the proxy's cookie key");
            expected.written(created);
            Ok(CookieSecret::Ours(1))
        }
        None => Ok(
            match taken_name::<Secret>(&ctx.client, app, namespace, &name, None).await? {
                Some(message) => CookieSecret::Taken(message),
                None => CookieSecret::Ours(0),
            },
        ),
    }
}

/// The TLS Secret's state, read again only when its resource version changed (the observe step).
pub(super) async fn tls_secret(
    ctx: &Context,
    app: &MeteorApp,
    namespace: &str,
) -> Result<Option<TlsSecretState>, kube::Error> {
    let Some(name) = tls_secret_name(app) else {
        return Ok(None);
    };
    let source = (SourceKind::Secret, namespace.to_string(), name.clone());
    let version = ctx.current_version(&source);
    if let Some(state) = version.as_ref().and_then(|v| ctx.tls_checked(&source, v)) {
        return Ok(Some(state));
    }
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(&name)
        .await?;
    let state = routing::tls_secret_state(secret.as_ref());
    if let Some(version) = secret.as_ref().and_then(|s| s.resource_version()) {
        ctx.remember_tls_check(source, version, state.clone());
    }
    Ok(Some(state))
}

fn ready_replicas(deployment: Option<&Deployment>) -> i32 {
    deployment
        .and_then(|d| d.status.as_ref()?.ready_replicas)
        .unwrap_or(0)
}

/// The first address the Ingress controller reports.
fn ingress_address(ingress: &Ingress) -> Option<String> {
    let status = ingress.status.as_ref()?.load_balancer.as_ref()?;
    let first = status.ingress.as_ref()?.first()?;
    first.hostname.clone().or_else(|| first.ip.clone())
}

/// The first address the front Service's load balancer reports.
fn service_address(service: &Service) -> Option<String> {
    let status = service.status.as_ref()?.load_balancer.as_ref()?;
    let first = status.ingress.as_ref()?.first()?;
    first.hostname.clone().or_else(|| first.ip.clone())
}
