//! One test per tier, read as the spec: given this MeteorApp and these observations (its children
//! as the caches hold them), this `Desired` (`build::desired`), this plan (`plan::decide` on the
//! `RolloutFacts` a reconcile gathers, or the tier's own pure decision) and these conditions
//! (`status::of_pass`). Pure: no API server, no clock.

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use meteor_operator::api::{MeteorApp, MeteorAppStatus};
use meteor_operator::build::{Desired, template_hash};
use meteor_operator::controller::{desired_hash, stamped};
use meteor_operator::plan::{self, RolloutFacts, RolloutPlan, TierFacts, TierWants};
use meteor_operator::status::monitoring::MonitorState;
use meteor_operator::status::routing::RoutingObservation;
use meteor_operator::status::{self, PassReport, RolloutState, Verdict};
use support::cluster::Cluster;
use support::{app, desired_children, rolled_out, stuck};

/// When this pass's status is computed.
fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_600).unwrap())
}

/// What one tier's Deployment is asked to become, as a reconcile tells the plan.
fn wants(deployment: &Deployment) -> TierWants {
    let facts = TierFacts::of(deployment);
    TierWants {
        template: facts.template.unwrap_or_default(),
        config: facts.config.unwrap_or_default(),
        image: facts.image.unwrap_or_default(),
        applied: desired_hash(deployment),
    }
}

/// What the rollout plan looks at: the desired Deployments, the cached ones, the app's
/// generation and the rollout history its status keeps.
fn rollout_facts<'a>(
    app: &'a MeteorApp,
    desired: &Desired,
    cached_app: Option<&Deployment>,
    cached_worker: Option<&Deployment>,
) -> RolloutFacts<'a> {
    RolloutFacts {
        rollout: &app.spec.rollout,
        app: wants(&desired.app),
        observed_app: cached_app.map(TierFacts::of),
        worker: desired
            .worker
            .as_ref()
            .map(|w| (wants(w), cached_worker.map(TierFacts::of))),
        generation: app.metadata.generation,
        status_generation: app.status.as_ref().and_then(|s| s.observed_generation),
        history: app.status.as_ref().and_then(|s| s.rollout.as_ref()),
        crash_loop: None,
    }
}

/// A pass that applied what the spec asks for, saw the app and worker Deployments as given and
/// the way in as `routing`; the tiers not named were not there to see.
fn applied<'a>(
    verdict: &'a Verdict,
    app: Option<&'a Deployment>,
    routing: &'a RoutingObservation,
) -> PassReport<'a> {
    PassReport {
        verdict,
        app,
        worker: None,
        history: None,
        mongo: None,
        routing: Some(routing),
        autoscaler: None,
        pod_monitor: None,
    }
}

const AS_SPECIFIED: Verdict = Verdict::Applied(RolloutState::AsSpecified);

/// A condition as (type, status, reason).
type Said<'a> = (&'a str, &'a str, &'a str);

/// What the core says of an app whose pods all run the spec and serve.
const READY: Said = ("Ready", "True", "AllReplicasReady");
const ROLLED_OUT: Said = ("Progressing", "False", "RolloutComplete");
const NO_PROBLEM: Said = ("Degraded", "False", "AsExpected");
/// The way in, when nothing in front of the front Service waits for anyone.
const ROUTED: Said = ("Routed", "True", "Routed");

/// The status step of this pass.
fn pass(app: &MeteorApp, report: PassReport) -> MeteorAppStatus {
    status::of_pass(app, report, &now())
}

/// Every condition, in the status's order.
fn conditions(status: &MeteorAppStatus) -> Vec<Said<'_>> {
    status
        .conditions
        .iter()
        .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
        .collect()
}

fn message<'a>(status: &'a MeteorAppStatus, type_: &str) -> &'a str {
    &status::find(Some(status), type_)
        .unwrap_or_else(|| panic!("no {type_} condition"))
        .message
}

