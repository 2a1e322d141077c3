//! The status step of a reconcile: pure functions from what the pass concluded, observed and
//! wrote to the whole `status` block, its `metav1.Condition`s, and the events a change announces.
//!
//! - [`conditions`]: the core condition types and the helpers every tier uses;
//! - [`app`]: `Ready`, `Progressing`, `Degraded` and the replica figures, from the Deployments;
//! - [`mongo`], [`routing`], [`autoscaling`], [`monitoring`]: each tier's condition and status
//!   block, folded into what [`app`] computed (a tier the app cannot serve without holds `Ready`
//!   at False);
//! - [`of_pass`] folds them in that order; [`announcements`] says what a change is worth an
//!   event for.
//!
//! Nothing here changes on a resync that observed nothing new (a condition's
//! `lastTransitionTime` moves only when its status flips), so an unchanged app writes no status.

pub mod app;
pub mod autoscaling;
pub mod conditions;
pub mod mongo;
pub mod monitoring;
pub mod routing;

pub use app::*;
pub use conditions::*;

use crate::api::{MeteorApp, MeteorAppStatus, RolloutStatus};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// What one pass concluded and saw, as the status step reads it.
pub struct PassReport<'a> {
    pub verdict: &'a Verdict,
    /// The app and worker Deployments: as written this pass, else as cached.
    pub app: Option<&'a Deployment>,
    pub worker: Option<&'a Deployment>,
    /// The rollout history to store.
    pub history: Option<RolloutStatus>,
    /// What the managed-MongoDB tier did; `None` when the pass stopped before it.
    pub mongo: Option<&'a mongo::TierReport>,
    /// What the routing tier saw; `None` when the pass stopped before it.
    pub routing: Option<&'a routing::RoutingObservation>,
    /// The autoscaler as written or cached; `None` when the pass stopped before it.
    pub autoscaler: Option<Option<&'a HorizontalPodAutoscaler>>,
    /// The proxy pods' PodMonitor, when the spec wants one and the pass got that far.
    pub pod_monitor: Option<&'a monitoring::MonitorState>,
}

/// The status for one pass: the core conditions, then each tier folded in.
pub fn of_pass(app: &MeteorApp, pass: PassReport, now: &Time) -> MeteorAppStatus {
    let mut status = compute(app, pass.verdict, pass.app, pass.worker, pass.history, now);
    mongo::fold_status(&mut status, app, pass.mongo, now);
    routing::fold_status(&mut status, app, pass.routing, now);
    autoscaling::fold_status(&mut status, app, pass.autoscaler, now);
    monitoring::fold_status(&mut status, app, pass.pod_monitor, now);
    status
}

/// A status change worth an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// A Warning (a problem appeared or changed), else Normal (Ready again).
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

/// Whether a condition's False reason is one the user must act on.
type ProblemReason = fn(&str) -> bool;

/// A Warning when a problem appears or changes; a Normal one when the app is Ready again.
pub fn announcements(old: Option<&MeteorAppStatus>, new: &MeteorAppStatus) -> Vec<Announcement> {
    let mut out: Vec<Announcement> = Vec::new();
    let warning = |reason: &str, message: &str| Announcement {
        warning: true,
        reason: reason.into(),
        message: message.into(),
    };
    let old_degraded = find(old, DEGRADED);
    if let Some(degraded) = find(Some(new), DEGRADED)
        && degraded.status == "True"
        && old_degraded.is_none_or(|o| {
            o.status != "True" || o.reason != degraded.reason || o.message != degraded.message
        })
    {
        out.push(warning(&degraded.reason, &degraded.message));
    }
    // A routing, autoscaling or monitoring problem the user must act on, unless Degraded
    // announced it.
    let problems: [(&str, ProblemReason); 3] = [
        (routing::ROUTED, routing::is_problem),
        (autoscaling::AUTOSCALED, |reason| {
            reason != autoscaling::PENDING
        }),
        (monitoring::MONITORED, |reason| {
            reason != monitoring::PENDING
        }),
    ];
    for (type_, is_problem) in problems {
        if let Some(now) = find(Some(new), type_)
            && now.status == "False"
            && is_problem(&now.reason)
            && find(old, type_).is_none_or(|o| {
                o.status != "False" || o.reason != now.reason || o.message != now.message
            })
            && !out.iter().any(|e| e.reason == now.reason)
        {
            out.push(warning(&now.reason, &now.message));
        }
    }
    let was_ready = find(old, READY).is_some_and(|c| c.status == "True");
    // Only the end of a problem announced above is news: a new app's first Ready, or Ready after
    // waiting for pods, shows in its status, and an event for it would be one more write per app
    // of a fleet (a new app's tiers rarely become ready at once, so "first" is not one write).
    let had_problem = old_degraded.is_some_and(|c| c.status == "True")
        || problems.iter().any(|(type_, is_problem)| {
            find(old, type_).is_some_and(|c| c.status == "False" && is_problem(&c.reason))
        });
    if let Some(ready) = find(Some(new), READY)
        && ready.status == "True"
        && !was_ready
        && had_problem
    {
        out.push(Announcement {
            warning: false,
            reason: ready.reason.clone(),
            message: ready.message.clone(),
        });
    }
    out
}
