//! Given this MeteorApp, these objects: every spec field lands where the reference says.

mod support;

use k8s_openapi::api::apps::v1::{Deployment, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use meteor_operator::api::MeteorApp;
use meteor_operator::build::{self, Desired, Inputs, MongoWiring};
use support::{UID, app_from_yaml, default_app};

fn inputs(app: &MeteorApp) -> Inputs {
    Inputs {
        config_hash: "0123456789abcdef".into(),
        mongo: MongoWiring::for_app(app).unwrap(),
    }
}

fn desired(app: &MeteorApp) -> Desired {
    build::desired(app, &inputs(app))
}

fn pod(deployment: &Deployment) -> &PodSpec {
    deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
}

fn container(deployment: &Deployment) -> &Container {
    &pod(deployment).containers[0]
}

fn rolling_update(deployment: &Deployment) -> &RollingUpdateDeployment {
    let strategy = deployment.spec.as_ref().unwrap().strategy.as_ref();
    strategy.unwrap().rolling_update.as_ref().unwrap()
}

fn env<'a>(container: &'a Container, name: &str) -> Option<&'a EnvVar> {
    container
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == name)
}

fn env_value(container: &Container, name: &str) -> Option<String> {
    env(container, name).and_then(|e| e.value.clone())
}

fn full_app() -> MeteorApp {
    app_from_yaml(include_str!("../examples/production.yaml"))
}

#[test]
fn minimal_app_gets_deployment_service_and_budget_with_standard_metadata() {
    let app = default_app();
    let desired = desired(&app);
    assert!(desired.worker.is_none(), "no workers by default");
    let budget = desired
        .disruption_budget
        .as_ref()
        .expect("2 replicas → a PDB");
    assert_eq!(
        budget.spec.as_ref().unwrap().max_unavailable,
        Some(IntOrString::Int(1))
    );

    // The front Service leads to the proxy (on by default).
    for (kind, meta, component) in [
        ("Deployment", &desired.app.metadata, "app"),
        ("Service", &desired.service.metadata, "proxy"),
        ("PodDisruptionBudget", &budget.metadata, "app"),
    ] {
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/name"], "meteor", "{kind}");
        assert_eq!(labels["app.kubernetes.io/instance"], "todos", "{kind}");
        assert_eq!(labels["app.kubernetes.io/component"], component, "{kind}");
        assert_eq!(
            labels["app.kubernetes.io/managed-by"], "meteor-operator",
            "{kind}"
        );
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "MeteorApp", "{kind}");
        assert_eq!(owner.uid, UID, "{kind}");
        assert_eq!(owner.controller, Some(true), "{kind}");
        assert_eq!(meta.name.as_deref(), Some("todos"), "{kind}");
        assert_eq!(meta.namespace.as_deref(), Some("default"), "{kind}");
    }
}

#[test]
fn defaults_follow_the_reference() {
    let app = default_app();
    let desired = desired(&app);
    let spec = desired.app.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let rolling = rolling_update(&desired.app);
    assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));

    let c = container(&desired.app);
    assert_eq!(env_value(c, "PORT").as_deref(), Some("3000"));
    assert_eq!(
        env_value(c, "ROOT_URL").as_deref(),
        Some("https://todos.example.com")
    );
    // One core requested, a memory limit, and a heap at 75 % of it.
    let resources = c.resources.as_ref().unwrap();
    assert_eq!(resources.requests.as_ref().unwrap()["cpu"].0, "1");
    assert_eq!(resources.limits.as_ref().unwrap()["memory"].0, "1Gi");
    assert_eq!(
        env_value(c, "NODE_OPTIONS").as_deref(),
        Some("--max-old-space-size=768")
    );
    // Probes on GET / with a startup allowance of minutes.
    let startup = c.startup_probe.as_ref().unwrap();
    assert_eq!(
        startup.http_get.as_ref().unwrap().path.as_deref(),
        Some("/")
    );
    let allowance = startup.period_seconds.unwrap() * startup.failure_threshold.unwrap();
    assert!(allowance >= 300, "startup allowance {allowance}s");
    // Drain before SIGTERM.
    let sleep = c
        .lifecycle
        .as_ref()
        .unwrap()
        .pre_stop
        .as_ref()
        .unwrap()
        .sleep
        .as_ref();
    assert_eq!(sleep.unwrap().seconds, 15);
    assert_eq!(pod(&desired.app).termination_grace_period_seconds, Some(45));
    // Spread over nodes and zones.
    let keys: Vec<_> = pod(&desired.app)
        .topology_spread_constraints
        .as_ref()
        .unwrap()
        .iter()
        .map(|t| t.topology_key.as_str())
        .collect();
    assert_eq!(
        keys,
        ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    );
    // Front Service: ClusterIP, port 80 → the proxy's http port by name, proxy pods only.
    let service = desired.service.spec.as_ref().unwrap();
    assert_eq!(service.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(service.ports.as_ref().unwrap()[0].port, 80);
    assert_eq!(
        service.ports.as_ref().unwrap()[0].target_port,
        Some(IntOrString::String("http".into()))
    );
    assert_eq!(
        service.selector.as_ref().unwrap()["app.kubernetes.io/component"],
        "proxy"
    );
    // One proxy in front: Meteor trusts one X-Forwarded-For hop.
    assert_eq!(env_value(c, "HTTP_FORWARDED_COUNT").as_deref(), Some("1"));
}

