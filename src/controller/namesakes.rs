//! Names another owner holds: the one place that decides whether a child's name is free for a
//! MeteorApp, for every tier. A child is this app's only if its controller reference is this
//! app's uid; applying over anyone else's object would take it over, and garbage collection
//! would later delete it with the wrong MeteorApp. Cached children are judged by their owner at
//! no cost; only names missing from the caches are looked up (a metadata GET each). The first
//! name taken is the answer: later ones are not looked up.

use super::Context;
use super::apply;
use super::cached::{Cache, Compact};
use crate::api::MeteorApp;
use crate::build::{Desired, RoutingTier, mongo::MongoTier};
use kube::ResourceExt;

/// Why `app` cannot have `desired` (a child of the kind `cache` holds): held by another owner.
async fn taken<K: Compact>(
    ctx: &Context,
    app: &MeteorApp,
    cache: &Cache<K>,
    desired: &K,
) -> Result<Option<String>, kube::Error> {
    let namespace = app.namespace().unwrap_or_default();
    let name = desired.name_any();
    // Its owner is all that is read: the cached child is not rebuilt.
    let observed = ctx
        .applier
        .expected()
        .observed_cached(cache, &namespace, &name);
    let meta = observed.as_deref().map(kube::Resource::meta);
    apply::namesake::<K>(&ctx.client, app, &namespace, &name, meta).await
}

/// The first of `checks` (each an `Option<String>` future) that finds a name taken.
macro_rules! first_taken {
    ($($check:expr),+ $(,)?) => {{
        $(if let Some(taken) = $check.await? {
            return Ok(Some(taken));
        })+
        Ok(None)
    }};
}

/// The first name taken among the children a pass writes before the way in: the app and worker
/// Deployments, the front Service, the autoscaler, the disruption budget, the managed
/// MongoDB's objects and the proxy pods' PodMonitor. Any of them taken stops the pass before it
/// writes anything.
pub(super) async fn of_core(
    ctx: &Context,
    app: &MeteorApp,
    desired: &Desired,
) -> Result<Option<String>, kube::Error> {
    first_taken!(
        taken(ctx, app, &ctx.deployments, &desired.app),
        taken(ctx, app, &ctx.services, &desired.service),
        optional(ctx, app, &ctx.deployments, desired.worker.as_ref()),
        optional(ctx, app, &ctx.autoscalers, desired.autoscaler.as_ref()),
        optional(ctx, app, &ctx.budgets, desired.disruption_budget.as_ref()),
        of_mongo(ctx, app, desired.mongo.as_ref()),
        optional(
            ctx,
            app,
            &ctx.routing.pod_monitors.store,
            ctx.routing
                .pod_monitors
                .if_installed(desired.pod_monitor.as_ref()),
        ),
    )
}

/// The first name taken among the routing tier's children (the proxy's, the Ingress, the
/// HTTPRoute and Certificate where their APIs are installed). One taken holds the tier back
/// (`Routed` says which); the rest of the app is not held.
pub(super) async fn of_routing(
    ctx: &Context,
    app: &MeteorApp,
    tier: &RoutingTier,
) -> Result<Option<String>, kube::Error> {
    let routing = &ctx.routing;
    if let Some(proxy) = &tier.proxy {
        // Every proxy child is looked at (in this order) before the first taken is named.
        let found = [
            taken(ctx, app, &ctx.deployments, &proxy.deployment).await?,
            taken(ctx, app, &ctx.services, &proxy.app_service).await?,
            taken(ctx, app, &routing.service_accounts, &proxy.service_account).await?,
            taken(ctx, app, &routing.role_bindings, &proxy.role_binding).await?,
        ];
        if let Some(taken) = found.into_iter().flatten().next() {
            return Ok(Some(taken));
        }
    }
    let proxy_budget = tier
        .proxy
        .as_ref()
        .and_then(|p| p.disruption_budget.as_ref());
    let http_route = routing.http_routes.if_installed(tier.http_route.as_ref());
    let certificate = routing.certificates.if_installed(tier.certificate.as_ref());
    first_taken!(
        optional(ctx, app, &ctx.budgets, proxy_budget),
        optional(ctx, app, &routing.ingresses, tier.ingress.as_ref()),
        optional(ctx, app, &routing.http_routes.store, http_route),
        optional(ctx, app, &routing.certificates.store, certificate),
    )
}

/// [`taken`] for a child the spec may not want.
async fn optional<K: Compact>(
    ctx: &Context,
    app: &MeteorApp,
    cache: &Cache<K>,
    desired: Option<&K>,
) -> Result<Option<String>, kube::Error> {
    match desired {
        Some(desired) => taken(ctx, app, cache, desired).await,
        None => Ok(None),
    }
}

/// The managed MongoDB's StatefulSet, Service, budget and NetworkPolicy. (Its credential
/// Secrets are created once: a name someone else holds is then theirs, and read as such.)
async fn of_mongo(
    ctx: &Context,
    app: &MeteorApp,
    tier: Option<&MongoTier>,
) -> Result<Option<String>, kube::Error> {
    let Some(tier) = tier else {
        return Ok(None);
    };
    first_taken!(
        taken(ctx, app, &ctx.statefulsets, &tier.statefulset),
        taken(ctx, app, &ctx.services, &tier.service),
        taken(ctx, app, &ctx.budgets, &tier.pdb),
        taken(ctx, app, &ctx.network_policies, &tier.network_policy),
    )
}
