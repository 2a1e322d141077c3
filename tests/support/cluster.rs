//! A whole app's children as a previous reconcile left them, in the caches of a test Context:
//! the routing tier's objects included, so tests of later tiers start from a routed app. One
//! reconcile (or any other visit of the Context) runs over them against a request script:
//! `Cluster::applied(&app, 2).reconcile(app, script)`.

use super::{Expect, Transcript, desired_children, mock_client, mock_saw_exactly};
use super::{cache_of, rolled_out, store_of};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use meteor_operator::api::{MeteorApp, MeteorAppStatus};
use meteor_operator::build::routing::{Certificate, HTTPRoute};
use meteor_operator::build::{Desired, PodMonitor};
use meteor_operator::controller::cached::{self, Compact};
use meteor_operator::controller::{
    Context, Metrics, Optional, RolloutSlots, RoutingCaches, stamped,
};
use meteor_operator::status::routing::RoutingObservation;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Every object a previous reconcile of `app` left, as the caches hold them.
#[derive(Clone, Default)]
pub struct Cluster {
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
    pub budgets: Vec<PodDisruptionBudget>,
    pub accounts: Vec<ServiceAccount>,
    pub bindings: Vec<RoleBinding>,
    pub ingresses: Vec<Ingress>,
    pub routes: Vec<HTTPRoute>,
    pub certificates: Vec<Certificate>,
    pub pod_monitors: Vec<PodMonitor>,
    /// The operator's Secrets (metadata only): the cookie Secret.
    pub secrets: Vec<PartialObjectMeta<Secret>>,
    /// Whether the cluster has Gateway API's and cert-manager's CRDs.
    pub gateway_api: bool,
    pub cert_manager: bool,
    /// Whether the cluster has the Prometheus Operator's PodMonitor CRD.
    pub prometheus_operator: bool,
    pub autoscalers: Vec<HorizontalPodAutoscaler>,
    /// Where the proxies' admin endpoints listen (default: the proxy's port).
    pub admin_port: Option<u16>,
    /// The cache of the operator's pods.
    pub pods: Vec<meteor_operator::controller::pods::CachedPod>,
    /// The managed-MongoDB tier's StatefulSets and NetworkPolicies (its Service and PDB are with
    /// the others).
    pub statefulsets: Vec<StatefulSet>,
    pub network_policies: Vec<NetworkPolicy>,
    /// Upgrade slots of the operator (default: the operator's default).
    pub slots: Option<usize>,
}

impl Cluster {
    /// What a reconcile of `app` applied, its app pods rolled out and `proxy_ready` proxies ready.
    pub fn applied(app: &MeteorApp, proxy_ready: i32) -> Self {
        Self::from_desired(app, desired_children(app), proxy_ready)
    }

    /// What a reconcile of `app` applied, everything since rolled out: its pods and proxies ready.
    pub fn settled(app: &MeteorApp) -> Self {
        let proxies = meteor_operator::build::routing::proxy_replicas(app).unwrap_or(0);
        Self::applied(app, proxies)
    }

    /// What a reconcile of `app` applied when it built `desired` (its references read as they
    /// were then), its app pods rolled out and `proxy_ready` proxies ready.
    pub fn from_desired(app: &MeteorApp, desired: Desired, proxy_ready: i32) -> Self {
        let mut cluster = Cluster {
            deployments: vec![rolled_out(stamped(desired.app), app.spec.replicas)],
            services: vec![stamped(desired.service)],
            budgets: desired.disruption_budget.into_iter().map(stamped).collect(),
            ..Cluster::default()
        };
        let routing = desired.routing;
        if let Some(proxy) = routing.proxy {
            let mut deployment = rolled_out(stamped(proxy.deployment), 2);
            let status = deployment.status.as_mut().unwrap();
            status.ready_replicas = Some(proxy_ready);
            cluster.deployments.push(deployment);
            cluster.services.push(stamped(proxy.app_service));
            cluster.budgets.extend(proxy.disruption_budget.map(stamped));
            cluster.accounts.push(stamped(proxy.service_account));
            cluster.bindings.push(stamped(proxy.role_binding));
            let cookie = meteor_operator::build::routing::cookie_secret(app, "00");
            cluster.secrets.push(PartialObjectMeta {
                metadata: cookie.metadata,
                ..Default::default()
            });
        }
        cluster.ingresses.extend(routing.ingress.map(stamped));
        cluster.routes.extend(routing.http_route.map(stamped));
        cluster
            .certificates
            .extend(routing.certificate.map(stamped));
        cluster.autoscalers.extend(desired.autoscaler.map(stamped));
        cluster
            .pod_monitors
            .extend(desired.pod_monitor.map(stamped));
        cluster
    }

    /// Nothing in any cache: a first visit.
    pub fn empty() -> Self {
        Self::default()
    }

    /// With `deployment` in the cache too (a worker, a foreign namesake ...).
    pub fn with_deployment(mut self, deployment: Deployment) -> Self {
        self.deployments.push(deployment);
        self
    }

    /// With the app Deployment (the first one) as `edit` makes it.
    pub fn app_deployment(mut self, edit: impl FnOnce(Deployment) -> Deployment) -> Self {
        let deployment = self.deployments.remove(0);
        self.deployments.insert(0, edit(deployment));
        self
    }

    /// With `pods` (JSON, as the API returns them) in the cache of the operator's pods.
    pub fn with_pods(mut self, pods: Vec<serde_json::Value>) -> Self {
        self.pods.extend(super::cached_pods(pods));
        self
    }