#[test]
fn pods_meet_the_restricted_pod_security_standard() {
    let app = full_app();
    let built = desired(&app);
    for deployment in [&built.app, built.worker.as_ref().unwrap()] {
        let pod = pod(deployment);
        let pod_context = pod.security_context.as_ref().unwrap();
        assert_eq!(pod_context.run_as_non_root, Some(true));
        assert_eq!(
            pod_context.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        let c = &pod.containers[0].security_context.as_ref().unwrap();
        assert_eq!(c.allow_privilege_escalation, Some(false));
        assert_eq!(c.read_only_root_filesystem, Some(true));
        assert_eq!(
            c.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        // The read-only root still has a writable /tmp.
        let mounts = pod.containers[0].volume_mounts.as_ref().unwrap();
        assert!(mounts.iter().any(|m| m.mount_path == "/tmp"));
        assert_eq!(pod.automount_service_account_token, Some(false));
    }
}

#[test]
fn every_field_of_the_production_example_lands_in_place() {
    let app = full_app();
    let desired = desired(&app);
    let spec = desired.app.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(6));
    assert_eq!(spec.min_ready_seconds, Some(20));
    let rolling = rolling_update(&desired.app);
    assert_eq!(rolling.max_surge, Some(IntOrString::Int(2)));

    let pod = pod(&desired.app);
    assert_eq!(
        pod.image_pull_secrets.as_ref().unwrap()[0].name,
        "registry-credentials"
    );
    assert_eq!(
        pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
        Some("dedicated")
    );
    assert_eq!(pod.termination_grace_period_seconds, Some(65));

    let c = container(&desired.app);
    assert_eq!(c.image.as_deref(), Some("registry.example.com/chat:3.5.0"));
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    // Settings and Mongo URLs come from Secret references, never literal values.
    let settings = env(c, "METEOR_SETTINGS").unwrap();
    let settings_ref = settings
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (settings_ref.name.as_str(), settings_ref.key.as_str()),
        ("chat-settings", "settings.json")
    );
    let oplog = env(c, "MONGO_OPLOG_URL").unwrap();
    assert_eq!(
        oplog
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap()
            .key,
        "MONGO_OPLOG_URL"
    );
    assert!(env(c, "MONGO_URL").unwrap().value.is_none());
    // User env is kept, with valueFrom intact.
    assert_eq!(env_value(c, "HTTP_FORWARDED_COUNT").as_deref(), Some("1"));
    assert!(env(c, "MAIL_URL").unwrap().value_from.is_some());
    // Heap from the 1536Mi limit.
    assert_eq!(
        env_value(c, "NODE_OPTIONS").as_deref(),
        Some("--max-old-space-size=1152")
    );
    let probe = c.readiness_probe.as_ref().unwrap();
    assert_eq!(probe.period_seconds, Some(5));
    assert_eq!(probe.failure_threshold, Some(2));
    assert_eq!(
        probe.timeout_seconds,
        Some(5),
        "unset timing keeps its default"
    );
    assert_eq!(
        probe.http_get.as_ref().unwrap().path.as_deref(),
        Some("/healthz")
    );
    let annotations = desired
        .app
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap();
    assert_eq!(
        annotations.annotations.as_ref().unwrap()["meteorfleet.dev/config-hash"],
        "0123456789abcdef"
    );
    assert_eq!(
        annotations.annotations.as_ref().unwrap()["prometheus.io/scrape"],
        "false"
    );
    assert_eq!(
        desired.app.metadata.namespace.as_deref(),
        Some("production")
    );
}

