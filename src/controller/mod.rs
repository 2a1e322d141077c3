//! The controller (`meteor-operator run`): watches MeteorApps and what they own, reconciles each
//! with bounded concurrency, serves metrics and health, and takes a leader Lease so that only one
//! replica acts. Every replica watches and caches from the start; only the leader reconciles.

mod admin;
pub(crate) mod apply;
pub mod cached;
pub mod client;
pub mod drift;
mod expected;
mod feed;
mod generations;
mod index;
mod leader;
mod listed;
pub mod memory;
mod metrics;
pub mod mongo;
mod namesakes;
mod observe;
mod optional;
pub mod pods;
mod reconcile;
mod referenced;
mod routing;
mod scale_down;
mod slots;

pub use apply::{APPLIED_HASH_ANNOTATION, Applier, Child, desired_hash, stamped};
pub use index::SharedIndex;
pub use leader::{LeaseSettings, holder_identity, lease_manager};
pub use listed::ListedApp;
pub use metrics::{Metrics, request_kind};
pub use optional::Optional;
pub use reconcile::{reconcile, reconcile_listed};
pub use slots::RolloutSlots;

use crate::build::PodMonitor;
use crate::build::meta::MANAGED_SELECTOR;
use crate::build::routing::{Certificate, HTTPRoute};
use crate::references::SourceKind;
use crate::status::routing::TlsSecretState;
use cached::{Cache, Cached};
use feed::Feed;
use futures::future::Shared;
use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{PredicateConfig, WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use pods::CachedPod;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::task::AbortOnDropHandle;

/// Command-line configuration of `meteor-operator run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Address of the admin endpoint (/metrics, /healthz, /readyz).
    #[arg(
        long,
        env = "METEOR_OPERATOR_ADMIN_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub admin_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "METEOR_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Take a Lease before acting, so several replicas can run with one active.
    #[arg(long, env = "METEOR_OPERATOR_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "METEOR_OPERATOR_LEASE_NAME",
        default_value = "meteor-operator"
    )]
    pub lease_name: String,
    /// Namespace of the Lease (default: the operator's own, from POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// MeteorApps reconciled at once.
    #[arg(long, env = "METEOR_OPERATOR_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "METEOR_OPERATOR_NAMESPACE")]
    pub namespace: Option<String>,
    /// Apps that may roll out a new operator version's pod template at once (an operator upgrade
    /// restarts the fleet this many apps at a time; users' own changes never wait).
    #[arg(long, env = "METEOR_OPERATOR_MAX_UPGRADE_ROLLOUTS", default_value_t = DEFAULT_UPGRADE_ROLLOUTS, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_upgrade_rollouts: u16,
    /// DNS domain of the cluster, for managed-MongoDB member host names.
    #[arg(long, env = "METEOR_OPERATOR_CLUSTER_DOMAIN", default_value = crate::build::mongo::DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
    /// Image of the proxy pods of apps that do not set `routing.proxy.image`: the operator's own
    /// (the chart passes its image here).
    #[arg(long, env = "METEOR_OPERATOR_PROXY_IMAGE", default_value = crate::build::routing::DEFAULT_PROXY_IMAGE)]
    pub proxy_image: String,
    /// The ClusterRole (get, list and watch on EndpointSlices) each app's proxies are bound to
    /// in the app's namespace: the chart installs it as `<release>-proxy` and passes its name.
    #[arg(long, env = "METEOR_OPERATOR_PROXY_CLUSTER_ROLE", default_value = crate::build::routing::DEFAULT_PROXY_CLUSTER_ROLE)]
    pub proxy_cluster_role: String,
    /// Seconds after SIGTERM that in-flight reconciles and the release of the Lease may take
    /// before the process exits anyway; keep it below the pod's terminationGracePeriodSeconds.
    #[arg(long, env = "METEOR_OPERATOR_SHUTDOWN_GRACE_SECONDS", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECONDS)]
    pub shutdown_grace_seconds: u64,
}

/// Default of `--shutdown-grace-seconds`: longer than the slowest managed-MongoDB step (a
/// step-down, 50 s), shorter than the chart's terminationGracePeriodSeconds (75).
pub const DEFAULT_SHUTDOWN_GRACE_SECONDS: u64 = 60;

