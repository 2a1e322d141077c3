//! The replica-set state machine against a scripted fake MongoDB.
//!
//! The fake models what matters to the state machine: members that are up or down, each with
//! its own copy of the config (learned from the primary between reconciles, as heartbeats do),
//! initial sync of new members, elections by majority of voting members, users replicated from
//! the primary, and the two identities (root from its Secret, keyfile). It checks MongoDB's own
//! rules (one voting change per reconfig, reconfig only on the primary, versions increase by
//! one, new members join non-voting) and the operator's (never initiate a second set, never
//! delete a pod whose member is still in the config, never use the keyfile identity for anything
//! but creating root) and records every violation.
//!
//! Interruption tests replay a full bootstrap or scale while failing the k-th change in each of
//! the ways an operator or pod can die (change lost before it applies, change applied but the
//! answer lost, a member restarted after the k-th reconcile), then reconcile from scratch, and
//! assert the same healthy end state.

use meteor_operator::mongo::replset::{
    Action, AdminError, Hello, Identity, KubeFacts, MAX_MEMBERS, MemberState, MemberStatus,
    MongoAdmin, Problem, ReplConfig, ReplStatus, Target, UserSpec, step,
};
use meteor_operator::status::mongo as status;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

const ROOT_PW: &str = "root-pw";

fn host(i: usize) -> String {
    format!("shop-mongo-{i}.shop-mongo.default.svc.cluster.local:27017")
}

fn id_of(h: &str) -> usize {
    (0..MAX_MEMBERS)
        .find(|i| host(*i) == h)
        .expect("a member host")
}

