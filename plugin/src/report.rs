//! What `status` reports, gathered from the MeteorApp (its spec and the status the operator
//! writes) and its pods. Pure: objects in, a serializable report out; `render` prints it.

use crate::sessions::{SessionsReport, tier};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use meteor_operator::api::{DEFAULT_MIN_REPLICAS, DEFAULT_TARGET_CPU_PERCENT, MeteorApp};
use meteor_operator::build::meta::TEMPLATE_HASH_LABEL;
use serde::Serialize;

/// The Deployment controller's label on a ReplicaSet's pods.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// The condition types an app reports, in the order they are shown; others follow by name.
const CONDITION_ORDER: [&str; 7] = [
    "Ready",
    "Progressing",
    "Degraded",
    "Routed",
    "Autoscaled",
    "MongoReady",
    "MongoStorageResized",
];

/// One line of `kubectl get meteor`, with the reasons worth a look.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AppLine {
    pub name: String,
    pub namespace: String,
    /// The `Ready` condition's status (empty before the operator's first visit).
    pub ready: String,
    /// `ready/desired`.
    pub replicas: String,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<Timestamp>,
    /// `Type=Reason` of every condition that is not as it should be (Ready False, Progressing
    /// True, Degraded True, the others False).
    pub attention: Vec<String>,
}

impl AppLine {
    pub fn of(app: &MeteorApp) -> Self {
        let status = app.status.as_ref();
        let conditions = status.map(|s| s.conditions.as_slice()).unwrap_or_default();
        let attention = sorted_conditions(app)
            .into_iter()
            .filter(|c| {
                let healthy = match c.type_.as_str() {
                    "Progressing" | "Degraded" => "False",
                    _ => "True",
                };
                c.status != healthy
            })
            .map(|c| format!("{}={}", c.type_, c.reason))
            .collect();
        Self {
            name: app.metadata.name.clone().unwrap_or_default(),
            namespace: app.metadata.namespace.clone().unwrap_or_default(),
            ready: conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| c.status.clone())
                .unwrap_or_default(),
            replicas: status
                .and_then(|s| s.replica_summary.clone())
                .unwrap_or_default(),
            url: status.and_then(|s| s.url.clone()).unwrap_or_default(),
            created: app.metadata.creation_timestamp.as_ref().map(|t| t.0),
            attention,
        }
    }
}

/// One condition as `status` shows it.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConditionLine {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub since: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

fn sorted_conditions(app: &MeteorApp) -> Vec<ConditionLine> {
    let mut lines: Vec<ConditionLine> = app
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .map(|c| ConditionLine {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            since: c.last_transition_time.0,
            observed_generation: c.observed_generation,
        })
        .collect();
    let rank = |t: &str| {
        CONDITION_ORDER
            .iter()
            .position(|o| *o == t)
            .unwrap_or(CONDITION_ORDER.len())
    };
    lines.sort_by(|a, b| (rank(&a.type_), &a.type_).cmp(&(rank(&b.type_), &b.type_)));
    lines
}

/// The app tier's last rollout and rollback, from `status.rollout` and `Progressing`.
#[derive(Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutLine {
    /// `Progressing`'s status and reason: `True RollingOut`, `False RolloutComplete`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progressing: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// The last template every pod ran, available (`status.rollout.availableTemplate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_image: Option<String>,
    /// While rolled back: the template that failed, its image and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// When the rollback happened (`Degraded`'s transition to `RolledBack`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back_at: Option<Timestamp>,
}

/// `spec.autoscaling` and what the HorizontalPodAutoscaler reports.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerLine {
    pub min_replicas: i32,
    pub max_replicas: i32,
    #[serde(rename = "targetCPUUtilizationPercentage")]
    pub target_cpu: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_memory_utilization_percentage: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions_per_replica: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_replicas: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    #[serde(
        rename = "currentCPUUtilizationPercentage",
        skip_serializing_if = "Option::is_none"
    )]
    pub current_cpu: Option<i32>,
}

/// The way in.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoutingLine {
    pub proxy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_replicas: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_ready_replicas: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// One pod of the app, any tier.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodLine {
    pub name: String,
    /// `app`, `worker`, `proxy` or `mongo`.
    pub tier: String,
    /// The operator's template hash (`meteorfleet.dev/template-hash`): the version `status.rollout`
    /// names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The Deployment's (or StatefulSet's) own hash of the template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_template_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Ready containers / containers.
    pub ready: String,
    /// As `kubectl get pods` says it: the phase, a container's waiting reason, or `Terminating`.
    pub status: String,
    pub restarts: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Open sessions through the proxies (app pods, when counted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<i64>,
}