fn replicas(deployment: &Deployment) -> Option<i32> {
    deployment.spec.as_ref()?.replicas
}

fn image(deployment: &Deployment) -> &str {
    let pod = deployment.spec.as_ref().unwrap().template.spec.as_ref();
    pod.unwrap().containers[0].image.as_deref().unwrap()
}

fn env<'a>(
    deployment: &'a Deployment,
    name: &str,
) -> Option<&'a k8s_openapi::api::core::v1::EnvVar> {
    let pod = deployment.spec.as_ref()?.template.spec.as_ref()?;
    pod.containers[0]
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
}

/// Which pods a Service sends to (`app.kubernetes.io/component`).
fn selects(service: &Service) -> &str {
    let selector = service.spec.as_ref().unwrap().selector.as_ref().unwrap();
    &selector["app.kubernetes.io/component"]
}

fn name<K: kube::Resource>(object: &K) -> &str {
    object.meta().name.as_deref().unwrap()
}

/// The app tier: one Deployment of the user's image behind the front Service, rolled out as the
/// spec says, and rolled back to the last available template when a rollout never gets healthy.
#[test]
fn the_app_tier() {
    // Given: todos at 3 replicas, its Mongo URL from a Secret, nothing in front.
    let app = app().replicas(3).build();

    // This Desired: the app Deployment, the front Service on the app pods and a disruption
    // budget; no other tier.
    let desired = desired_children(&app);
    assert_eq!(name(&desired.app), "todos");
    assert_eq!(replicas(&desired.app), Some(3));
    assert_eq!(image(&desired.app), "ghcr.io/example/todos:1.0.0");
    assert_eq!(name(&desired.service), "todos");
    assert_eq!(selects(&desired.service), "app");
    assert!(desired.disruption_budget.is_some());
    assert!(desired.worker.is_none());
    assert!(desired.routing.proxy.is_none() && desired.routing.ingress.is_none());
    assert!(desired.autoscaler.is_none() && desired.mongo.is_none());
    let seen = RoutingObservation::default();

    // Observed: nothing yet. Plan: apply. Conditions: waiting for the pods.
    let facts = rollout_facts(&app, &desired, None, None);
    assert_eq!(plan::decide(&facts), RolloutPlan::Apply);
    let status = pass(&app, applied(&AS_SPECIFIED, None, &seen));
    assert_eq!(
        conditions(&status),
        [
            ("Ready", "False", "WaitingForReplicas"),
            ("Progressing", "True", "RollingOut"),
            NO_PROBLEM,
            ROUTED,
        ]
    );
    assert_eq!(message(&status, "Ready"), "0/3 app processes ready");

    // Observed: the Deployment as applied, its 3 pods available. Plan: apply (it is as wanted).
    // Conditions: Ready, and the history remembers this template as the last available one.
    let cached = Cluster::applied(&app, 0).deployments.remove(0);
    let facts = rollout_facts(&app, &desired, Some(&cached), None);
    assert_eq!(plan::decide(&facts), RolloutPlan::Apply);
    let history = plan::next_history(&facts, &RolloutPlan::Apply);
    let template = template_hash(&desired.app).map(String::from);
    assert_eq!(history.as_ref().unwrap().available_template, template);
    let status = pass(
        &app,
        PassReport {
            history,
            ..applied(&AS_SPECIFIED, Some(&cached), &seen)
        },
    );
    assert_eq!(
        conditions(&status),
        [READY, ROLLED_OUT, NO_PROBLEM, ROUTED,]
    );
    assert_eq!(status.replica_summary.as_deref(), Some("3/3"));

    // Given: the spec moves to image 2 while image 1 is remembered as available. Observed: the
    // new template's rollout passed its progress deadline. Plan: back to image 1's template.
    // Conditions: Degraded says what failed and what runs.
    let v1 = cached;
    let app = support::app()
        .replicas(3)
        .settled_over(&v1)
        .image("ghcr.io/example/todos:2")
        .generation(2)
        .build();
    let desired = desired_children(&app);
    let failing = stuck(stamped(desired.app.clone()));
    let facts = rollout_facts(&app, &desired, Some(&failing), None);
    let decision = plan::decide(&facts);
    assert_eq!(
        decision,
        RolloutPlan::RollBack {
            to: TierFacts::of(&v1).template.unwrap(),
            failure: "no progress within rollout.progressDeadlineSeconds (900 s)".into(),
        }
    );
    let history = plan::next_history(&facts, &decision).unwrap();
    assert_eq!(
        history.failed_image.as_deref(),
        Some("ghcr.io/example/todos:2")
    );
    assert_eq!(
        history.available_image.as_deref(),
        Some("ghcr.io/example/todos:1.0.0")
    );
    let rolled_back = Verdict::Applied(RolloutState::RolledBack {
        failed_image: history.failed_image.clone().unwrap(),
        good_image: history.available_image.clone().unwrap(),
        failure: history.failure.clone().unwrap(),
    });
    let status = pass(
        &app,
        PassReport {
            history: Some(history),
            ..applied(&rolled_back, Some(&failing), &seen)
        },
    );
    assert_eq!(
        conditions(&status),
        [
            ("Ready", "False", "RolloutStuck"),
            ("Progressing", "True", "RolledBack"),
            ("Degraded", "True", "RolledBack"),
            ROUTED,
        ]
    );
    assert_eq!(
        message(&status, "Degraded"),
        "rolled back: image ghcr.io/example/todos:2 failed (no progress within \
         rollout.progressDeadlineSeconds (900 s)); running ghcr.io/example/todos:1.0.0, the last \
         template that was fully available, until the spec changes"
    );
}

