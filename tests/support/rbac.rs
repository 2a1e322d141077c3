//! The chart's RBAC, enforced on every request a test's fake API server sees: a request the
//! operator's ServiceAccount may not make fails the test, and every permission a request needed
//! is recorded, so that `hack/rbac-used.txt` (and through it the chart) lists exactly what the
//! code uses. Call [`check`] (or [`check_request`]) from any fake API server.

use http::Method;
use k8s_openapi::api::rbac::v1::PolicyRule;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashSet;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

/// `helm template` of the chart with default values (hack/gen-install.sh). CI's install step fails
/// when it differs from a fresh render of the chart, so checking against it is checking against
/// the chart.
const INSTALL_YAML: &str = include_str!("../../manifests/install.yaml");

/// Where each test process appends the permissions it saw used, one file per process;
/// `hack/sync-rbac.sh` merges them into `hack/rbac-used.txt`.
pub const RECORD_DIR: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/rbac-used");

/// Which of the chart's role objects grants a permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Granter {
    /// Bound cluster-wide by a ClusterRoleBinding.
    ClusterRole,
    /// Bound in its own namespace (the release namespace) by a RoleBinding.
    Role,
}

/// One verb on one resource, as granted by one of the chart's roles.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Permission {
    pub granter: Granter,
    pub verb: &'static str,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
}

impl Permission {
    /// The resource as kubectl names it: `secrets`, `deployments.apps`,
    /// `meteorapps.meteorfleet.dev/status`.
    pub fn resource_name(&self) -> String {
        resource_name(&self.group, &self.resource, self.subresource.as_deref())
    }

    /// Its line in `hack/rbac-used.txt`: `ClusterRole deployments.apps create`.
    pub fn line(&self) -> String {
        format!("{:?} {} {}", self.granter, self.resource_name(), self.verb)
    }
}

/// What a request asks for, as the apiserver's request-info resolver sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributes {
    pub verb: &'static str,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// Checks one request of a fake API server: the permissions it needs, or why the chart's RBAC
/// refuses it. A PATCH with an `application/apply-patch+yaml` body is a server-side apply.
pub fn check<B>(request: &http::Request<B>) -> Result<Vec<Permission>, String> {
    let apply = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/apply-patch"));
    check_with(
        request.method(),
        request.uri().path(),
        request.uri().query().unwrap_or(""),
        apply,
    )
}

/// [`check`] without the headers: a PATCH whose query names a `fieldManager` is taken for a
/// server-side apply (the apiserver refuses an apply without one), so at worst this asks for a
/// `create` a merge patch would not need.
pub fn check_request(method: &Method, path: &str, query: &str) -> Result<Vec<Permission>, String> {
    let apply = method == Method::PATCH && query_has(query, "fieldManager");
    check_with(method, path, query, apply)
}

fn check_with(
    method: &Method,
    path: &str,
    query: &str,
    apply: bool,
) -> Result<Vec<Permission>, String> {
    let needed = needed_permissions(method, path, query, apply)?;
    record(&needed);
    Ok(needed)
}