/// Default of `--max-upgrade-rollouts`.
pub const DEFAULT_UPGRADE_ROLLOUTS: u16 = 2;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Failures that make a reconcile retry with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API request failed; `step` says what the reconcile was doing (the API's message names
    /// the object).
    #[error("{step}: {source}")]
    Api {
        step: Step,
        #[source]
        source: kube::Error,
    },
    #[error("the MeteorApp has no namespace")]
    MissingNamespace,
}

/// Where in a reconcile a request failed, in the user's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    References,
    TlsSecret,
    Namesakes,
    RollbackTarget,
    AppTier,
    Routing,
    Monitoring,
    Mongo,
    Status,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::References => "reading the Secrets and ConfigMaps the spec references",
            Step::TlsSecret => "reading the TLS Secret (routing.tls)",
            Step::Namesakes => "looking up names other owners may hold",
            Step::RollbackTarget => "reading the ReplicaSet to roll back to",
            Step::AppTier => "applying the app tier (Deployments, Service, budget, autoscaler)",
            Step::Routing => "applying the routing tier",
            Step::Monitoring => "applying the proxy pods' PodMonitor",
            Step::Mongo => "reconciling the managed MongoDB",
            Step::Status => "writing the status",
        })
    }
}

impl Error {
    /// Wraps a failed request of `step`.
    pub fn at(step: Step) -> impl Fn(kube::Error) -> Error + Copy {
        move |source| Error::Api { step, source }
    }

    /// Every value [`Error::metric_label`] gives, so the error series exist at 0 before the first
    /// error (a rate over a series that is absent is no data, not 0, on a dashboard).
    pub const METRIC_LABELS: [&'static str; 3] =
        ["api_status", "api_transport", "missing_namespace"];

    /// Stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Api {
                source: kube::Error::Api(_),
                ..
            } => "api_status",
            Error::Api { .. } => "api_transport",
            Error::MissingNamespace => "missing_namespace",
        }
    }
}

/// What every reconcile shares: the client, caches of owned children, events and metrics.
pub struct Context {
    pub client: Client,
    /// The one writer of children.
    pub applier: Applier,
    /// Upgrade slots (`--max-upgrade-rollouts`).
    pub slots: RolloutSlots,
    pub deployments: Cache<Deployment>,
    pub services: Cache<Service>,
    pub budgets: Cache<PodDisruptionBudget>,
    /// Managed-MongoDB StatefulSets (replicas and claim templates kept).
    pub statefulsets: Cache<StatefulSet>,
    /// Managed-MongoDB NetworkPolicies (metadata kept).
    pub network_policies: Cache<NetworkPolicy>,
    /// The Secrets the operator labelled (generated credentials, Mongo URLs, cookie keys): from
    /// a metadata watch, no Secret data is held.
    pub owned_secrets: Cache<Secret>,
    /// Which apps reference which Secrets and ConfigMaps, and what they resolved to.
    pub index: index::SharedIndex,
    /// When each app's newest generation arrived, for the lag to `observedGeneration`.
    pub generations: generations::Generations,
    /// Every Secret's and ConfigMap's resource version (names and versions only), so an app's
    /// unchanged references are not fetched again.
    pub secret_versions: Store<PartialObjectMeta<Secret>>,
    pub config_map_versions: Store<PartialObjectMeta<ConfigMap>>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Deployment-level knobs of managed MongoDB (the operator's namespace for NetworkPolicies).
    /// The routing tier's caches.
    pub routing: RoutingCaches,
    /// HorizontalPodAutoscalers (metadata and status kept).
    pub autoscalers: Cache<HorizontalPodAutoscaler>,
    /// The operator's pods (app, worker, proxy, Mongo), trimmed to what crash-loop detection and
    /// deletion costs read: a reconcile never LISTs pods, whose cost grows with every pod of the
    /// namespace. Their changes trigger nothing (the Deployments' do).
    pub pods: Store<CachedPod>,
    /// Port of the proxies' admin endpoint, read for open sessions before a scale-down.
    pub proxy_admin_port: u16,
    /// Deployment-level knobs of routing (the default proxy image).
    /// What the builders take from the operator's deployment (proxy image, namespace).
    pub build_options: crate::build::Options,
    /// Each TLS Secret's state at the resource version it was read at.
    tls_checks: Mutex<HashMap<index::Source, (String, TlsSecretState)>>,
    /// Consecutive failures per app, for exponential backoff.
    failures: Mutex<HashMap<ObjectRef<ListedApp>, u32>>,
    /// When each app's status was last written, for the last few seconds (see reconcile).
    status_writes: Mutex<HashMap<ObjectRef<ListedApp>, Instant>>,
}

impl Context {
    pub fn new(
        client: Client,
        deployments: Cache<Deployment>,
        services: Cache<Service>,
        budgets: Cache<PodDisruptionBudget>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let recorder = Recorder::new(client.clone(), Reporter::from("meteor-operator"));
        Self {
            applier: Applier::new(client.clone()),
            slots: RolloutSlots::new(usize::from(DEFAULT_UPGRADE_ROLLOUTS)),
            client,
            deployments,
            services,
            budgets,
            statefulsets: empty_store(),
            network_policies: empty_store(),
            owned_secrets: empty_store(),
            index: index::SharedIndex::default(),
            generations: generations::Generations::default(),
            secret_versions: empty_store(),
            config_map_versions: empty_store(),
            recorder,
            metrics,
            routing: RoutingCaches::empty(),
            autoscalers: empty_store(),
            pods: empty_store(),
            proxy_admin_port: crate::build::routing::ADMIN_PORT as u16,
            build_options: crate::build::Options::default(),
            tls_checks: Mutex::default(),
            failures: Mutex::default(),
            status_writes: Mutex::default(),
        }
    }

