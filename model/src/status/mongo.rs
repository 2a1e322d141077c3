//! `MongoReady`, `MongoStorageResized` and `status.mongo`, computed from what
//! [`crate::mongo::replset::step`] saw and the tier reported, and folded into the status.
//!
//! `MongoReady` is True when the set can serve the app as configured: a primary, the users in
//! place, and every voting member PRIMARY or SECONDARY. Adding or removing a member does not
//! flip it (the set keeps serving); a voting member that is down does (`MemberUnhealthy`), since
//! the set has lost its margin. Reasons: Provisioning, Initializing, NoPrimary, MemberUnhealthy,
//! Unreachable (also used when the operator's credentials are refused), Ready.

pub use super::conditions::Readiness;
use super::conditions::{READY, condition_of, hold_not_ready, upsert};
use crate::api::{MeteorApp, MeteorAppStatus, MongoStatus};
use crate::build::mongo::managed;
use crate::mongo::replset::{Action, AdminError, Facts, MemberState, Problem, Target, Wait};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use std::time::Duration;

/// Type of the condition on the MeteorApp.
pub const CONDITION_TYPE: &str = "MongoReady";
/// Type of the condition reporting a refused or applied storage resize.
pub const STORAGE_CONDITION_TYPE: &str = "MongoStorageResized";

fn not_ready(reason: &'static str, message: String) -> Readiness {
    Readiness {
        ready: false,
        reason,
        message,
    }
}

