//! The RBAC checker of tests/support (which every fake API server calls): how it maps requests to
//! verbs and resources, and that it refuses what the chart's roles do not grant. These requests
//! are made up, so they go through `needed_permissions`, which records nothing.

mod support;

use http::Method;
use support::rbac::{Granter, attributes, needed_permissions};

fn needs(method: Method, path: &str, query: &str, apply: bool) -> Vec<String> {
    needed_permissions(&method, path, query, apply)
        .unwrap_or_else(|refusal| panic!("{refusal}"))
        .iter()
        .map(|p| p.line())
        .collect()
}

fn refusal(method: Method, path: &str, query: &str, apply: bool) -> String {
    match needed_permissions(&method, path, query, apply) {
        Ok(granted) => panic!("{method} {path} was allowed: {granted:?}"),
        Err(refusal) => refusal,
    }
}

#[test]
fn paths_resolve_like_the_apiservers_request_info() {
    let get = attributes(
        &Method::GET,
        "/apis/apps/v1/namespaces/default/deployments/todos",
        "",
    )
    .unwrap();
    assert_eq!(
        (get.verb, get.group.as_str(), get.resource.as_str()),
        ("get", "apps", "deployments")
    );
    assert_eq!(get.namespace.as_deref(), Some("default"));
    assert_eq!(get.name.as_deref(), Some("todos"));

    let cases = [
        (
            Method::GET,
            "/api/v1/secrets",
            "resourceVersion=0",
            "list",
            "",
        ),
        (
            Method::GET,
            "/api/v1/secrets",
            "watch=true&resourceVersion=7",
            "watch",
            "",
        ),
        (
            Method::GET,
            "/api/v1/watch/namespaces/a/secrets",
            "",
            "watch",
            "",
        ),
        (
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/a/events",
            "",
            "create",
            "",
        ),
        (
            Method::PUT,
            "/apis/coordination.k8s.io/v1/namespaces/a/leases/l",
            "",
            "update",
            "",
        ),
        (
            Method::DELETE,
            "/api/v1/namespaces/a/configmaps/c",
            "",
            "delete",
            "",
        ),
        (
            Method::DELETE,
            "/api/v1/namespaces/a/configmaps",
            "",
            "deletecollection",
            "",
        ),
        (
            Method::PATCH,
            "/apis/meteorfleet.dev/v1alpha1/namespaces/a/meteorapps/t/status",
            "",
            "patch",
            "status",
        ),
        (Method::GET, "/api/v1/namespaces/a", "", "get", ""),
        (
            Method::PUT,
            "/api/v1/namespaces/a/finalize",
            "",
            "update",
            "finalize",
        ),
    ];
    for (method, path, query, verb, sub) in cases {
        let a = attributes(&method, path, query).unwrap();
        assert_eq!(a.verb, verb, "{method} {path}?{query}");
        assert_eq!(a.subresource.as_deref().unwrap_or(""), sub, "{path}");
    }
    let namespace = attributes(&Method::GET, "/api/v1/namespaces/a", "").unwrap();
    assert_eq!(
        (namespace.resource.as_str(), namespace.namespace),
        ("namespaces", None)
    );
    assert!(attributes(&Method::GET, "/version", "").is_err());
}

#[test]
fn an_apply_needs_create_too_but_not_on_a_subresource_and_not_a_merge_patch() {
    assert_eq!(
        needs(
            Method::PATCH,
            "/apis/apps/v1/namespaces/default/deployments/todos",
            "fieldManager=meteor-operator&force=true",
            true
        ),
        [
            "ClusterRole deployments.apps patch",
            "ClusterRole deployments.apps create"
        ]
    );
    assert_eq!(
        needs(
            Method::PATCH,
            "/apis/meteorfleet.dev/v1alpha1/namespaces/default/meteorapps/todos/status",
            "fieldManager=meteor-operator&force=true",
            true
        ),
        ["ClusterRole meteorapps.meteorfleet.dev/status patch"]
    );
    // PVCs are only ever merge-patched: an apply would need the create the chart does not give.
    let pvc = "/api/v1/namespaces/default/persistentvolumeclaims/data-shop-mongo-0";
    assert_eq!(
        needs(Method::PATCH, pvc, "", false),
        ["ClusterRole persistentvolumeclaims patch"]
    );
    assert_eq!(
        refusal(Method::PATCH, pvc, "fieldManager=meteor-operator", true),
        format!(
            "RBAC: PATCH {pvc} needs create persistentvolumeclaims (server-side apply may create); \
             the chart's ClusterRole does not grant it"
        )
    );
    // Without headers, a fieldManager marks an apply.
    assert!(
        support::rbac::check_request(&Method::PATCH, pvc, "fieldManager=meteor-operator")
            .unwrap_err()
            .contains("server-side apply may create")
    );
}

#[test]
fn leases_are_allowed_by_the_role_in_the_operator_namespace_only() {
    let lease = "/apis/coordination.k8s.io/v1/namespaces/meteor-system/leases/meteor-operator";
    let granted = needed_permissions(&Method::GET, lease, "", false).unwrap();
    assert_eq!(granted.len(), 1);
    assert_eq!(granted[0].granter, Granter::Role);
    assert_eq!(granted[0].line(), "Role leases.coordination.k8s.io get");
    assert_eq!(
        refusal(Method::PUT, lease, "", false),
        format!(
            "RBAC: PUT {lease} needs update leases.coordination.k8s.io; neither the chart's \
             ClusterRole nor its Role meteor-operator-leader-election grants it"
        )
    );
    let elsewhere = "/apis/coordination.k8s.io/v1/namespaces/default/leases/meteor-operator";
    assert_eq!(
        refusal(Method::GET, elsewhere, "", false),
        format!(
            "RBAC: GET {elsewhere} needs get leases.coordination.k8s.io; the chart's ClusterRole \
             does not grant it (its Role meteor-operator-leader-election grants it in namespace \
             meteor-system only)"
        )
    );
}

#[test]
fn what_the_operator_must_never_do_is_refused() {
    for (method, path) in [
        (
            Method::PUT,
            "/apis/apps/v1/namespaces/default/deployments/todos",
        ),
        (
            Method::PUT,
            "/apis/meteorfleet.dev/v1alpha1/namespaces/default/meteorapps/todos",
        ),
        (
            Method::DELETE,
            "/api/v1/namespaces/default/secrets/todos-mongo",
        ),
        (
            Method::DELETE,
            "/api/v1/namespaces/default/configmaps/settings",
        ),
        (Method::POST, "/api/v1/namespaces/default/pods"),
        (Method::POST, "/api/v1/namespaces/default/pods/todos-0/exec"),
        (Method::POST, "/api/v1/namespaces/default/events"),
        // Mongo data is never deleted by the operator.
        (
            Method::DELETE,
            "/api/v1/namespaces/default/persistentvolumeclaims/data-shop-mongo-0",
        ),
        (
            Method::POST,
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        ),
    ] {
        let message = refusal(method.clone(), path, "", false);
        assert!(
            message.starts_with(&format!("RBAC: {method} {path} needs ")),
            "{message}"
        );
        assert!(message.contains("does not grant it"), "{message}");
    }
}