fn target(members: usize) -> Target {
    let user = |name: &str, pw: &str, role: &str, db: &str| UserSpec {
        name: name.into(),
        password: pw.into(),
        roles: vec![(role.into(), db.into())],
    };
    Target {
        set_name: "shop".into(),
        members,
        hosts: (0..MAX_MEMBERS).map(host).collect(),
        root: user("root", ROOT_PW, "root", "admin"),
        users: vec![
            user("app", "app-pw", "readWrite", "shop"),
            user("oplog", "oplog-pw", "read", "local"),
        ],
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inject {
    /// The call never reaches the server (operator killed before, connection refused).
    LostBefore,
    /// The server applies the change, the answer is lost (operator killed right after).
    LostAfter,
}

#[derive(Clone, Debug, Default)]
struct Node {
    pod: bool,
    down_rounds: u32,
    config: Option<ReplConfig>,
    synced: bool,
    stepped_down: bool,
}

impl Node {
    fn up(&self) -> bool {
        self.pod && self.down_rounds == 0
    }
}

#[derive(Debug, Default)]
struct World {
    nodes: Vec<Node>,
    primary: Option<usize>,
    users: BTreeMap<String, (String, Vec<(String, String)>)>,
    keyfile_ok: bool,
    changes: usize,
    inject: Option<(usize, Inject)>,
    violations: Vec<String>,
    initiations: usize,
    identities: Vec<(String, Identity)>,
}

impl World {
    fn new() -> Self {
        World {
            nodes: vec![Node::default(); MAX_MEMBERS],
            keyfile_ok: true,
            ..World::default()
        }
    }

    /// The newest config any member holds (what the set agrees on).
    fn latest(&self) -> Option<ReplConfig> {
        self.nodes
            .iter()
            .filter_map(|n| n.config.clone())
            .max_by_key(|c| c.version)
    }

    fn in_set(&self, i: usize) -> bool {
        self.latest().is_some_and(|c| c.member(i).is_some())
            && self.nodes[i].config.is_some()
            && self.nodes[i].synced
    }

    fn reachable(&self, h: &str) -> Result<usize, AdminError> {
        let i = id_of(h);
        if self.nodes[i].up() {
            Ok(i)
        } else {
            Err(AdminError::Unreachable {
                host: h.into(),
                message: "connection refused".into(),
            })
        }
    }

    fn auth(&mut self, h: &str, who: Identity, root_pw: &str) -> Result<usize, AdminError> {
        let i = self.reachable(h)?;
        let ok = match who {
            // Users live in the replicated data: a member that is not in the set has none.
            Identity::Root => {
                self.in_set(i) && self.users.get("root").is_some_and(|(pw, _)| pw == root_pw)
            }
            Identity::Keyfile => self.keyfile_ok,
        };
        if ok {
            Ok(i)
        } else {
            Err(AdminError::AuthFailed {
                host: h.into(),
                identity: who,
            })
        }
    }

    /// Counts a change and decides whether it is lost before it applies.
    fn gate(&mut self, h: &str) -> Result<Option<Inject>, AdminError> {
        self.changes += 1;
        match self.inject {
            Some((k, Inject::LostBefore)) if k == self.changes => Err(AdminError::Unreachable {
                host: h.into(),
                message: "operator killed before the call".into(),
            }),
            Some((k, mode)) if k == self.changes => Ok(Some(mode)),
            _ => Ok(None),
        }
    }

    fn after(h: &str, injected: Option<Inject>) -> Result<(), AdminError> {
        match injected {
            Some(Inject::LostAfter) => Err(AdminError::Unreachable {
                host: h.into(),
                message: "operator killed after the call".into(),
            }),
            _ => Ok(()),
        }
    }

    fn command_error(h: &str, command: &str, message: &str) -> AdminError {
        AdminError::Command {
            host: h.into(),
            command: command.into(),
            code: 1,
            message: message.into(),
        }
    }

    /// What happens between two reconciles: restarts end, configs spread by heartbeat, new
    /// members finish their initial sync, elections.
    fn tick(&mut self) {
        for n in &mut self.nodes {
            n.down_rounds = n.down_rounds.saturating_sub(1);
        }
        // Heartbeats come from running members only.
        let spread = self
            .nodes
            .iter()
            .filter(|n| n.up())
            .filter_map(|n| n.config.clone())
            .max_by_key(|c| c.version);
        if let Some(latest) = spread {
            for m in &latest.members {
                let n = &mut self.nodes[m.id];
                if !n.up() {
                    continue;
                }
                if n.config.is_none() || !n.synced {
                    // Learned the config last round (or now); sync completes by next round.
                    if n.config.is_some() {
                        n.synced = true;
                    }
                }
                n.config = Some(latest.clone());
            }
        }
        if self
            .primary
            .is_some_and(|p| !self.nodes[p].up() || !self.in_set(p))
        {
            self.primary = None;
        }
        if self.primary.is_none()
            && let Some(latest) = self.latest()
        {
            let voting: Vec<usize> = latest
                .members
                .iter()
                .filter(|m| m.votes > 0)
                .map(|m| m.id)
                .collect();
            let alive = voting
                .iter()
                .filter(|i| self.nodes[**i].up() && self.in_set(**i))
                .count();
            if alive * 2 > voting.len() {
                self.primary = latest
                    .members
                    .iter()
                    .filter(|m| m.priority > 0.0 && m.votes > 0)
                    .map(|m| m.id)
                    .find(|i| {
                        self.nodes[*i].up() && self.in_set(*i) && !self.nodes[*i].stepped_down
                    });
            }
            for n in &mut self.nodes {
                n.stepped_down = false;
            }
        }
    }

    /// The StatefulSet controller: pods exist for ordinals below `replicas`; PVCs stay.
    fn apply_statefulset(&mut self, replicas: i32) {
        let latest = self.latest();
        for i in 0..MAX_MEMBERS {
            let want = (i as i32) < replicas;
            if self.nodes[i].pod && !want && latest.as_ref().is_some_and(|c| c.member(i).is_some())
            {
                self.violations
                    .push(format!("pod {i} deleted while member {i} is in the config"));
            }
            self.nodes[i].pod = want;
        }
    }

    fn restart(&mut self, i: usize) {
        if self.nodes[i].pod {
            self.nodes[i].down_rounds = 1;
        }
    }
}

/// A fresh operator process: only the world (the cluster) is shared.
struct Fake {
    world: Arc<Mutex<World>>,
    root_pw: String,
}

impl Fake {
    fn w(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }
}

impl MongoAdmin for Fake {
    async fn hello(&self, h: &str) -> Result<Hello, AdminError> {
        let w = self.w();
        let i = w.reachable(h)?;
        let n = &w.nodes[i];
        let in_set = w.in_set(i);
        Ok(Hello {
            set_name: n.config.as_ref().map(|c| c.set_name.clone()),
            is_writable_primary: w.primary == Some(i),
            secondary: in_set && w.primary != Some(i),
            primary: w.primary.filter(|_| in_set).map(host),
        })
    }

    async fn authenticate(&self, h: &str, who: Identity) -> Result<(), AdminError> {
        let mut w = self.w();
        w.identities.push(("authenticate".into(), who));
        w.auth(h, who, &self.root_pw).map(drop)
    }

    async fn get_config(&self, h: &str, who: Identity) -> Result<Option<ReplConfig>, AdminError> {
        let mut w = self.w();
        let i = w.auth(h, who, &self.root_pw)?;
        Ok(w.nodes[i].config.clone())
    }

    async fn status(&self, h: &str, who: Identity) -> Result<ReplStatus, AdminError> {
        let mut w = self.w();
        let i = w.auth(h, who, &self.root_pw)?;
        let config = w.nodes[i]
            .config
            .clone()
            .ok_or_else(|| World::command_error(h, "replSetGetStatus", "not initialized"))?;
        let members = config
            .members
            .iter()
            .map(|m| MemberStatus {
                id: m.id,
                host: m.host.clone(),
                state: if !w.nodes[m.id].up() {
                    MemberState::Down
                } else if w.primary == Some(m.id) {
                    MemberState::Primary
                } else if w.in_set(m.id) {
                    MemberState::Secondary
                } else {
                    MemberState::Syncing
                },
                optime_seconds: Some(if w.primary == Some(m.id) { 100 } else { 97 }),
            })
            .collect();
        Ok(ReplStatus { members })
    }

    async fn oplog_window(&self, h: &str, who: Identity) -> Result<Option<i64>, AdminError> {
        let mut w = self.w();
        let i = w.auth(h, who, &self.root_pw)?;
        // A day of history once the member has a config, as a default-sized oplog might hold.
        Ok(w.nodes[i].config.as_ref().map(|_| 86_400))
    }

    async fn initiate(
        &self,
        h: &str,
        who: Identity,
        config: &ReplConfig,
    ) -> Result<(), AdminError> {
        let mut w = self.w();
        let injected = w.gate(h)?;
        let i = w.auth(h, who, &self.root_pw)?;
        w.identities.push(("initiate".into(), who));
        if w.nodes[i].config.is_some() {
            return Ok(()); // The driver maps AlreadyInitialized to success.
        }
        if w.nodes.iter().any(|n| n.config.is_some()) {
            w.violations.push("initiated a second replica set".into());
        }
        if config.members.len() != 1 || config.members[0].id != 0 || config.version != 1 {
            w.violations
                .push(format!("unexpected initial config {config:?}"));
        }
        w.initiations += 1;
        w.nodes[i].config = Some(config.clone());
        w.nodes[i].synced = true;
        World::after(h, injected)
    }

    async fn reconfig(&self, h: &str, who: Identity, next: &ReplConfig) -> Result<(), AdminError> {
        let mut w = self.w();
        let injected = w.gate(h)?;
        let i = w.auth(h, who, &self.root_pw)?;
        w.identities.push(("reconfig".into(), who));
        if w.primary != Some(i) {
            return Err(World::command_error(h, "replSetReconfig", "not primary"));
        }
        let current = w.nodes[i].config.clone().expect("primary has a config");
        if next.version != current.version + 1 {
            return Err(World::command_error(h, "replSetReconfig", "version"));
        }
        let votes = |c: &ReplConfig, id: usize| c.member(id).map_or(0, |m| m.votes);
        let changed = (0..MAX_MEMBERS)
            .filter(|id| votes(&current, *id) != votes(next, *id))
            .count();
        if changed > 1 {
            w.violations
                .push(format!("{changed} voting changes in one reconfig"));
            return Err(World::command_error(
                h,
                "replSetReconfig",
                "too many voting changes",
            ));
        }
        for m in &next.members {
            if current.member(m.id).is_none() && (m.votes != 0 || m.priority != 0.0) {
                w.violations
                    .push(format!("member {} joined with a vote", m.id));
            }
            if m.votes == 0 && m.priority != 0.0 {
                w.violations
                    .push(format!("member {} non-voting with priority", m.id));
            }
            if m.host != host(m.id) {
                w.violations
                    .push(format!("member {} has host {}", m.id, m.host));
            }
        }
        if next.member(i).is_none() {
            w.violations
                .push("removed the primary from the config".into());
            return Err(World::command_error(
                h,
                "replSetReconfig",
                "cannot remove primary",
            ));
        }
        for m in &next.members {
            if current.member(m.id).is_none() {
                w.nodes[m.id].synced = false;
            }
        }
        w.nodes[i].config = Some(next.clone());
        World::after(h, injected)
    }

    async fn step_down(&self, h: &str, who: Identity) -> Result<(), AdminError> {
        let mut w = self.w();
        let injected = w.gate(h)?;
        let i = w.auth(h, who, &self.root_pw)?;
        if w.primary != Some(i) {
            return Err(World::command_error(h, "replSetStepDown", "not primary"));
        }
        w.primary = None;
        w.nodes[i].stepped_down = true;
        World::after(h, injected)
    }

    async fn existing_users(
        &self,
        h: &str,
        who: Identity,
        names: &[String],
    ) -> Result<BTreeSet<String>, AdminError> {
        let mut w = self.w();
        let i = w.auth(h, who, &self.root_pw)?;
        let visible = w.in_set(i);
        Ok(names
            .iter()
            .filter(|n| visible && w.users.contains_key(*n))
            .cloned()
            .collect())
    }

    async fn create_user(&self, h: &str, who: Identity, user: &UserSpec) -> Result<(), AdminError> {
        let mut w = self.w();
        let injected = w.gate(h)?;
        let i = w.auth(h, who, &self.root_pw)?;
        w.identities
            .push((format!("createUser {}", user.name), who));
        if who == Identity::Keyfile && user.name != "root" {
            w.violations
                .push(format!("keyfile identity created {}", user.name));
        }
        if w.primary != Some(i) {
            return Err(World::command_error(h, "createUser", "not primary"));
        }
        if w.users.contains_key(&user.name) {
            return Err(AdminError::UserExists(user.name.clone()));
        }
        w.users.insert(
            user.name.clone(),
            (user.password.clone(), user.roles.clone()),
        );
        World::after(h, injected)
    }
}

/// The controller around the state machine: status memory and the StatefulSet.
struct Harness {
    world: Arc<Mutex<World>>,
    statefulset: Option<i32>,
    was_initialized: bool,
    actions: Vec<Action>,
    root_pw: String,
}

impl Harness {
    fn new() -> Self {
        Harness {
            world: Arc::new(Mutex::new(World::new())),
            statefulset: None,
            was_initialized: false,
            actions: vec![],
            root_pw: ROOT_PW.into(),
        }
    }

    fn w(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }

    /// One reconcile by a freshly started operator.
    async fn reconcile(&mut self, target: &Target) -> Action {
        self.w().tick();
        let admin = Fake {
            world: self.world.clone(),
            root_pw: self.root_pw.clone(),
        };
        let kube = KubeFacts {
            statefulset_replicas: self.statefulset,
            was_initialized: self.was_initialized,
        };
        let outcome = step(&admin, target, kube).await;
        // The state machine never asks for fewer pods than members in the config it saw.
        if let Some(c) = &outcome.facts.config {
            let highest = c.members.iter().map(|m| m.id as i32 + 1).max().unwrap_or(0);
            assert!(outcome.statefulset_replicas >= highest, "{outcome:?}");
        }
        if let Some(s) = status::mongo_status(target, &outcome.facts) {
            self.was_initialized |= s.members > 0;
        }
        self.statefulset = Some(outcome.statefulset_replicas);
        self.w().apply_statefulset(outcome.statefulset_replicas);
        self.actions.push(outcome.action.clone());
        outcome.action
    }

    async fn converge(&mut self, target: &Target) -> usize {
        for round in 1..=60 {
            if self.reconcile(target).await == Action::Healthy {
                return round;
            }
        }
        panic!(
            "no convergence; actions {:?}; world {:?}",
            self.actions,
            self.w()
        );
    }

    fn assert_healthy(&self, t: &Target) {
        let w = self.w();
        assert_eq!(w.violations, Vec::<String>::new());
        assert_eq!(
            w.initiations, 1,
            "exactly one replica set was ever initiated"
        );
        let c = w.latest().expect("a config");
        assert_eq!(c.set_name, "shop");
        let ids: Vec<usize> = c.members.iter().map(|m| m.id).collect();
        assert_eq!(ids, (0..t.members).collect::<Vec<_>>());
        for m in &c.members {
            assert_eq!((m.votes, m.priority, m.host.clone()), (1, 1.0, host(m.id)));
        }
        assert!(w.primary.is_some_and(|p| p < t.members));
        let users: BTreeMap<_, _> = w.users.clone();
        assert_eq!(
            users.get("root"),
            Some(&(ROOT_PW.to_string(), vec![("root".into(), "admin".into())]))
        );
        assert_eq!(
            users.get("app"),
            Some(&(
                "app-pw".to_string(),
                vec![("readWrite".into(), "shop".into())]
            ))
        );
        assert_eq!(
            users.get("oplog"),
            Some(&(
                "oplog-pw".to_string(),
                vec![("read".into(), "local".into())]
            ))
        );
        for (i, n) in w.nodes.iter().enumerate() {
            assert_eq!(n.pod, i < t.members, "pod {i}");
        }
        assert_eq!(self.statefulset, Some(t.members as i32));
    }

    fn changes(&self) -> usize {
        self.w().changes
    }
}

fn changes_of(actions: &[Action]) -> Vec<Action> {
    actions.iter().filter(|a| a.is_change()).cloned().collect()
}

#[tokio::test]
async fn bootstrap_three_members_in_order() {
    let t = target(3);
    let mut h = Harness::new();
    h.converge(&t).await;
    h.assert_healthy(&t);
    let who = |name: &str| Action::CreateUser {
        name: name.into(),
        who: if name == "root" {
            Identity::Keyfile
        } else {
            Identity::Root
        },
    };
    assert_eq!(
        changes_of(&h.actions),
        vec![
            Action::Initiate,
            who("root"),
            who("app"),
            who("oplog"),
            Action::AddMember(1),
            Action::GrantVote(1),
            Action::AddMember(2),
            Action::GrantVote(2),
        ]
    );
    // The keyfile identity did nothing but initiate and create root.
    let keyfile_uses: Vec<String> = h
        .w()
        .identities
        .iter()
        .filter(|(call, who)| *who == Identity::Keyfile && call != "authenticate")
        .map(|(call, _)| call.clone())
        .collect();
    assert_eq!(keyfile_uses, vec!["initiate", "createUser root"]);
    // Settled: further reconciles change nothing.
    let before = h.changes();
    assert_eq!(h.reconcile(&t).await, Action::Healthy);
    assert_eq!(h.changes(), before);
}

#[tokio::test]
async fn every_interrupted_bootstrap_change_ends_healthy() {
    let t = target(3);
    let mut baseline = Harness::new();
    baseline.converge(&t).await;
    let total = baseline.changes();
    assert!(total >= 8, "{total}");
    for k in 1..=total {
        for mode in [Inject::LostBefore, Inject::LostAfter] {
            let mut h = Harness::new();
            h.w().inject = Some((k, mode));
            h.converge(&t).await;
            h.assert_healthy(&t);
        }
    }
}

#[tokio::test]
async fn a_member_restarted_after_any_bootstrap_reconcile_ends_healthy() {
    let t = target(3);
    let mut baseline = Harness::new();
    let rounds = baseline.converge(&t).await;
    for after_round in 1..=rounds {
        for member in 0..3 {
            let mut h = Harness::new();
            for _ in 0..after_round {
                h.reconcile(&t).await;
            }
            h.w().restart(member);
            h.converge(&t).await;
            h.assert_healthy(&t);
        }
    }
}

#[tokio::test]
async fn all_members_restarted_mid_bootstrap_ends_healthy() {
    let t = target(3);
    for after_round in 1..=8 {
        let mut h = Harness::new();
        for _ in 0..after_round {
            h.reconcile(&t).await;
        }
        for m in 0..3 {
            h.w().restart(m);
        }
        h.converge(&t).await;
        h.assert_healthy(&t);
    }
}

#[tokio::test]
async fn waits_for_every_member_before_initiating() {
    let t = target(3);
    let mut h = Harness::new();
    h.w().nodes[2].down_rounds = 5; // pod 2 slow to start
    h.statefulset = Some(3);
    h.w().apply_statefulset(3);
    let first = h.reconcile(&t).await;
    assert!(
        matches!(first, Action::Wait(meteor_operator::mongo::replset::Wait::MembersStarting(ref ids)) if ids == &[2]),
        "{first:?}"
    );
    assert_eq!(h.changes(), 0);
    h.converge(&t).await;
    h.assert_healthy(&t);
}

#[tokio::test]
async fn never_forks_a_set_when_member_0_lost_its_volume() {
    let t = target(3);
    let mut h = Harness::new();
    h.converge(&t).await;
    {
        let mut w = h.w();
        // Member 0's PVC was wiped and 1, 2 are still restarting.
        w.nodes[0] = Node {
            pod: true,
            ..Node::default()
        };
        w.nodes[1].down_rounds = 3;
        w.nodes[2].down_rounds = 3;
        w.primary = None;
    }
    h.converge(&t).await;
    h.assert_healthy(&t);
}

#[tokio::test]
async fn scale_up_then_down_one_member_at_a_time() {
    let mut h = Harness::new();
    h.converge(&target(1)).await;
    h.assert_healthy(&target(1));
    let before = h.actions.len();

    h.converge(&target(3)).await;
    h.assert_healthy(&target(3));
    assert_eq!(
        changes_of(&h.actions[before..]),
        vec![
            Action::AddMember(1),
            Action::GrantVote(1),
            Action::AddMember(2),
            Action::GrantVote(2),
        ]
    );

    // Make the member that leaves first the primary: it must step down before it leaves.
    h.w().primary = Some(2);
    let before = h.actions.len();
    h.converge(&target(1)).await;
    h.assert_healthy(&target(1));
    let changes = changes_of(&h.actions[before..]);
    assert_eq!(changes[0], Action::StepDown(2));
    let rest: Vec<Action> = changes[1..].to_vec();
    // Member 1 might have been elected after the step-down; it then steps down too.
    let expected_tail = [
        Action::Demote(2),
        Action::Remove(2),
        Action::Demote(1),
        Action::Remove(1),
    ];
    let without_stepdowns: Vec<Action> = rest
        .iter()
        .filter(|a| !matches!(a, Action::StepDown(_)))
        .cloned()
        .collect();
    assert_eq!(without_stepdowns, expected_tail);
}

#[tokio::test]
async fn every_interrupted_scale_change_ends_healthy() {
    for (from, to) in [(1, 3), (3, 1), (3, 5), (5, 2)] {
        let mut baseline = Harness::new();
        baseline.converge(&target(from)).await;
        let start = baseline.changes();
        baseline.converge(&target(to)).await;
        let total = baseline.changes() - start;
        assert!(total > 0);
        for k in 1..=total {
            for mode in [Inject::LostBefore, Inject::LostAfter] {
                let mut h = Harness::new();
                h.converge(&target(from)).await;
                let start = h.changes();
                h.w().inject = Some((start + k, mode));
                h.converge(&target(to)).await;
                h.assert_healthy(&target(to));
            }
        }
    }
}

#[tokio::test]
async fn a_member_restarted_during_scaling_ends_healthy() {
    for (from, to) in [(1, 3), (3, 1)] {
        for after_round in 1..=6 {
            for member in 0..from.max(to) {
                let mut h = Harness::new();
                h.converge(&target(from)).await;
                for _ in 0..after_round {
                    h.reconcile(&target(to)).await;
                }
                h.w().restart(member);
                h.converge(&target(to)).await;
                h.assert_healthy(&target(to));
            }
        }
    }
}

#[tokio::test]
async fn existing_root_is_used_and_the_keyfile_never_is() {
    // Percona K8SPSMDB-1983: once users exist there is no localhost exception; an operator that
    // restarts must log in as root, not try to create users anonymously.
    let t = target(3);
    let mut h = Harness::new();
    h.converge(&t).await;
    h.w().identities.clear();
    let before = h.changes();
    assert_eq!(h.reconcile(&t).await, Action::Healthy);
    assert_eq!(h.changes(), before);
    let w = h.w();
    assert!(!w.identities.is_empty());
    assert!(
        w.identities.iter().all(|(_, who)| *who == Identity::Root),
        "{:?}",
        w.identities
    );
}

#[tokio::test]
async fn root_with_another_password_blocks_without_changes() {
    let t = target(3);
    let mut h = Harness::new();
    h.converge(&t).await;
    h.root_pw = "someone-edited-the-secret".into();
    let mut t2 = t.clone();
    t2.root.password = "someone-edited-the-secret".into();
    let before = h.changes();
    let action = h.reconcile(&t2).await;
    assert_eq!(action, Action::Blocked(Problem::RootRejected));
    assert_eq!(h.changes(), before, "no change while blocked");
    // The keyfile identity only looked; it did not create or change anything.
    assert!(h.w().users.get("root").is_some_and(|(pw, _)| pw == ROOT_PW));
}

#[tokio::test]
async fn no_usable_identity_blocks() {
    let t = target(1);
    let mut h = Harness::new();
    h.w().keyfile_ok = false;
    let mut last = Action::Healthy;
    for _ in 0..3 {
        last = h.reconcile(&t).await;
    }
    assert!(
        matches!(last, Action::Blocked(Problem::AuthFailed(_))),
        "{last:?}"
    );
    assert_eq!(h.changes(), 0);
}

#[tokio::test]
async fn user_already_exists_counts_as_created() {
    // Users created by a previous operator run whose answer was lost are not an error.
    let t = target(1);
    let mut h = Harness::new();
    h.converge(&t).await;
    let admin = Fake {
        world: h.world.clone(),
        root_pw: ROOT_PW.into(),
    };
    let err = admin
        .create_user(&host(0), Identity::Root, &t.users[0])
        .await
        .unwrap_err();
    assert_eq!(err, AdminError::UserExists("app".into()));
    // And the state machine, told a user is missing that exists, still ends healthy.
    h.w().users.remove("oplog");
    h.converge(&t).await;
    h.assert_healthy(&t);
}

#[tokio::test]
async fn statefulset_never_shrinks_blind() {
    let t = target(1);
    let mut h = Harness::new();
    h.converge(&target(3)).await;
    // Every member unreachable: the config is unknown, keep the pods.
    for n in h.w().nodes.iter_mut() {
        n.down_rounds = 10;
    }
    let admin = Fake {
        world: h.world.clone(),
        root_pw: ROOT_PW.into(),
    };
    let outcome = step(
        &admin,
        &t,
        KubeFacts {
            statefulset_replicas: Some(3),
            was_initialized: true,
        },
    )
    .await;
    assert_eq!(outcome.statefulset_replicas, 3);
    let r = status::readiness(&t, &outcome.facts, &outcome.action, None);
    assert_eq!(r.reason, "Unreachable");
}

#[tokio::test]
async fn votes_never_change_while_another_voter_is_down() {
    let mut h = Harness::new();
    h.converge(&target(3)).await;
    // Member 0 stays down; scaling to 1 would leave member 1 voting alone with a dead voter.
    h.w().primary = Some(1);
    h.w().nodes[0].down_rounds = 8;
    let before = h.changes();
    for _ in 0..5 {
        let action = h.reconcile(&target(1)).await;
        assert!(
            matches!(action, Action::Wait(meteor_operator::mongo::replset::Wait::Unhealthy(ref d)) if d == &[0]),
            "{action:?}"
        );
    }
    assert_eq!(h.changes(), before, "no vote change while member 0 is down");
    h.converge(&target(1)).await;
    h.assert_healthy(&target(1));
}