#[test]
fn workers_share_the_image_take_no_traffic_and_never_overlap() {
    let app = full_app();
    let desired = desired(&app);
    let worker = desired.worker.as_ref().expect("workers.replicas 1");
    assert_eq!(worker.metadata.name.as_deref(), Some("chat-worker"));
    let spec = worker.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(
        spec.strategy.as_ref().unwrap().type_.as_deref(),
        Some("Recreate")
    );
    let labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(labels["app.kubernetes.io/component"], "worker");
    // The Service selects component=app, which worker pods do not carry.
    let selector = desired
        .service
        .spec
        .as_ref()
        .unwrap()
        .selector
        .as_ref()
        .unwrap();
    assert!(selector.iter().any(|(k, v)| labels.get(k) != Some(v)));

    let c = container(worker);
    assert_eq!(c.image, container(&desired.app).image);
    assert_eq!(env_value(c, "METEOR_ROLE").as_deref(), Some("worker"));
    assert_eq!(
        env_value(container(&desired.app), "METEOR_ROLE").as_deref(),
        Some("app")
    );
    assert_eq!(env_value(c, "JOBS_CONCURRENCY").as_deref(), Some("4"));
    assert!(env(container(&desired.app), "JOBS_CONCURRENCY").is_none());
    assert_eq!(
        c.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0,
        "500m"
    );
    assert_eq!(
        env_value(c, "NODE_OPTIONS").as_deref(),
        Some("--max-old-space-size=768")
    );
}

#[test]
fn user_env_wins_over_ours_but_port_stays_ours() {
    let mut app = default_app();
    app.spec.env = serde_json::from_value(serde_json::json!([
        {"name": "ROOT_URL", "value": "https://override.example.com"},
        {"name": "NODE_OPTIONS", "value": "--max-old-space-size=300"},
    ]))
    .unwrap();
    app.spec.workers.replicas = 1;
    app.spec.workers.env = serde_json::from_value(serde_json::json!([
        {"name": "ROOT_URL", "value": "https://worker.example.com"},
    ]))
    .unwrap();
    let desired = desired(&app);
    let c = container(&desired.app);
    let names: Vec<_> = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        names.iter().filter(|n| **n == "ROOT_URL").count(),
        1,
        "{names:?}"
    );
    assert_eq!(
        env_value(c, "ROOT_URL").as_deref(),
        Some("https://override.example.com")
    );
    assert_eq!(
        env_value(c, "NODE_OPTIONS").as_deref(),
        Some("--max-old-space-size=300")
    );
    assert_eq!(env_value(c, "PORT").as_deref(), Some("3000"));
    let w = container(desired.worker.as_ref().unwrap());
    assert_eq!(
        env_value(w, "ROOT_URL").as_deref(),
        Some("https://worker.example.com")
    );
}

#[test]
fn parked_and_single_replica_apps_have_no_budget_and_keep_their_deployment() {
    let mut app = default_app();
    app.spec.replicas = 0;
    let parked = desired(&app);
    assert_eq!(parked.app.spec.as_ref().unwrap().replicas, Some(0));
    assert!(parked.disruption_budget.is_none());
    app.spec.replicas = 1;
    assert!(desired(&app).disruption_budget.is_none());
}

