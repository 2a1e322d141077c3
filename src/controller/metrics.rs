//! Prometheus metrics: the controller's own, named like controller-runtime's so existing
//! dashboards fit, and one set of series per MeteorApp fed from the status each reconcile
//! computes. Nothing here sends an API request or reads anything but what it is handed.

use crate::api::{MeteorApp, MeteorAppStatus};
use crate::status::{DEGRADED, PROGRESSING};
use kube::ResourceExt;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CONTROLLER: &str = "meteorapp";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    controller: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: String,
    error: String,
}

/// The operator's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    reconcile_total: Family<ResultLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_time: Family<ControllerLabels, Histogram>,
    writes: Family<ControllerLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    leader: Gauge,
    resident_memory: Gauge,
    generation_lag: Histogram,
    apps: Arc<AppSeries>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::with_clock(unix_now)
    }
}

impl Metrics {
    /// With `clock` (seconds since the epoch) for the per-app series' waits and expiry.
    fn with_clock(clock: fn() -> f64) -> Self {
        let mut registry = Registry::default();
        let reconcile_total = Family::<ResultLabels, Counter>::default();
        for result in ["success", "error"] {
            drop(reconcile_total.get_or_create(&ResultLabels {
                controller: CONTROLLER.into(),
                result: result.into(),
            }));
        }
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        for error in super::Error::METRIC_LABELS {
            drop(reconcile_errors.get_or_create(&ErrorLabels {
                controller: CONTROLLER.into(),
                error: error.into(),
            }));
        }
        let reconcile_time = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        let writes = Family::<ControllerLabels, Counter>::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let leader = Gauge::default();
        let resident_memory = Gauge::default();
        registry.register(
            "controller_runtime_reconcile",
            "Reconciliations by result",
            reconcile_total.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_errors",
            "Reconciliations that failed, by error kind",
            reconcile_errors.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_time_seconds",
            "Time per reconciliation",
            reconcile_time.clone(),
        );
        registry.register(
            "meteor_operator_api_writes",
            "Write requests (apply, delete, status) sent to the API server",
            writes.clone(),
        );
        registry.register(
            "meteor_operator_api_requests",
            "Requests sent to the API server, by kind (get, list, watch, apply, status, event, create, delete, lease, other)",
            requests.clone(),
        );
        registry.register(
            "leader_election_master_status",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the operator process",
            resident_memory.clone(),
        );
        let generation_lag = Histogram::new([
            0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
        ]);
        registry.register(
            "meteor_operator_generation_observed_seconds",
            "From the watch delivering a MeteorApp's new generation to a status write reporting it observed",
            generation_lag.clone(),
        );
        let apps = Arc::new(AppSeries::new(clock));
        registry.register_collector(Box::new(apps.clone()));
        Self {
            registry,
            reconcile_total,
            reconcile_errors,
            reconcile_time,
            writes,
            requests,
            leader,
            resident_memory,
            generation_lag,
            apps,
        }
    }
}

