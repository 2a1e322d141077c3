//! `MongoReady`, `status.mongo`, `Ready` gating, and the storage-resize decision: pure
//! functions fed with observed facts.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use meteor_operator::api::{MeteorApp, MeteorAppStatus, MongoStatus};
use meteor_operator::mongo::replset::{
    Action, AdminError, Facts, Hello, Identity, MAX_MEMBERS, MemberConfig, MemberState,
    MemberStatus, Problem, ReplConfig, ReplStatus, Target, UserSpec, Wait, plan,
};
use meteor_operator::mongo::storage::{StorageDecision, StorageFacts, decide, pin_claim_templates};
use meteor_operator::status::mongo::{
    self as status, Readiness, condition, mongo_status, readiness,
};
use meteor_operator::status::mongo::{TierReport, fold_status};
use serde_json::json;
use std::time::Duration;

fn host(i: usize) -> String {
    format!("shop-mongo-{i}.shop-mongo.default.svc.cluster.local:27017")
}

fn target(members: usize) -> Target {
    let user = |n: &str| UserSpec {
        name: n.into(),
        password: "pw".into(),
        roles: vec![],
    };
    Target {
        set_name: "shop".into(),
        members,
        hosts: (0..MAX_MEMBERS).map(host).collect(),
        root: user("root"),
        users: vec![user("app"), user("oplog")],
    }
}

fn member(id: usize, votes: i32) -> MemberConfig {
    MemberConfig {
        id,
        host: host(id),
        votes,
        priority: f64::from(votes),
    }
}

fn hello(primary: bool) -> Option<Hello> {
    Some(Hello {
        set_name: Some("shop".into()),
        is_writable_primary: primary,
        secondary: !primary,
        primary: Some(host(0)),
    })
}

/// A healthy set of `n` voting members, primary 0, secondaries `lag` seconds behind.
fn healthy(n: usize, lag: i64) -> Facts {
    Facts {
        desired_members: n,
        hellos: (0..n).map(|i| hello(i == 0)).collect(),
        config: Some(ReplConfig {
            set_name: "shop".into(),
            version: 3,
            members: (0..n).map(|i| member(i, 1)).collect(),
        }),
        primary: Some(0),
        status: Some(ReplStatus {
            members: (0..n)
                .map(|i| MemberStatus {
                    id: i,
                    host: host(i),
                    state: if i == 0 {
                        MemberState::Primary
                    } else {
                        MemberState::Secondary
                    },
                    optime_seconds: Some(if i == 0 { 1000 } else { 1000 - lag * i as i64 }),
                })
                .collect(),
        }),
        oplog_window_seconds: Some(86_400),
        identity: Some(Identity::Root),
        missing_users: vec![],
        problem: None,
        was_initialized: true,
    }
}

fn ready_of(t: &Target, f: &Facts) -> Readiness {
    readiness(t, f, &plan(t, f), None)
}

#[test]
fn healthy_set_is_ready_with_status() {
    let t = target(3);
    let f = healthy(3, 2);
    assert_eq!(plan(&t, &f), Action::Healthy);
    let r = ready_of(&t, &f);
    assert!(r.ready);
    assert_eq!(r.reason, "Ready");
    assert_eq!(
        mongo_status(&t, &f),
        Some(MongoStatus {
            members: 3,
            ready_members: 3,
            primary: Some(host(0)),
            replication_lag_seconds: Some(4),
            oplog_window_seconds: Some(86_400),
        })
    );
}

#[test]
fn reasons_follow_the_facts() {
    let t = target(3);
    let nothing = Facts {
        desired_members: 3,
        hellos: vec![None, None, None],
        ..Facts::default()
    };
    assert_eq!(ready_of(&t, &nothing).reason, "Provisioning");
    let gone = Facts {
        was_initialized: true,
        ..nothing.clone()
    };
    assert_eq!(ready_of(&t, &gone).reason, "Unreachable");

    let starting = Facts {
        hellos: vec![Some(Hello::default()), None, Some(Hello::default())],
        identity: Some(Identity::Keyfile),
        ..nothing.clone()
    };
    let r = ready_of(&t, &starting);
    assert_eq!((r.reason, r.ready), ("Provisioning", false));
    assert!(r.message.contains("members 1 to start"), "{}", r.message);

    let uninitiated = Facts {
        hellos: vec![Some(Hello::default()); 3],
        identity: Some(Identity::Keyfile),
        ..nothing.clone()
    };
    assert_eq!(plan(&t, &uninitiated), Action::Initiate);
    assert_eq!(ready_of(&t, &uninitiated).reason, "Initializing");

    let mut no_primary = healthy(3, 0);
    no_primary.primary = None;
    no_primary.hellos = vec![hello(false); 3];
    assert_eq!(plan(&t, &no_primary), Action::Wait(Wait::NoPrimary));
    assert_eq!(ready_of(&t, &no_primary).reason, "NoPrimary");
    no_primary.was_initialized = false;
    assert_eq!(ready_of(&t, &no_primary).reason, "Initializing");

    let mut users = healthy(3, 0);
    users.missing_users = vec!["oplog".into()];
    assert_eq!(ready_of(&t, &users).reason, "Initializing");

    let mut down = healthy(3, 0);
    down.status.as_mut().unwrap().members[2].state = MemberState::Down;
    let r = ready_of(&t, &down);
    assert_eq!((r.reason, r.ready), ("MemberUnhealthy", false));
    assert!(r.message.contains("members 2"), "{}", r.message);
    assert_eq!(mongo_status(&t, &down).unwrap().ready_members, 2);

    let mut rejected = healthy(3, 0);
    rejected.problem = Some(Problem::RootRejected);
    let r = ready_of(&t, &rejected);
    assert_eq!(r.reason, "Unreachable");
    assert!(r.message.contains("rejects the password"), "{}", r.message);
}