    /// With the managed-MongoDB caches of the running controller (default: empty, listed ones).
    pub fn with_mongo_caches(
        mut self,
        statefulsets: Cache<StatefulSet>,
        network_policies: Cache<NetworkPolicy>,
        owned_secrets: Cache<Secret>,
    ) -> Self {
        self.statefulsets = statefulsets;
        self.network_policies = network_policies;
        self.owned_secrets = owned_secrets;
        self
    }

    /// With the reference index and the versions of every Secret and ConfigMap (default: an
    /// empty index, so every reconcile fetches its references).
    pub fn with_references(
        mut self,
        index: index::SharedIndex,
        secret_versions: Store<PartialObjectMeta<Secret>>,
        config_map_versions: Store<PartialObjectMeta<ConfigMap>>,
    ) -> Self {
        self.index = index;
        self.secret_versions = secret_versions;
        self.config_map_versions = config_map_versions;
        self
    }

    /// With the routing tier's caches of the running controller (default: empty, listed ones,
    /// and no HTTPRoute or Certificate CRD).
    pub fn with_routing_caches(mut self, caches: RoutingCaches) -> Self {
        self.routing = caches;
        self
    }

    /// With the cache of the operator's pods (default: empty, listed).
    pub fn with_pods(mut self, pods: Store<CachedPod>) -> Self {
        self.pods = pods;
        self
    }

    /// With the cache of HorizontalPodAutoscalers (default: empty, listed).
    pub fn with_autoscalers(mut self, autoscalers: Cache<HorizontalPodAutoscaler>) -> Self {
        self.autoscalers = autoscalers;
        self
    }

    /// A TLS Secret's state, if it was read at `version`.
    fn tls_checked(&self, source: &index::Source, version: &str) -> Option<TlsSecretState> {
        let checks = self.tls_checks.lock().expect("lock is never poisoned");
        let (checked_at, state) = checks.get(source)?;
        (checked_at == version).then(|| state.clone())
    }

    /// Remembers a TLS Secret's state; entries of Secrets that changed or went are dropped.
    fn remember_tls_check(&self, source: index::Source, version: String, state: TlsSecretState) {
        let mut checks = self.tls_checks.lock().expect("lock is never poisoned");
        checks.retain(|source, (at, _)| self.current_version(source).as_ref() == Some(at));
        checks.insert(source, (version, state));
    }

    /// The resource version of a referenced object as the metadata watch last saw it.
    fn current_version(&self, (kind, namespace, name): &index::Source) -> Option<String> {
        match kind {
            SourceKind::Secret => version_in(&self.secret_versions, namespace, name),
            SourceKind::ConfigMap => version_in(&self.config_map_versions, namespace, name),
        }
    }

    /// Backoff after the n-th consecutive failure: 1 s doubling to 5 min.
    fn record_failure(&self, app: &ListedApp) -> Duration {
        let mut failures = self.failures.lock().expect("lock is never poisoned");
        let count = failures.entry(ObjectRef::from_obj(app)).or_insert(0);
        *count = count.saturating_add(1);
        Duration::from_secs((1u64 << (*count - 1).min(9)).min(300))
    }