#[test]
fn placement_and_service_options_pass_through() {
    let app = app_from_yaml(
        r#"
apiVersion: meteorfleet.dev/v1alpha1
kind: MeteorApp
metadata: { name: shop }
spec:
  image: shop:1
  rootUrl: http://shop.example.com
  port: 8080
  mongo: { external: { url: { name: m, key: u } } }
  nodeSelector: { pool: meteor }
  serviceAccountName: shop
  topologySpreadConstraints:
    - { maxSkew: 2, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule }
  podLabels: { team: payments, app.kubernetes.io/component: hijack }
  service: { type: LoadBalancer, port: 443, annotations: { lb.example.com/tls: "on" } }
  rollout: { drainSeconds: 0, shutdownSeconds: 10 }
  healthCheck: { path: /ping, livenessProbe: { initialDelaySeconds: 30 } }
"#,
    );
    let desired = desired(&app);
    let pod = pod(&desired.app);
    assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "meteor");
    assert_eq!(pod.service_account_name.as_deref(), Some("shop"));
    assert_eq!(pod.automount_service_account_token, Some(true));
    let spread = pod.topology_spread_constraints.as_ref().unwrap();
    assert_eq!(spread.len(), 1);
    assert_eq!(spread[0].max_skew, 2);
    let labels = desired
        .app
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(labels["team"], "payments");
    assert_eq!(
        labels["app.kubernetes.io/component"], "app",
        "our labels win"
    );
    let c = &pod.containers[0];
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8080);
    assert_eq!(env_value(c, "PORT").as_deref(), Some("8080"));
    assert!(c.lifecycle.is_none(), "drainSeconds 0: no preStop");
    assert_eq!(pod.termination_grace_period_seconds, Some(10));
    let liveness = c.liveness_probe.as_ref().unwrap();
    assert_eq!(liveness.initial_delay_seconds, Some(30));
    assert_eq!(
        liveness.http_get.as_ref().unwrap().path.as_deref(),
        Some("/ping")
    );
    let service = &desired.service;
    assert_eq!(
        service.spec.as_ref().unwrap().type_.as_deref(),
        Some("LoadBalancer")
    );
    assert_eq!(
        service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
        443
    );
    assert_eq!(
        service.metadata.annotations.as_ref().unwrap()["lb.example.com/tls"],
        "on"
    );
}

#[test]
fn volumes_sidecars_init_containers_and_priority_reach_both_tiers() {
    let mut app = app_from_yaml(include_str!("../examples/volumes-and-sidecars.yaml"));
    app.spec.workers.replicas = 1;
    let built = desired(&app);
    for deployment in [&built.app, built.worker.as_ref().unwrap()] {
        let pod = pod(deployment);
        assert_eq!(
            pod.priority_class_name.as_deref(),
            Some("business-critical")
        );
        let volumes: Vec<&str> = pod
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(volumes, ["tmp", "corporate-ca", "uploads"]);
        let mounts: Vec<(&str, &str)> = pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), m.mount_path.as_str()))
            .collect();
        assert_eq!(
            mounts,
            [
                ("tmp", "/tmp"),
                ("corporate-ca", "/etc/ssl/corporate"),
                ("uploads", "/app/uploads")
            ]
        );
        let containers: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(containers, ["meteor", "log-shipper"]);
        let init: Vec<&str> = pod
            .init_containers
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(init, ["db-tunnel", "migrate-uploads"]);
        let tunnel = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(
            tunnel.restart_policy.as_deref(),
            Some("Always"),
            "a native sidecar"
        );
        // Containers without a security context get the Meteor container's restricted one.
        for c in pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
        {
            let security = c.security_context.as_ref().unwrap();
            assert_eq!(
                security.allow_privilege_escalation,
                Some(false),
                "{}",
                c.name
            );
            assert_eq!(security.run_as_non_root, Some(true), "{}", c.name);
        }
    }
    // Without them the pod is what it always was: no field set that an apply would change.
    let plain = desired(&default_app());
    let pod = pod(&plain.app);
    assert!(pod.init_containers.is_none());
    assert_eq!(pod.containers.len(), 1);
    assert!(pod.priority_class_name.is_none());
}

#[test]
fn the_sigterm_grace_meteor_reads_is_the_rollouts_shutdown_seconds() {
    let app = default_app();
    let built = desired(&app);
    assert_eq!(
        env_value(container(&built.app), "METEOR_SIGTERM_GRACE_PERIOD_SECONDS").as_deref(),
        Some("30")
    );
    let mut app = default_app();
    app.spec.rollout.shutdown_seconds = 45;
    let built = desired(&app);
    assert_eq!(
        env_value(container(&built.app), "METEOR_SIGTERM_GRACE_PERIOD_SECONDS").as_deref(),
        Some("45")
    );
}