/// The permissions a request needs, or why the chart refuses it, without recording anything:
/// for tests of this checker, whose requests are not the operator's.
/// The verbs a Role may grant (the operator's own never use a wildcard).
const VERBS: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// Kubernetes' escalation checks on a write of a Role, and of a RoleBinding to a ClusterRole: the
/// writer must itself hold every permission the Role grants, or the bound ClusterRole holds, in
/// that namespace (else it needs `escalate` or `bind`, which the chart never grants); a binding
/// of a ClusterRole the cluster lacks is refused. So the operator's ClusterRole must hold what the
/// proxy ClusterRole it binds hands on; those permissions are recorded like any request's, from
/// the binding the code really writes and the ClusterRole install.yaml really has.
pub fn check_escalation(method: &Method, path: &str, body: &Value) -> Result<(), String> {
    if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        return Ok(());
    }
    let target = attributes(method, path, "")?;
    if target.group != "rbac.authorization.k8s.io" {
        return Ok(());
    }
    let chart = chart();
    let rules: Vec<PolicyRule> = match target.resource.as_str() {
        "roles" => serde_json::from_value(body["rules"].clone()).unwrap_or_default(),
        "rolebindings" if body["roleRef"]["kind"] == "ClusterRole" => {
            let name = body["roleRef"]["name"].as_str().unwrap_or_default();
            chart.cluster_roles.get(name).cloned().ok_or_else(|| {
                format!(
                    "RBAC: {method} {path} binds ClusterRole {name:?}, which install.yaml lacks \
                     (the apiserver refuses a binding it cannot check)"
                )
            })?
        }
        _ => return Ok(()),
    };
    let mut held = Vec::new();
    for rule in &rules {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    let verb = VERBS
                        .into_iter()
                        .find(|v| v == verb)
                        .ok_or_else(|| format!("RBAC: {path} grants verb {verb:?}"))?;
                    let wanted = Attributes {
                        verb,
                        group: group.clone(),
                        resource: resource.clone(),
                        subresource: None,
                        namespace: target.namespace.clone(),
                        name: None,
                    };
                    match chart.grants(&wanted, verb) {
                        Some(granter) => held.push(Permission {
                            granter,
                            verb,
                            group: group.clone(),
                            resource: resource.clone(),
                            subresource: None,
                        }),
                        None => {
                            return Err(format!(
                                "RBAC: {method} {path} grants {verb} {}, which the operator does \
                                 not hold itself (the apiserver refuses the escalation); {}",
                                resource_name(group, resource, None),
                                chart.refusal(&wanted, verb),
                            ));
                        }
                    }
                }
            }
        }
    }
    record(&held);
    Ok(())
}

pub fn needed_permissions(
    method: &Method,
    path: &str,
    query: &str,
    apply: bool,
) -> Result<Vec<Permission>, String> {
    let attributes = attributes(method, path, query)?;
    let mut verbs = vec![attributes.verb];
    // An apply of an object that does not exist creates it, and the apiserver then also checks
    // `create`; a subresource is never created that way.
    if apply && attributes.verb == "patch" && attributes.subresource.is_none() {
        verbs.push("create");
    }
    let chart = chart();
    let mut needed = Vec::new();
    for verb in verbs {
        match chart.grants(&attributes, verb) {
            Some(granter) => needed.push(Permission {
                granter,
                verb,
                group: attributes.group.clone(),
                resource: attributes.resource.clone(),
                subresource: attributes.subresource.clone(),
            }),
            None => {
                let why = if verb == "create" && attributes.verb == "patch" {
                    " (server-side apply may create)"
                } else {
                    ""
                };
                return Err(format!(
                    "RBAC: {method} {path} needs {verb} {}{why}; {}",
                    resource_name(
                        &attributes.group,
                        &attributes.resource,
                        attributes.subresource.as_deref()
                    ),
                    chart.refusal(&attributes, verb),
                ));
            }
        }
    }
    Ok(needed)
}

/// Resolves method, path and query to verb, resource and scope the way the apiserver does:
/// `/api/v1/...` is the core group, `/apis/GROUP/VERSION/...` any other; then
/// `[namespaces/NS/]RESOURCE[/NAME[/SUBRESOURCE]]`.
pub fn attributes(method: &Method, path: &str, query: &str) -> Result<Attributes, String> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, mut rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => (group.to_string(), rest),
        _ => {
            return Err(format!(
                "RBAC: {method} {path}: not a Kubernetes API resource path"
            ));
        }
    };
    let mut watch_path = false;
    if rest.first() == Some(&"watch") {
        // The deprecated /watch/ form of a watch.
        watch_path = true;
        rest = &rest[1..];
    }
    let mut namespace = None;
    if rest.len() >= 2 && rest[0] == "namespaces" {
        namespace = Some(rest[1].to_string());
        // namespaces/NS/status and namespaces/NS/finalize are subresources of the Namespace.
        if rest.len() >= 3 && !matches!(rest[2], "status" | "finalize") {
            rest = &rest[2..];
        }
    }
    let (resource, name, subresource) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(name.to_string()), None),
        [resource, name, sub] => (*resource, Some(name.to_string()), Some(sub.to_string())),
        _ => return Err(format!("RBAC: {method} {path}: cannot tell the resource")),
    };
    let namespace = if resource == "namespaces" {
        // A Namespace itself is cluster-scoped.
        None
    } else {
        namespace
    };
    let watch = watch_path || query_has_value(query, "watch", &["true", "1"]);
    let verb = match (method.as_str(), name.is_some()) {
        ("GET" | "HEAD", _) if watch => "watch",
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return Err(format!("RBAC: {method} {path}: no Kubernetes verb")),
    };
    Ok(Attributes {
        verb,
        group,
        resource: resource.to_string(),
        subresource,
        namespace,
        name,
    })
}

