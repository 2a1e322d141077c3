//! A fake Kubernetes API server over HTTP on loopback, for the real `kubectl-meteor` binary: the
//! MeteorApps (GET, LIST, JSON merge patch with a `resourceVersion` precondition, `generation`
//! moving when the spec does), pods (LIST by label selector) and the pod proxy to each proxy's
//! admin page. It records every request, and names the RBAC verb and resource each needs.

#![allow(dead_code)]

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest a test lets the plugin run.
pub const RUN_LIMIT: Duration = Duration::from_secs(30);

/// What a proxy pod's admin page answers through the pod proxy.
#[derive(Clone, Debug)]
pub enum ProxyAnswer {
    Status(Value),
    /// The API server's own error (403 forbidden, 503 cannot reach the pod).
    Error(u16, String),
    /// Never answers.
    Hang,
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

impl Seen {
    /// The RBAC verb and resource the API server would check: `get meteorapps`, `list pods`,
    /// `patch meteorapps`, `get pods/proxy`.
    pub fn permission(&self) -> (String, String) {
        let parts: Vec<&str> = self.path.trim_start_matches('/').split('/').collect();
        // /api/v1/... or /apis/GROUP/VERSION/...
        let rest = match parts.first() {
            Some(&"api") => &parts[2..],
            _ => &parts[3..],
        };
        let rest = match rest {
            ["namespaces", _ns, rest @ ..] => rest,
            rest => rest,
        };
        let (resource, named) = match rest {
            [resource] => (resource.to_string(), false),
            [resource, _name] => (resource.to_string(), true),
            [resource, _name, sub, ..] => (format!("{resource}/{sub}"), true),
            _ => panic!("no resource in {}", self.path),
        };
        let verb = match (self.method.as_str(), named) {
            ("GET", false) if self.query.contains("watch=") => "watch",
            ("GET", false) => "list",
            ("GET", true) => "get",
            ("PATCH", _) => "patch",
            ("PUT", _) => "update",
            ("POST", _) => "create",
            ("DELETE", _) => "delete",
            (other, _) => panic!("unexpected method {other}"),
        };
        (verb.to_string(), resource)
    }
}

#[derive(Default)]
struct State {
    apps: BTreeMap<(String, String), Value>,
    pods: Vec<Value>,
    proxies: BTreeMap<String, ProxyAnswer>,
    /// Requests whose path starts with this are never answered.
    hang: Option<String>,
    /// (verb, resource) answered 403.
    forbidden: BTreeSet<(String, String)>,
    /// Before answering this many PATCHes, another writer changes the app (its resourceVersion
    /// moves), so a patch with the old one conflicts.
    racing_writes: usize,
    version: u64,
    seen: Vec<Seen>,
}

#[derive(Default, Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    pub fn new(apps: Vec<Value>, pods: Vec<Value>) -> Self {
        let fake = Self::default();
        {
            let mut state = fake.state.lock().unwrap();
            for mut app in apps {
                state.version += 1;
                app["metadata"]["resourceVersion"] = json!(state.version.to_string());
                let key = key_of(&app);
                state.apps.insert(key, app);
            }
            state.pods = pods;
        }
        fake
    }

    pub fn proxy(&self, pod: &str, answer: ProxyAnswer) -> &Self {
        self.state
            .lock()
            .unwrap()
            .proxies
            .insert(pod.into(), answer);
        self
    }

    pub fn hang(&self, prefix: &str) -> &Self {
        self.state.lock().unwrap().hang = Some(prefix.into());
        self
    }

    pub fn forbid(&self, verb: &str, resource: &str) -> &Self {
        self.state
            .lock()
            .unwrap()
            .forbidden
            .insert((verb.into(), resource.into()));
        self
    }

    pub fn race(&self, writes: usize) -> &Self {
        self.state.lock().unwrap().racing_writes = writes;
        self
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn app(&self, namespace: &str, name: &str) -> Value {
        self.state.lock().unwrap().apps[&(namespace.to_string(), name.to_string())].clone()
    }

    /// Serves on a loopback port until the test's runtime ends.
    pub async fn serve(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let fake = fake.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let fake = fake.clone();
                        async move { Ok::<_, Infallible>(fake.answer(request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let seen = Seen {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            // kube starts a query with `&`; the API server does not care, nor do the tests.
            query: parts
                .uri
                .query()
                .unwrap_or("")
                .trim_start_matches('&')
                .to_string(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        };
        let (hang, forbidden) = {
            let mut state = self.state.lock().unwrap();
            state.seen.push(seen.clone());
            let hang = state
                .hang
                .as_deref()
                .is_some_and(|prefix| seen.path.starts_with(prefix));
            (hang, state.forbidden.contains(&seen.permission()))
        };
        if hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if forbidden {
            let (verb, resource) = seen.permission();
            return status(
                403,
                &format!(
                    "{resource} is forbidden: User \"oncall\" cannot {verb} resource \"{resource}\""
                ),
            );
        }
        self.route(&seen).await
    }

    async fn route(&self, seen: &Seen) -> Response<Full<Bytes>> {
        let parts: Vec<&str> = seen.path.trim_start_matches('/').split('/').collect();
        match (seen.method.as_str(), parts.as_slice()) {
            ("GET", ["apis", "meteorfleet.dev", "v1alpha1", "meteorapps"]) => {
                let state = self.state.lock().unwrap();
                list("MeteorAppList", state.apps.values().cloned().collect())
            }
            (
                "GET",
                [
                    "apis",
                    "meteorfleet.dev",
                    "v1alpha1",
                    "namespaces",
                    ns,
                    "meteorapps",
                ],
            ) => {
                let state = self.state.lock().unwrap();
                let items = state
                    .apps
                    .iter()
                    .filter(|((n, _), _)| n == ns)
                    .map(|(_, a)| a.clone())
                    .collect();
                list("MeteorAppList", items)
            }
            (
                "GET",
                [
                    "apis",
                    "meteorfleet.dev",
                    "v1alpha1",
                    "namespaces",
                    ns,
                    "meteorapps",
                    name,
                ],
            ) => {
                let state = self.state.lock().unwrap();
                match state.apps.get(&(ns.to_string(), name.to_string())) {
                    Some(app) => ok(app),
                    None => status(
                        404,
                        &format!("meteorapps.meteorfleet.dev \"{name}\" not found"),
                    ),
                }
            }
            (
                "PATCH",
                [
                    "apis",
                    "meteorfleet.dev",
                    "v1alpha1",
                    "namespaces",
                    ns,
                    "meteorapps",
                    name,
                ],
            ) => self.patch(ns, name, seen),
            ("GET", ["api", "v1", "namespaces", ns, "pods"]) => {
                let state = self.state.lock().unwrap();
                let selector = selector(&seen.query);
                let items = state
                    .pods
                    .iter()
                    .filter(|p| p["metadata"]["namespace"] == json!(ns))
                    .filter(|p| {
                        selector
                            .iter()
                            .all(|(k, v)| p["metadata"]["labels"][k] == json!(v))
                    })
                    .cloned()
                    .collect();
                list("PodList", items)
            }
            (
                "GET",
                [
                    "api",
                    "v1",
                    "namespaces",
                    _ns,
                    "pods",
                    target,
                    "proxy",
                    "-",
                    "status",
                ],
            ) => {
                let (pod, port) = target.split_once(':').unwrap_or((target, ""));
                let answer = {
                    let state = self.state.lock().unwrap();
                    let known = state.pods.iter().any(|p| {
                        p["metadata"]["name"] == json!(pod)
                            && p["spec"]["containers"][0]["ports"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .any(|p| p["containerPort"].as_u64() == port.parse::<u64>().ok())
                    });
                    if known {
                        state.proxies.get(pod).cloned()
                    } else {
                        Some(ProxyAnswer::Error(
                            503,
                            format!(
                                "error trying to reach service: dial tcp {pod}:{port}: connection refused"
                            ),
                        ))
                    }
                };
                match answer {
                    Some(ProxyAnswer::Status(body)) => ok(&body),
                    Some(ProxyAnswer::Error(code, message)) => status(code, &message),
                    Some(ProxyAnswer::Hang) => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        status(504, "")
                    }
                    None => status(503, "no such proxy in the fake"),
                }
            }
            _ => status(
                404,
                &format!("the fake does not serve {} {}", seen.method, seen.path),
            ),
        }
    }

    fn patch(&self, ns: &str, name: &str, seen: &Seen) -> Response<Full<Bytes>> {
        let mut state = self.state.lock().unwrap();
        let key = (ns.to_string(), name.to_string());
        if !state.apps.contains_key(&key) {
            return status(
                404,
                &format!("meteorapps.meteorfleet.dev \"{name}\" not found"),
            );
        }
        if seen.content_type != "application/merge-patch+json" {
            return status(
                415,
                &format!("the fake takes merge patches, not {}", seen.content_type),
            );
        }
        if state.racing_writes > 0 {
            state.racing_writes -= 1;
            state.version += 1;
            let version = state.version.to_string();
            state.apps.get_mut(&key).unwrap()["metadata"]["resourceVersion"] = json!(version);
        }
        let stored = state.apps[&key].clone();
        if let Some(wanted) = seen.body["metadata"]["resourceVersion"].as_str()
            && stored["metadata"]["resourceVersion"].as_str() != Some(wanted)
        {
            return status(
                409,
                &format!(
                    "Operation cannot be fulfilled on meteorapps.meteorfleet.dev \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                ),
            );
        }
        let mut patched = stored.clone();
        merge_patch(&mut patched, &seen.body);
        if patched["spec"] != stored["spec"] {
            let generation = stored["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            patched["metadata"]["generation"] = json!(generation);
        }
        state.version += 1;
        patched["metadata"]["resourceVersion"] = json!(state.version.to_string());
        state.apps.insert(key, patched.clone());
        ok(&patched)
    }
}

fn key_of(app: &Value) -> (String, String) {
    (
        app["metadata"]["namespace"].as_str().unwrap().to_string(),
        app["metadata"]["name"].as_str().unwrap().to_string(),
    )
}

/// RFC 7386.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            let map = target.as_object_mut().unwrap();
            for (k, v) in fields {
                if v.is_null() {
                    map.remove(k);
                } else {
                    merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// `labelSelector=a%3Db%2Cc%3Dd` as equality terms.
fn selector(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("labelSelector="))
        .flat_map(|s| {
            let decoded = s
                .replace("%3D", "=")
                .replace("%2C", ",")
                .replace("%2F", "/");
            decoded
                .split(',')
                .filter_map(|term| term.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn ok(body: &Value) -> Response<Full<Bytes>> {
    respond(200, body)
}

fn list(kind: &str, items: Vec<Value>) -> Response<Full<Bytes>> {
    let api_version = if kind == "PodList" {
        "v1"
    } else {
        "meteorfleet.dev/v1alpha1"
    };
    respond(
        200,
        &json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items}),
    )
}

fn status(code: u16, message: &str) -> Response<Full<Bytes>> {
    let reason = match code {
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        _ => "InternalError",
    };
    respond(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                "reason": reason, "code": code}),
    )
}

fn respond(code: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// A kubeconfig whose current context points at a dead port, with a context `fake` (namespace
/// `shop`) at `server`.
pub fn kubeconfig(server: std::net::SocketAddr) -> PathBuf {
    static WRITTEN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "kubectl-meteor-test-{}-{}",
        std::process::id(),
        WRITTEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- {{name: fake, cluster: {{server: \"http://{server}\"}}}}\n\
             - {{name: dead, cluster: {{server: \"http://127.0.0.1:9\"}}}}\n\
             users:\n- {{name: oncall, user: {{}}}}\n\
             contexts:\n- {{name: fake, context: {{cluster: fake, user: oncall, namespace: shop}}}}\n\
             - {{name: dead, context: {{cluster: dead, user: oncall}}}}\n\
             current-context: dead\n"
        ),
    )
    .unwrap();
    path
}

/// What one run of the binary printed.
#[derive(Debug)]
pub struct Ran {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
    pub took: Duration,
}

/// Runs `kubectl-meteor ARGS` with `KUBECONFIG` set, within [`RUN_LIMIT`].
pub async fn kubectl_meteor(kubeconfig: &std::path::Path, args: &[&str]) -> Ran {
    let started = std::time::Instant::now();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-meteor"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("HOME")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_LIMIT, child)
        .await
        .unwrap_or_else(|_| panic!("kubectl-meteor {args:?} ran past {RUN_LIMIT:?}"))
        .unwrap();
    Ran {
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
        code: output.status.code().unwrap_or(-1),
        took: started.elapsed(),
    }
}

/// The verbs each command needs, as docs/kubectl-meteor.md lists them: command -> {(verb,
/// resource)}, from the table rows `| `kubectl meteor CMD` | `verb` resource, ... |`.
pub fn documented_verbs() -> BTreeMap<String, BTreeSet<(String, String)>> {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/kubectl-meteor.md"),
    )
    .expect("docs/kubectl-meteor.md exists");
    let mut commands = BTreeMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, command, verbs, ..] = cells.as_slice() else {
            continue;
        };
        let Some(command) = command
            .strip_prefix("`kubectl meteor ")
            .and_then(|c| c.strip_suffix('`'))
        else {
            continue;
        };
        let verbs = verbs
            .split(',')
            .map(|v| {
                let (verb, resource) = v.trim().split_once(' ').expect("`verb` resource");
                (
                    verb.trim_matches('`').to_string(),
                    resource.trim().to_string(),
                )
            })
            .collect();
        commands.insert(command.to_string(), verbs);
    }
    assert!(
        !commands.is_empty(),
        "no command table in docs/kubectl-meteor.md"
    );
    commands
}

/// The rules of the Role docs/kubectl-meteor.md gives (its first ```yaml block): (verb, resource).
pub fn documented_role() -> BTreeSet<(String, String)> {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/kubectl-meteor.md"),
    )
    .unwrap();
    let yaml = doc
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```yaml block with the Role");
    let role: Value = serde_norway::from_str(yaml).expect("the Role is YAML");
    assert_eq!(role["kind"], "Role");
    let mut allowed = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for resource in rule["resources"].as_array().unwrap() {
            for verb in rule["verbs"].as_array().unwrap() {
                allowed.insert((
                    verb.as_str().unwrap().to_string(),
                    resource.as_str().unwrap().to_string(),
                ));
            }
        }
    }
    allowed
}

/// The (verb, resource) pairs of `seen`.
pub fn permissions(seen: &[Seen]) -> BTreeSet<(String, String)> {
    seen.iter().map(Seen::permission).collect()
}