impl PodLine {
    pub fn of(pod: &Pod) -> Self {
        let labels = pod.metadata.labels.as_ref();
        let label = |key: &str| labels.and_then(|l| l.get(key)).cloned();
        let status = pod.status.as_ref();
        let containers = status
            .and_then(|s| s.container_statuses.as_ref())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let total = pod
            .spec
            .as_ref()
            .map_or(containers.len(), |s| s.containers.len());
        let ready = containers.iter().filter(|c| c.ready).count();
        let waiting = containers.iter().find_map(|c| {
            let state = c.state.as_ref()?;
            state
                .waiting
                .as_ref()
                .and_then(|w| w.reason.clone())
                .or_else(|| state.terminated.as_ref().and_then(|t| t.reason.clone()))
        });
        let shown = if pod.metadata.deletion_timestamp.is_some() {
            "Terminating".to_string()
        } else {
            waiting
                .or_else(|| status.and_then(|s| s.phase.clone()))
                .unwrap_or_else(|| "Unknown".into())
        };
        let first_container = pod.spec.as_ref().and_then(|s| {
            s.containers
                .iter()
                .find(|c| c.name == meteor_operator::build::CONTAINER_NAME)
                .or_else(|| s.containers.first())
        });
        Self {
            name: pod.metadata.name.clone().unwrap_or_default(),
            tier: tier(pod).to_string(),
            template: label(TEMPLATE_HASH_LABEL),
            pod_template_hash: label(POD_TEMPLATE_HASH_LABEL)
                .or_else(|| label("controller-revision-hash")),
            image: first_container.and_then(|c| c.image.clone()),
            ready: format!("{ready}/{total}"),
            status: shown,
            restarts: containers.iter().map(|c| c.restart_count).sum(),
            created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
            ip: status.and_then(|s| s.pod_ip.clone()),
            sessions: None,
        }
    }
}

/// Everything `status APP` shows.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AppReport {
    #[serde(flatten)]
    pub line: AppLine,
    pub image: String,
    /// `spec.replicas`: the app processes asked for (0: parked).
    pub desired_replicas: i32,
    pub worker_replicas: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub conditions: Vec<ConditionLine>,
    pub rollout: RolloutLine,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<AutoscalerLine>,
    pub routing: RoutingLine,
    pub pods: Vec<PodLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<SessionsReport>,
}

impl AppReport {
    pub fn of(app: &MeteorApp, pods: &[Pod], sessions: Option<SessionsReport>) -> Self {
        let status = app.status.as_ref();
        let conditions = sorted_conditions(app);
        let condition = |t: &str| conditions.iter().find(|c| c.type_ == t);
        let history = status.and_then(|s| s.rollout.clone()).unwrap_or_default();
        let progressing = condition("Progressing");
        let rollout = RolloutLine {
            progressing: progressing.map(|c| format!("{} {}", c.status, c.reason)),
            since: progressing.map(|c| c.since),
            rolled_back_at: condition("Degraded")
                .filter(|c| c.reason == "RolledBack")
                .map(|c| c.since),
            available_template: history.available_template,
            available_image: history.available_image,
            failed_template: history.failed_template,
            failed_image: history.failed_image,
            failure: history.failure,
        };
        let autoscaler = app.spec.autoscaling.as_ref().map(|a| {
            let seen = status.and_then(|s| s.autoscaling.as_ref());
            AutoscalerLine {
                min_replicas: a.min_replicas.unwrap_or(DEFAULT_MIN_REPLICAS),
                max_replicas: a.max_replicas,
                target_cpu: a
                    .target_cpu_utilization_percentage
                    .unwrap_or(DEFAULT_TARGET_CPU_PERCENT),
                target_memory_utilization_percentage: a.target_memory_utilization_percentage,
                sessions_per_replica: a.sessions_per_replica,
                current_replicas: seen.and_then(|s| s.current_replicas),
                desired_replicas: seen.and_then(|s| s.desired_replicas),
                current_cpu: seen.and_then(|s| s.current_cpu_utilization_percentage),
            }
        });
        let routed = status.and_then(|s| s.routing.as_ref());
        let routing = RoutingLine {
            proxy: app.spec.routing.proxy_enabled(),
            proxy_replicas: routed.and_then(|r| r.proxy_replicas),
            proxy_ready_replicas: routed.and_then(|r| r.proxy_ready_replicas),
            address: routed.and_then(|r| r.address.clone()),
        };
        let mut pod_lines: Vec<PodLine> = pods.iter().map(PodLine::of).collect();
        let tier_rank = |t: &str| match t {
            "app" => 0,
            "worker" => 1,
            "proxy" => 2,
            "mongo" => 3,
            _ => 4,
        };
        pod_lines.sort_by(|a, b| (tier_rank(&a.tier), &a.name).cmp(&(tier_rank(&b.tier), &b.name)));
        if let Some(report) = sessions.as_ref().filter(|s| s.counted) {
            for line in pod_lines.iter_mut().filter(|l| l.tier == "app") {
                line.sessions = report
                    .pods
                    .iter()
                    .find(|p| p.pod.as_deref() == Some(line.name.as_str()))
                    .map(|p| p.sessions);
            }
        }
        Self {
            line: AppLine::of(app),
            image: app.spec.image.clone(),
            desired_replicas: app.spec.replicas,
            worker_replicas: app.spec.workers.replicas,
            generation: app.metadata.generation,
            observed_generation: status.and_then(|s| s.observed_generation),
            conditions,
            rollout,
            autoscaler,
            routing,
            pods: pod_lines,
            sessions,
        }
    }
}