    /// With `other`'s objects in the caches too: two apps' children side by side.
    pub fn and(mut self, other: Cluster) -> Self {
        self.deployments.extend(other.deployments);
        self.services.extend(other.services);
        self.budgets.extend(other.budgets);
        self.accounts.extend(other.accounts);
        self.bindings.extend(other.bindings);
        self.ingresses.extend(other.ingresses);
        self.routes.extend(other.routes);
        self.certificates.extend(other.certificates);
        self.pod_monitors.extend(other.pod_monitors);
        self.secrets.extend(other.secrets);
        self.autoscalers.extend(other.autoscalers);
        self.pods.extend(other.pods);
        self.statefulsets.extend(other.statefulsets);
        self.network_policies.extend(other.network_policies);
        self.gateway_api |= other.gateway_api;
        self.cert_manager |= other.cert_manager;
        self.prometheus_operator |= other.prometheus_operator;
        self.admin_port = self.admin_port.or(other.admin_port);
        self.slots = self.slots.or(other.slots);
        self
    }

    /// With `slots` upgrade slots.
    pub fn slots(mut self, slots: usize) -> Self {
        self.slots = Some(slots);
        self
    }

    /// One reconcile of `app` over this cluster against `script`, checked to have made exactly
    /// those requests and to have succeeded.
    pub async fn reconcile(self, app: MeteorApp, script: Vec<Expect>) -> Transcript {
        let (result, transcript) = self.run(app, script).await;
        result.expect("reconcile succeeds");
        transcript
    }

    /// One reconcile of `app` over this cluster against `script`, checked to have made exactly
    /// those requests; what it returned.
    pub async fn run(
        self,
        app: MeteorApp,
        script: Vec<Expect>,
    ) -> (
        Result<Action, meteor_operator::controller::Error>,
        Transcript,
    ) {
        self.visit(script, |ctx| {
            meteor_operator::controller::reconcile(Arc::new(app), ctx)
        })
        .await
    }

    /// `visit` over a Context of this cluster whose client follows `script` (within 10 s),
    /// then a check that the mock saw exactly the script: what `visit` returned.
    pub async fn visit<T, F, Fut>(self, script: Vec<Expect>, visit: F) -> (T, Transcript)
    where
        F: FnOnce(Arc<Context>) -> Fut,
        Fut: Future<Output = T>,
    {
        let n = script.len();
        let (client, transcript, task) = mock_client(script);
        let result = tokio::time::timeout(Duration::from_secs(10), visit(self.context(client)))
            .await
            .expect("the visit finished in time");
        mock_saw_exactly(&transcript, task, n).await;
        (result, transcript)
    }

    pub fn context(self, client: kube::Client) -> Arc<Context> {
        let mut ctx = Context::new(
            client,
            cache_of(self.deployments),
            cache_of(self.services),
            cache_of(self.budgets),
            Arc::new(Metrics::default()),
        )
        .with_mongo_caches(
            cache_of(self.statefulsets),
            cache_of(self.network_policies),
            store_of(self.secrets.into_iter().map(cached::secret).collect()),
        )
        .with_routing_caches(RoutingCaches {
            ingresses: cache_of(self.ingresses),
            service_accounts: cache_of(self.accounts),
            role_bindings: cache_of(self.bindings),
            http_routes: optional(self.gateway_api, self.routes),
            certificates: optional(self.cert_manager, self.certificates),
            pod_monitors: optional(self.prometheus_operator, self.pod_monitors),
        })
        .with_autoscalers(cache_of(self.autoscalers))
        .with_pods(store_of(self.pods));
        if let Some(port) = self.admin_port {
            ctx.proxy_admin_port = port;
        }
        if let Some(slots) = self.slots {
            ctx.slots = RolloutSlots::new(slots);
        }
        Arc::new(ctx)
    }
}

/// A cache of a kind whose CRD the cluster has, or lacks.
fn optional<K: Compact>(installed: bool, objects: Vec<K>) -> Optional<K> {
    if installed {
        Optional::installed_with(cache_of(objects))
    } else {
        Optional::absent()
    }
}

/// The next reconcile of `app` over what its last one applied ([`Cluster::settled`]) against
/// `script`, checked to have made exactly those requests and to have succeeded.
pub async fn reconcile_again(app: &MeteorApp, script: Vec<Expect>) -> Transcript {
    Cluster::settled(app).reconcile(app.clone(), script).await
}

pub fn earlier() -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap())
}

/// The status a reconcile wrote for `app` once it saw `seen`.
pub fn settled(app: &MeteorApp, seen: &RoutingObservation) -> MeteorAppStatus {
    let deployment = rolled_out(stamped(desired_children(app).app), app.spec.replicas);
    use meteor_operator::status::{self, RolloutState, Verdict};
    let mut status = status::compute(
        app,
        &Verdict::Applied(RolloutState::AsSpecified),
        Some(&deployment),
        None,
        Some(history(&deployment)),
        &earlier(),
    );
    meteor_operator::status::routing::fold_status(&mut status, app, Some(seen), &earlier());
    status
}

fn history(deployment: &Deployment) -> meteor_operator::api::RolloutStatus {
    let facts = meteor_operator::plan::TierFacts::of(deployment);
    meteor_operator::api::RolloutStatus {
        available_template: facts.template,
        available_image: facts.image,
        ..Default::default()
    }
}
