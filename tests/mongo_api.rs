//! CEL rules of `spec.mongo` and `spec.reactivity`, evaluated client-side exactly as the
//! apiserver would (valid and invalid objects, creates and updates).

use meteor_operator::api::{MeteorApp, MongoStatus, OnDelete, Reactivity};
use serde_json::{Value, json};

fn app(mongo: Value) -> Value {
    json!({
        "apiVersion": "meteorfleet.dev/v1alpha1",
        "kind": "MeteorApp",
        "metadata": { "name": "shop", "namespace": "default" },
        "spec": {
            "image": "registry.example/shop:1",
            "rootUrl": "https://shop.example",
            "mongo": mongo,
        }
    })
}

fn parse(v: Value) -> MeteorApp {
    serde_json::from_value(v).expect("a MeteorApp")
}

/// The messages of every failed rule, or none.
fn errors(v: Value) -> Vec<String> {
    match parse(v).validate_cel() {
        Ok(()) => vec![],
        Err(e) => e.into_vec().iter().map(|e| e.to_string()).collect(),
    }
}

fn update_errors(old: Value, new: Value) -> Vec<String> {
    match parse(new).validate_cel_update(&parse(old)) {
        Ok(()) => vec![],
        Err(e) => e.into_vec().iter().map(|e| e.to_string()).collect(),
    }
}

fn managed(extra: Value) -> Value {
    let mut m = json!({});
    if let (Some(m), Some(extra)) = (m.as_object_mut(), extra.as_object()) {
        m.extend(extra.clone());
    }
    app(json!({ "managed": m }))
}

fn assert_one_error(errs: Vec<String>, field: &str, needle: &str) {
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains(field), "{errs:?} should name {field}");
    assert!(errs[0].contains(needle), "{errs:?} should say {needle}");
}

#[test]
fn managed_defaults_are_valid_and_filled_in() {
    let a = parse(managed(json!({})));
    assert_eq!(errors(managed(json!({}))), Vec::<String>::new());
    let m = a.spec.mongo.managed.expect("managed");
    assert_eq!(m.members, 3);
    assert_eq!(m.version, "8.0");
    assert_eq!(m.storage.size, "10Gi");
    assert_eq!(m.persistence.on_delete, OnDelete::Retain);
}

#[test]
fn exactly_one_of_external_or_managed() {
    let ext = json!({ "url": { "name": "db", "key": "url" } });
    assert!(errors(app(json!({ "external": ext }))).is_empty());
    assert_one_error(
        errors(app(json!({ "external": ext, "managed": {} }))),
        "spec.mongo",
        "exactly one of external",
    );
    assert_one_error(
        errors(app(json!({}))),
        "spec.mongo",
        "exactly one of external",
    );
}

#[test]
fn members_must_be_between_1_and_7() {
    for ok in [1, 2, 3, 5, 7] {
        assert!(errors(managed(json!({ "members": ok }))).is_empty(), "{ok}");
    }
    for bad in [0, -1, 8] {
        assert_one_error(
            errors(managed(json!({ "members": bad }))),
            "spec.mongo.managed.members",
            "between 1 and 7",
        );
    }
}

#[test]
fn version_must_be_5_0_or_later() {
    for ok in ["5.0", "6.0", "7.0", "8.0", "8.2", "10.0"] {
        assert!(errors(managed(json!({ "version": ok }))).is_empty(), "{ok}");
    }
    for bad in ["4.4", "8", "8.0.1", "latest", "", "08.0"] {
        assert_one_error(
            errors(managed(json!({ "version": bad }))),
            "spec.mongo.managed.version",
            "5.0 or later",
        );
    }
}

#[test]
fn storage_size_must_be_a_positive_quantity() {
    for ok in ["1Gi", "10Gi", "500Mi", "1.5Ti", "20G"] {
        assert!(
            errors(managed(json!({ "storage": { "size": ok } }))).is_empty(),
            "{ok}"
        );
    }
    for bad in ["0", "0Gi", "ten", "-1Gi", ""] {
        assert_one_error(
            errors(managed(json!({ "storage": { "size": bad } }))),
            "spec.mongo.managed.storage.size",
            "positive quantity",
        );
    }
}