    fn record_success(&self, app: &ListedApp) {
        self.failures
            .lock()
            .expect("lock is never poisoned")
            .remove(&ObjectRef::from_obj(app));
    }
}

/// The caches of the routing tier: Ingresses and the proxy's RBAC (metadata, and the Ingress's
/// status), HTTPRoutes and Certificates where the cluster has their CRDs.
pub struct RoutingCaches {
    pub ingresses: Cache<Ingress>,
    pub service_accounts: Cache<ServiceAccount>,
    pub role_bindings: Cache<RoleBinding>,
    pub http_routes: Optional<HTTPRoute>,
    pub certificates: Optional<Certificate>,
    /// The proxy pods' PodMonitors, where the cluster has the Prometheus Operator's CRD.
    pub pod_monitors: Optional<PodMonitor>,
}

impl RoutingCaches {
    /// Listed and empty, on a cluster without Gateway API or cert-manager.
    pub fn empty() -> Self {
        Self {
            ingresses: empty_store(),
            service_accounts: empty_store(),
            role_bindings: empty_store(),
            http_routes: Optional::absent(),
            certificates: Optional::absent(),
            pod_monitors: Optional::absent(),
        }
    }
}

fn error_policy(app: Arc<ListedApp>, error: &Error, ctx: Arc<Context>) -> Action {
    let backoff = ctx.record_failure(&app);
    tracing::warn!(app = %app.name_any(), namespace = ?app.namespace(), %error, ?backoff, "reconcile failed");
    Action::requeue(backoff)
}

/// Reconcile wrapped with metrics and backoff bookkeeping. An app that did not parse is
/// reported on its status and otherwise left alone.
async fn reconcile_measured(listed: Arc<ListedApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_listed(listed.clone(), ctx.clone()).await;
    ctx.metrics.reconciled(
        started.elapsed(),
        result.as_ref().err().map(Error::metric_label),
    );
    if result.is_ok() {
        ctx.record_success(&listed);
    }
    result
}

/// What the caches of referenced Secrets and ConfigMaps keep of each object (children: see
/// [`cached`]; pods: [`CachedPod::keep`]; MeteorApps: [`ListedApp`]); managedFields are often most of an object's bytes.
pub mod trim {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// A referenced Secret or ConfigMap: its identity and version, nothing else.
    pub fn version_only<K>(object: &mut PartialObjectMeta<K>) {
        let meta = std::mem::take(&mut object.metadata);
        object.metadata = ObjectMeta {
            name: meta.name,
            namespace: meta.namespace,
            resource_version: meta.resource_version,
            ..ObjectMeta::default()
        };
        object.types = None;
    }
}

fn version_in<K: Child>(store: &Store<K>, namespace: &str, name: &str) -> Option<String> {
    store
        .get(&ObjectRef::new(name).within(namespace))?
        .resource_version()
}

/// A store that has listed and holds nothing.
fn empty_store<K: Resource<DynamicType = ()> + Clone + 'static>() -> Store<K> {
    let (reader, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitDone);
    reader
}

/// Runs the controller until SIGTERM (or until the leader Lease is lost).
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    crate::build::mongo::set_cluster_domain(args.cluster_domain.clone());
    let metrics = Arc::new(Metrics::default());
    let client = client::build(kube::Config::infer().await?, metrics.clone())?;
    run_with(client, metrics, args, shutdown_signal()).await
}

