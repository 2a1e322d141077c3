//! Open sessions per app pod: every proxy replica's `GET /-/status` on its admin port, asked
//! through the API server's pod proxy, summed per backend pod. Must never ask a pod that is not
//! one of the app's own running proxies, nor believe more than a bounded answer.

use crate::cluster::Cluster;
use k8s_openapi::api::core::v1::Pod;
use meteor_operator::api::MeteorApp;
use meteor_operator::build::routing::ADMIN_PORT;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The tier label the operator puts on every pod it creates.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

/// One backend of one proxy's status page (`proxy/src/admin.rs`).
#[derive(Deserialize, Clone, Debug, PartialEq)]
pub struct Backend {
    /// `ip:port`.
    pub id: String,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub terminating: bool,
    #[serde(default)]
    pub removed: bool,
    #[serde(default)]
    pub up: bool,
    /// Open connections through this proxy: WebSockets, streams, requests in flight.
    #[serde(default)]
    pub active: i64,
    /// Open WebSockets (included in `active`).
    #[serde(default)]
    pub websockets: i64,
    /// The backend's pod, when the proxy's discovery knows it.
    #[serde(default)]
    pub pod: Option<String>,
}

/// A proxy's status page.
#[derive(Deserialize, Clone, Debug, PartialEq)]
pub struct ProxyStatus {
    pub backends: Vec<Backend>,
}

/// What one proxy answered.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProxyAnswer {
    pub pod: String,
    pub answered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Open sessions of one app pod (or of a backend no listed pod has the address of).
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodSessions {
    /// The app pod; absent for a backend address that matches no app pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// `ip:port` as the proxies know it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Open connections (WebSockets, streams, requests in flight), summed over the proxies.
    pub sessions: i64,
    /// Of which WebSockets.
    pub websockets: i64,
    /// `serving`, `draining` (terminating, takes no new session), `removed` (gone from the
    /// endpoints), `down` (failing health checks), `not ready`, or `unknown` (no proxy lists it).
    pub state: String,
}

/// Sessions of one app, as `sessions` and `status` report them.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionsReport {
    pub app: String,
    pub namespace: String,
    /// Whether sessions are counted at all: only the operator's proxy counts them.
    pub counted: bool,
    /// Why not, or why only partly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub proxies: Vec<ProxyAnswer>,
    pub pods: Vec<PodSessions>,
    /// Open sessions over every app pod, from the proxies that answered.
    pub total: i64,
}

impl SessionsReport {
    pub fn answered(&self) -> usize {
        self.proxies.iter().filter(|p| p.answered).count()
    }
}

/// The tier of a pod (`app.kubernetes.io/component`).
pub fn tier(pod: &Pod) -> &str {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(COMPONENT_LABEL))
        .map(String::as_str)
        .unwrap_or("")
}

/// The proxy pods worth asking: the app's proxy tier, running, not terminating, with an IP.
pub fn askable_proxies(pods: &[Pod]) -> Vec<&Pod> {
    pods.iter()
        .filter(|p| tier(p) == "proxy")
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status.as_ref().is_some_and(|s| {
                s.phase.as_deref() == Some("Running") && s.pod_ip.as_deref().is_some()
            })
        })
        .collect()
}

/// The port a proxy pod serves its admin page on: its container port named `admin`, else the
/// operator's default.
pub fn admin_port(pod: &Pod) -> u16 {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("admin"))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(ADMIN_PORT as u16)
}

/// Asks every running proxy of `app` (from `pods`, the app's pods) at once.
pub async fn gather(cluster: &Cluster, app: &MeteorApp, pods: &[Pod]) -> SessionsReport {
    let name = app.metadata.name.clone().unwrap_or_default();
    if !app.spec.routing.proxy_enabled() {
        return SessionsReport {
            app: name,
            namespace: cluster.namespace.clone(),
            counted: false,
            note: Some(
                "routing.proxy.enabled is false, and only the operator's proxy counts sessions"
                    .into(),
            ),
            proxies: Vec::new(),
            pods: Vec::new(),
            total: 0,
        };
    }
    let proxies = askable_proxies(pods);
    let asks = proxies.iter().map(|p| {
        let pod = p.metadata.name.clone().unwrap_or_default();
        let port = admin_port(p);
        async move {
            let answer = cluster
                .pod_proxy_json::<ProxyStatus>(&pod, port, "/-/status")
                .await;
            (pod, answer)
        }
    });
    let answers = futures::future::join_all(asks).await;
    summarize(name, cluster.namespace.clone(), pods, answers)
}

