//! The proxy's identity: ServiceAccount and RoleBinding `<name>-proxy`, granting exactly what
//! `--service` needs (get, list and watch on EndpointSlices in the app's namespace) through the
//! ClusterRole the chart installs with the operator ([`RoutingOptions::proxy_cluster_role`]).
//! Bound by a RoleBinding, a ClusterRole grants its rules in that one namespace only, as a Role
//! would; one shared rule set spares every app a Role of its own (a write, a name check and a
//! cached object per app).

use super::super::meta::{Component, child_meta, proxy_name};
use super::RoutingOptions;
use crate::api::MeteorApp;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use kube::ResourceExt;

pub fn proxy_service_account(app: &MeteorApp) -> ServiceAccount {
    ServiceAccount {
        metadata: child_meta(app, proxy_name(app), Component::Proxy.as_str()),
        ..ServiceAccount::default()
    }
}

/// The binding of `<name>-proxy`'s ServiceAccount to the proxy ClusterRole, in the app's
/// namespace.
pub fn proxy_role_binding(app: &MeteorApp, options: &RoutingOptions) -> RoleBinding {
    RoleBinding {
        metadata: child_meta(app, proxy_name(app), Component::Proxy.as_str()),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: options.proxy_cluster_role.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: proxy_name(app),
            namespace: app.namespace(),
            ..Subject::default()
        }]),
    }
}