/// [`run`] against `client` until `shutdown` resolves: the caches start at once, on every
/// replica; the reconciler once this replica holds the Lease. Losing the Lease exits the process.
///
/// Once `shutdown` resolves, in-flight reconciles and the release of the Lease get
/// `--shutdown-grace-seconds` at most, whatever state the process is in (API server slow or
/// gone, caches never synced, still waiting for the Lease); with no reconcile in flight it ends
/// at once.
pub async fn run_with(
    client: Client,
    metrics: Arc<Metrics>,
    args: RunArgs,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let readiness = Arc::new(admin::Readiness::default());
    // Bind before anything else, so a taken port fails the start instead of the probes.
    let admin_listener = tokio::net::TcpListener::bind(args.admin_addr).await?;
    tracing::info!(addr = %args.admin_addr, "admin endpoint listening");
    let _admin = AbortOnDropHandle::new(tokio::spawn(admin::serve(
        admin_listener,
        metrics.clone(),
        readiness.clone(),
    )));
    // A standby lists and watches too, so winning the Lease costs no LIST of every Secret,
    // ConfigMap and child before the first reconcile.
    let caches = Caches::start(&client, args.namespace.as_deref(), metrics.clone());
    // Ready once MeteorApps are listed: not while their CRD is missing or the API unreachable.
    let mut apps_listed = caches.apps_listed.clone();
    let _ready = AbortOnDropHandle::new(tokio::spawn({
        let readiness = readiness.clone();
        async move {
            if apps_listed.wait_for(|listed| *listed).await.is_ok() {
                readiness.set(true);
            }
        }
    }));

    let _release =
        AbortOnDropHandle::new(tokio::spawn(memory::keep_releasing(memory::RELEASE_EVERY)));

    let shutdown = shutdown.shared();
    let grace = Duration::from_secs(args.shutdown_grace_seconds);
    let apps_listed = caches.apps_listed.clone();
    // kube-runtime starts no reconcile before the MeteorApp cache is listed, and waits for that
    // listing before it stops: without this bound, SIGTERM would never end a process whose
    // MeteorApp CRD is missing. Unlisted, nothing is in flight and the process ends at once.
    let deadline = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.await;
            if *apps_listed.borrow() {
                tokio::time::sleep(grace).await;
                tracing::warn!(
                    ?grace,
                    "in-flight work did not end within the shutdown grace; exiting"
                );
            }
        }
    };
    tokio::select! {
        result = lead_and_reconcile(client, caches, args, metrics, shutdown) => result,
        () = deadline => Ok(()),
    }
}

/// Takes the Lease (unless `--leader-elect=false`), reconciles until `shutdown`, then releases it.
async fn lead_and_reconcile(
    client: Client,
    caches: Caches,
    args: RunArgs,
    metrics: Arc<Metrics>,
    shutdown: Shared<impl Future<Output = ()> + Send + Sync + 'static>,
) -> anyhow::Result<()> {
    let renewals = leader::Renewals::default();
    let lease = if args.leader_elect {
        let namespace = args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let settings = LeaseSettings::new(&args.lease_name, namespace);
        let mut backoff = feed::backoff();
        let lease_client = renewals.observe(client.clone());
        let (manager, identity) = loop {
            match lease_manager(lease_client.clone(), &settings).await {
                Ok(built) => break built,
                Err(error) => {
                    let retry = backoff.next().unwrap_or(Duration::from_secs(30));
                    tracing::warn!(%error, ?retry, "cannot read or create the leader Lease");
                    tokio::select! {
                        () = shutdown.clone() => return Ok(()),
                        () = tokio::time::sleep(retry) => {}
                    }
                }
            }
        };
        let (mut leading, task) = manager.watch().await;
        tracing::info!(lease = %args.lease_name, %identity, "waiting for the leader lease");
        tokio::select! {
            () = shutdown.clone() => return Ok(()),
            changed = leading.wait_for(|leader| *leader) => { changed?; }
        }
        tracing::info!(%identity, "acquired the leader lease");
        metrics.set_leader(true);
        Some((leading, task))
    } else {
        None
    };

    let controller = run_reconciler(client, caches, &args, metrics.clone(), shutdown);
    match lease {
        Some((mut leading, task)) => {
            tokio::select! {
                // SIGTERM: the controller drained its in-flight reconciles while this replica
                // still held the lease; only now is it released (dropping the receiver).
                () = controller => {}
                _ = leading.wait_for(|leader| !*leader) => {
                    // Another replica leads already: stop acting at once, mid-reconcile or not.
                    tracing::error!("lost the leader lease; exiting");
                    metrics.set_leader(false);
                    std::process::exit(1);
                }
                () = renewals.lapse(leader::RENEW_DEADLINE) => {
                    // A standby may take the Lease soon: stop acting before it can.
                    tracing::error!(deadline = ?leader::RENEW_DEADLINE, "could not renew the leader lease in time; exiting");
                    metrics.set_leader(false);
                    std::process::exit(1);
                }
            }
            drop(leading);
            metrics.set_leader(false);
            if let Ok(Err(error)) = task.await {
                tracing::warn!(%error, "releasing the leader lease failed");
            }
        }
        None => controller.await,
    }
    Ok(())
}

