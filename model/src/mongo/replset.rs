//! The replica-set state machine: observe, decide one change, make it, report.
//!
//! [`step`] is called once per reconcile. It keeps no memory: everything it decides comes from
//! what the members answer right now, so an operator killed after any call, or a member
//! restarted in the middle, simply leads the next [`step`] to the next missing change. Each step
//! makes at most one change (an initiate, one user, one reconfig or one step-down), which
//! MongoDB requires anyway for membership (one voting change per reconfig).
//!
//! Order of business:
//! 1. No member answers: wait (`Provisioning` or `Unreachable`).
//! 2. Not initiated: once every wanted member answers and none has a replica-set config,
//!    initiate on member 0 with member 0 alone. If any member already has a config, never
//!    initiate (that would fork the set).
//! 3. No primary: wait.
//! 4. Identity: the operator authenticates as `root` from the root Secret. Only if that fails
//!    and `root` does not exist yet does it use the keyfile identity (`__system`), which plays
//!    the role of the localhost exception for a client outside the pod: it creates `root`, and
//!    nothing else. If `root` exists but rejects the Secret's password, the step stops with
//!    [`Problem::RootRejected`] and changes nothing.
//! 5. Missing users (`app`, `oplog`) are created one per step; "already exists" counts as done.
//! 6. Membership, one member at a time: first members at or above `members` leave (step down
//!    if primary, then votes and priority to 0, then removal); then non-voting members that are
//!    SECONDARY get their vote; then the lowest missing member joins with votes 0, priority 0.
//!    Vote changes and step-downs wait while any other voting member is not PRIMARY/SECONDARY,
//!    so a change never costs the set its majority.
//!
//! The StatefulSet is sized by [`statefulset_replicas`]: never below the highest member still
//! in the configuration, so a pod goes only after its member was removed.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;
use thiserror::Error;

/// MongoDB's limit of voting members (and the CRD's limit of `members`).
pub const MAX_MEMBERS: usize = 7;

/// Who the operator is on a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// The `root` user, from the root Secret.
    Root,
    /// The keyfile's internal identity, used only to create `root` when it does not exist.
    Keyfile,
}

/// The answer to an unauthenticated `hello`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hello {
    /// `setName`: absent until the member has a replica-set config.
    pub set_name: Option<String>,
    /// `isWritablePrimary`.
    pub is_writable_primary: bool,
    /// `secondary`.
    pub secondary: bool,
    /// `primary`: host of the primary as this member knows it.
    pub primary: Option<String>,
}

/// One member in a replica-set config.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberConfig {
    /// `_id`: the StatefulSet ordinal.
    pub id: usize,
    /// `host`: the stable DNS name.
    pub host: String,
    /// `votes`: 0 or 1.
    pub votes: i32,
    /// `priority`: 0 for non-voting members and members about to leave.
    pub priority: f64,
}

/// The parts of a replica-set config the operator manages. Implementations keep every other
/// field of the real document as it is when they reconfigure.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplConfig {
    /// `_id`: the replica-set name.
    pub set_name: String,
    /// `version`; a reconfig carries the current version plus one.
    pub version: i64,
    /// `members`.
    pub members: Vec<MemberConfig>,
}

impl ReplConfig {
    /// The member with `_id` `id`.
    pub fn member(&self, id: usize) -> Option<&MemberConfig> {
        self.members.iter().find(|m| m.id == id)
    }
}

/// A member's state in `replSetGetStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// PRIMARY.
    Primary,
    /// SECONDARY.
    Secondary,
    /// STARTUP, STARTUP2 (initial sync) or RECOVERING.
    Syncing,
    /// Unreachable from the primary (DOWN, UNKNOWN, unhealthy).
    Down,
    /// Anything else (ROLLBACK, REMOVED, ARBITER).
    Other,
}

