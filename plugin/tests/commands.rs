//! The `kubectl-meteor` binary against a fake API server: what each command prints, the exact
//! requests it sends, that every request is one docs/kubectl-meteor.md grants, and that every
//! command ends in bounded time when the API server or a proxy goes quiet.

mod support;

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use support::{FakeApi, ProxyAnswer, Ran, Seen, kubeconfig, kubectl_meteor};

const TEMPLATE: &str = "a1b2c3d4e5f6a7b8c9d0e1f2";
const FAILED: &str = "ffeeddccbbaa998877665544";
const DAY: &str = "2025-01-01T00:00:00Z";

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": DAY, "observedGeneration": 4})
}

/// `todos` in namespace `shop`: settled on TEMPLATE, autoscaled, behind two proxies.
fn todos() -> Value {
    json!({
        "apiVersion": "meteorfleet.dev/v1alpha1",
        "kind": "MeteorApp",
        "metadata": {"name": "todos", "namespace": "shop", "generation": 4,
                     "uid": "u-todos", "creationTimestamp": DAY},
        "spec": {
            "image": "ghcr.io/example/todos:1.5.0",
            "replicas": 2,
            "rootUrl": "https://todos.example.com",
            "mongo": {"external": {"url": {"name": "todos-mongo", "key": "MONGO_URL"}}},
            "workers": {"replicas": 1},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 6}
        },
        "status": {
            "observedGeneration": 4,
            "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2,
            "replicaSummary": "2/2",
            "url": "https://todos.example.com",
            "conditions": [
                condition("Degraded", "False", "AsExpected", "no problem found"),
                condition("Ready", "True", "AllReplicasReady", "2/2 app processes ready"),
                condition("Progressing", "False", "RolloutComplete", "every process runs the current template"),
                condition("Routed", "True", "Routed", "through Service todos, 2/2 proxies ready"),
                condition("Autoscaled", "True", "ScalingActive", "the HPA was able to compute the replica count")
            ],
            "rollout": {"availableTemplate": TEMPLATE, "availableImage": "ghcr.io/example/todos:1.5.0"},
            "routing": {"proxyReplicas": 2, "proxyReadyReplicas": 2, "address": "203.0.113.7"},
            "autoscaling": {"currentReplicas": 2, "desiredReplicas": 3, "currentCPUUtilizationPercentage": 85}
        }
    })
}

/// `chat` in `shop`: its 2.0.0 crash-looped and the operator rolled it back to 1.9.0.
fn chat() -> Value {
    json!({
        "apiVersion": "meteorfleet.dev/v1alpha1",
        "kind": "MeteorApp",
        "metadata": {"name": "chat", "namespace": "shop", "generation": 7, "creationTimestamp": DAY},
        "spec": {
            "image": "ghcr.io/example/chat:2.0.0",
            "replicas": 6,
            "rootUrl": "https://chat.example.com",
            "mongo": {"external": {"url": {"name": "chat-mongo", "key": "MONGO_URL"}}}
        },
        "status": {
            "observedGeneration": 7,
            "replicaSummary": "6/6",
            "url": "https://chat.example.com",
            "conditions": [
                condition("Ready", "True", "AllReplicasReady", "6/6 app processes ready"),
                condition("Progressing", "False", "RolledBack", "rolled back"),
                condition("Degraded", "True", "RolledBack",
                    "rolled back: image ghcr.io/example/chat:2.0.0 failed (pod chat-x restarted 3 times); running ghcr.io/example/chat:1.9.0")
            ],
            "rollout": {"availableTemplate": TEMPLATE, "availableImage": "ghcr.io/example/chat:1.9.0",
                        "failedTemplate": FAILED, "failedImage": "ghcr.io/example/chat:2.0.0",
                        "failure": "pod chat-x restarted 3 times (rollout.rollbackOnRestarts is 3)"}
        }
    })
}