#[test]
fn scaling_keeps_the_set_ready() {
    // Adding member 3 to a healthy 3-member set: it syncs without a vote; the set serves.
    let t = target(4);
    let mut f = healthy(3, 0);
    f.config.as_mut().unwrap().members.push(member(3, 0));
    f.status.as_mut().unwrap().members.push(MemberStatus {
        id: 3,
        host: host(3),
        state: MemberState::Syncing,
        optime_seconds: None,
    });
    assert_eq!(plan(&t, &f), Action::Wait(Wait::Syncing(3)));
    let r = ready_of(&t, &f);
    assert!(r.ready, "{r:?}");
    assert!(
        r.message.contains("scaling to 4 members (4 in the config)"),
        "{}",
        r.message
    );
    f.status.as_mut().unwrap().members[3].state = MemberState::Secondary;
    assert_eq!(plan(&t, &f), Action::GrantVote(3));
}

#[test]
fn a_failed_change_is_reported() {
    let t = target(3);
    let f = healthy(3, 0);
    let err = AdminError::Unreachable {
        host: host(0),
        message: "connection reset".into(),
    };
    let r = readiness(&t, &f, &Action::Healthy, Some(&err));
    assert!(r.message.contains("last change failed") && r.message.contains("connection reset"));
}

fn time(s: &str) -> Time {
    Time(s.parse().unwrap())
}

#[test]
fn condition_keeps_its_transition_time_while_status_holds() {
    let r = Readiness {
        ready: false,
        reason: "NoPrimary",
        message: "no primary elected".into(),
    };
    let first = condition(&r, Some(4), None, time("2026-01-01T00:00:00Z"));
    assert_eq!(first.type_, "MongoReady");
    assert_eq!(first.status, "False");
    assert_eq!(first.observed_generation, Some(4));
    let r2 = Readiness {
        reason: "Initializing",
        ..r.clone()
    };
    let again = condition(&r2, Some(5), Some(&first), time("2026-01-02T00:00:00Z"));
    assert_eq!(again.last_transition_time, first.last_transition_time);
    assert_eq!(again.reason, "Initializing");
    let ok = Readiness {
        ready: true,
        reason: "Ready",
        message: "ok".into(),
    };
    let flipped = condition(&ok, Some(5), Some(&again), time("2026-01-03T00:00:00Z"));
    assert_eq!(flipped.last_transition_time, time("2026-01-03T00:00:00Z"));
}

fn managed_app(previous: Option<MeteorAppStatus>) -> MeteorApp {
    let mut app: MeteorApp = serde_json::from_value(json!({
        "apiVersion": "meteorfleet.dev/v1alpha1",
        "kind": "MeteorApp",
        "metadata": { "name": "shop", "namespace": "default", "generation": 7 },
        "spec": {
            "image": "i", "rootUrl": "https://shop.example",
            "mongo": { "managed": {} },
        }
    }))
    .unwrap();
    app.status = previous;
    app
}

fn ready_condition(status: &str) -> Condition {
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: "Available".into(),
        message: "all pods ready".into(),
        observed_generation: Some(7),
        last_transition_time: time("2026-01-01T00:00:00Z"),
    }
}

fn report(ready: bool) -> TierReport {
    TierReport {
        readiness: Readiness {
            ready,
            reason: if ready { "Ready" } else { "NoPrimary" },
            message: if ready {
                "3 voting members healthy"
            } else {
                "no primary elected"
            }
            .into(),
        },
        storage: None,
        mongo: Some(MongoStatus {
            members: 3,
            ready_members: if ready { 3 } else { 0 },
            primary: None,
            replication_lag_seconds: None,
            oplog_window_seconds: None,
        }),
        requeue: Duration::from_secs(10),
        writes: 0,
    }
}

#[test]
fn ready_waits_for_mongo_ready() {
    let now = time("2026-02-01T00:00:00Z");
    let app = managed_app(None);
    let mut s = MeteorAppStatus {
        conditions: vec![ready_condition("True")],
        ..MeteorAppStatus::default()
    };
    fold_status(&mut s, &app, Some(&report(false)), &now);
    let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, "MongoNotReady");
    assert!(ready.message.contains("no primary elected"));
    assert_eq!(ready.last_transition_time, now);
    let mongo = s
        .conditions
        .iter()
        .find(|c| c.type_ == "MongoReady")
        .unwrap();
    assert_eq!(
        (mongo.status.as_str(), mongo.reason.as_str()),
        ("False", "NoPrimary")
    );
    assert_eq!(mongo.observed_generation, Some(7));
    assert_eq!(s.mongo.as_ref().unwrap().members, 3);

    let mut s = MeteorAppStatus {
        conditions: vec![ready_condition("True")],
        ..MeteorAppStatus::default()
    };
    fold_status(&mut s, &app, Some(&report(true)), &now);
    assert_eq!(
        s.conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap()
            .status,
        "True"
    );
    assert_eq!(
        s.conditions
            .iter()
            .find(|c| c.type_ == "MongoReady")
            .unwrap()
            .status,
        "True"
    );
}