/// One member in `replSetGetStatus`.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberStatus {
    /// `_id`.
    pub id: usize,
    /// `name` (host:port).
    pub host: String,
    /// `state`.
    pub state: MemberState,
    /// Seconds of the last applied operation (`optimeDate`), when known.
    pub optime_seconds: Option<i64>,
}

/// The answer to `replSetGetStatus`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplStatus {
    /// `members`.
    pub members: Vec<MemberStatus>,
}

/// A user the operator makes sure exists (in `admin`).
#[derive(Clone, PartialEq)]
pub struct UserSpec {
    /// User name.
    pub name: String,
    /// Password (from its Secret).
    pub password: String,
    /// `(role, db)` pairs.
    pub roles: Vec<(String, String)>,
}

impl std::fmt::Debug for UserSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSpec")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// A failed admin call.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum AdminError {
    /// No answer (DNS, connect, timeout, connection lost mid-call).
    #[error("{host} unreachable: {message}")]
    Unreachable {
        /// Member asked.
        host: String,
        /// Driver message.
        message: String,
    },
    /// The credentials were rejected.
    #[error("{host} rejected the {identity:?} credentials")]
    AuthFailed {
        /// Member asked.
        host: String,
        /// Who tried.
        identity: Identity,
    },
    /// `createUser` found the user already there.
    #[error("user {0} already exists")]
    UserExists(String),
    /// Any other command error.
    #[error("{host}: {command} failed ({code}): {message}")]
    Command {
        /// Member asked.
        host: String,
        /// Command name.
        command: String,
        /// MongoDB error code.
        code: i32,
        /// MongoDB error message.
        message: String,
    },
}

type Res<T> = Result<T, AdminError>;

/// The MongoDB administration the state machine needs; each call is a direct connection to one
/// member (`host` is `name:port`).
pub trait MongoAdmin: Sync {
    /// Unauthenticated `hello`.
    fn hello(&self, host: &str) -> impl Future<Output = Res<Hello>> + Send;
    /// Checks `who` can authenticate on `host`.
    fn authenticate(&self, host: &str, who: Identity) -> impl Future<Output = Res<()>> + Send;
    /// `replSetGetConfig`; `None` when the member is not initiated.
    fn get_config(
        &self,
        host: &str,
        who: Identity,
    ) -> impl Future<Output = Res<Option<ReplConfig>>> + Send;
    /// `replSetGetStatus`.
    fn status(&self, host: &str, who: Identity) -> impl Future<Output = Res<ReplStatus>> + Send;
    /// Seconds between the oldest and the newest entry of `local.oplog.rs` on `host`; `None`
    /// when the oplog is empty.
    fn oplog_window(
        &self,
        host: &str,
        who: Identity,
    ) -> impl Future<Output = Res<Option<i64>>> + Send;
    /// `replSetInitiate` with `config`.
    fn initiate(
        &self,
        host: &str,
        who: Identity,
        config: &ReplConfig,
    ) -> impl Future<Output = Res<()>> + Send;
    /// `replSetReconfig` to `config` (its version is the current one plus one).
    fn reconfig(
        &self,
        host: &str,
        who: Identity,
        config: &ReplConfig,
    ) -> impl Future<Output = Res<()>> + Send;
    /// `replSetStepDown` on the primary `host`.
    fn step_down(&self, host: &str, who: Identity) -> impl Future<Output = Res<()>> + Send;
    /// Which of `names` exist as users in `admin` (`usersInfo`).
    fn existing_users(
        &self,
        host: &str,
        who: Identity,
        names: &[String],
    ) -> impl Future<Output = Res<BTreeSet<String>>> + Send;
    /// `createUser` in `admin`; [`AdminError::UserExists`] when it is there already.
    fn create_user(
        &self,
        host: &str,
        who: Identity,
        user: &UserSpec,
    ) -> impl Future<Output = Res<()>> + Send;
}