#[test]
fn database_name_rules() {
    assert!(errors(managed(json!({ "database": "shop_prod-1" }))).is_empty());
    for bad in ["admin", "local", "config", "a.b", "with space", ""] {
        assert_one_error(
            errors(managed(json!({ "database": bad }))),
            "spec.mongo.managed.database",
            "not admin, local or config",
        );
    }
}

#[test]
fn reactivity_is_a_set_of_known_ways() {
    let mut a = managed(json!({}));
    a["spec"]["reactivity"] = json!(["oplog", "polling"]);
    assert!(errors(a.clone()).is_empty());
    a["spec"]["reactivity"] = json!(["oplog", "oplog"]);
    assert_one_error(errors(a.clone()), "spec.reactivity", "each at most once");
    a["spec"]["reactivity"] = json!([]);
    assert_one_error(errors(a.clone()), "spec.reactivity", "each at most once");
    a["spec"]["reactivity"] = json!(["push"]);
    assert!(
        serde_json::from_value::<MeteorApp>(a).is_err(),
        "unknown ways do not parse"
    );
    let parsed: Vec<Reactivity> =
        serde_json::from_value(json!(["changeStreams", "polling"])).unwrap();
    assert_eq!(parsed, vec![Reactivity::ChangeStreams, Reactivity::Polling]);
}

#[test]
fn change_streams_need_mongodb_6() {
    let mut a = managed(json!({ "version": "5.0" }));
    a["spec"]["reactivity"] = json!(["changeStreams", "oplog"]);
    assert_one_error(
        errors(a.clone()),
        "spec",
        "changeStreams needs MongoDB 6.0 or later",
    );
    a["spec"]["reactivity"] = json!(["oplog", "polling"]);
    assert!(errors(a.clone()).is_empty(), "oplog works on 5.0");
    a["spec"]["mongo"]["managed"]["version"] = json!("6.0");
    a["spec"]["reactivity"] = json!(["changeStreams"]);
    assert!(errors(a.clone()).is_empty());
    // External MongoDB: the version is unknown, the user is trusted.
    let mut e = app(json!({ "external": { "url": { "name": "db", "key": "url" } } }));
    e["spec"]["reactivity"] = json!(["changeStreams"]);
    assert!(errors(e).is_empty());
}

#[test]
fn storage_can_grow_but_not_shrink_or_change_class() {
    let old = managed(json!({ "storage": { "size": "10Gi", "storageClassName": "fast" } }));
    let grow = managed(json!({ "storage": { "size": "20Gi", "storageClassName": "fast" } }));
    assert!(update_errors(old.clone(), grow).is_empty());
    let shrink = managed(json!({ "storage": { "size": "5Gi", "storageClassName": "fast" } }));
    assert_one_error(
        update_errors(old.clone(), shrink),
        "spec.mongo.managed.storage.size",
        "cannot shrink",
    );
    let class = managed(json!({ "storage": { "size": "10Gi", "storageClassName": "slow" } }));
    assert_one_error(
        update_errors(old, class),
        "spec.mongo.managed.storage.storageClassName",
        "cannot change",
    );
}

#[test]
fn database_and_mode_are_fixed_once_created() {
    let old = managed(json!({ "database": "shop" }));
    assert!(
        update_errors(
            old.clone(),
            managed(json!({ "database": "shop", "members": 5 }))
        )
        .is_empty()
    );
    assert_one_error(
        update_errors(old, managed(json!({ "database": "other" }))),
        "spec.mongo.managed",
        "database cannot change",
    );
    let ext = app(json!({ "external": { "url": { "name": "db", "key": "url" } } }));
    assert_one_error(
        update_errors(ext, managed(json!({}))),
        "spec.mongo",
        "cannot switch between external and managed",
    );
}

#[test]
fn status_mongo_round_trips() {
    let s = MongoStatus {
        members: 3,
        ready_members: 2,
        primary: Some("shop-mongo-0.shop-mongo.default.svc.cluster.local:27017".into()),
        replication_lag_seconds: Some(4),
        oplog_window_seconds: Some(90_000),
    };
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["readyMembers"], 2);
    assert_eq!(v["replicationLagSeconds"], 4);
    assert_eq!(v["oplogWindowSeconds"], 90_000);
    assert_eq!(serde_json::from_value::<MongoStatus>(v).unwrap(), s);
}