fn pod(name: &str, tier: &str, ip: &str, template: Option<&str>, port: u16) -> Value {
    let mut labels = json!({
        "app.kubernetes.io/name": "meteor",
        "app.kubernetes.io/instance": "todos",
        "app.kubernetes.io/component": tier,
        "app.kubernetes.io/managed-by": "meteor-operator",
        "pod-template-hash": "6d4f8b9c7"
    });
    if let Some(t) = template {
        labels["meteorfleet.dev/template-hash"] = json!(t);
    }
    let container = if tier == "proxy" { "proxy" } else { "meteor" };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": labels, "creationTimestamp": DAY},
        "spec": {"containers": [{"name": container, "image": "ghcr.io/example/todos:1.5.0",
                                 "ports": [{"name": if tier == "proxy" { "admin" } else { "http" },
                                            "containerPort": port}]}]},
        "status": {"phase": "Running", "podIP": ip,
                   "containerStatuses": [{"name": container, "ready": true, "restartCount": 1,
                                          "image": "x", "imageID": "x",
                                          "state": {"running": {}}}]}
    })
}

fn pods() -> Vec<Value> {
    vec![
        pod(
            "todos-6d4f8b9c7-aaaaa",
            "app",
            "10.0.0.1",
            Some(TEMPLATE),
            3000,
        ),
        pod(
            "todos-6d4f8b9c7-bbbbb",
            "app",
            "10.0.0.2",
            Some(TEMPLATE),
            3000,
        ),
        pod(
            "todos-worker-5c6d7-wwwww",
            "worker",
            "10.0.0.3",
            Some(TEMPLATE),
            3000,
        ),
        pod("todos-proxy-7f8e9-ppp01", "proxy", "10.0.1.1", None, 9090),
        pod("todos-proxy-7f8e9-ppp02", "proxy", "10.0.1.2", None, 9090),
        // Another app's pod in the same namespace: never listed for todos.
        {
            let mut other = pod("chat-1-zzzzz", "app", "10.0.2.1", None, 3000);
            other["metadata"]["labels"]["app.kubernetes.io/instance"] = json!("chat");
            other
        },
    ]
}

fn backend(id: &str, pod: Option<&str>, active: i64, websockets: i64) -> Value {
    json!({"id": id, "ready": true, "terminating": false, "removed": false, "up": true,
           "active": active, "websockets": websockets, "requests": 100, "pod": pod,
           "namespace": "shop"})
}

/// Two proxies that know todos' two app pods: 6 and 5 sessions.
fn fake() -> FakeApi {
    let fake = FakeApi::new(vec![todos(), chat()], pods());
    fake.proxy(
        "todos-proxy-7f8e9-ppp01",
        ProxyAnswer::Status(json!({"backends": [
            backend("10.0.0.1:3000", Some("todos-6d4f8b9c7-aaaaa"), 5, 4),
            // An older proxy build that does not name pods: matched by IP.
            backend("10.0.0.2:3000", None, 2, 1)
        ]})),
    )
    .proxy(
        "todos-proxy-7f8e9-ppp02",
        ProxyAnswer::Status(json!({"backends": [
            backend("10.0.0.1:3000", Some("todos-6d4f8b9c7-aaaaa"), 1, 1),
            backend("10.0.0.2:3000", Some("todos-6d4f8b9c7-bbbbb"), 3, 3)
        ]})),
    );
    fake
}

const APP: &str = "/apis/meteorfleet.dev/v1alpha1/namespaces/shop/meteorapps/todos";
const PODS: &str = "/api/v1/namespaces/shop/pods";
const PROXY_1: &str = "/api/v1/namespaces/shop/pods/todos-proxy-7f8e9-ppp01:9090/proxy/-/status";
const PROXY_2: &str = "/api/v1/namespaces/shop/pods/todos-proxy-7f8e9-ppp02:9090/proxy/-/status";

fn requests(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect()
}

