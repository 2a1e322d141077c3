//! A whole app's children as a previous reconcile left them, in the caches of a test Context:
//! the routing tier's objects included, so tests of later tiers start from a routed app.

use super::{desired_children, rolled_out, store_of};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::PartialObjectMeta;
use meteor_operator::api::{MeteorApp, MeteorAppStatus};
use meteor_operator::build::routing::{Certificate, HTTPRoute};
use meteor_operator::controller::{Context, Metrics, Optional, RoutingCaches, stamped};
use meteor_operator::status::routing::RoutingObservation;
use std::sync::Arc;

/// Every object a previous reconcile of `app` left, as the caches hold them.
#[derive(Default)]
pub struct Cluster {
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
    pub budgets: Vec<PodDisruptionBudget>,
    pub accounts: Vec<ServiceAccount>,
    pub roles: Vec<Role>,
    pub bindings: Vec<RoleBinding>,
    pub ingresses: Vec<Ingress>,
    pub routes: Vec<HTTPRoute>,
    pub certificates: Vec<Certificate>,
    /// The operator's Secrets (metadata only): the cookie Secret.
    pub secrets: Vec<PartialObjectMeta<Secret>>,
    /// Whether the cluster has Gateway API's and cert-manager's CRDs.
    pub gateway_api: bool,
    pub cert_manager: bool,
    pub autoscalers: Vec<HorizontalPodAutoscaler>,
    /// Where the proxies' admin endpoints listen (default: the proxy's port).
    pub admin_port: Option<u16>,
    /// The cache of the operator's pods.
    pub pods: Vec<meteor_operator::controller::pods::CachedPod>,
}

impl Cluster {
    /// What a reconcile of `app` applied, its app pods rolled out and `proxy_ready` proxies ready.
    pub fn applied(app: &MeteorApp, proxy_ready: i32) -> Self {
        let desired = desired_children(app);
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
            cluster.roles.push(stamped(proxy.role));
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
    }

    /// One reconcile of `app` over this cluster against `script`, checked to have made exactly
    /// those requests.
    pub async fn reconcile(self, app: MeteorApp, script: Vec<super::Expect>) -> super::Transcript {
        let n = script.len();
        let (client, transcript, task) = super::mock_client(script);
        let ctx = self.context(client);
        super::reconcile_with(app, ctx, &transcript, task, n)
            .await
            .expect("reconcile succeeds");
        transcript
    }

    pub fn context(self, client: kube::Client) -> Arc<Context> {
        let mut ctx = Context::new(
            client,
            store_of(self.deployments),
            store_of(self.services),
            store_of(self.budgets),
            Arc::new(Metrics::default()),
        )
        .with_mongo_caches(store_of(vec![]), store_of(vec![]), store_of(self.secrets))
        .with_routing_caches(RoutingCaches {
            ingresses: store_of(self.ingresses),
            service_accounts: store_of(self.accounts),
            roles: store_of(self.roles),
            role_bindings: store_of(self.bindings),
            http_routes: optional(self.gateway_api, self.routes),
            certificates: optional(self.cert_manager, self.certificates),
        })
        .with_autoscalers(store_of(self.autoscalers))
        .with_pods(store_of(self.pods));
        if let Some(port) = self.admin_port {
            ctx.proxy_admin_port = port;
        }
        Arc::new(ctx)
    }
}

/// A cache of a kind whose CRD the cluster has, or lacks.
fn optional<K: meteor_operator::controller::Child>(
    installed: bool,
    objects: Vec<K>,
) -> Optional<K> {
    if installed {
        Optional::installed_with(store_of(objects))
    } else {
        Optional::absent()
    }
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