fn list(ids: &[usize]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Readiness from the facts of a step, what it did, and whether that failed.
pub fn readiness(
    target: &Target,
    facts: &Facts,
    action: &Action,
    error: Option<&AdminError>,
) -> Readiness {
    let mut r = readiness_from_facts(target, facts, action);
    if let Some(e) = error {
        r.message = format!("{}; last change failed: {e}", r.message);
    }
    r
}

fn readiness_from_facts(target: &Target, facts: &Facts, action: &Action) -> Readiness {
    match &facts.problem {
        Some(Problem::RootRejected) => {
            return not_ready(
                "Unreachable",
                format!(
                    "user {} exists but rejects the password in its Secret; restore the Secret \
                     (the operator never changes existing users)",
                    target.root.name
                ),
            );
        }
        Some(Problem::AuthFailed(e)) => {
            return not_ready(
                "Unreachable",
                format!("credentials refused (root user and keyfile): {e}"),
            );
        }
        None => {}
    }
    if !facts.any_reachable() {
        return if facts.was_initialized {
            not_ready("Unreachable", "no member answers".into())
        } else {
            not_ready("Provisioning", "waiting for mongod pods to start".into())
        };
    }
    if !facts.initiated() {
        return match action {
            Action::Wait(Wait::MembersStarting(ids)) if !ids.is_empty() => not_ready(
                "Provisioning",
                format!("waiting for members {} to start", list(ids)),
            ),
            _ => not_ready("Initializing", "initiating the replica set".into()),
        };
    }
    let (Some(config), Some(primary)) = (&facts.config, facts.primary) else {
        return if facts.was_initialized {
            not_ready("NoPrimary", "no primary elected".into())
        } else {
            not_ready("Initializing", "waiting for the first primary".into())
        };
    };
    if !facts.missing_users.is_empty()
        || facts.identity != Some(crate::mongo::replset::Identity::Root)
    {
        return not_ready(
            "Initializing",
            format!("creating users: {}", facts.missing_users.join(", ")),
        );
    }
    let down: Vec<usize> = config
        .members
        .iter()
        .filter(|m| m.votes > 0)
        .map(|m| m.id)
        .filter(|id| {
            !matches!(
                facts.state(*id),
                Some(MemberState::Primary | MemberState::Secondary)
            )
        })
        .collect();
    if !down.is_empty() {
        return not_ready(
            "MemberUnhealthy",
            format!(
                "voting members {} are not PRIMARY or SECONDARY",
                list(&down)
            ),
        );
    }
    let voting = config.members.iter().filter(|m| m.votes > 0).count();
    let mut message = format!(
        "{voting} voting members healthy, primary {}",
        target.host(primary)
    );
    if config.members.len() != target.members || voting != config.members.len() {
        message.push_str(&format!(
            "; scaling to {} members ({} in the config)",
            target.members,
            config.members.len()
        ));
    }
    Readiness {
        ready: true,
        reason: "Ready",
        message,
    }
}

/// The `MongoReady` condition; keeps `lastTransitionTime` of `previous` when the status is the
/// same.
pub fn condition(
    r: &Readiness,
    observed_generation: Option<i64>,
    previous: Option<&Condition>,
    now: Time,
) -> Condition {
    condition_of(CONDITION_TYPE, r, observed_generation, previous, now)
}

/// `status.mongo` from the facts; `None` before the set has a config.
pub fn mongo_status(target: &Target, facts: &Facts) -> Option<MongoStatus> {
    let config = facts.config.as_ref()?;
    let states = facts.status.as_ref();
    let ready = config
        .members
        .iter()
        .filter(|m| {
            matches!(
                facts.state(m.id),
                Some(MemberState::Primary | MemberState::Secondary)
            )
        })
        .count();
    let lag = states.and_then(|s| {
        let primary = s
            .members
            .iter()
            .find(|m| m.state == MemberState::Primary)?
            .optime_seconds?;
        s.members
            .iter()
            .filter(|m| m.state == MemberState::Secondary)
            .filter_map(|m| m.optime_seconds)
            .map(|t| (primary - t).max(0))
            .max()
    });
    Some(MongoStatus {
        members: config.members.len() as i32,
        ready_members: ready as i32,
        primary: facts.primary.map(|p| target.host(p).to_string()),
        replication_lag_seconds: lag,
        oplog_window_seconds: facts.oplog_window_seconds,
    })
}

/// The storage-resize condition for a decision, `None` when nothing is to be said.
pub fn storage_readiness(decision: &crate::mongo::storage::StorageDecision) -> Option<Readiness> {
    use crate::mongo::storage::StorageDecision::*;
    match decision {
        Unchanged => None,
        Expand { pvcs, size } => Some(Readiness {
            ready: true,
            reason: "Expanding",
            message: format!("requested {size} for {}", pvcs.join(", ")),
        }),
        Refused { message } => Some(not_ready("ResizeRefused", message.clone())),
    }
}

/// What the tier reconcile found and did.
#[derive(Clone, Debug, PartialEq)]
pub struct TierReport {
    /// Content of `MongoReady`.
    pub readiness: Readiness,
    /// Content of `MongoStorageResized`, while a resize is refused or under way.
    pub storage: Option<Readiness>,
    /// `status.mongo`, when the config was readable.
    pub mongo: Option<MongoStatus>,
    /// When to reconcile again at the latest.
    pub requeue: Duration,
    /// Write requests made.
    pub writes: u64,
}

/// Puts the tier's conditions and `status.mongo` into `status` (computed by the core), and
/// holds `Ready` at False while `MongoReady` is not True. With no report (the reconcile stopped
/// before the tier), the previous MongoDB status is carried over unchanged.
pub fn fold_status(
    new: &mut MeteorAppStatus,
    app: &MeteorApp,
    report: Option<&TierReport>,
    now: &Time,
) {
    let previous = app.status.as_ref();
    let previous_condition =
        |type_: &str| previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == type_));
    if managed(app).is_none() {
        new.mongo = None;
        return;
    }
    let generation = app.metadata.generation;
    match report {
        Some(r) => {
            new.mongo = r.mongo.clone().or_else(|| {
                // Config unreadable this time: keep the size, drop what is no longer known.
                previous.and_then(|s| s.mongo.clone()).map(|m| MongoStatus {
                    ready_members: 0,
                    primary: None,
                    replication_lag_seconds: None,
                    oplog_window_seconds: None,
                    ..m
                })
            });
            upsert(
                &mut new.conditions,
                condition(
                    &r.readiness,
                    generation,
                    previous_condition(CONDITION_TYPE),
                    now.clone(),
                ),
            );
            match &r.storage {
                Some(s) => upsert(
                    &mut new.conditions,
                    condition_of(
                        STORAGE_CONDITION_TYPE,
                        s,
                        generation,
                        previous_condition(STORAGE_CONDITION_TYPE),
                        now.clone(),
                    ),
                ),
                None => new.conditions.retain(|c| c.type_ != STORAGE_CONDITION_TYPE),
            }
        }
        None => {
            new.mongo = previous.and_then(|s| s.mongo.clone());
            for type_ in [CONDITION_TYPE, STORAGE_CONDITION_TYPE] {
                if let Some(c) = previous_condition(type_) {
                    upsert(&mut new.conditions, c.clone());
                }
            }
        }
    }
    let mongo_ready = new
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_TYPE)
        .map(|c| (c.status == "True", c.message.clone()));
    let mongo_message = match mongo_ready {
        Some((true, _)) => return,
        Some((false, message)) => message,
        None => "MongoDB not reconciled yet".to_string(),
    };
    hold_not_ready(
        &mut new.conditions,
        previous_condition(READY),
        "MongoNotReady",
        format!("MongoDB: {mongo_message}"),
        now,
    );
}