/// The report from the proxies' answers. Pure.
pub fn summarize(
    app: String,
    namespace: String,
    pods: &[Pod],
    answers: Vec<(String, Result<ProxyStatus, String>)>,
) -> SessionsReport {
    let proxies: Vec<ProxyAnswer> = answers
        .iter()
        .map(|(pod, answer)| ProxyAnswer {
            pod: pod.clone(),
            answered: answer.is_ok(),
            error: answer.as_ref().err().cloned(),
        })
        .collect();
    let statuses: Vec<&ProxyStatus> = answers
        .iter()
        .filter_map(|(_, a)| a.as_ref().ok())
        .collect();
    let rows = per_pod(pods, &statuses);
    let total = rows.iter().map(|r| r.sessions).sum();
    let note = if proxies.is_empty() {
        Some("no proxy pod is running: nothing counts sessions".to_string())
    } else if statuses.is_empty() {
        Some(format!("none of the {} proxies answered", proxies.len()))
    } else if statuses.len() < proxies.len() {
        Some(format!(
            "partial: {} of {} proxies answered; the counts leave out the others' sessions",
            statuses.len(),
            proxies.len()
        ))
    } else {
        None
    };
    SessionsReport {
        app,
        namespace,
        counted: !statuses.is_empty(),
        note,
        proxies,
        pods: rows,
        total,
    }
}

/// Sessions per app pod, summed over the proxies' status pages; a backend matched to a pod by
/// the pod name the proxy reports, else by IP; backends matching no app pod listed apart.
fn per_pod(pods: &[Pod], statuses: &[&ProxyStatus]) -> Vec<PodSessions> {
    let app_pods: Vec<&Pod> = pods.iter().filter(|p| tier(p) == "app").collect();
    let by_ip: BTreeMap<&str, &str> = app_pods
        .iter()
        .filter_map(|p| {
            Some((
                p.status.as_ref()?.pod_ip.as_deref()?,
                p.metadata.name.as_deref()?,
            ))
        })
        .collect();
    // Pod name (or address, when no app pod matches) -> the row.
    let mut rows: BTreeMap<(bool, String), PodSessions> = BTreeMap::new();
    for pod in &app_pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        rows.insert(
            (false, name.clone()),
            PodSessions {
                pod: Some(name),
                address: None,
                sessions: 0,
                websockets: 0,
                state: "unknown".into(),
            },
        );
    }
    for backend in statuses.iter().flat_map(|s| &s.backends) {
        let ip = backend
            .id
            .rsplit_once(':')
            .map_or(backend.id.as_str(), |(ip, _)| ip);
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        let pod = backend
            .pod
            .as_deref()
            .filter(|p| rows.contains_key(&(false, p.to_string())))
            .or_else(|| by_ip.get(ip).copied());
        let key = match pod {
            Some(pod) => (false, pod.to_string()),
            None => (true, backend.id.clone()),
        };
        let row = rows.entry(key).or_insert_with(|| PodSessions {
            pod: backend.pod.clone(),
            address: None,
            sessions: 0,
            websockets: 0,
            state: "unknown".into(),
        });
        row.address.get_or_insert_with(|| backend.id.clone());
        row.sessions += backend.active.max(0);
        row.websockets += backend.websockets.max(0);
        row.state = worse(&row.state, state(backend)).to_string();
    }
    rows.into_values().collect()
}

fn state(backend: &Backend) -> &'static str {
    if backend.terminating {
        "draining"
    } else if backend.removed {
        "removed"
    } else if !backend.up {
        "down"
    } else if !backend.ready {
        "not ready"
    } else {
        "serving"
    }
}