/// Every watch the controller needs, each keeping its cache current from process start. Their
/// changes reach the reconciler only once this replica leads (see [`feed`]).
struct Caches {
    apps: Store<ListedApp>,
    /// Whether MeteorApps were listed once. (Not `apps.wait_until_ready()`: kube-runtime wakes
    /// only one of the tasks waiting on it, and its controller is one.)
    apps_listed: tokio::sync::watch::Receiver<bool>,
    deployments: Cache<Deployment>,
    services: Cache<Service>,
    budgets: Cache<PodDisruptionBudget>,
    statefulsets: Cache<StatefulSet>,
    network_policies: Cache<NetworkPolicy>,
    owned_secrets: Cache<Secret>,
    /// Which apps reference each Secret/ConfigMap, kept from the same events as `apps`.
    index: index::SharedIndex,
    /// When each app's newest generation arrived, from the same events.
    generations: generations::Generations,
    /// The operator's writes the child caches have not shown yet (cleared by their watches).
    expected: Arc<expected::Expected>,
    secret_versions: Store<PartialObjectMeta<Secret>>,
    config_map_versions: Store<PartialObjectMeta<ConfigMap>>,
    routing: RoutingCaches,
    autoscalers: Cache<HorizontalPodAutoscaler>,
    pods: Store<CachedPod>,
    feeds: Feeds,
}

struct Feeds {
    apps: Feed<ListedApp>,
    deployments: Feed<Cached<Deployment>>,
    services: Feed<Cached<Service>>,
    budgets: Feed<Cached<PodDisruptionBudget>>,
    statefulsets: Feed<Cached<StatefulSet>>,
    network_policies: Feed<Cached<NetworkPolicy>>,
    owned_secrets: Feed<Cached<Secret>>,
    secrets: Feed<PartialObjectMeta<Secret>>,
    config_maps: Feed<PartialObjectMeta<ConfigMap>>,
    ingresses: Feed<Cached<Ingress>>,
    service_accounts: Feed<Cached<ServiceAccount>>,
    role_bindings: Feed<Cached<RoleBinding>>,
    http_routes: Feed<Cached<HTTPRoute>>,
    certificates: Feed<Cached<Certificate>>,
    pod_monitors: Feed<Cached<PodMonitor>>,
    autoscalers: Feed<Cached<HorizontalPodAutoscaler>>,
    /// Never opened: pod changes only keep the cache current.
    pods: Feed<CachedPod>,
}

impl Caches {
    /// Starts every watch (needs a Tokio runtime).
    fn start(client: &Client, namespace: Option<&str>, metrics: Arc<Metrics>) -> Self {
        let expected = Arc::new(expected::Expected::default());
        let owned = Owned {
            client,
            namespace,
            expected: &expected,
        };
        let (deployments, deployment_feed) = owned.cache(cached::event::<Deployment>);
        let (services, service_feed) = owned.cache(cached::event::<Service>);
        let (budgets, budget_feed) = owned.cache(cached::event::<PodDisruptionBudget>);
        let (statefulsets, statefulset_feed) = owned.cache(cached::event::<StatefulSet>);
        let (network_policies, network_policy_feed) = owned.cache(cached::event::<NetworkPolicy>);
        let (owned_secrets, owned_secret_feed) = owned.cache(cached::secret_event);
        let (ingresses, ingress_feed) = owned.cache(cached::event::<Ingress>);
        let (autoscalers, autoscaler_feed) = owned.cache(cached::event::<HorizontalPodAutoscaler>);
        let (pods, pod_feed) =
            owned.cache(|event: watcher::Event<CachedPod>| event.modify(CachedPod::keep));
        let (service_accounts, service_account_feed) = owned.cache(cached::event::<ServiceAccount>);
        let (role_bindings, role_binding_feed) = owned.cache(cached::event::<RoleBinding>);
        let (http_routes, http_route_feed) = optional::start::<HTTPRoute>(
            client,
            namespace,
            "httproutes.gateway.networking.k8s.io",
            MANAGED_SELECTOR,
            &expected,
        );
        let (certificates, certificate_feed) = optional::start::<Certificate>(
            client,
            namespace,
            "certificates.cert-manager.io",
            MANAGED_SELECTOR,
            &expected,
        );
        let (pod_monitors, pod_monitor_feed) = optional::start::<PodMonitor>(
            client,
            namespace,
            "podmonitors.monitoring.coreos.com",
            MANAGED_SELECTOR,
            &expected,
        );
        // MeteorApps are cached as compact JSON, without managedFields (see `ListedApp`).
        let (apps, app_writer) = reflector::store();
        let (listed, apps_listed) = tokio::sync::watch::channel(false);
        let index = index::SharedIndex::default();
        let generations = generations::Generations::default();
        let app_events = watcher(scoped_api::<ListedApp>(client, namespace), watch_config())
            .backoff(feed::backoff())
            .reflect(app_writer)
            .inspect(index.observer())
            .inspect(generations.observer())
            // A deleted app's series go at once (a plain delete is never reconciled).
            .inspect(move |event| {
                if let Ok(watcher::Event::Delete(listed)) = event
                    && let Ok(app) = listed.parsed()
                {
                    metrics.app_deleted(&app);
                }
            })
            .inspect(move |event| {
                if matches!(event, Ok(watcher::Event::InitDone)) {
                    listed.send_replace(true);
                }
            });
        let (secret_versions, secret_feed) = versions_cache::<Secret>(client, namespace);
        let (config_map_versions, config_map_feed) = versions_cache::<ConfigMap>(client, namespace);
        Self {
            deployments,
            services,
            budgets,
            statefulsets,
            network_policies,
            owned_secrets,
            index,
            generations,
            expected,
            secret_versions,
            config_map_versions,
            routing: RoutingCaches {
                ingresses,
                service_accounts,
                role_bindings,
                http_routes,
                certificates,
                pod_monitors,
            },
            autoscalers,
            pods,
            feeds: Feeds {
                // The replica that starts to lead first gets every cached app: each is
                // reconciled once at once, whatever happened while it stood by.
                apps: feed::spawn("MeteorApp".into(), app_events, Some(apps.clone())),
                deployments: deployment_feed,
                services: service_feed,
                budgets: budget_feed,
                // Managed-MongoDB StatefulSets: a member pod becoming ready triggers the next step.
                statefulsets: statefulset_feed,
                network_policies: network_policy_feed,
                owned_secrets: owned_secret_feed,
                // Referenced Secrets and ConfigMaps: names and versions only (no Secret data
                // is held in memory).
                secrets: secret_feed,
                config_maps: config_map_feed,
                // The routing tier: a proxy pod ready, an Ingress address, a route accepted.
                ingresses: ingress_feed,
                service_accounts: service_account_feed,
                role_bindings: role_binding_feed,
                http_routes: http_route_feed,
                certificates: certificate_feed,
                pod_monitors: pod_monitor_feed,
                // The autoscaler's status: Autoscaled follows it.
                autoscalers: autoscaler_feed,
                pods: pod_feed,
            },
            apps,
            apps_listed,
        }
    }
}