impl Metrics {
    /// Records one finished reconciliation.
    pub fn reconciled(&self, took: Duration, error: Option<&'static str>) {
        let result = if error.is_some() { "error" } else { "success" };
        self.reconcile_total
            .get_or_create(&ResultLabels {
                controller: CONTROLLER.into(),
                result: result.into(),
            })
            .inc();
        if let Some(error) = error {
            self.reconcile_errors
                .get_or_create(&ErrorLabels {
                    controller: CONTROLLER.into(),
                    error: error.into(),
                })
                .inc();
        }
        self.reconcile_time
            .get_or_create(&ControllerLabels {
                controller: CONTROLLER.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// A spec change reached `status.observedGeneration` after `waited`.
    pub fn generation_observed(&self, waited: Duration) {
        self.generation_lag.observe(waited.as_secs_f64());
    }

    /// Counts `n` write requests.
    pub fn wrote(&self, n: u64) {
        if n > 0 {
            self.writes
                .get_or_create(&ControllerLabels {
                    controller: CONTROLLER.into(),
                })
                .inc_by(n);
        }
    }

    /// Counts one request to the API server (see [`request_kind`]).
    pub fn requested(&self, method: &http::Method, uri: &http::Uri) {
        self.requests
            .get_or_create(&RequestLabels {
                kind: request_kind(method, uri.path(), uri.query().unwrap_or("")),
            })
            .inc();
    }

    /// Feeds the series of `app` from the status this reconcile computed for it (see
    /// [`AppSeries`]); sends nothing, reads nothing else.
    pub fn app_status(&self, app: &MeteorApp, status: &MeteorAppStatus) {
        self.apps.observe(app, status);
    }

    /// Drops every series of `app` (deleted).
    pub fn app_deleted(&self, app: &MeteorApp) {
        self.apps
            .forget(&app.namespace().unwrap_or_default(), &app.name_any());
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        if let Some(bytes) = resident_memory_bytes() {
            self.resident_memory.set(bytes);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// What a request to the API server is, in the words of the scale table: `get` (one object),
/// `list`, `watch`, `apply` (server-side apply of a child), `status`, `event`, `create`,
/// `delete`, `lease` (leader election), `other`.
pub fn request_kind(method: &http::Method, path: &str, query: &str) -> &'static str {
    use http::Method;
    if path.contains("/leases") {
        return "lease";
    }
    if path.contains("/events") {
        return "event";
    }
    // After `/api/v1` or `/apis/<group>/<version>` and `namespaces/<ns>`: resource[/name[/sub]].
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    }
    .unwrap_or_default();
    let rest = match rest {
        ["namespaces", _, resource @ ..] if !resource.is_empty() => resource,
        _ => rest,
    };
    let watch = query
        .split('&')
        .any(|pair| pair == "watch=true" || pair == "watch=1");
    match *method {
        Method::GET if watch => "watch",
        Method::GET if rest.len() == 1 => "list",
        Method::GET => "get",
        Method::PATCH if rest.len() == 3 && rest[2] == "status" => "status",
        Method::PATCH => "apply",
        Method::POST => "create",
        Method::DELETE => "delete",
        _ => "other",
    }
}

/// Series of an app not fed for this long are dropped. Every app the leader holds is reconciled
/// at least every 300 s (the resync, or the error backoff's longest step), so this only removes
/// apps whose deletion neither a watch event nor a reconcile delivered: deleted while the watch
/// was down, a relist drops them without a Delete event.
const FORGET_AFTER_SECONDS: f64 = 900.0;

/// Upper bounds of `meteor_app_rollout_duration_seconds`, in seconds (then +Inf).
const ROLLOUT_BUCKETS: [f64; 8] = [30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0];

/// The `Progressing` reason of an app waiting for an upgrade slot.
const WAITING_FOR_SLOT: &str = "WaitingForRolloutSlot";

/// The series of every MeteorApp this replica reconciles, encoded at each scrape from one small
/// record per app: a condition that changes replaces its series (one per app and type), and
/// an app's series go with it. Label values are the app's namespace and name and the
/// conditions' types, statuses and reasons, so the series grow with the number of apps only.
#[derive(Debug)]
pub struct AppSeries {
    inner: Mutex<Apps>,
    clock: fn() -> f64,
}

#[derive(Debug, Default)]
struct Apps {
    by_name: BTreeMap<(String, String), AppState>,
    /// When apps not fed for [`FORGET_AFTER_SECONDS`] were last looked for.
    swept: f64,
}

/// What one app's series say.
#[derive(Clone, Debug, Default, PartialEq)]
struct AppState {
    /// When its status was last fed.
    seen: f64,
    conditions: Vec<ConditionState>,
    desired: i32,
    current: i32,
    ready: i32,
    updated: i32,
    /// Proxy pods wanted and ready (the proxy on).
    proxy: Option<(i32, i32)>,
    autoscaler: Option<AutoscalerState>,
    mongo: Option<MongoState>,
    rollbacks: u64,
    stuck: u64,
    /// Completed rollouts per [`ROLLOUT_BUCKETS`] bucket (the last: above every bound).
    rollout_buckets: [u64; 9],
    rollout_seconds: f64,
    /// Since when it waits for an upgrade slot.
    slot_wait_since: Option<f64>,
    /// Seconds waited in upgrade-slot waits that ended.
    slot_waited: f64,
}

#[derive(Clone, Debug, PartialEq)]
struct ConditionState {
    type_: String,
    status: String,
    reason: String,
    /// Its `lastTransitionTime`, seconds since the epoch.
    since: f64,
}

#[derive(Clone, Debug, PartialEq)]
struct AutoscalerState {
    min: i32,
    max: i32,
    current: Option<i32>,
    desired: Option<i32>,
    cpu: Option<i32>,
}

#[derive(Clone, Debug, PartialEq)]
struct MongoState {
    members: i32,
    ready: i32,
    primary: bool,
    lag: Option<i64>,
    oplog_window: Option<i64>,
}

fn conditions_of(status: Option<&MeteorAppStatus>) -> Vec<ConditionState> {
    status
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| ConditionState {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            since: c.last_transition_time.0.as_millisecond() as f64 / 1000.0,
        })
        .collect()
}

fn condition<'a>(conditions: &'a [ConditionState], type_: &str) -> Option<&'a ConditionState> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether `type_` has `reason` in `new` and had another (or none) in `old`.
fn turned(old: &[ConditionState], new: &[ConditionState], type_: &str, reason: &str) -> bool {
    condition(new, type_).is_some_and(|c| c.status == "True" && c.reason == reason)
        && !condition(old, type_).is_some_and(|c| c.status == "True" && c.reason == reason)
}

impl AppSeries {
    fn new(clock: fn() -> f64) -> Self {
        Self {
            inner: Mutex::default(),
            clock,
        }
    }

    /// Takes in the status computed for `app`. Transitions (a rollback, a finished rollout,
    /// the end of a wait) are counted against what this replica fed last, or, for an app it
    /// has not seen yet, against the stored status, so a reconcile that reads a stale cache
    /// counts nothing twice and a restart counts nothing again.
    fn observe(&self, app: &MeteorApp, status: &MeteorAppStatus) {
        let now = (self.clock)();
        let key = (app.namespace().unwrap_or_default(), app.name_any());
        let new = conditions_of(Some(status));
        let mut inner = self.inner.lock().expect("lock is never poisoned");
        inner.sweep(now);
        let state = inner.by_name.entry(key).or_insert_with(|| AppState {
            conditions: conditions_of(app.status.as_ref()),
            ..AppState::default()
        });
        let old = std::mem::take(&mut state.conditions);
        if turned(&old, &new, DEGRADED, "RolledBack") {
            state.rollbacks += 1;
        }
        if turned(&old, &new, DEGRADED, "RolloutStuck") {
            state.stuck += 1;
        }
        let old_progressing = condition(&old, PROGRESSING);
        let progressing = condition(&new, PROGRESSING);
        if let (Some(before), Some(after)) = (old_progressing, progressing)
            && before.status == "True"
            && after.status == "False"
            && after.reason == "RolloutComplete"
        {
            let took = (after.since - before.since).max(0.0);
            let bucket = ROLLOUT_BUCKETS
                .iter()
                .position(|&bound| took <= bound)
                .unwrap_or(ROLLOUT_BUCKETS.len());
            state.rollout_buckets[bucket] += 1;
            state.rollout_seconds += took;
        }
        let waiting =
            progressing.is_some_and(|c| c.status == "True" && c.reason == WAITING_FOR_SLOT);
        match (waiting, state.slot_wait_since) {
            (true, None) => {
                // Waiting since it turned Progressing (what the condition says, also after a
                // restart), or from now when it was progressing for another reason before.
                let since = progressing
                    .filter(|_| {
                        old_progressing
                            .is_none_or(|o| o.status != "True" || o.reason == WAITING_FOR_SLOT)
                    })
                    .map_or(now, |c| c.since.min(now));
                state.slot_wait_since = Some(since);
            }
            (false, Some(since)) => {
                state.slot_waited += (now - since).max(0.0);
                state.slot_wait_since = None;
            }
            _ => {}
        }
        state.seen = now;
        state.conditions = new;
        state.desired = app.spec.replicas;
        state.current = status.replicas;
        state.ready = status.ready_replicas;
        state.updated = status.updated_replicas;
        state.proxy = status.routing.as_ref().and_then(|r| {
            r.proxy_replicas
                .map(|wanted| (wanted, r.proxy_ready_replicas.unwrap_or(0)))
        });
        state.autoscaler = app.spec.autoscaling.as_ref().map(|spec| {
            let seen = status.autoscaling.as_ref();
            AutoscalerState {
                min: spec
                    .min_replicas
                    .unwrap_or(crate::api::DEFAULT_MIN_REPLICAS),
                max: spec.max_replicas,
                current: seen.and_then(|s| s.current_replicas),
                desired: seen.and_then(|s| s.desired_replicas),
                cpu: seen.and_then(|s| s.current_cpu_utilization_percentage),
            }
        });
        state.mongo = status.mongo.as_ref().map(|m| MongoState {
            members: m.members,
            ready: m.ready_members,
            primary: m.primary.is_some(),
            lag: m.replication_lag_seconds,
            oplog_window: m.oplog_window_seconds,
        });
    }

    fn forget(&self, namespace: &str, name: &str) {
        let mut inner = self.inner.lock().expect("lock is never poisoned");
        inner
            .by_name
            .remove(&(namespace.to_string(), name.to_string()));
    }
}

impl Apps {
    /// Drops the apps not fed for [`FORGET_AFTER_SECONDS`] (looked for once a minute).
    fn sweep(&mut self, now: f64) {
        if now - self.swept < 60.0 {
            return;
        }
        self.swept = now;
        self.by_name
            .retain(|_, state| now - state.seen < FORGET_AFTER_SECONDS);
    }
}

/// One family of per-app series: its name, help, type (gauge or counter), and the value of
/// one app at a time (`None`: no series for that app).
struct AppFamily {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    value: fn(&AppState, f64) -> Option<f64>,
}

const APP_FAMILIES: [AppFamily; 20] = [
    AppFamily {
        name: "meteor_app_replicas_desired",
        help: "App processes the MeteorApp asks for (spec.replicas, which an autoscaler sets)",
        kind: MetricType::Gauge,
        value: |s, _| Some(f64::from(s.desired)),
    },
    AppFamily {
        name: "meteor_app_replicas_current",
        help: "App pods that exist (status.replicas)",
        kind: MetricType::Gauge,
        value: |s, _| Some(f64::from(s.current)),
    },
    AppFamily {
        name: "meteor_app_replicas_ready",
        help: "App pods that are ready (status.readyReplicas)",
        kind: MetricType::Gauge,
        value: |s, _| Some(f64::from(s.ready)),
    },
    AppFamily {
        name: "meteor_app_replicas_updated",
        help: "App pods running the current pod template (status.updatedReplicas)",
        kind: MetricType::Gauge,
        value: |s, _| Some(f64::from(s.updated)),
    },
    AppFamily {
        name: "meteor_app_proxy_replicas_desired",
        help: "Proxy pods the app wants (status.routing.proxyReplicas; no series with the proxy off)",
        kind: MetricType::Gauge,
        value: |s, _| s.proxy.map(|(wanted, _)| f64::from(wanted)),
    },
    AppFamily {
        name: "meteor_app_proxy_replicas_ready",
        help: "Proxy pods ready (status.routing.proxyReadyReplicas; no series with the proxy off)",
        kind: MetricType::Gauge,
        value: |s, _| s.proxy.map(|(_, ready)| f64::from(ready)),
    },
    AppFamily {
        name: "meteor_app_rollbacks",
        help: "Times the operator rolled the app back (Degraded turned RolledBack)",
        kind: MetricType::Counter,
        value: |s, _| Some(s.rollbacks as f64),
    },
    AppFamily {
        name: "meteor_app_rollouts_stuck",
        help: "Rollouts that got stuck with nothing to roll back to (Degraded turned RolloutStuck)",
        kind: MetricType::Counter,
        value: |s, _| Some(s.stuck as f64),
    },
    AppFamily {
        name: "meteor_app_rollout_slot_waiting_seconds",
        help: "How long the app has been waiting for an upgrade slot (Progressing WaitingForRolloutSlot); 0 when not waiting",
        kind: MetricType::Gauge,
        value: |s, now| {
            Some(
                s.slot_wait_since
                    .map_or(0.0, |since| (now - since).max(0.0)),
            )
        },
    },
    AppFamily {
        name: "meteor_app_rollout_slot_waited_seconds",
        help: "Seconds spent in upgrade-slot waits that ended",
        kind: MetricType::Counter,
        value: |s, _| Some(s.slot_waited),
    },
    AppFamily {
        name: "meteor_app_autoscaler_min_replicas",
        help: "spec.autoscaling.minReplicas (no series without spec.autoscaling)",
        kind: MetricType::Gauge,
        value: |s, _| s.autoscaler.as_ref().map(|a| f64::from(a.min)),
    },
    AppFamily {
        name: "meteor_app_autoscaler_max_replicas",
        help: "spec.autoscaling.maxReplicas (no series without spec.autoscaling)",
        kind: MetricType::Gauge,
        value: |s, _| s.autoscaler.as_ref().map(|a| f64::from(a.max)),
    },
    AppFamily {
        name: "meteor_app_autoscaler_current_replicas",
        help: "App processes the HorizontalPodAutoscaler last saw (status.autoscaling.currentReplicas)",
        kind: MetricType::Gauge,
        value: |s, _| s.autoscaler.as_ref().and_then(|a| a.current).map(f64::from),
    },
    AppFamily {
        name: "meteor_app_autoscaler_desired_replicas",
        help: "App processes the HorizontalPodAutoscaler wants (status.autoscaling.desiredReplicas)",
        kind: MetricType::Gauge,
        value: |s, _| s.autoscaler.as_ref().and_then(|a| a.desired).map(f64::from),
    },
    AppFamily {
        name: "meteor_app_autoscaler_cpu_utilization_percent",
        help: "Average CPU use, percent of the request, as the HorizontalPodAutoscaler last measured it",
        kind: MetricType::Gauge,
        value: |s, _| s.autoscaler.as_ref().and_then(|a| a.cpu).map(f64::from),
    },
    AppFamily {
        name: "meteor_app_mongo_members",
        help: "Members in the managed replica set's configuration (status.mongo.members; managed MongoDB only)",
        kind: MetricType::Gauge,
        value: |s, _| s.mongo.as_ref().map(|m| f64::from(m.members)),
    },
    AppFamily {
        name: "meteor_app_mongo_members_ready",
        help: "Managed replica-set members that are PRIMARY or SECONDARY and voting (status.mongo.readyMembers)",
        kind: MetricType::Gauge,
        value: |s, _| s.mongo.as_ref().map(|m| f64::from(m.ready)),
    },
    AppFamily {
        name: "meteor_app_mongo_primary",
        help: "1 while the managed replica set has a primary (status.mongo.primary), else 0",
        kind: MetricType::Gauge,
        value: |s, _| s.mongo.as_ref().map(|m| f64::from(u8::from(m.primary))),
    },
    AppFamily {
        name: "meteor_app_mongo_replication_lag_seconds",
        help: "Largest replication lag of a secondary behind the primary (status.mongo.replicationLagSeconds, when known)",
        kind: MetricType::Gauge,
        value: |s, _| s.mongo.as_ref().and_then(|m| m.lag).map(|lag| lag as f64),
    },
    AppFamily {
        name: "meteor_app_mongo_oplog_window_seconds",
        help: "Seconds between the oldest and the newest entry of the primary's oplog: how long a member may be away and still catch up (status.mongo.oplogWindowSeconds, when known)",
        kind: MetricType::Gauge,
        value: |s, _| {
            s.mongo
                .as_ref()
                .and_then(|m| m.oplog_window)
                .map(|w| w as f64)
        },
    },
];

impl Collector for AppSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = (self.clock)();
        let mut inner = self.inner.lock().expect("lock is never poisoned");
        inner.sweep(now);
        let apps = &inner.by_name;
        let labels = |(namespace, name): &(String, String)| {
            [("namespace", namespace.clone()), ("app", name.clone())]
        };

        let mut family = encoder.encode_descriptor(
            "meteor_app_condition",
            "Each condition of each MeteorApp: 1 for its current status and reason (one series per app and type)",
            None,
            MetricType::Gauge,
        )?;
        for ((namespace, name), state) in apps {
            for c in &state.conditions {
                let labels = [
                    ("namespace", namespace.as_str()),
                    ("app", name.as_str()),
                    ("type", c.type_.as_str()),
                    ("status", c.status.as_str()),
                    ("reason", c.reason.as_str()),
                ];
                ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
            }
        }

        for spec in &APP_FAMILIES {
            let mut family = encoder.encode_descriptor(spec.name, spec.help, None, spec.kind)?;
            for (key, state) in apps {
                let Some(value) = (spec.value)(state, now) else {
                    continue;
                };
                let labels = labels(key);
                let series = family.encode_family(&labels)?;
                match spec.kind {
                    MetricType::Counter => ConstCounter::new(value).encode(series)?,
                    _ => ConstGauge::new(value).encode(series)?,
                }
            }
        }

        let mut family = encoder.encode_descriptor(
            "meteor_app_rollout_duration_seconds",
            "Rollouts that completed, by how long Progressing was True before it turned False with RolloutComplete",
            None,
            MetricType::Histogram,
        )?;
        for (key, state) in apps {
            let mut buckets = [(f64::INFINITY, 0u64); 9];
            for (i, (bound, count)) in buckets.iter_mut().enumerate() {
                if let Some(&b) = ROLLOUT_BUCKETS.get(i) {
                    *bound = b;
                }
                *count = state.rollout_buckets[i];
            }
            let count = state.rollout_buckets.iter().sum();
            family
                .encode_family(&labels(key))?
                .encode_histogram::<NoLabelSet>(state.rollout_seconds, count, &buckets, None)?;
        }
        Ok(())
    }
}