/// Of two proxies' views of one backend, the one that needs a look: a pod one proxy drains is
/// draining.
fn worse<'a>(a: &'a str, b: &'a str) -> &'a str {
    const ORDER: [&str; 6] = [
        "draining",
        "removed",
        "down",
        "not ready",
        "serving",
        "unknown",
    ];
    let rank = |s: &str| ORDER.iter().position(|o| *o == s).unwrap_or(ORDER.len());
    if rank(b) < rank(a) { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, tier: &str, ip: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {COMPONENT_LABEL: tier}},
            "status": {"phase": "Running", "podIP": ip}
        }))
        .unwrap()
    }

    fn backend(id: &str, pod: Option<&str>, active: i64, websockets: i64) -> Backend {
        Backend {
            id: id.into(),
            ready: true,
            terminating: false,
            removed: false,
            up: true,
            active,
            websockets,
            pod: pod.map(String::from),
        }
    }

    #[test]
    fn sessions_are_summed_per_pod_over_every_proxy() {
        let pods = vec![
            pod("todos-a", "app", "10.0.0.1"),
            pod("todos-b", "app", "10.0.0.2"),
            pod("todos-c", "app", "10.0.0.3"),
            pod("todos-proxy-x", "proxy", "10.0.1.1"),
        ];
        let one = ProxyStatus {
            backends: vec![
                backend("10.0.0.1:3000", Some("todos-a"), 5, 4),
                // No pod name: matched by IP.
                backend("10.0.0.2:3000", None, 2, 2),
                backend("10.0.9.9:3000", None, 1, 0),
            ],
        };
        let mut draining = backend("10.0.0.2:3000", Some("todos-b"), 3, 1);
        draining.terminating = true;
        let two = ProxyStatus {
            backends: vec![backend("10.0.0.1:3000", Some("todos-a"), 7, 7), draining],
        };
        let report = summarize(
            "todos".into(),
            "default".into(),
            &pods,
            vec![
                ("todos-proxy-x".into(), Ok(one)),
                ("todos-proxy-y".into(), Ok(two)),
                ("todos-proxy-z".into(), Err("no answer within 5 s".into())),
            ],
        );
        let rows: Vec<(Option<&str>, i64, i64, &str)> = report
            .pods
            .iter()
            .map(|r| (r.pod.as_deref(), r.sessions, r.websockets, r.state.as_str()))
            .collect();
        assert_eq!(
            rows,
            vec![
                (Some("todos-a"), 12, 11, "serving"),
                (Some("todos-b"), 5, 3, "draining"),
                (Some("todos-c"), 0, 0, "unknown"),
                (None, 1, 0, "serving"),
            ]
        );
        assert_eq!(report.pods[3].address.as_deref(), Some("10.0.9.9:3000"));
        assert_eq!(report.total, 18);
        assert_eq!(report.answered(), 2);
        assert!(report.counted);
        assert_eq!(
            report.note.as_deref(),
            Some("partial: 2 of 3 proxies answered; the counts leave out the others' sessions")
        );
    }

    #[test]
    fn only_running_proxies_of_the_app_are_asked_on_their_admin_port() {
        let mut gone = pod("todos-proxy-old", "proxy", "10.0.1.2");
        gone.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let mut pending = pod("todos-proxy-new", "proxy", "10.0.1.3");
        pending.status.as_mut().unwrap().phase = Some("Pending".into());
        let mut custom: Pod = pod("todos-proxy-x", "proxy", "10.0.1.1");
        custom.spec = serde_json::from_value(json!({"containers": [{"name": "proxy",
            "ports": [{"name": "http", "containerPort": 8080}, {"name": "admin", "containerPort": 9191}]}]}))
        .unwrap();
        let pods = vec![pod("todos-a", "app", "10.0.0.1"), gone, pending, custom];
        let asked: Vec<(&str, u16)> = askable_proxies(&pods)
            .into_iter()
            .map(|p| (p.metadata.name.as_deref().unwrap(), admin_port(p)))
            .collect();
        assert_eq!(asked, vec![("todos-proxy-x", 9191)]);
        assert_eq!(admin_port(&pods[0]), 9090);
    }
}