/// Every request was one the documented Role grants, and `command` needed exactly the verbs its
/// row in docs/kubectl-meteor.md names.
fn assert_documented(command: &str, seen: &[Seen]) {
    let used = support::permissions(seen);
    let role = support::documented_role();
    let beyond: Vec<_> = used.difference(&role).collect();
    assert!(
        beyond.is_empty(),
        "{command} needs {beyond:?}, which the documented Role lacks"
    );
    let documented = support::documented_verbs();
    let row = documented.get(command).unwrap_or_else(|| {
        panic!("docs/kubectl-meteor.md has no row for `kubectl meteor {command}`")
    });
    assert_eq!(&used, row, "verbs of `kubectl meteor {command}`");
}

/// The cells of the line of `text` that starts with `first` (after indentation).
fn row<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
    text.lines()
        .map(str::trim_start)
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no line starting with {first} in:\n{text}"))
        .split_whitespace()
        .collect()
}

fn succeeded(ran: &Ran) {
    assert_eq!(
        ran.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        ran.stdout, ran.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_conditions_rollout_autoscaler_pods_and_sessions() {
    let fake = fake();
    let config = kubeconfig(fake.serve().await);
    let ran = kubectl_meteor(&config, &["status", "todos", "--context", "fake"]).await;
    succeeded(&ran);
    let out = &ran.stdout;
    assert_eq!(
        row(out, "NAME"),
        ["NAME", "READY", "REPLICAS", "URL", "AGE"]
    );
    assert_eq!(
        row(out, "todos")[..4],
        ["todos", "True", "2/2", "https://todos.example.com"]
    );
    assert!(
        out.contains("Image:        ghcr.io/example/todos:1.5.0\n"),
        "{out}"
    );
    assert!(
        out.contains("Replicas:     2 app processes, 1 worker\n"),
        "{out}"
    );
    assert!(
        out.contains("Routing:      proxy 2/2 ready, address 203.0.113.7\n"),
        "{out}"
    );
    // Conditions in a fixed order, with reasons and messages.
    let types: Vec<&str> = out
        .lines()
        .skip_while(|l| *l != "Conditions:")
        .skip(2)
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        types,
        ["Ready", "Progressing", "Degraded", "Routed", "Autoscaled"]
    );
    assert_eq!(
        row(out, "Ready")[..3],
        ["Ready", "True", "AllReplicasReady"]
    );
    assert!(row(out, "Ready").ends_with(&["2/2", "app", "processes", "ready"]));
    assert_eq!(
        row(out, "Progressing")[..3],
        ["Progressing", "False", "RolloutComplete"]
    );
    assert!(
        out.contains(&format!(
            "Last available:   template {} (image ghcr.io/example/todos:1.5.0)",
            &TEMPLATE[..10]
        )),
        "{out}"
    );
    assert!(
        out.contains("  2 to 6 replicas, target CPU 70%\n  current 2, desired 3, CPU 85%\n"),
        "{out}"
    );
    // Pods by tier, with their template and sessions summed over both proxies.
    let a = row(out, "todos-6d4f8b9c7-aaaaa");
    assert_eq!(a[1..4], ["app", &TEMPLATE[..10], "(available)"]);
    assert_eq!(a.last(), Some(&"6"));
    assert_eq!(row(out, "todos-6d4f8b9c7-bbbbb").last(), Some(&"5"));
    let proxy = row(out, "todos-proxy-7f8e9-ppp01");
    assert_eq!(proxy[1..3], ["proxy", "6d4f8b9c7"]);
    assert_eq!(proxy.last(), Some(&"-"));
    assert!(!out.contains("chat-1-zzzzz"), "{out}");
    let names: Vec<&str> = out
        .lines()
        .skip_while(|l| *l != "Pods:")
        .skip(2)
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "todos-6d4f8b9c7-aaaaa",
            "todos-6d4f8b9c7-bbbbb",
            "todos-worker-5c6d7-wwwww",
            "todos-proxy-7f8e9-ppp01",
            "todos-proxy-7f8e9-ppp02"
        ]
    );
    assert!(
        out.contains("Sessions:     11 open, counted by 2 of 2 proxies\n"),
        "{out}"
    );

    // Exactly: the app, its pods by label, each proxy's status page through the pod proxy.
    let seen = fake.seen();
    let mut sent = requests(&seen);
    sent[2..].sort();
    assert_eq!(
        sent,
        [
            format!("GET {APP}"),
            format!("GET {PODS}"),
            format!("GET {PROXY_1}"),
            format!("GET {PROXY_2}")
        ]
    );
    assert_eq!(
        seen[1].query,
        "labelSelector=app.kubernetes.io%2Fname%3Dmeteor%2Capp.kubernetes.io%2Finstance%3Dtodos"
    );
    assert_documented("status APP", &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_as_json_and_yaml_carries_the_same_report() {
    let fake = fake();
    let config = kubeconfig(fake.serve().await);
    let ran = kubectl_meteor(
        &config,
        &["--context", "fake", "status", "todos", "-o", "json"],
    )
    .await;
    succeeded(&ran);
    let report: Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(report["name"], "todos");
    assert_eq!(report["ready"], "True");
    assert_eq!(report["conditions"][0]["type"], "Ready");
    assert_eq!(report["conditions"][0]["reason"], "AllReplicasReady");
    assert_eq!(report["rollout"]["availableTemplate"], TEMPLATE);
    assert_eq!(report["autoscaler"]["desiredReplicas"], 3);
    assert_eq!(report["pods"][0]["template"], TEMPLATE);
    assert_eq!(report["pods"][0]["podTemplateHash"], "6d4f8b9c7");
    assert_eq!(report["pods"][0]["sessions"], 6);
    assert_eq!(report["sessions"]["total"], 11);
    assert_eq!(report["sessions"]["pods"][1]["websockets"], 4);

    let ran = kubectl_meteor(
        &config,
        &["--context", "fake", "status", "todos", "-o", "yaml"],
    )
    .await;
    succeeded(&ran);
    let yaml: Value = serde_norway::from_str(&ran.stdout).unwrap();
    assert_eq!(yaml["conditions"], report["conditions"]);
    assert_eq!(yaml["sessions"]["total"], 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_the_namespace_lists_apps_with_what_needs_a_look() {
    let fake = fake();
    let config = kubeconfig(fake.serve().await);
    let ran = kubectl_meteor(&config, &["status", "--context", "fake"]).await;
    succeeded(&ran);
    assert_eq!(
        row(&ran.stdout, "NAME"),
        ["NAME", "READY", "REPLICAS", "URL", "AGE", "ATTENTION"]
    );
    let chat = row(&ran.stdout, "chat");
    assert_eq!(
        chat[..4],
        ["chat", "True", "6/6", "https://chat.example.com"]
    );
    assert_eq!(chat.last(), Some(&"Degraded=RolledBack"));
    assert_eq!(row(&ran.stdout, "todos").last(), Some(&"-"));
    let seen = fake.seen();
    assert_eq!(
        requests(&seen),
        ["GET /apis/meteorfleet.dev/v1alpha1/namespaces/shop/meteorapps"]
    );
    assert_documented("status", &seen);

    let ran = kubectl_meteor(
        &config,
        &["status", "-A", "--context", "fake", "-o", "json"],
    )
    .await;
    succeeded(&ran);
    let list: Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(list["items"][0]["name"], "chat");
    assert_eq!(
        list["items"][0]["attention"],
        json!(["Degraded=RolledBack"])
    );
    assert_eq!(
        requests(&fake.seen()).last().unwrap(),
        "GET /apis/meteorfleet.dev/v1alpha1/meteorapps"
    );
    assert_documented("status -A", &fake.seen()[1..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_sum_every_proxy_per_pod() {
    let fake = fake();
    let config = kubeconfig(fake.serve().await);
    let ran = kubectl_meteor(&config, &["sessions", "todos", "--context", "fake"]).await;
    succeeded(&ran);
    let out = &ran.stdout;
    assert_eq!(
        row(out, "POD"),
        ["POD", "ADDRESS", "SESSIONS", "WEBSOCKETS", "STATE"]
    );
    assert_eq!(
        row(out, "todos-6d4f8b9c7-aaaaa"),
        [
            "todos-6d4f8b9c7-aaaaa",
            "10.0.0.1:3000",
            "6",
            "5",
            "serving"
        ]
    );
    assert_eq!(
        row(out, "todos-6d4f8b9c7-bbbbb"),
        [
            "todos-6d4f8b9c7-bbbbb",
            "10.0.0.2:3000",
            "5",
            "4",
            "serving"
        ]
    );
    assert!(
        out.ends_with("todos: 11 open, counted by 2 of 2 proxies\n"),
        "{out}"
    );
    let seen = fake.seen();
    assert!(seen.iter().all(|s| s.method == "GET"));
    assert_documented("sessions APP", &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_or_forbidden_proxy_is_named_and_does_not_hold_the_command() {
    let fake = fake();
    fake.proxy("todos-proxy-7f8e9-ppp02", ProxyAnswer::Hang);
    let config = kubeconfig(fake.serve().await);
    let ran = kubectl_meteor(
        &config,
        &[
            "sessions",
            "todos",
            "--context",
            "fake",
            "--request-timeout",
            "1s",
        ],
    )
    .await;
    succeeded(&ran);
    assert!(ran.took < Duration::from_secs(10), "{:?}", ran.took);
    assert!(
        ran.stdout.contains(
            "todos: 7 open, counted by 1 of 2 proxies (partial: 1 of 2 proxies answered; the counts leave out the others' sessions)\n  todos-proxy-7f8e9-ppp02: no answer within 1 s\n"
        ),
        "{}",
        ran.stdout
    );

    // Without pods/proxy, status still shows everything else and says why sessions are missing.
    let fake = self::fake();
    fake.forbid("get", "pods/proxy");
    let config = kubeconfig(fake.serve().await);
    let ran = kubectl_meteor(&config, &["status", "todos", "--context", "fake"]).await;
    succeeded(&ran);
    assert!(
        ran.stdout
            .contains("Sessions:     not counted (none of the 2 proxies answered)"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains("todos-proxy-7f8e9-ppp01: forbidden: pods/proxy is forbidden: User \"oncall\" cannot get resource \"pods/proxy\""),
        "{}",
        ran.stdout
    );
    assert_eq!(row(&ran.stdout, "todos-6d4f8b9c7-aaaaa").last(), Some(&"-"));
    // sessions itself fails: the counts are unknown, not zero.
    let ran = kubectl_meteor(&config, &["sessions", "todos", "--context", "fake"]).await;
    assert_eq!(ran.code, 1, "{ran:?}");

    // --no-sessions asks no proxy at all.
    let fake = self::fake();
    let config = kubeconfig(fake.serve().await);
    let ran = kubectl_meteor(
        &config,
        &["status", "todos", "--context", "fake", "--no-sessions"],
    )
    .await;
    succeeded(&ran);
    assert_eq!(
        requests(&fake.seen()),
        [format!("GET {APP}"), format!("GET {PODS}")]
    );
    assert!(!ran.stdout.contains("Sessions:"), "{}", ran.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_sends_one_merge_patch_of_the_restart_annotation() {
    let fake = fake();
    let config = kubeconfig(fake.serve().await);
    let before = k8s_openapi::jiff::Timestamp::now().as_second();
    let ran = kubectl_meteor(&config, &["restart", "todos", "--context", "fake"]).await;
    succeeded(&ran);
    let seen = fake.seen();
    assert_eq!(
        requests(&seen),
        [format!("GET {APP}"), format!("PATCH {APP}")]
    );
    let patch = &seen[1];
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert_eq!(patch.query, "fieldManager=kubectl-meteor");
    let stamp = patch.body["spec"]["podAnnotations"]["meteorfleet.dev/restartedAt"]
        .as_str()
        .expect("the restart annotation");
    assert_eq!(
        patch.body,
        json!({"spec": {"podAnnotations": {"meteorfleet.dev/restartedAt": stamp}}}),
        "nothing but the annotation"
    );
    let at: k8s_openapi::jiff::Timestamp = stamp.parse().unwrap();
    assert!(
        at.as_second() >= before - 1 && at.as_second() <= before + 60,
        "{stamp}"
    );
    assert!(stamp.ends_with('Z') && !stamp.contains('.'), "{stamp}");
    // The stored app carries it, and its generation moved: the operator will roll the pods.
    let stored = fake.app("shop", "todos");
    assert_eq!(
        stored["spec"]["podAnnotations"]["meteorfleet.dev/restartedAt"],
        stamp
    );
    assert_eq!(stored["metadata"]["generation"], 5);
    assert!(
        ran.stdout.starts_with(&format!(
            "todos: restart requested: spec.podAnnotations[meteorfleet.dev/restartedAt] = {stamp}. The operator rolls the 2 app pods and 1 worker pod"
        )),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains("rollout.drainSeconds (15 s)"),
        "{}",
        ran.stdout
    );
    assert_documented("restart APP", &seen);

    // A rolled-back app is not restarted (that would retry the failed template) unless forced.
    let ran = kubectl_meteor(&config, &["restart", "chat", "--context", "fake"]).await;
    assert_eq!(ran.code, 1);
    assert!(ran.stderr.contains("chat is rolled back"), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("kubectl meteor rollback chat"),
        "{}",
        ran.stderr
    );
    let ran = kubectl_meteor(
        &config,
        &[
            "restart",
            "chat",
            "--context",
            "fake",
            "--force",
            "-o",
            "json",
        ],
    )
    .await;
    succeeded(&ran);
    let report: Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(report["result"], "patched");
    assert_eq!(report["generation"], 8);
    let patches = fake.seen().iter().filter(|s| s.method == "PATCH").count();
    assert_eq!(patches, 2, "one for todos, one for the forced chat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_sets_the_last_available_image_with_a_precondition() {
    let fake = fake();
    let config = kubeconfig(fake.serve().await);
    let version = fake.app("shop", "chat")["metadata"]["resourceVersion"].clone();
    let ran = kubectl_meteor(&config, &["rollback", "chat", "--context", "fake"]).await;
    succeeded(&ran);
    let chat = "/apis/meteorfleet.dev/v1alpha1/namespaces/shop/meteorapps/chat";
    let seen = fake.seen();
    assert_eq!(
        requests(&seen),
        [format!("GET {chat}"), format!("PATCH {chat}")]
    );
    assert_eq!(seen[1].content_type, "application/merge-patch+json");
    assert_eq!(
        seen[1].body,
        json!({"metadata": {"resourceVersion": version},
               "spec": {"image": "ghcr.io/example/chat:1.9.0"}})
    );
    assert_eq!(
        fake.app("shop", "chat")["spec"]["image"],
        "ghcr.io/example/chat:1.9.0"
    );
    assert!(
        ran.stdout.starts_with(&format!(
            "chat: spec.image ghcr.io/example/chat:2.0.0 -> ghcr.io/example/chat:1.9.0, the image of {TEMPLATE}, the last template that was fully available. The operator had already put the Deployment back"
        )),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains("Only the image is restored"),
        "{}",
        ran.stdout
    );
    assert_documented("rollback APP", &seen);

    // todos is on its last available template: nothing is sent.
    let ran = kubectl_meteor(&config, &["rollback", "todos", "--context", "fake"]).await;
    succeeded(&ran);
    assert!(ran.stdout.contains("todos: already on"), "{}", ran.stdout);
    assert_eq!(
        fake.seen().iter().filter(|s| s.method == "PATCH").count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_between_makes_the_plugin_read_and_decide_again() {
    let fake = fake();
    fake.race(1);
    let config = kubeconfig(fake.serve().await);
    let ran = kubectl_meteor(&config, &["park", "todos", "--context", "fake"]).await;
    succeeded(&ran);
    let seen = fake.seen();
    assert_eq!(
        requests(&seen),
        [
            format!("GET {APP}"),
            format!("PATCH {APP}"),
            format!("GET {APP}"),
            format!("PATCH {APP}")
        ]
    );
    let first = seen[1].body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap();
    let second = seen[3].body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap();
    assert_ne!(first, second, "the second patch is for the app as re-read");
    assert_eq!(fake.app("shop", "todos")["spec"]["replicas"], 0);

    // Always conflicting: gives up after three tries, saying why.
    let fake = self::fake();
    fake.race(10);
    let config = kubeconfig(fake.serve().await);
    let ran = kubectl_meteor(&config, &["park", "todos", "--context", "fake"]).await;
    assert_eq!(ran.code, 1);
    assert!(
        ran.stderr
            .contains("kept changing while park was written (3 attempts)"),
        "{}",
        ran.stderr
    );
    assert_eq!(
        fake.seen().iter().filter(|s| s.method == "PATCH").count(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn park_and_unpark_round_trip_through_the_remembered_replicas() {
    let fake = fake();
    let config = kubeconfig(fake.serve().await);
    let ran = kubectl_meteor(
        &config,
        &[
            "park",
            "todos",
            "--context",
            "fake",
            "--dry-run",
            "-o",
            "yaml",
        ],
    )
    .await;
    succeeded(&ran);
    let report: Value = serde_norway::from_str(&ran.stdout).unwrap();
    assert_eq!(report["result"], "dry-run");
    assert_eq!(report["patch"]["spec"]["replicas"], 0);
    assert!(
        fake.seen().iter().all(|s| s.method == "GET"),
        "a dry run sends nothing"
    );

    let version = fake.app("shop", "todos")["metadata"]["resourceVersion"].clone();
    let ran = kubectl_meteor(&config, &["park", "todos", "--context", "fake"]).await;
    succeeded(&ran);
    let seen = fake.seen();
    let patch = seen.iter().find(|s| s.method == "PATCH").unwrap();
    assert_eq!(
        patch.body,
        json!({"metadata": {"resourceVersion": version,
                            "annotations": {"meteorfleet.dev/parked-replicas": "2"}},
               "spec": {"replicas": 0}})
    );
    assert!(
        ran.stdout.starts_with("todos parked: spec.replicas 2 -> 0"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains("Workers keep running (1 worker pod,"),
        "{}",
        ran.stdout
    );
    assert_documented("park APP", &seen[1..]);

    let ran = kubectl_meteor(&config, &["park", "todos", "--context", "fake"]).await;
    succeeded(&ran);
    assert_eq!(ran.stdout, "todos is already parked (spec.replicas is 0)\n");

    let before = fake.seen().len();
    let ran = kubectl_meteor(&config, &["unpark", "todos", "--context", "fake"]).await;
    succeeded(&ran);
    assert_eq!(
        ran.stdout,
        "todos unparked: spec.replicas 0 -> 2 (remembered by park in meteorfleet.dev/parked-replicas)\n"
    );
    let seen = fake.seen()[before..].to_vec();
    assert_eq!(
        requests(&seen),
        [format!("GET {APP}"), format!("PATCH {APP}")]
    );
    assert_eq!(
        seen[1].body["metadata"]["annotations"],
        json!({"meteorfleet.dev/parked-replicas": null})
    );
    let stored = fake.app("shop", "todos");
    assert_eq!(stored["spec"]["replicas"], 2);
    assert_eq!(stored["metadata"].get("annotations"), Some(&json!({})));
    assert_documented("unpark APP", &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_context_and_namespace_are_taken_as_kubectl_takes_them() {
    let fake = fake();
    let config = kubeconfig(fake.serve().await);
    // The current context is a dead port: without --context nothing answers, within the timeout.
    let ran = kubectl_meteor(&config, &["status", "todos", "--request-timeout", "2s"]).await;
    assert_eq!(ran.code, 1);
    assert!(
        ran.stderr
            .starts_with("error: get meteorapp todos in namespace default"),
        "{}",
        ran.stderr
    );
    assert!(ran.took < Duration::from_secs(10), "{:?}", ran.took);
    // -n wins over the context's namespace.
    let ran = kubectl_meteor(
        &config,
        &["status", "todos", "--context", "fake", "-n", "other"],
    )
    .await;
    assert_eq!(ran.code, 1);
    assert_eq!(
        ran.stderr,
        "error: meteorapp todos not found in namespace other\n"
    );
    // --kubeconfig wins over $KUBECONFIG.
    let ran = kubectl_meteor(
        std::path::Path::new("/nonexistent"),
        &[
            "--kubeconfig",
            config.to_str().unwrap(),
            "--context",
            "fake",
            "status",
            "todos",
            "--no-sessions",
        ],
    )
    .await;
    succeeded(&ran);
    assert!(
        ran.stdout.contains("Namespace:    shop\n"),
        "{}",
        ran.stdout
    );
    // An unknown context is an error naming it.
    let ran = kubectl_meteor(&config, &["status", "--context", "nope"]).await;
    assert_eq!(ran.code, 1);
    assert!(ran.stderr.contains("nope"), "{}", ran.stderr);
    let namespaces: BTreeSet<&str> = fake
        .seen()
        .iter()
        .map(|s| {
            if s.path.contains("/namespaces/shop/") {
                "shop"
            } else if s.path.contains("/namespaces/other/") {
                "other"
            } else {
                panic!("{} is in neither namespace", s.path)
            }
        })
        .collect();
    assert_eq!(namespaces, BTreeSet::from(["other", "shop"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_api_server_ends_every_command_within_the_request_timeout() {
    let fake = fake();
    fake.hang("/apis/meteorfleet.dev");
    let config = kubeconfig(fake.serve().await);
    for args in [
        vec!["status", "todos"],
        vec!["status"],
        vec!["sessions", "todos"],
        vec!["restart", "todos"],
        vec!["rollback", "todos"],
        vec!["park", "todos"],
        vec!["unpark", "todos"],
    ] {
        let mut args = args.clone();
        args.extend(["--context", "fake", "--request-timeout", "1s"]);
        let ran = kubectl_meteor(&config, &args).await;
        assert_eq!(ran.code, 1, "{args:?}: {ran:?}");
        assert!(
            ran.stderr
                .contains("no answer from the API server within 1 s"),
            "{args:?}: {}",
            ran.stderr
        );
        assert!(
            ran.took < Duration::from_secs(8),
            "{args:?} took {:?}",
            ran.took
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_without_the_proxy_asks_no_pod_and_says_why_nothing_counts_sessions() {
    let mut app = todos();
    app["spec"]["routing"] = json!({"proxy": {"enabled": false}});
    let fake = FakeApi::new(vec![app], pods());
    let config = kubeconfig(fake.serve().await);
    let ran = kubectl_meteor(&config, &["status", "todos", "--context", "fake"]).await;
    succeeded(&ran);
    assert!(
        ran.stdout.contains(
            "Sessions:     not counted (routing.proxy.enabled is false, and only the operator's proxy counts sessions)"
        ),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout
            .contains("Routing:      proxy off (the Service selects the app pods)"),
        "{}",
        ran.stdout
    );
    let ran = kubectl_meteor(&config, &["sessions", "todos", "--context", "fake"]).await;
    succeeded(&ran);
    assert_eq!(
        ran.stdout,
        "todos: not counted (routing.proxy.enabled is false, and only the operator's proxy counts sessions)\n"
    );
    assert!(
        fake.seen().iter().all(|s| !s.path.contains("/proxy/")),
        "no pod proxy request"
    );
}