/// What the replica set should be.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Replica-set name.
    pub set_name: String,
    /// Wanted members, 1 to [`MAX_MEMBERS`].
    pub members: usize,
    /// Host of every possible member, by ordinal (length [`MAX_MEMBERS`]).
    pub hosts: Vec<String>,
    /// The root user (created first, the operator's identity).
    pub root: UserSpec,
    /// Other users, created in order (app, oplog).
    pub users: Vec<UserSpec>,
}

impl Target {
    /// Host of member `id`.
    pub fn host(&self, id: usize) -> &str {
        &self.hosts[id]
    }
}

/// Kubernetes facts the step needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KubeFacts {
    /// `spec.replicas` of the existing StatefulSet; `None` when it does not exist yet.
    pub statefulset_replicas: Option<i32>,
    /// Whether the set was seen initiated before (`status.mongo.members > 0`): tells
    /// `Unreachable` from `Provisioning` when no member answers.
    pub was_initialized: bool,
}

/// Something only a human can fix; the step changes nothing while it lasts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// `root` exists but rejects the password in its Secret.
    RootRejected,
    /// Neither `root` nor the keyfile identity is accepted.
    AuthFailed(String),
}

/// What the operator saw this step; the status is computed from it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    /// Wanted members.
    pub desired_members: usize,
    /// `hello` of each probed member by ordinal (`None`: no answer).
    pub hellos: Vec<Option<Hello>>,
    /// The current config, when initiated and readable.
    pub config: Option<ReplConfig>,
    /// Ordinal of the primary.
    pub primary: Option<usize>,
    /// `replSetGetStatus` from the primary.
    pub status: Option<ReplStatus>,
    /// The primary's oplog window in seconds, when it could be read.
    pub oplog_window_seconds: Option<i64>,
    /// Identity accepted on the members.
    pub identity: Option<Identity>,
    /// Users of the target found missing (checked on the primary).
    pub missing_users: Vec<String>,
    /// A problem that blocks progress.
    pub problem: Option<Problem>,
    /// See [`KubeFacts::was_initialized`].
    pub was_initialized: bool,
}

impl Facts {
    /// Whether any member answered.
    pub fn any_reachable(&self) -> bool {
        self.hellos.iter().any(Option::is_some)
    }
    /// Whether any member reports a replica-set config.
    pub fn initiated(&self) -> bool {
        self.config.is_some() || self.hellos.iter().flatten().any(|h| h.set_name.is_some())
    }
    fn reachable(&self, id: usize) -> bool {
        self.hellos.get(id).is_some_and(Option::is_some)
    }
    /// State of member `id` as the primary sees it.
    pub fn state(&self, id: usize) -> Option<MemberState> {
        self.status
            .as_ref()?
            .members
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.state)
    }
}

/// Why nothing was changed this step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wait {
    /// No member answers.
    NoneReachable,
    /// These members must answer before initiating.
    MembersStarting(Vec<usize>),
    /// Initiated, no primary elected (yet).
    NoPrimary,
    /// A new member is still syncing before it gets a vote.
    Syncing(usize),
    /// The next member to add does not answer yet.
    MemberStarting(usize),
    /// Members in the config are not PRIMARY/SECONDARY.
    Unhealthy(Vec<usize>),
}

/// The one change of a step.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Everything is as wanted.
    Healthy,
    /// Nothing to do until something changes.
    Wait(Wait),
    /// A human must act.
    Blocked(Problem),
    /// `replSetInitiate` on member 0, alone.
    Initiate,
    /// `createUser`.
    CreateUser {
        /// User name.
        name: String,
        /// Identity used.
        who: Identity,
    },
    /// Add member `id` with votes 0 and priority 0.
    AddMember(usize),
    /// Give member `id` votes 1 and priority 1.
    GrantVote(usize),
    /// Set votes and priority of member `id` to 0 before it leaves.
    Demote(usize),
    /// Step the primary `id` down before it leaves.
    StepDown(usize),
    /// Remove member `id` from the config.
    Remove(usize),
}