/// Reconciles from `caches` until `stop` resolves.
async fn run_reconciler(
    client: Client,
    caches: Caches,
    args: &RunArgs,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let Caches {
        apps: app_store,
        apps_listed: _,
        deployments,
        services,
        budgets,
        statefulsets,
        network_policies,
        owned_secrets,
        index: app_index,
        generations,
        expected,
        secret_versions,
        config_map_versions,
        routing,
        autoscalers,
        pods,
        feeds,
    } = caches;
    // A kind installed while the operator runs: the apps that waited for it get it at once.
    let kinds_installed = futures::stream::select_all([
        routing.http_routes.installed_later().boxed(),
        routing.certificates.installed_later().boxed(),
        routing.pod_monitors.installed_later().boxed(),
    ]);
    let mut ctx = Context::new(client, deployments, services, budgets, metrics)
        .with_mongo_caches(statefulsets, network_policies, owned_secrets)
        .with_references(app_index.clone(), secret_versions, config_map_versions)
        .with_routing_caches(routing)
        .with_autoscalers(autoscalers)
        .with_pods(pods);
    ctx.generations = generations;
    // Kept for as long as the controller runs: dropping it would stop the pod watch.
    let _pods = feeds.pods;
    ctx.build_options.routing.proxy_image = args.proxy_image.clone();
    ctx.build_options.routing.proxy_cluster_role = args.proxy_cluster_role.clone();
    ctx.slots = RolloutSlots::new(usize::from(args.max_upgrade_rollouts));
    ctx.applier = Applier::new(ctx.client.clone()).expecting(expected);
    // Only operator pods of the operator's own namespace pass managed-MongoDB NetworkPolicies.
    ctx.build_options.mongo.operator_namespace = std::env::var("POD_NAMESPACE").ok();
    let ctx = Arc::new(ctx);
    // At rest no write sweeps the memories of the last burst of writes: this does, before the
    // free pages go back (`memory::keep_releasing`).
    let _forget = AbortOnDropHandle::new(tokio::spawn({
        let ctx = ctx.clone();
        async move {
            let mut ticks = tokio::time::interval(memory::RELEASE_EVERY);
            loop {
                ticks.tick().await;
                ctx.forget_expired();
            }
        }
    }));
    let app_events = feeds
        .apps
        .open()
        // Only spec changes trigger: our own status writes must not (children, referenced
        // objects and the resync timer cover everything else).
        .predicate_filter(predicates::generation, PredicateConfig::default());
    Controller::for_stream(app_events, app_store.clone())
        .owns_stream(feeds.deployments.open())
        .owns_stream(feeds.services.open())
        .owns_stream(feeds.budgets.open())
        .owns_stream(feeds.statefulsets.open())
        .owns_stream(feeds.network_policies.open())
        .owns_stream(feeds.owned_secrets.open())
        .owns_stream(feeds.ingresses.open())
        .owns_stream(feeds.service_accounts.open())
        .owns_stream(feeds.role_bindings.open())
        .owns_stream(feeds.http_routes.open())
        .owns_stream(feeds.certificates.open())
        .owns_stream(feeds.pod_monitors.open())
        .owns_stream(feeds.autoscalers.open())
        .watches_stream(
            feeds.secrets.open(),
            referencing_apps(app_index.clone(), SourceKind::Secret),
        )
        .watches_stream(
            feeds.config_maps.open(),
            referencing_apps(app_index, SourceKind::ConfigMap),
        )
        .reconcile_all_on(kinds_installed)
        .with_config(controller::Config::default().concurrency(args.concurrency))
        .graceful_shutdown_on(stop)
        .run(reconcile_measured, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "controller event");
            }
        })
        .await;
    tracing::info!("controller stopped");
}