/// Seconds since the epoch.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Resident set size from `/proc/self/statm` (Linux; None elsewhere).
fn resident_memory_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // Kubernetes nodes and the operator image are Linux with 4 KiB pages.
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::{Metrics, request_kind};
    use crate::api::{MeteorApp, MeteorAppStatus};
    use http::Method;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use serde_json::json;
    use std::cell::Cell;

    // The test's clock, seconds since the epoch (each test thread has its own).
    thread_local!(static NOW: Cell<f64> = const { Cell::new(1_700_000_000.0) });

    fn now() -> f64 {
        NOW.with(Cell::get)
    }

    fn advance(seconds: f64) {
        NOW.with(|now| now.set(now.get() + seconds));
    }

    fn metrics() -> Metrics {
        Metrics::with_clock(now)
    }

    fn app(name: &str, extra: serde_json::Value) -> MeteorApp {
        let mut spec = json!({
            "image": "todos:1", "rootUrl": "https://todos.example.com", "replicas": 3,
            "mongo": {"external": {"url": {"name": "m", "key": "u"}}},
        });
        for (key, value) in extra.as_object().unwrap() {
            spec[key] = value.clone();
        }
        serde_json::from_value(json!({
            "apiVersion": "meteorfleet.dev/v1alpha1", "kind": "MeteorApp",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": spec,
        }))
        .unwrap()
    }

    /// A condition that turned `status` `ago` seconds before the test clock's now.
    fn cond(type_: &str, status: &str, reason: &str, ago: f64) -> Condition {
        let at = k8s_openapi::jiff::Timestamp::from_millisecond(((now() - ago) * 1000.0) as i64)
            .unwrap();
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: Time(at),
        }
    }

    fn status(conditions: Vec<Condition>) -> MeteorAppStatus {
        MeteorAppStatus {
            conditions,
            ..MeteorAppStatus::default()
        }
    }

    /// The sample lines of `name` (exactly that name, any labels).
    fn samples(metrics: &Metrics, name: &str) -> Vec<String> {
        metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .map(str::to_string)
            .collect()
    }

    fn value(metrics: &Metrics, name: &str, app: &str) -> Option<f64> {
        let prefix = format!("{name}{{namespace=\"shop\",app=\"{app}\"}} ");
        samples(metrics, name)
            .iter()
            .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
    }

    const TODOS: &str = r#"namespace="shop",app="todos""#;

    #[test]
    fn the_reconcile_series_exist_at_zero_before_the_first_reconcile() {
        let text = Metrics::default().encode();
        for line in [
            r#"controller_runtime_reconcile_total{controller="meteorapp",result="success"} 0"#,
            r#"controller_runtime_reconcile_total{controller="meteorapp",result="error"} 0"#,
            r#"controller_runtime_reconcile_errors_total{controller="meteorapp",error="api_status"} 0"#,
            r#"controller_runtime_reconcile_errors_total{controller="meteorapp",error="api_transport"} 0"#,
            r#"controller_runtime_reconcile_errors_total{controller="meteorapp",error="missing_namespace"} 0"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
    }

    #[test]
    fn a_condition_is_one_series_per_type_that_follows_its_reason() {
        let metrics = metrics();
        let todos = app("todos", json!({}));
        metrics.app_status(
            &todos,
            &status(vec![
                cond("Ready", "False", "WaitingForReplicas", 0.0),
                cond("Progressing", "True", "RollingOut", 0.0),
                cond("Degraded", "False", "AsExpected", 0.0),
            ]),
        );
        assert_eq!(
            samples(&metrics, "meteor_app_condition"),
            [
                format!(
                    r#"meteor_app_condition{{{TODOS},type="Ready",status="False",reason="WaitingForReplicas"}} 1"#
                ),
                format!(
                    r#"meteor_app_condition{{{TODOS},type="Progressing",status="True",reason="RollingOut"}} 1"#
                ),
                format!(
                    r#"meteor_app_condition{{{TODOS},type="Degraded",status="False",reason="AsExpected"}} 1"#
                ),
            ]
        );
        // The reason changes, then the status: the old label sets go.
        for ready in [
            cond("Ready", "False", "MongoNotReady", 0.0),
            cond("Ready", "True", "AllReplicasReady", 0.0),
        ] {
            let expected = format!(
                r#"meteor_app_condition{{{TODOS},type="Ready",status="{}",reason="{}"}} 1"#,
                ready.status, ready.reason
            );
            metrics.app_status(&todos, &status(vec![ready]));
            assert_eq!(samples(&metrics, "meteor_app_condition"), [expected]);
        }
    }

    #[test]
    fn replicas_proxies_autoscaler_and_mongo_follow_the_status() {
        let metrics = metrics();
        let todos = app("todos", json!({"autoscaling": {"maxReplicas": 8}}));
        let mut seen = MeteorAppStatus {
            replicas: 4,
            ready_replicas: 2,
            updated_replicas: 1,
            ..MeteorAppStatus::default()
        };
        metrics.app_status(&todos, &seen);
        let get = |name| value(&metrics, name, "todos");
        assert_eq!(get("meteor_app_replicas_desired"), Some(3.0));
        assert_eq!(get("meteor_app_replicas_current"), Some(4.0));
        assert_eq!(get("meteor_app_replicas_ready"), Some(2.0));
        assert_eq!(get("meteor_app_replicas_updated"), Some(1.0));
        assert_eq!(get("meteor_app_autoscaler_min_replicas"), Some(2.0));
        assert_eq!(get("meteor_app_autoscaler_max_replicas"), Some(8.0));
        // Not reported yet: no series rather than a made-up 0.
        assert_eq!(get("meteor_app_autoscaler_desired_replicas"), None);
        assert_eq!(get("meteor_app_proxy_replicas_ready"), None);
        assert_eq!(get("meteor_app_mongo_members"), None);

        seen.ready_replicas = 3;
        seen.routing = Some(crate::api::RoutingStatus {
            proxy_replicas: Some(2),
            proxy_ready_replicas: Some(1),
            address: None,
        });
        seen.autoscaling = Some(crate::api::AutoscalingStatus {
            current_replicas: Some(3),
            desired_replicas: Some(5),
            current_cpu_utilization_percentage: Some(91),
        });
        seen.mongo = Some(crate::api::MongoStatus {
            members: 3,
            ready_members: 2,
            primary: Some("todos-mongo-0".into()),
            replication_lag_seconds: Some(12),
            oplog_window_seconds: Some(7_200),
        });
        metrics.app_status(&todos, &seen);
        let get = |name| value(&metrics, name, "todos");
        assert_eq!(get("meteor_app_replicas_ready"), Some(3.0));
        assert_eq!(get("meteor_app_proxy_replicas_desired"), Some(2.0));
        assert_eq!(get("meteor_app_proxy_replicas_ready"), Some(1.0));
        assert_eq!(get("meteor_app_autoscaler_current_replicas"), Some(3.0));
        assert_eq!(get("meteor_app_autoscaler_desired_replicas"), Some(5.0));
        assert_eq!(
            get("meteor_app_autoscaler_cpu_utilization_percent"),
            Some(91.0)
        );
        assert_eq!(get("meteor_app_mongo_members"), Some(3.0));
        assert_eq!(get("meteor_app_mongo_members_ready"), Some(2.0));
        assert_eq!(get("meteor_app_mongo_primary"), Some(1.0));
        assert_eq!(get("meteor_app_mongo_replication_lag_seconds"), Some(12.0));
        assert_eq!(get("meteor_app_mongo_oplog_window_seconds"), Some(7_200.0));

        // The proxy turned off, autoscaling removed, the primary lost.
        seen.routing = None;
        seen.mongo.as_mut().unwrap().primary = None;
        metrics.app_status(&app("todos", json!({})), &seen);
        let get = |name| value(&metrics, name, "todos");
        assert_eq!(get("meteor_app_proxy_replicas_ready"), None);
        assert_eq!(get("meteor_app_autoscaler_max_replicas"), None);
        assert_eq!(get("meteor_app_mongo_primary"), Some(0.0));
    }

    #[test]
    fn rollbacks_and_stuck_rollouts_are_counted_once_each() {
        let metrics = metrics();
        let mut todos = app("todos", json!({}));
        let healthy = status(vec![cond("Degraded", "False", "AsExpected", 0.0)]);
        let rolled_back = status(vec![cond("Degraded", "True", "RolledBack", 0.0)]);
        let stuck = status(vec![cond("Degraded", "True", "RolloutStuck", 0.0)]);
        let count = |name| value(&metrics, name, "todos");
        metrics.app_status(&todos, &healthy);
        // Present at 0 from the start, so that the first rollback is an increase.
        assert_eq!(count("meteor_app_rollbacks_total"), Some(0.0));
        assert_eq!(count("meteor_app_rollouts_stuck_total"), Some(0.0));
        todos.status = Some(healthy.clone());
        metrics.app_status(&todos, &rolled_back);
        assert_eq!(count("meteor_app_rollbacks_total"), Some(1.0));
        // The next reconcile reads a cache that does not show the status write yet, and the
        // one after it does: neither counts again.
        metrics.app_status(&todos, &rolled_back);
        todos.status = Some(rolled_back.clone());
        metrics.app_status(&todos, &rolled_back);
        assert_eq!(count("meteor_app_rollbacks_total"), Some(1.0));
        // A new spec is a new attempt; it fails again, then another is stuck.
        metrics.app_status(&todos, &healthy);
        metrics.app_status(&todos, &rolled_back);
        metrics.app_status(&todos, &stuck);
        metrics.app_status(&todos, &stuck);
        assert_eq!(count("meteor_app_rollbacks_total"), Some(2.0));
        assert_eq!(count("meteor_app_rollouts_stuck_total"), Some(1.0));

        // A restarted operator finds the app rolled back already: nothing new happened.
        let restarted = self::metrics();
        todos.status = Some(rolled_back.clone());
        restarted.app_status(&todos, &rolled_back);
        assert_eq!(
            value(&restarted, "meteor_app_rollbacks_total", "todos"),
            Some(0.0)
        );
    }

    #[test]
    fn a_completed_rollout_is_observed_with_its_duration() {
        let metrics = metrics();
        let mut todos = app("todos", json!({}));
        let rolling = status(vec![cond("Progressing", "True", "RollingOut", 0.0)]);
        metrics.app_status(&todos, &rolling);
        todos.status = Some(rolling);
        advance(95.0);
        let done = status(vec![cond("Progressing", "False", "RolloutComplete", 0.0)]);
        metrics.app_status(&todos, &done);
        metrics.app_status(&todos, &done);
        let lines = samples(&metrics, "meteor_app_rollout_duration_seconds_bucket");
        assert!(
            lines.contains(&format!(
                r#"meteor_app_rollout_duration_seconds_bucket{{le="60.0",{TODOS}}} 0"#
            )),
            "{lines:?}"
        );
        assert!(
            lines.contains(&format!(
                r#"meteor_app_rollout_duration_seconds_bucket{{le="120.0",{TODOS}}} 1"#
            )),
            "{lines:?}"
        );
        assert_eq!(
            value(&metrics, "meteor_app_rollout_duration_seconds_sum", "todos"),
            Some(95.0)
        );
        assert_eq!(
            value(
                &metrics,
                "meteor_app_rollout_duration_seconds_count",
                "todos"
            ),
            Some(1.0)
        );
    }

    #[test]
    fn the_wait_for_an_upgrade_slot_is_timed() {
        let metrics = metrics();
        let todos = app("todos", json!({}));
        let waiting = |ago| {
            status(vec![cond(
                "Progressing",
                "True",
                "WaitingForRolloutSlot",
                ago,
            )])
        };
        metrics.app_status(
            &todos,
            &status(vec![cond("Progressing", "False", "RolloutComplete", 0.0)]),
        );
        let get = |name| value(&metrics, name, "todos");
        assert_eq!(get("meteor_app_rollout_slot_waiting_seconds"), Some(0.0));
        metrics.app_status(&todos, &waiting(0.0));
        advance(40.0);
        assert_eq!(get("meteor_app_rollout_slot_waiting_seconds"), Some(40.0));
        metrics.app_status(&todos, &waiting(40.0));
        advance(60.0);
        metrics.app_status(
            &todos,
            &status(vec![cond(
                "Progressing",
                "True",
                "UpgradeRollingOut",
                100.0,
            )]),
        );
        assert_eq!(get("meteor_app_rollout_slot_waiting_seconds"), Some(0.0));
        assert_eq!(
            get("meteor_app_rollout_slot_waited_seconds_total"),
            Some(100.0)
        );

        // After an operator restart the wait counts from the condition's transition.
        let restarted = self::metrics();
        restarted.app_status(&todos, &waiting(300.0));
        assert_eq!(
            value(
                &restarted,
                "meteor_app_rollout_slot_waiting_seconds",
                "todos"
            ),
            Some(300.0)
        );
    }

    #[test]
    fn the_series_of_a_deleted_or_long_unseen_app_go() {
        let metrics = metrics();
        let ready = status(vec![cond("Ready", "True", "AllReplicasReady", 0.0)]);
        let (todos, chat) = (app("todos", json!({})), app("chat", json!({})));
        metrics.app_status(&todos, &ready);
        metrics.app_status(&chat, &ready);
        metrics.app_deleted(&todos);
        let text = metrics.encode();
        assert!(!text.contains(r#"app="todos""#), "{text}");
        assert!(text.contains(r#"app="chat""#), "{text}");
        // Families stay declared without series (so a scrape names every series the operator
        // can export).
        assert!(text.contains("# TYPE meteor_app_condition gauge"), "{text}");

        // Deleted without a reconcile seeing it: gone once not fed for 15 minutes.
        advance(600.0);
        metrics.app_status(&todos, &ready);
        advance(400.0);
        let text = metrics.encode();
        assert!(text.contains(r#"app="todos""#), "{text}");
        assert!(!text.contains(r#"app="chat""#), "{text}");
    }

    #[test]
    fn requests_are_named_by_what_they_do() {
        let ns = "/apis/apps/v1/namespaces/shop/deployments";
        assert_eq!(
            request_kind(&Method::GET, &format!("{ns}/todos"), ""),
            "get"
        );
        assert_eq!(request_kind(&Method::GET, ns, "labelSelector=x"), "list");
        assert_eq!(
            request_kind(&Method::GET, ns, "watch=true&resourceVersion=1"),
            "watch"
        );
        assert_eq!(
            request_kind(&Method::GET, "/api/v1/secrets", "watch=true"),
            "watch"
        );
        assert_eq!(request_kind(&Method::GET, "/api/v1/secrets", ""), "list");
        assert_eq!(
            request_kind(&Method::GET, "/api/v1/namespaces/shop/secrets/m", ""),
            "get"
        );
        assert_eq!(
            request_kind(&Method::PATCH, &format!("{ns}/todos"), "fieldManager=x"),
            "apply"
        );
        let app = "/apis/meteorfleet.dev/v1alpha1/namespaces/shop/meteorapps/todos/status";
        assert_eq!(request_kind(&Method::PATCH, app, ""), "status");
        let events = "/apis/events.k8s.io/v1/namespaces/shop/events";
        assert_eq!(request_kind(&Method::POST, events, ""), "event");
        let lease = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/meteor-operator";
        assert_eq!(request_kind(&Method::PATCH, lease, ""), "lease");
        assert_eq!(
            request_kind(&Method::DELETE, &format!("{ns}/todos"), ""),
            "delete"
        );
    }
}