impl Action {
    /// Whether this action changes the replica set.
    pub fn is_change(&self) -> bool {
        !matches!(self, Action::Healthy | Action::Wait(_) | Action::Blocked(_))
    }
}

/// Result of one [`step`].
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// What was decided (and, for a change, attempted).
    pub action: Action,
    /// The change failed; it will be retried from fresh observations.
    pub error: Option<AdminError>,
    /// What was observed before the change.
    pub facts: Facts,
    /// `spec.replicas` to apply to the StatefulSet.
    pub statefulset_replicas: i32,
    /// When to come back.
    pub requeue: Duration,
}

/// After a change: look again soon.
pub const REQUEUE_CHANGED: Duration = Duration::from_secs(2);
/// While waiting for pods, elections or syncs.
pub const REQUEUE_WAIT: Duration = Duration::from_secs(10);
/// Healthy or blocked: routine check.
pub const REQUEUE_IDLE: Duration = Duration::from_secs(60);

/// Replicas of the StatefulSet: the wanted members, but never fewer than the members still in
/// the config (removal comes first), and never a blind scale-down while the config is unknown.
pub fn statefulset_replicas(target: &Target, facts: &Facts, current: Option<i32>) -> i32 {
    let desired = target.members as i32;
    match &facts.config {
        Some(c) => c
            .members
            .iter()
            .map(|m| m.id as i32 + 1)
            .fold(desired, i32::max),
        None if facts.any_reachable() && !facts.initiated() => desired,
        None => desired.max(current.unwrap_or(0)),
    }
}

async fn hellos(
    admin: &impl MongoAdmin,
    target: &Target,
    ids: std::ops::Range<usize>,
) -> Vec<Option<Hello>> {
    let calls = ids.map(|id| async move { admin.hello(target.host(id)).await.ok() });
    futures::future::join_all(calls).await
}

/// Observes the members (reads only).
pub async fn observe(admin: &impl MongoAdmin, target: &Target, kube: KubeFacts) -> Facts {
    let mut facts = Facts {
        desired_members: target.members,
        was_initialized: kube.was_initialized,
        ..Facts::default()
    };
    let probe = (target.members)
        .max(kube.statefulset_replicas.unwrap_or(0).max(0) as usize)
        .min(MAX_MEMBERS);
    // Concurrently: members that are down each cost a connect timeout.
    facts.hellos = hellos(admin, target, 0..probe).await;
    // The member to talk to: the primary if one answers, else any initiated one, else any.
    let anchor = |facts: &Facts| -> Option<usize> {
        let primary = facts
            .hellos
            .iter()
            .position(|h| h.as_ref().is_some_and(|h| h.is_writable_primary));
        primary
            .or_else(|| {
                facts
                    .hellos
                    .iter()
                    .position(|h| h.as_ref().is_some_and(|h| h.set_name.is_some()))
            })
            .or_else(|| facts.hellos.iter().position(Option::is_some))
    };
    let Some(mut at) = anchor(&facts) else {
        return facts;
    };

    // Root first; the keyfile identity only when root is refused.
    let identity = match admin.authenticate(target.host(at), Identity::Root).await {
        Ok(()) => Identity::Root,
        Err(AdminError::AuthFailed { .. }) => {
            match admin.authenticate(target.host(at), Identity::Keyfile).await {
                Ok(()) => Identity::Keyfile,
                Err(e @ AdminError::AuthFailed { .. }) => {
                    facts.problem = Some(Problem::AuthFailed(e.to_string()));
                    return facts;
                }
                // A passing network fault is not a credentials problem: look again next time.
                Err(_) => return facts,
            }
        }
        Err(_) => return facts,
    };
    facts.identity = Some(identity);
    if !facts.initiated() {
        return facts;
    }
    let Ok(config) = admin.get_config(target.host(at), identity).await else {
        return facts;
    };
    // Members in the config beyond the probed ordinals (a StatefulSet scaled by hand).
    if let Some(c) = &config {
        let highest = c.members.iter().map(|m| m.id + 1).max().unwrap_or(0);
        let more = hellos(admin, target, facts.hellos.len()..highest.min(MAX_MEMBERS)).await;
        facts.hellos.extend(more);
        if let Some(a) = anchor(&facts) {
            at = a;
        }
    }
    facts.config = config;
    let primary = facts.hellos.get(at).and_then(|h| h.as_ref());
    if !primary.is_some_and(|h| h.is_writable_primary) {
        return facts;
    }
    facts.primary = Some(at);
    let host = target.host(at);
    facts.status = admin.status(host, identity).await.ok();
    // A figure for status and alerts only: a failed read changes no step.
    facts.oplog_window_seconds = admin.oplog_window(host, identity).await.ok().flatten();

    match identity {
        Identity::Keyfile => {
            match admin
                .existing_users(host, identity, std::slice::from_ref(&target.root.name))
                .await
            {
                Ok(found) if found.contains(&target.root.name) => {
                    facts.problem = Some(Problem::RootRejected);
                }
                Ok(_) => facts.missing_users = vec![target.root.name.clone()],
                Err(_) => {}
            }
        }
        Identity::Root => {
            let names: Vec<String> = target.users.iter().map(|u| u.name.clone()).collect();
            if let Ok(found) = admin.existing_users(host, identity, &names).await {
                facts.missing_users = names.into_iter().filter(|n| !found.contains(n)).collect();
            }
        }
    }
    facts
}

