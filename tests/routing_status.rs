//! The `Routed` condition and `status.routing` from what the routing reconcile observed: what the
//! operator runs (the proxy) decides `Ready`; third parties' pending answers show only in
//! `Routed`; explicit refusals raise `Degraded`.

mod support;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use meteor_operator::api::{MeteorApp, MeteorAppStatus, RoutingStatus};
use meteor_operator::status::routing::{
    CertificateState, ROUTED, RouteState, RoutingObservation, TlsSecretState, fold_status,
};
use serde_json::{Value, json};
use support::app_from_yaml;

fn time(text: &str) -> Time {
    serde_json::from_value(json!(text)).unwrap()
}

fn app_with(routing: Value) -> MeteorApp {
    let mut value: Value =
        serde_norway::from_str(include_str!("../examples/minimal.yaml")).unwrap();
    value["spec"]["routing"] = routing;
    app_from_yaml(&serde_norway::to_string(&value).unwrap())
}

fn core_condition(type_: &str, status: &str, reason: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: String::new(),
        observed_generation: Some(4),
        last_transition_time: time("2026-01-01T00:00:00Z"),
    }
}

/// What the core computes for a serving app.
fn serving() -> MeteorAppStatus {
    MeteorAppStatus {
        conditions: vec![
            core_condition("Ready", "True", "Serving"),
            core_condition("Degraded", "False", "AsExpected"),
        ],
        ..MeteorAppStatus::default()
    }
}

fn folded(app: &MeteorApp, seen: &RoutingObservation) -> MeteorAppStatus {
    let mut status = serving();
    fold_status(&mut status, app, Some(seen), &time("2026-02-01T00:00:00Z"));
    status
}

fn get<'a>(status: &'a MeteorAppStatus, type_: &str) -> &'a Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

