//! The proxy's identity: ServiceAccount, Role and RoleBinding `<name>-proxy`, granting exactly
//! what `--service` needs (get, list and watch on EndpointSlices in the app's namespace).

use super::super::meta::{Component, child_meta, proxy_name};
use crate::api::MeteorApp;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::ResourceExt;

pub fn proxy_service_account(app: &MeteorApp) -> ServiceAccount {
    ServiceAccount {
        metadata: child_meta(app, proxy_name(app), Component::Proxy.as_str()),
        ..ServiceAccount::default()
    }
}

pub fn proxy_role(app: &MeteorApp) -> Role {
    Role {
        metadata: child_meta(app, proxy_name(app), Component::Proxy.as_str()),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["discovery.k8s.io".into()]),
            resources: Some(vec!["endpointslices".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..PolicyRule::default()
        }]),
    }
}

pub fn proxy_role_binding(app: &MeteorApp) -> RoleBinding {
    RoleBinding {
        metadata: child_meta(app, proxy_name(app), Component::Proxy.as_str()),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: proxy_name(app),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: proxy_name(app),
            namespace: app.namespace(),
            ..Subject::default()
        }]),
    }
}