/// The worker tier: the same image without traffic; `Ready` waits for the workers too, and a new
/// operator version that changes only the worker's template waits for an upgrade slot.
#[test]
fn the_worker_tier() {
    // Given: todos with one worker.
    let app = app().workers(1).settled().build();

    // This Desired: a worker Deployment `todos-worker` of one pod of the app's image, which no
    // Service selects.
    let desired = desired_children(&app);
    let worker = desired.worker.clone().expect("a worker Deployment");
    assert_eq!(name(&worker), "todos-worker");
    assert_eq!(replicas(&worker), Some(1));
    assert_eq!(image(&worker), image(&desired.app));
    assert_eq!(selects(&desired.service), "app");
    let seen = RoutingObservation::default();

    // Observed: the app pods available, the worker's pod not yet. Plan: apply. Conditions: not
    // Ready, saying which tier it waits for.
    let cached_app = Cluster::applied(&app, 0).deployments.remove(0);
    let mut starting = rolled_out(stamped(worker.clone()), 1);
    let progress = starting.status.as_mut().unwrap();
    progress.ready_replicas = Some(0);
    progress.available_replicas = Some(0);
    let facts = rollout_facts(&app, &desired, Some(&cached_app), Some(&starting));
    assert_eq!(plan::decide(&facts), RolloutPlan::Apply);
    let status = pass(
        &app,
        PassReport {
            worker: Some(&starting),
            ..applied(&AS_SPECIFIED, Some(&cached_app), &seen)
        },
    );
    assert_eq!(
        conditions(&status)[..2],
        [
            ("Ready", "False", "WaitingForReplicas"),
            ("Progressing", "True", "RollingOut"),
        ]
    );
    assert_eq!(
        message(&status, "Ready"),
        "2/2 app processes ready, 0/1 workers ready"
    );

    // Observed: the worker's pod available too. Conditions: Ready, the rollout complete.
    let ready = rolled_out(stamped(worker.clone()), 1);
    let status = pass(
        &app,
        PassReport {
            worker: Some(&ready),
            ..applied(&AS_SPECIFIED, Some(&cached_app), &seen)
        },
    );
    assert_eq!(conditions(&status)[..2], [READY, ROLLED_OUT,]);

    // Observed: the worker runs a template an older operator version built from the same spec
    // and data. Plan: that change waits for an upgrade slot (the spec did not change).
    let mut older = worker;
    let labels = older.spec.as_mut().unwrap().template.metadata.as_mut();
    labels.unwrap().labels.as_mut().unwrap().insert(
        meteor_operator::build::meta::TEMPLATE_HASH_LABEL.into(),
        "built-by-0.0.9".into(),
    );
    let older = rolled_out(stamped(older), 1);
    let facts = rollout_facts(&app, &desired, Some(&cached_app), Some(&older));
    assert_eq!(plan::decide(&facts), RolloutPlan::NeedsSlot);
}