fn scoped_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = ()>,
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Objects per page of a cache's initial list.
pub const LIST_PAGE: u32 = 100;

/// The watch of every cache. Its initial list (at start-up, and again when a watch expires) comes
/// in pages of [`LIST_PAGE`] objects, each trimmed into the cache before the next is read, so a
/// restart's memory peak is a page per kind rather than every object of the fleet at once:
/// measured on the loopback control plane with 500 apps and their proxies, whole lists
/// (`resourceVersion=0`, which the API server answers from its cache, but in one piece: it
/// ignores `limit` there) took a restarted operator to 110 MiB.
pub(crate) fn watch_config() -> watcher::Config {
    watcher::Config::default().page_size(LIST_PAGE)
}

/// Where the caches of owned children come from.
struct Owned<'a> {
    client: &'a Client,
    namespace: Option<&'a str>,
    expected: &'a Arc<expected::Expected>,
}

impl Owned<'_> {
    /// A cache of one kind of child (selected by our managed-by label), each object kept as
    /// `keep` makes it, and the feed of its changes; each event, once stored, clears what
    /// `expected` held for it.
    fn cache<K: Child, C>(
        &self,
        keep: fn(watcher::Event<K>) -> watcher::Event<C>,
    ) -> (Store<C>, Feed<C>)
    where
        C: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let (reader, writer) = reflector::store();
        let events = watcher(
            scoped_api::<K>(self.client, self.namespace),
            watch_config().labels(MANAGED_SELECTOR),
        )
        .backoff(feed::backoff())
        .map_ok(keep)
        .reflect(writer)
        .inspect(self.expected.observer::<C>());
        (reader, feed::spawn(K::kind(&()).into_owned(), events, None))
    }
}

/// The version of every Secret or ConfigMap (metadata-only watch, trimmed to name and version),
/// and the feed of their changes, to find and re-resolve the apps that reference them.
fn versions_cache<K>(
    client: &Client,
    namespace: Option<&str>,
) -> (Store<PartialObjectMeta<K>>, Feed<PartialObjectMeta<K>>)
where
    K: Child,
{
    let (reader, writer) = reflector::store();
    let events = watcher(
        scoped_api::<PartialObjectMeta<K>>(client, namespace),
        watch_config(),
    )
    .backoff(feed::backoff())
    .modify(trim::version_only)
    .reflect(writer);
    (reader, feed::spawn(K::kind(&()).into_owned(), events, None))
}

/// Maps a changed Secret/ConfigMap to the MeteorApps in its namespace that reference it.
fn referencing_apps<K: Resource>(
    apps: index::SharedIndex,
    kind: SourceKind,
) -> impl Fn(K) -> Vec<ObjectRef<ListedApp>> + Send + Sync + 'static {
    move |object: K| match object.namespace() {
        Some(namespace) => apps.apps(kind, &namespace, &object.name_any()),
        None => Vec::new(),
    }
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