#[test]
fn without_a_report_the_previous_mongo_status_stays() {
    let now = time("2026-02-01T00:00:00Z");
    let mut earlier = MeteorAppStatus {
        conditions: vec![ready_condition("True")],
        ..MeteorAppStatus::default()
    };
    fold_status(
        &mut earlier,
        &managed_app(None),
        Some(&report(true)),
        &time("2026-01-15T00:00:00Z"),
    );
    let app = managed_app(Some(earlier.clone()));
    // A spec problem stopped the reconcile before the tier: nothing about MongoDB is known anew.
    let mut s = MeteorAppStatus {
        conditions: vec![ready_condition("False")],
        ..MeteorAppStatus::default()
    };
    fold_status(&mut s, &app, None, &now);
    assert_eq!(s.mongo, earlier.mongo);
    let mongo = s
        .conditions
        .iter()
        .find(|c| c.type_ == "MongoReady")
        .unwrap();
    assert_eq!(mongo.last_transition_time, time("2026-01-15T00:00:00Z"));
}

fn facts(desired: &str, pvcs: &[&str], allow: Option<bool>) -> StorageFacts {
    StorageFacts {
        desired: desired.into(),
        pvcs: pvcs
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("data-shop-mongo-{i}"), s.to_string()))
            .collect(),
        storage_class: Some("fast".into()),
        allow_expansion: allow,
    }
}

#[test]
fn storage_grows_only_where_the_class_allows_it() {
    assert_eq!(
        decide(&facts("10Gi", &["10Gi", "10Gi"], Some(false))),
        StorageDecision::Unchanged
    );
    assert_eq!(
        decide(&facts("10Gi", &[], None)),
        StorageDecision::Unchanged
    );
    // Same size written differently is no change.
    assert_eq!(
        decide(&facts("1Gi", &["1024Mi"], Some(false))),
        StorageDecision::Unchanged
    );
    assert_eq!(
        decide(&facts("20Gi", &["10Gi", "20Gi", "10Gi"], Some(true))),
        StorageDecision::Expand {
            pvcs: vec!["data-shop-mongo-0".into(), "data-shop-mongo-2".into()],
            size: "20Gi".into(),
        }
    );
    match decide(&facts("20Gi", &["10Gi"], Some(false))) {
        StorageDecision::Refused { message } => {
            assert!(
                message.contains("fast does not allow volume expansion"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    match decide(&facts("20Gi", &["10Gi"], None)) {
        StorageDecision::Refused { message } => assert!(message.contains("could not read")),
        other => panic!("{other:?}"),
    }
    match decide(&facts("5Gi", &["10Gi"], Some(true))) {
        StorageDecision::Refused { message } => assert!(message.contains("never shrink")),
        other => panic!("{other:?}"),
    }
    let refused = status::storage_readiness(&decide(&facts("20Gi", &["10Gi"], Some(false))));
    assert_eq!(
        refused.map(|r| (r.ready, r.reason)),
        Some((false, "ResizeRefused"))
    );
}

#[test]
fn quantities_parse_like_kubernetes() {
    assert_eq!(
        meteor_operator::build::quantity::bytes("10Gi"),
        Some(10 * (1 << 30))
    );
    assert_eq!(
        meteor_operator::build::quantity::bytes("500M"),
        Some(500_000_000)
    );
    assert_eq!(meteor_operator::build::quantity::bytes("1.5Ki"), Some(1536));
    assert_eq!(meteor_operator::build::quantity::bytes("1e3"), Some(1000));
    assert_eq!(meteor_operator::build::quantity::bytes("12"), Some(12));
    assert_eq!(meteor_operator::build::quantity::bytes("ten"), None);
    assert_eq!(meteor_operator::build::quantity::bytes("10Qi"), None);
}

#[test]
fn claim_templates_of_an_existing_set_are_kept() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let sts = |size: &str| -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": { "name": "shop-mongo" },
            "spec": {
                "selector": {}, "serviceName": "shop-mongo",
                "template": {},
                "volumeClaimTemplates": [{ "metadata": { "name": "data" },
                    "spec": { "resources": { "requests": { "storage": size } } } }],
            }
        }))
        .unwrap()
    };
    let mut desired = sts("20Gi");
    pin_claim_templates(&mut desired, Some(&sts("10Gi")));
    assert_eq!(desired, sts("10Gi"));
    let mut fresh = sts("20Gi");
    pin_claim_templates(&mut fresh, None);
    assert_eq!(fresh, sts("20Gi"));
}