/// The routing tier with the proxy on: the proxy's own Deployment, Services and identity in
/// front of the app pods; `Ready` waits for a proxy pod, `Routed` says how the app is reached.
#[test]
fn the_routing_tier() {
    // Given: todos with the sticky proxy (the default).
    let app = app().with_proxy().build();

    // This Desired: the proxy Deployment of 2 pods, the app Service `todos-app` it sends to, its
    // disruption budget and its identity (allowed to read EndpointSlices in its namespace, nothing
    // else); the front Service selects the proxy pods; the app pods know one proxy hop is in
    // front.
    let desired = desired_children(&app);
    let proxy = desired.routing.proxy.clone().expect("the proxy tier");
    assert_eq!(name(&proxy.deployment), "todos-proxy");
    assert_eq!(replicas(&proxy.deployment), Some(2));
    assert_eq!(name(&proxy.app_service), "todos-app");
    assert_eq!(selects(&proxy.app_service), "app");
    assert_eq!(selects(&desired.service), "proxy");
    assert!(proxy.disruption_budget.is_some());
    assert_eq!(name(&proxy.service_account), "todos-proxy");
    // Bound, in todos's namespace only, to the chart's proxy ClusterRole (EndpointSlices read,
    // nothing else: hack/check-chart.py holds the chart to that).
    assert_eq!(name(&proxy.role_binding), "todos-proxy");
    let granted = &proxy.role_binding.role_ref;
    assert_eq!(
        (granted.kind.as_str(), granted.name.as_str()),
        ("ClusterRole", "meteor-operator-proxy")
    );
    let subjects = proxy.role_binding.subjects.clone().unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        (subjects[0].kind.as_str(), subjects[0].name.as_str()),
        ("ServiceAccount", "todos-proxy")
    );
    assert_eq!(subjects[0].namespace, app.metadata.namespace);
    assert!(env(&desired.app, "HTTP_FORWARDED_COUNT").is_some());
    assert!(desired.routing.ingress.is_none() && desired.routing.http_route.is_none());

    // Plan: the app tier's, as without a proxy (the proxy has no rollout plan of its own).
    let cached = Cluster::applied(&app, 2).deployments.remove(0);
    let facts = rollout_facts(&app, &desired, Some(&cached), None);
    assert_eq!(plan::decide(&facts), RolloutPlan::Apply);

    // Observed: no proxy pod ready. Conditions: not Ready, and Routed says why.
    let none_ready = RoutingObservation::default();
    let status = pass(&app, applied(&AS_SPECIFIED, Some(&cached), &none_ready));
    assert_eq!(
        conditions(&status),
        [
            ("Ready", "False", "ProxyNotReady"),
            ROLLED_OUT,
            NO_PROBLEM,
            ("Routed", "False", "ProxyNotReady"),
        ]
    );

    // Observed: both proxy pods ready. Conditions: Ready and Routed through the Service.
    let serving = RoutingObservation {
        proxy_ready: 2,
        ..RoutingObservation::default()
    };
    let status = pass(&app, applied(&AS_SPECIFIED, Some(&cached), &serving));
    assert_eq!(
        conditions(&status),
        [READY, ROLLED_OUT, NO_PROBLEM, ROUTED,]
    );
    assert_eq!(
        message(&status, "Routed"),
        "https://todos.example.com through the Service and the proxy (2/2 ready)"
    );
    let routing = status.routing.unwrap();
    assert_eq!(
        (routing.proxy_replicas, routing.proxy_ready_replicas),
        (Some(2), Some(2))
    );

    // Given: an Ingress in front of the proxy. This Desired: the Ingress for the rootUrl's host.
    // Observed: the Ingress controller has not answered. Conditions: Routed waits for it, Ready
    // does not.
    let app = support::app().routing("{ ingress: {} }").build();
    let desired = desired_children(&app);
    let ingress = desired.routing.ingress.expect("an Ingress");
    let rules = ingress.spec.unwrap().rules.unwrap();
    assert_eq!(rules[0].host.as_deref(), Some("todos.example.com"));
    let status = pass(&app, applied(&AS_SPECIFIED, Some(&cached), &serving));
    assert_eq!(conditions(&status)[0], READY);
    assert_eq!(
        conditions(&status)[3],
        ("Routed", "False", "IngressPending")
    );
}