fn routed(status: &MeteorAppStatus) -> (&str, &str, &str) {
    let c = get(status, ROUTED);
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

fn proxies_ready(n: i32) -> RoutingObservation {
    RoutingObservation {
        proxy_ready: n,
        ..RoutingObservation::default()
    }
}

#[test]
fn a_ready_proxy_routes_and_reports_its_replicas() {
    let app = app_with(json!({}));
    let status = folded(&app, &proxies_ready(2));
    let (s, reason, message) = routed(&status);
    assert_eq!((s, reason), ("True", "Routed"));
    assert!(message.contains("2/2 ready"), "{message}");
    assert_eq!(
        status.routing,
        Some(RoutingStatus {
            proxy_replicas: Some(2),
            proxy_ready_replicas: Some(2),
            address: None,
        })
    );
    assert_eq!(get(&status, "Ready").status, "True");
    assert_eq!(
        get(&status, ROUTED).observed_generation,
        app.metadata.generation
    );
}

#[test]
fn no_ready_proxy_means_not_ready() {
    let status = folded(&app_with(json!({})), &proxies_ready(0));
    assert_eq!(routed(&status).1, "ProxyNotReady");
    let ready = get(&status, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ProxyNotReady")
    );
    assert_eq!(get(&status, "Degraded").status, "False", "not a refusal");
}

#[test]
fn a_missing_or_wrong_tls_secret_is_a_refusal_that_degrades() {
    let app = app_with(json!({"tls": {"secretName": "todos-cert"}}));
    for (state, expected) in [
        (
            TlsSecretState::Missing,
            "Secret todos-cert (spec.routing.tls.secretName) not found",
        ),
        (
            TlsSecretState::Invalid("type is Opaque, not kubernetes.io/tls".into()),
            "Secret todos-cert: type is Opaque, not kubernetes.io/tls",
        ),
    ] {
        let seen = RoutingObservation {
            tls_secret: Some(state),
            ..proxies_ready(2)
        };
        let status = folded(&app, &seen);
        assert_eq!(routed(&status), ("False", "TLSSecretInvalid", expected));
        let degraded = get(&status, "Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "TLSSecretInvalid")
        );
        assert_eq!(
            get(&status, "Ready").status,
            "True",
            "the proxy still serves"
        );
    }
}

#[test]
fn a_certificate_not_issued_yet_is_pending_not_a_refusal() {
    let app = app_with(json!({"tls": {"issuerRef": {"name": "le"}}}));
    let seen = RoutingObservation {
        tls_secret: Some(TlsSecretState::Missing),
        certificate: Some(CertificateState::NotReady(
            "Issuing certificate as Secret does not exist".into(),
        )),
        ..proxies_ready(2)
    };
    let status = folded(&app, &seen);
    let (s, reason, message) = routed(&status);
    assert_eq!((s, reason), ("False", "CertificateNotReady"));
    assert!(
        message.contains("todos-tls") && message.contains("Issuing"),
        "{message}"
    );
    assert_eq!(get(&status, "Degraded").status, "False");
    assert_eq!(get(&status, "Ready").status, "True");

    let seen = RoutingObservation {
        certificate: Some(CertificateState::NoCertManager),
        ..proxies_ready(2)
    };
    assert_eq!(routed(&folded(&app, &seen)).1, "NoCertManager");
}

#[test]
fn the_gateways_answer_shows_in_routed() {
    let app = app_with(json!({"gateway": {"parentRefs": [{"name": "public"}]}}));
    let with_route = |route| RoutingObservation {
        route: Some(route),
        edge_address: Some("203.0.113.9".into()),
        ..proxies_ready(2)
    };
    assert_eq!(
        routed(&folded(&app, &with_route(RouteState::NoGatewayAPI))).1,
        "NoGatewayAPI"
    );
    assert_eq!(
        routed(&folded(&app, &with_route(RouteState::Pending))).1,
        "RoutePending"
    );
    let refused = folded(
        &app,
        &with_route(RouteState::NotAccepted(
            "listener https allows no routes from namespace default".into(),
        )),
    );
    let (s, reason, message) = routed(&refused);
    assert_eq!((s, reason), ("False", "RouteNotAccepted"));
    assert!(
        message.contains("allows no routes from namespace default"),
        "{message}"
    );
    assert_eq!(get(&refused, "Degraded").reason, "RouteNotAccepted");
    assert_eq!(get(&refused, "Ready").status, "True");

    // Behind the proxy, a dropped sessionPersistence does not matter.
    let ok = folded(
        &app,
        &with_route(RouteState::Accepted {
            session_persistence: false,
        }),
    );
    assert_eq!(routed(&ok).0, "True");
    assert_eq!(ok.routing.unwrap().address.as_deref(), Some("203.0.113.9"));
}

#[test]
fn a_gateway_alone_that_drops_session_persistence_is_said_to_not_pin() {
    let app = app_with(json!({"proxy": {"enabled": false},
        "gateway": {"parentRefs": [{"name": "public"}]}}));
    let seen = |kept| RoutingObservation {
        route: Some(RouteState::Accepted {
            session_persistence: kept,
        }),
        edge_address: Some("gw.example.net".into()),
        ..RoutingObservation::default()
    };
    assert_eq!(
        routed(&folded(&app, &seen(false))).1,
        "StickinessUnsupported"
    );
    let ok = folded(&app, &seen(true));
    assert_eq!(routed(&ok).0, "True");
    assert_eq!(ok.routing.as_ref().unwrap().proxy_replicas, None);
    assert_eq!(get(&ok, "Ready").status, "True", "no proxy to wait for");
}

#[test]
fn an_ingress_without_an_address_is_pending() {
    let app = app_with(json!({"ingress": {"className": "nginx"}}));
    let status = folded(&app, &proxies_ready(2));
    assert_eq!(routed(&status).1, "IngressPending");
    assert_eq!(get(&status, "Ready").status, "True");
    let seen = RoutingObservation {
        edge_address: Some("198.51.100.4".into()),
        ..proxies_ready(2)
    };
    let status = folded(&app, &seen);
    let (s, _, message) = routed(&status);
    assert_eq!(s, "True");
    assert!(
        message.contains("198.51.100.4") && message.contains("Ingress"),
        "{message}"
    );
}

#[test]
fn an_unknown_ingress_class_alone_is_stickiness_unsupported() {
    let app = app_with(json!({"proxy": {"enabled": false}, "ingress": {"className": "contour"}}));
    let seen = RoutingObservation {
        edge_address: Some("198.51.100.4".into()),
        ..RoutingObservation::default()
    };
    let status = folded(&app, &seen);
    let (s, reason, message) = routed(&status);
    assert_eq!((s, reason), ("False", "StickinessUnsupported"));
    assert!(
        message.contains("contour") && message.contains("sticky sessions"),
        "{message}"
    );
}

#[test]
fn a_name_held_by_someone_else_is_a_refusal() {
    let seen = RoutingObservation {
        name_taken: Some(
            "Service default/todos-app already exists and belongs to MeteorApp todos-app".into(),
        ),
        ..proxies_ready(2)
    };
    let status = folded(&app_with(json!({})), &seen);
    let (s, reason, message) = routed(&status);
    assert_eq!((s, reason), ("False", "NameTaken"));
    assert_eq!(
        message,
        "Service default/todos-app already exists and belongs to MeteorApp todos-app"
    );
    assert_eq!(get(&status, "Degraded").reason, "NameTaken");
}

#[test]
fn the_cores_own_degraded_reason_is_kept() {
    let app = app_with(json!({"tls": {"secretName": "todos-cert"}}));
    let mut status = serving();
    status.conditions[1] = core_condition("Degraded", "True", "ReferenceNotFound");
    let seen = RoutingObservation {
        tls_secret: Some(TlsSecretState::Missing),
        ..proxies_ready(2)
    };
    fold_status(
        &mut status,
        &app,
        Some(&seen),
        &time("2026-02-01T00:00:00Z"),
    );
    assert_eq!(get(&status, "Degraded").reason, "ReferenceNotFound");
    assert_eq!(routed(&status).1, "TLSSecretInvalid");
}

#[test]
fn transition_times_move_only_on_a_flip_and_nothing_seen_keeps_the_last_word() {
    let mut app = app_with(json!({}));
    let first = folded(&app, &proxies_ready(0));
    app.status = Some(first.clone());
    let mut again = serving();
    fold_status(
        &mut again,
        &app,
        Some(&proxies_ready(0)),
        &time("2026-03-01T00:00:00Z"),
    );
    assert_eq!(
        get(&again, ROUTED).last_transition_time,
        time("2026-02-01T00:00:00Z")
    );
    let mut flipped = serving();
    fold_status(
        &mut flipped,
        &app,
        Some(&proxies_ready(1)),
        &time("2026-03-01T00:00:00Z"),
    );
    assert_eq!(
        get(&flipped, ROUTED).last_transition_time,
        time("2026-03-01T00:00:00Z")
    );

    let mut unseen = serving();
    fold_status(&mut unseen, &app, None, &time("2026-03-01T00:00:00Z"));
    assert_eq!(get(&unseen, ROUTED), get(&first, ROUTED));
    assert_eq!(unseen.routing, first.routing);
}