fn query_has(query: &str, key: &str) -> bool {
    url::form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == key)
}

fn query_has_value(query: &str, key: &str, values: &[&str]) -> bool {
    url::form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == key && values.contains(&&*v))
}

fn resource_name(group: &str, resource: &str, subresource: Option<&str>) -> String {
    let mut name = resource.to_string();
    if !group.is_empty() {
        name = format!("{name}.{group}");
    }
    if let Some(sub) = subresource {
        name = format!("{name}/{sub}");
    }
    name
}

/// The rules that apply to the operator's ServiceAccount, from the bindings in install.yaml.
struct Chart {
    /// Rules bound cluster-wide (ClusterRoleBindings of ClusterRoles).
    cluster: Vec<PolicyRule>,
    /// Rules bound in one namespace (RoleBindings), with the kind of object holding them.
    namespaced: Vec<(String, Granter, String, Vec<PolicyRule>)>,
    /// Every ClusterRole install.yaml has, by name, bound to the operator or not.
    cluster_roles: std::collections::HashMap<String, Vec<PolicyRule>>,
}

impl Chart {
    fn load() -> Self {
        let mut objects = Vec::new();
        for document in serde_norway::Deserializer::from_str(INSTALL_YAML) {
            let value = Value::deserialize(document).expect("manifests/install.yaml parses");
            if value.is_object() {
                objects.push(value);
            }
        }
        let of_kind = |kind: &'static str| objects.iter().filter(move |o| o["kind"] == kind);
        let deployment = of_kind("Deployment")
            .find(|d| d["metadata"]["name"] == "meteor-operator")
            .expect("install.yaml holds the operator Deployment");
        let account = (
            deployment["metadata"]["namespace"]
                .as_str()
                .expect("the Deployment has a namespace")
                .to_string(),
            deployment["spec"]["template"]["spec"]["serviceAccountName"]
                .as_str()
                .expect("the Deployment names its ServiceAccount")
                .to_string(),
        );
        let binds_operator = |binding: &Value| {
            binding["subjects"].as_array().is_some_and(|subjects| {
                subjects.iter().any(|s| {
                    s["kind"] == "ServiceAccount"
                        && s["namespace"] == account.0.as_str()
                        && s["name"] == account.1.as_str()
                })
            })
        };
        let rules_of =
            |kind: &'static str, name: &str, namespace: Option<&str>| -> Vec<PolicyRule> {
                let role = of_kind(kind)
                    .find(|r| {
                        r["metadata"]["name"] == name
                            && namespace.is_none_or(|ns| r["metadata"]["namespace"] == ns)
                    })
                    .unwrap_or_else(|| panic!("install.yaml binds {kind} {name}, which it lacks"));
                serde_json::from_value(role["rules"].clone()).expect("rules parse")
            };
        let mut cluster = Vec::new();
        for binding in of_kind("ClusterRoleBinding").filter(|b| binds_operator(b)) {
            let name = binding["roleRef"]["name"].as_str().expect("roleRef.name");
            cluster.extend(rules_of("ClusterRole", name, None));
        }
        let mut namespaced = Vec::new();
        for binding in of_kind("RoleBinding").filter(|b| binds_operator(b)) {
            let namespace = binding["metadata"]["namespace"]
                .as_str()
                .expect("a RoleBinding has a namespace");
            let name = binding["roleRef"]["name"].as_str().expect("roleRef.name");
            let (granter, rules) = match binding["roleRef"]["kind"].as_str() {
                Some("Role") => (Granter::Role, rules_of("Role", name, Some(namespace))),
                _ => (Granter::ClusterRole, rules_of("ClusterRole", name, None)),
            };
            namespaced.push((namespace.to_string(), granter, name.to_string(), rules));
        }
        assert!(
            !cluster.is_empty(),
            "install.yaml binds no ClusterRole to the operator's ServiceAccount"
        );
        let cluster_roles = of_kind("ClusterRole")
            .map(|role| {
                let name = role["metadata"]["name"]
                    .as_str()
                    .expect("a ClusterRole has a name");
                (name.to_string(), rules_of("ClusterRole", name, None))
            })
            .collect();
        Self {
            cluster,
            namespaced,
            cluster_roles,
        }
    }

    /// Which object grants `verb` on the request's resource; a Role in the request's namespace
    /// first, since it is the narrower grant.
    fn grants(&self, request: &Attributes, verb: &str) -> Option<Granter> {
        for (namespace, granter, _, rules) in &self.namespaced {
            if request.namespace.as_deref() == Some(namespace)
                && rules.iter().any(|rule| allows(rule, request, verb))
            {
                return Some(*granter);
            }
        }
        self.cluster
            .iter()
            .any(|rule| allows(rule, request, verb))
            .then_some(Granter::ClusterRole)
    }

    /// Who refuses it, naming a Role that would grant it in another namespace.
    fn refusal(&self, request: &Attributes, verb: &str) -> String {
        let elsewhere: Vec<String> = self
            .namespaced
            .iter()
            .filter(|(namespace, _, _, rules)| {
                request.namespace.as_deref() != Some(namespace)
                    && rules.iter().any(|rule| {
                        allows(
                            rule,
                            &Attributes {
                                namespace: Some(namespace.clone()),
                                ..request.clone()
                            },
                            verb,
                        )
                    })
            })
            .map(|(namespace, _, name, _)| {
                format!("its Role {name} grants it in namespace {namespace} only")
            })
            .collect();
        let local: Vec<&String> = self
            .namespaced
            .iter()
            .filter(|(namespace, ..)| request.namespace.as_deref() == Some(namespace))
            .map(|(_, _, name, _)| name)
            .collect();
        let mut message = if local.is_empty() {
            "the chart's ClusterRole does not grant it".to_string()
        } else {
            format!(
                "neither the chart's ClusterRole nor its Role {} grants it",
                local
                    .iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        if !elsewhere.is_empty() {
            message = format!("{message} ({})", elsewhere.join("; "));
        }
        message
    }
}

/// One RBAC rule against one request, as the apiserver's RBAC authorizer matches them.
fn allows(rule: &PolicyRule, request: &Attributes, verb: &str) -> bool {
    let listed = |list: &Option<Vec<String>>, want: &str| {
        list.as_ref()
            .is_some_and(|l| l.iter().any(|v| v == "*" || v == want))
    };
    let combined = match &request.subresource {
        Some(sub) => format!("{}/{sub}", request.resource),
        None => request.resource.clone(),
    };
    let resource = rule.resources.as_ref().is_some_and(|resources| {
        resources.iter().any(|r| {
            r == "*"
                || *r == combined
                || request
                    .subresource
                    .as_ref()
                    .is_some_and(|sub| r.strip_prefix("*/") == Some(sub.as_str()))
        })
    });
    let named = match &rule.resource_names {
        None => true,
        Some(names) if names.is_empty() => true,
        Some(names) => request.name.as_ref().is_some_and(|n| names.contains(n)),
    };
    rule.verbs.iter().any(|v| v == "*" || v == verb)
        && listed(&rule.api_groups, &request.group)
        && resource
        && named
}

fn chart() -> &'static Chart {
    static CHART: OnceLock<Chart> = OnceLock::new();
    CHART.get_or_init(Chart::load)
}

/// Appends each permission not yet recorded by this process, one whole line at a time.
fn record(permissions: &[Permission]) {
    static RECORDED: Mutex<Option<(HashSet<String>, std::fs::File)>> = Mutex::new(None);
    let mut recorded = RECORDED.lock().unwrap_or_else(|e| e.into_inner());
    let (seen, file) = recorded.get_or_insert_with(|| {
        std::fs::create_dir_all(RECORD_DIR).expect("creating the RBAC record directory");
        let path = format!("{RECORD_DIR}/{}.txt", std::process::id());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("opening {path}: {e}"));
        (HashSet::new(), file)
    });
    for permission in permissions {
        let line = permission.line();
        if seen.insert(line.clone()) {
            file.write_all(format!("{line}\n").as_bytes())
                .expect("recording a used permission");
        }
    }
}