/// The autoscaling tier: a HorizontalPodAutoscaler scales the MeteorApp itself; before a
/// scale-down each app pod costs the sessions the proxies hold on it; `Autoscaled` carries the
/// autoscaler's own word.
#[test]
fn the_autoscaling_tier() {
    // Given: todos autoscaled up to 10 replicas.
    let app = app().autoscaling("{ maxReplicas: 10 }").build();

    // This Desired: an HPA `todos` on the MeteorApp's scale subresource, 2 to 10 replicas at 70 %
    // CPU; the disruption budget is kept even at one replica.
    let desired = desired_children(&app);
    let hpa = desired.autoscaler.clone().expect("an HPA");
    let spec = hpa.spec.as_ref().unwrap();
    assert_eq!(name(&hpa), "todos");
    assert_eq!(
        (
            spec.scale_target_ref.kind.as_str(),
            spec.scale_target_ref.name.as_str()
        ),
        ("MeteorApp", "todos")
    );
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 10));
    let cpu = spec.metrics.as_ref().unwrap()[0].resource.clone().unwrap();
    assert_eq!(
        (cpu.name.as_str(), cpu.target.average_utilization),
        ("cpu", Some(70))
    );
    let one = desired_children(
        &support::app()
            .autoscaling("{ maxReplicas: 10, minReplicas: 1 }")
            .replicas(1)
            .build(),
    );
    assert!(one.disruption_budget.is_some());

    // Plan, before going from 4 pods to fewer: each pod costs its open sessions over every proxy
    // (a draining backend counts as empty); only costs that change are written.
    let pod = |name: &str, ip: &str, cost: Option<&str>| plan::PodFacts {
        name: name.into(),
        ip: Some(ip.parse().unwrap()),
        cost: cost.map(String::from),
        terminating: false,
    };
    let sessions = |id: &str, active: i64, terminating: bool| plan::BackendSessions {
        id: id.into(),
        active,
        terminating,
    };
    let pods = [
        pod("todos-a", "10.0.0.1", None),
        pod("todos-b", "10.0.0.2", Some("0")),
        pod("todos-c", "10.0.0.3", Some("9")),
        pod("todos-d", "10.0.0.4", None),
    ];
    let proxies = [
        vec![
            sessions("10.0.0.1:3000", 5, false),
            sessions("10.0.0.3:3000", 2, false),
        ],
        vec![
            sessions("10.0.0.1:3000", 3, false),
            sessions("10.0.0.2:3000", 40, true),
        ],
    ];
    assert_eq!(
        plan::deletion_costs(&pods, &proxies),
        [
            ("todos-a".to_string(), 8),
            ("todos-c".to_string(), 2),
            ("todos-d".to_string(), 0),
        ]
    );

    // Observed: the HPA as applied, not reporting yet. Conditions: Autoscaled pending, which
    // does not hold Ready.
    let cached = Cluster::applied(&app, 0);
    let seen = RoutingObservation::default();
    let status = pass(
        &app,
        PassReport {
            autoscaler: Some(cached.autoscalers.first()),
            ..applied(&AS_SPECIFIED, cached.deployments.first(), &seen)
        },
    );
    assert_eq!(
        conditions(&status),
        [
            READY,
            ROLLED_OUT,
            NO_PROBLEM,
            ROUTED,
            ("Autoscaled", "False", "Pending"),
        ]
    );

    // Observed: the HPA scaling on CPU. Conditions: Autoscaled with its figures.
    let active: HorizontalPodAutoscaler = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "todos" },
        "status": {
            "currentReplicas": 3, "desiredReplicas": 4,
            "currentMetrics": [{ "type": "Resource",
                "resource": { "name": "cpu", "current": { "averageUtilization": 85 } } }],
            "conditions": [
                { "type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale" },
                { "type": "ScalingActive", "status": "True", "reason": "ValidMetricFound",
                  "message": "the HPA was able to successfully calculate a replica count from cpu resource utilization" },
            ],
        },
    }))
    .unwrap();
    let status = pass(
        &app,
        PassReport {
            autoscaler: Some(Some(&active)),
            ..applied(&AS_SPECIFIED, cached.deployments.first(), &seen)
        },
    );
    assert_eq!(
        conditions(&status)[4],
        ("Autoscaled", "True", "ScalingActive")
    );
    let figures = status.autoscaling.unwrap();
    assert_eq!(
        (
            figures.current_replicas,
            figures.desired_replicas,
            figures.current_cpu_utilization_percentage
        ),
        (Some(3), Some(4), Some(85))
    );
}