/// Decides the one change to make, from the facts alone.
pub fn plan(target: &Target, facts: &Facts) -> Action {
    if let Some(problem) = &facts.problem {
        return Action::Blocked(problem.clone());
    }
    if !facts.any_reachable() {
        return Action::Wait(Wait::NoneReachable);
    }
    if !facts.initiated() {
        let starting: Vec<usize> = (0..target.members)
            .filter(|id| !facts.reachable(*id))
            .collect();
        return if starting.is_empty() && facts.identity.is_some() {
            Action::Initiate
        } else {
            Action::Wait(Wait::MembersStarting(starting))
        };
    }
    let (Some(config), Some(primary), Some(identity)) =
        (&facts.config, facts.primary, facts.identity)
    else {
        return Action::Wait(Wait::NoPrimary);
    };
    if let Some(name) = facts.missing_users.first() {
        return Action::CreateUser {
            name: name.clone(),
            who: identity,
        };
    }
    if identity == Identity::Keyfile {
        // Root was just created or is not visible yet; the next step authenticates as root.
        return Action::Wait(Wait::NoPrimary);
    }

    // Changing votes or stepping down while another voter is down can cost the set its
    // majority (and so its primary): such changes wait until the other voters are healthy.
    let guarded = |id: usize, action: Action| {
        let down: Vec<usize> = config
            .members
            .iter()
            .filter(|m| m.votes > 0 && m.id != id)
            .map(|m| m.id)
            .filter(|other| !serving(facts.state(*other)))
            .collect();
        if down.is_empty() {
            action
        } else {
            Action::Wait(Wait::Unhealthy(down))
        }
    };

    // Leaving members, highest first, as the StatefulSet removes pods.
    if let Some(m) = config
        .members
        .iter()
        .filter(|m| m.id >= target.members)
        .max_by_key(|m| m.id)
    {
        return if m.id == primary {
            guarded(m.id, Action::StepDown(m.id))
        } else if m.votes > 0 || m.priority > 0.0 {
            guarded(m.id, Action::Demote(m.id))
        } else {
            Action::Remove(m.id)
        };
    }
    // Non-voting members get a vote once they are SECONDARY.
    if let Some(m) = config.members.iter().find(|m| m.votes == 0) {
        return if facts.state(m.id) == Some(MemberState::Secondary) {
            guarded(m.id, Action::GrantVote(m.id))
        } else {
            Action::Wait(Wait::Syncing(m.id))
        };
    }
    if let Some(id) = (0..target.members).find(|id| config.member(*id).is_none()) {
        return if facts.reachable(id) {
            Action::AddMember(id)
        } else {
            Action::Wait(Wait::MemberStarting(id))
        };
    }
    let unhealthy: Vec<usize> = config
        .members
        .iter()
        .map(|m| m.id)
        .filter(|id| !serving(facts.state(*id)))
        .collect();
    if unhealthy.is_empty() {
        Action::Healthy
    } else {
        Action::Wait(Wait::Unhealthy(unhealthy))
    }
}

