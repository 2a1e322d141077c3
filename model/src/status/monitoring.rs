//! The proxy pods' PodMonitor as status: the `Monitored` condition, present only while the spec
//! asks for one (`routing.proxy.podMonitor`). It never holds `Ready`: an app serves without
//! being scraped.

use super::conditions::{Readiness, condition_of, upsert};
use crate::api::{MeteorApp, MeteorAppStatus};
use crate::build::meta::proxy_name;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Condition type of the PodMonitor.
pub const MONITORED: &str = "Monitored";
/// `Monitored=False` while the operator has not listed PodMonitors yet (not a problem).
pub const PENDING: &str = "Pending";
/// `Monitored=False`: the cluster has no PodMonitor CRD.
pub const NO_PROMETHEUS_OPERATOR: &str = "NoPrometheusOperator";

/// What the pass saw of the PodMonitor it wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MonitorState {
    /// Applied (or unchanged) as built.
    Applied,
    /// The cluster serves no `podmonitors.monitoring.coreos.com`.
    NotInstalled,
    /// The CRD is there; the operator's cache of PodMonitors has not listed yet.
    Listing,
}

/// `Monitored` for `state`.
pub fn readiness(app: &MeteorApp, state: &MonitorState) -> Readiness {
    let name = proxy_name(app);
    match state {
        MonitorState::Applied => Readiness {
            ready: true,
            reason: "PodMonitorApplied",
            message: format!("PodMonitor {name} selects the proxy pods (port admin)"),
        },
        MonitorState::NotInstalled => Readiness {
            ready: false,
            reason: NO_PROMETHEUS_OPERATOR,
            message: "routing.proxy.podMonitor: the cluster has no PodMonitor CRD \
                      (podmonitors.monitoring.coreos.com); install the Prometheus Operator, or \
                      remove podMonitor"
                .into(),
        },
        MonitorState::Listing => Readiness {
            ready: false,
            reason: PENDING,
            message: "the operator has not listed PodMonitors yet".into(),
        },
    }
}

/// Puts `Monitored` into `new` when the spec wants a PodMonitor; with no observation (the pass
/// stopped before it) the previous condition is carried over.
pub fn fold_status(
    new: &mut MeteorAppStatus,
    app: &MeteorApp,
    seen: Option<&MonitorState>,
    now: &Time,
) {
    if crate::build::wanted_pod_monitor(app).is_none() {
        return;
    }
    let previous = app
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == MONITORED));
    match seen {
        Some(state) => upsert(
            &mut new.conditions,
            condition_of(
                MONITORED,
                &readiness(app, state),
                app.metadata.generation,
                previous,
                now.clone(),
            ),
        ),
        None => {
            if let Some(previous) = previous {
                upsert(&mut new.conditions, previous.clone());
            }
        }
    }
}