/// The managed-MongoDB tier: a replica set of the operator's own, wired into the app pods;
/// `MongoReady` follows the set and holds `Ready` until it serves.
#[test]
fn the_managed_mongo_tier() {
    use meteor_operator::build::mongo::secrets::{Credentials, UserCredentials};
    use meteor_operator::mongo::replset::{
        self, Action, Facts, Hello, Identity, MemberConfig, MemberState, MemberStatus, ReplConfig,
        ReplStatus, Wait,
    };
    use meteor_operator::status::mongo::{TierReport, mongo_status, readiness};

    // Given: shop with a managed replica set of 3 members.
    let app = app().named("shop").managed_mongo().build();

    // This Desired: the StatefulSet `shop-mongo` of 3 members, its headless Service, disruption
    // budget and NetworkPolicy, four credential Secrets created once; the app pods read their
    // Mongo URL from the Secret `shop-mongo-urls`.
    let desired = desired_children(&app);
    let tier = desired.mongo.clone().expect("the Mongo tier");
    assert_eq!(name(&tier.statefulset), "shop-mongo");
    assert_eq!(tier.statefulset.spec.as_ref().unwrap().replicas, Some(3));
    assert_eq!(name(&tier.service), "shop-mongo");
    assert_eq!(
        tier.service.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("None")
    );
    assert_eq!(name(&tier.pdb), "shop-mongo");
    assert_eq!(name(&tier.network_policy), "shop-mongo");
    let secrets: Vec<&str> = tier.create_once.iter().map(name).collect();
    assert_eq!(
        secrets,
        [
            "shop-mongo-keyfile",
            "shop-mongo-root",
            "shop-mongo-app",
            "shop-mongo-oplog"
        ]
    );
    let url = env(&desired.app, "MONGO_URL").and_then(|e| e.value_from.as_ref());
    let url = url.and_then(|from| from.secret_key_ref.as_ref()).unwrap();
    assert_eq!(url.name, "shop-mongo-urls");

    // The replica set it should be, with the users' credentials as read from their Secrets.
    let user = |name: &str| Credentials {
        username: name.into(),
        password: format!("{name}-password"),
    };
    let users = UserCredentials {
        root: user("root"),
        app: user("app"),
        oplog: user("oplog"),
    };
    let target = meteor_operator::mongo::target(&app, &users).unwrap();
    assert_eq!((target.set_name.as_str(), target.members), ("shop", 3));
    let cached = Cluster::applied(&app, 0).deployments.remove(0);
    let seen = RoutingObservation::default();
    let of_pass = |report: &TierReport| {
        let report = PassReport {
            mongo: Some(report),
            ..applied(&AS_SPECIFIED, Some(&cached), &seen)
        };
        pass(&app, report)
    };
    // One step of the tier: the plan's one change from the facts, and the tier's report of them.
    let step = |facts: &Facts| {
        let action = replset::plan(&target, facts);
        let report = TierReport {
            readiness: readiness(&target, facts, &action, None),
            storage: None,
            mongo: mongo_status(&target, facts),
            requeue: replset::REQUEUE_WAIT,
            writes: 0,
        };
        (action, report)
    };

    // Observed: no member answers yet. Plan: wait for them. Conditions: MongoReady provisioning,
    // Ready held although the app pods are available.
    let starting = Facts {
        desired_members: 3,
        hellos: vec![None, None, None],
        ..Facts::default()
    };
    let (action, report) = step(&starting);
    assert_eq!(action, Action::Wait(Wait::NoneReachable));
    let status = of_pass(&report);
    assert_eq!(
        conditions(&status),
        [
            ("Ready", "False", "MongoNotReady"),
            ROLLED_OUT,
            NO_PROBLEM,
            ("MongoReady", "False", "Provisioning"),
            ROUTED,
        ]
    );
    assert_eq!(
        message(&status, "Ready"),
        "MongoDB: waiting for mongod pods to start"
    );

    // Observed: the set initiated, member 0 primary, the others secondary, every user there.
    // Plan: nothing to change. Conditions: MongoReady, Ready; status.mongo with the primary.
    let host = |id: usize| target.host(id).to_string();
    let healthy = Facts {
        desired_members: 3,
        hellos: (0..3)
            .map(|id| {
                Some(Hello {
                    set_name: Some("shop".into()),
                    is_writable_primary: id == 0,
                    secondary: id != 0,
                    primary: Some(host(0)),
                })
            })
            .collect(),
        config: Some(ReplConfig {
            set_name: "shop".into(),
            version: 3,
            members: (0..3)
                .map(|id| MemberConfig {
                    id,
                    host: host(id),
                    votes: 1,
                    priority: 1.0,
                })
                .collect(),
        }),
        primary: Some(0),
        status: Some(ReplStatus {
            members: (0..3)
                .map(|id| MemberStatus {
                    id,
                    host: host(id),
                    state: if id == 0 {
                        MemberState::Primary
                    } else {
                        MemberState::Secondary
                    },
                    optime_seconds: Some(1_700_000_000 - id as i64),
                })
                .collect(),
        }),
        oplog_window_seconds: Some(172_800),
        identity: Some(Identity::Root),
        was_initialized: true,
        ..Facts::default()
    };
    let (action, report) = step(&healthy);
    assert_eq!(action, Action::Healthy);
    let status = of_pass(&report);
    assert_eq!(
        conditions(&status),
        [
            READY,
            ROLLED_OUT,
            NO_PROBLEM,
            ("MongoReady", "True", "Ready"),
            ROUTED,
        ]
    );
    let mongo = status.mongo.unwrap();
    assert_eq!((mongo.members, mongo.ready_members), (3, 3));
    assert_eq!(mongo.primary, Some(host(0)));
    assert_eq!(mongo.replication_lag_seconds, Some(2));
    assert_eq!(mongo.oplog_window_seconds, Some(172_800));

    // Given: storage grown to 20Gi on a class that allows expansion. Plan: each member's claim
    // patched. Conditions: MongoStorageResized says so.
    use meteor_operator::mongo::storage::{StorageDecision, StorageFacts, decide};
    let claims = (0..3)
        .map(|id| (format!("data-shop-mongo-{id}"), "10Gi".to_string()))
        .collect();
    let decision = decide(&StorageFacts {
        desired: "20Gi".into(),
        pvcs: claims,
        storage_class: Some("fast".into()),
        allow_expansion: Some(true),
    });
    let StorageDecision::Expand { pvcs, size } = &decision else {
        panic!("{decision:?}");
    };
    assert_eq!((pvcs.len(), size.as_str()), (3, "20Gi"));
    let report = TierReport {
        storage: meteor_operator::status::mongo::storage_readiness(&decision),
        ..report
    };
    let status = of_pass(&report);
    assert_eq!(
        conditions(&status)[3..5],
        [
            ("MongoReady", "True", "Ready"),
            ("MongoStorageResized", "True", "Expanding"),
        ]
    );
}