fn serving(state: Option<MemberState>) -> bool {
    matches!(state, Some(MemberState::Primary | MemberState::Secondary))
}

/// The config after `action`, from `current` (version plus one).
pub fn next_config(target: &Target, current: &ReplConfig, action: &Action) -> Option<ReplConfig> {
    let mut next = current.clone();
    next.version += 1;
    match *action {
        Action::AddMember(id) => next.members.push(MemberConfig {
            id,
            host: target.host(id).to_string(),
            votes: 0,
            priority: 0.0,
        }),
        Action::GrantVote(id) | Action::Demote(id) => {
            let on = matches!(action, Action::GrantVote(_));
            let m = next.members.iter_mut().find(|m| m.id == id)?;
            m.votes = i32::from(on);
            m.priority = if on { 1.0 } else { 0.0 };
        }
        Action::Remove(id) => next.members.retain(|m| m.id != id),
        _ => return None,
    }
    next.members.sort_by_key(|m| m.id);
    Some(next)
}

fn initial_config(target: &Target) -> ReplConfig {
    ReplConfig {
        set_name: target.set_name.clone(),
        version: 1,
        members: vec![MemberConfig {
            id: 0,
            host: target.host(0).to_string(),
            votes: 1,
            priority: 1.0,
        }],
    }
}

async fn execute(
    admin: &impl MongoAdmin,
    target: &Target,
    facts: &Facts,
    action: &Action,
) -> Res<()> {
    let identity = facts.identity.unwrap_or(Identity::Root);
    let primary = facts.primary.map(|p| target.host(p));
    match action {
        Action::Initiate => {
            admin
                .initiate(target.host(0), identity, &initial_config(target))
                .await
        }
        Action::CreateUser { name, who } => {
            let user = std::iter::once(&target.root)
                .chain(&target.users)
                .find(|u| &u.name == name)
                .expect("planned users come from the target");
            match admin
                .create_user(primary.unwrap_or_default(), *who, user)
                .await
            {
                Err(AdminError::UserExists(_)) => Ok(()),
                other => other,
            }
        }
        Action::StepDown(_) => admin.step_down(primary.unwrap_or_default(), identity).await,
        Action::AddMember(_) | Action::GrantVote(_) | Action::Demote(_) | Action::Remove(_) => {
            let config = facts
                .config
                .as_ref()
                .and_then(|c| next_config(target, c, action))
                .expect("membership actions are planned from a config");
            admin
                .reconfig(primary.unwrap_or_default(), identity, &config)
                .await
        }
        Action::Healthy | Action::Wait(_) | Action::Blocked(_) => Ok(()),
    }
}

/// One reconcile of the replica set: observe, plan, make at most one change.
pub async fn step(admin: &impl MongoAdmin, target: &Target, kube: KubeFacts) -> Outcome {
    let facts = observe(admin, target, kube).await;
    let action = plan(target, &facts);
    let error = execute(admin, target, &facts, &action).await.err();
    let requeue = match &action {
        _ if error.is_some() => REQUEUE_WAIT,
        a if a.is_change() => REQUEUE_CHANGED,
        Action::Wait(_) => REQUEUE_WAIT,
        _ => REQUEUE_IDLE,
    };
    Outcome {
        statefulset_replicas: statefulset_replicas(target, &facts, kube.statefulset_replicas),
        action,
        error,
        facts,
        requeue,
    }
}