#[test]
fn the_monitoring_tier() {
    // Given: todos with its proxy tier and a PodMonitor for the Prometheus labelled `team: a`.
    let app = app()
        .routing("{ proxy: { podMonitor: { labels: { team: a }, interval: 15s } } }")
        .build();

    // This Desired: PodMonitor `todos-proxy`, owned by the app, selecting its proxy pods only.
    let desired = desired_children(&app);
    let monitor = desired.pod_monitor.clone().expect("a PodMonitor");
    assert_eq!(name(&monitor), "todos-proxy");
    let labels = monitor.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["team"], "a");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "meteor-operator");
    let selector = &monitor.spec.selector.match_labels;
    assert_eq!(selector["app.kubernetes.io/instance"], "todos");
    assert_eq!(selector["app.kubernetes.io/component"], "proxy");
    let endpoint = &monitor.spec.pod_metrics_endpoints[0];
    assert_eq!(
        (endpoint.port.as_str(), endpoint.interval.as_deref()),
        ("admin", Some("15s"))
    );
    // None without the proxy (nothing to scrape), nor without podMonitor.
    let unproxied = support::app()
        .routing("{ proxy: { enabled: false } }")
        .build();
    assert!(desired_children(&unproxied).pod_monitor.is_none());
    assert!(
        desired_children(&support::app().build())
            .pod_monitor
            .is_none()
    );

    // These conditions: Monitored follows what the pass saw, and never holds Ready.
    let cluster = Cluster::settled(&app);
    let serving = RoutingObservation {
        proxy_ready: 2,
        ..RoutingObservation::default()
    };
    let said = |state: &MonitorState| {
        let report = PassReport {
            pod_monitor: Some(state),
            ..applied(&AS_SPECIFIED, cluster.deployments.first(), &serving)
        };
        let status = pass(&app, report);
        let monitored = conditions(&status)
            .into_iter()
            .find(|c| c.0 == "Monitored")
            .map(|(t, s, r)| (t.to_string(), s.to_string(), r.to_string()));
        let ready = status::find(Some(&status), "Ready").unwrap().status.clone();
        (monitored.expect("a Monitored condition"), ready)
    };
    let owned = |(t, s, r): Said| (t.to_string(), s.to_string(), r.to_string());
    assert_eq!(
        said(&MonitorState::Applied),
        (
            owned(("Monitored", "True", "PodMonitorApplied")),
            "True".into()
        )
    );
    assert_eq!(
        said(&MonitorState::NotInstalled),
        (
            owned(("Monitored", "False", "NoPrometheusOperator")),
            "True".into()
        )
    );
    assert_eq!(
        said(&MonitorState::Listing),
        (owned(("Monitored", "False", "Pending")), "True".into())
    );
    // An app that asks for no PodMonitor has no Monitored condition.
    let plain = support::app().with_proxy().build();
    let status = pass(
        &plain,
        applied(&AS_SPECIFIED, cluster.deployments.first(), &serving),
    );
    assert!(status::find(Some(&status), "Monitored").is_none());
}
