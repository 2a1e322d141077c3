//! Where the backend list comes from: a static list, a file re-read on change, or the
//! EndpointSlices of a Kubernetes Service (watched; pods coming and going never need a restart).
//!
//! Each source hands complete lists to a callback; merging them into the live set (keeping
//! counters, draining removed backends) is the balancer's job.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use crate::backend::{BackendSpec, PodRef};

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("backend {0:?} is not host:port")]
    BadAddress(String),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("watching EndpointSlices: {0}")]
    Watch(#[from] watcher::Error),
}

/// Resolves one `host:port` (an IP literal needs no lookup) to a ready backend named by its
/// address, so every replica derives the same id.
pub fn parse_backend(text: &str) -> Result<BackendSpec, DiscoveryError> {
    let text = text.trim();
    let addr: SocketAddr = match text.parse() {
        Ok(addr) => addr,
        Err(_) => text
            .to_socket_addrs()
            .ok()
            .and_then(|mut it| it.next())
            .ok_or_else(|| DiscoveryError::BadAddress(text.to_owned()))?,
    };
    Ok(BackendSpec::ready(addr))
}

/// Parses a backends file: one `host:port` a line; blank lines and `#` comments ignored.
pub fn parse_list(text: &str) -> Result<Vec<BackendSpec>, DiscoveryError> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(parse_backend)
        .collect()
}

/// Polls `path` and calls `apply` with the list whenever the file's content changes.
/// A file that cannot be read or parsed leaves the last good list in place.
pub async fn watch_file(path: PathBuf, every: Duration, apply: impl Fn(Vec<BackendSpec>)) {
    let mut last: Option<String> = None;
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(source) => {
                let error = DiscoveryError::Read {
                    path: path.clone(),
                    source,
                };
                tracing::warn!(%error, "keeping the previous backends");
                continue;
            }
        };
        if last.as_deref() == Some(text.as_str()) {
            continue;
        }
        match parse_list(&text) {
            Ok(specs) => {
                tracing::info!(count = specs.len(), file = %path.display(), "backends loaded");
                apply(specs);
            }
            Err(error) => tracing::warn!(%error, "keeping the previous backends"),
        }
        last = Some(text);
    }
}

/// The backends named by a Service's EndpointSlices. `port` picks the slice port by name or
/// number (default: the first port). Addresses of FQDN slices are skipped.
pub fn specs_from_slices<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port: Option<&str>,
) -> Vec<BackendSpec> {
    let mut specs = Vec::new();
    for slice in slices {
        if slice.address_type == "FQDN" {
            continue;
        }
        let chosen = slice.ports.iter().flatten().find(|p| match port {
            None => true,
            Some(want) => {
                p.name.as_deref() == Some(want)
                    || p.port.map(|n| n.to_string()).as_deref() == Some(want)
            }
        });
        let Some(number) = chosen.and_then(|p| p.port) else {
            continue;
        };
        let Ok(number) = u16::try_from(number) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.as_ref();
            // A missing `ready` means "unknown", which Kubernetes says to treat as ready.
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            let pod = pod_of(endpoint, slice.metadata.namespace.as_deref());
            for ip in &endpoint.addresses {
                let Ok(ip) = ip.parse() else { continue };
                let addr = SocketAddr::new(ip, number);
                specs.push(BackendSpec {
                    id: addr.to_string(),
                    addr,
                    ready,
                    terminating,
                    pod: pod.clone(),
                });
            }
        }
    }
    specs.sort_by(|a, b| a.id.cmp(&b.id));
    specs.dedup_by(|a, b| a.id == b.id);
    specs
}

/// The pod an endpoint points at (`targetRef` of kind Pod; its namespace defaults to the
/// slice's, which is the Service's).
fn pod_of(endpoint: &Endpoint, slice_namespace: Option<&str>) -> Option<PodRef> {
    let target = endpoint.target_ref.as_ref()?;
    if target.kind.as_deref() != Some("Pod") {
        return None;
    }
    Some(PodRef {
        name: target.name.clone()?,
        namespace: target
            .namespace
            .clone()
            .or_else(|| slice_namespace.map(str::to_owned))?,
    })
}

/// Watches the EndpointSlices of `service` (`name` or `namespace/name`) and calls `apply` with
/// the full list after every change. Returns only if the cluster cannot be reached at all;
/// watch errors are retried with backoff.
pub async fn watch_service(
    service: &str,
    port: Option<&str>,
    apply: impl Fn(Vec<BackendSpec>),
) -> Result<(), DiscoveryError> {
    let client = kube::Client::try_default().await?;
    watch_service_with(client, service, port, apply).await;
    Ok(())
}

/// [`watch_service`] through `client` (a test's mock API server); `name` alone is in the
/// client's default namespace.
pub async fn watch_service_with(
    client: kube::Client,
    service: &str,
    port: Option<&str>,
    apply: impl Fn(Vec<BackendSpec>),
) {
    let (namespace, name) = match service.split_once('/') {
        Some((ns, name)) => (ns.to_owned(), name),
        None => (client.default_namespace().to_owned(), service),
    };
    let api: kube::Api<EndpointSlice> = kube::Api::namespaced(client, &namespace);
    let config = watcher::Config::default().labels(&format!("kubernetes.io/service-name={name}"));
    let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut initial: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let key = |s: &EndpointSlice| s.metadata.name.clone().unwrap_or_default();
    loop {
        let event = match events.try_next().await {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "EndpointSlice watch error; retrying");
                continue;
            }
        };
        match event {
            // A re-list: keep serving the old list until the new one is complete.
            Event::Init => {
                initial.clear();
                continue;
            }
            Event::InitApply(s) => {
                initial.insert(key(&s), s);
                continue;
            }
            Event::InitDone => slices = std::mem::take(&mut initial),
            Event::Apply(s) => {
                slices.insert(key(&s), s);
            }
            Event::Delete(s) => {
                slices.remove(&key(&s));
            }
        }
        apply(specs_from_slices(slices.values(), port));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    use http::{Request, Response};
    use http_body_util::StreamBody;
    use hyper::body::{Bytes, Frame};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde_json::{Value, json};

    fn endpoint(ip: &str, ready: Option<bool>, terminating: Option<bool>) -> Endpoint {
        Endpoint {
            addresses: vec![ip.to_owned()],
            conditions: Some(EndpointConditions {
                ready,
                terminating,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn slice(endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(vec![
                EndpointPort {
                    name: Some("metrics".into()),
                    port: Some(9100),
                    ..Default::default()
                },
                EndpointPort {
                    name: Some("http".into()),
                    port: Some(3000),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }
    }

    #[test]
    fn slices_become_backends() {
        let a = slice(vec![
            endpoint("10.0.0.1", Some(true), None),
            endpoint("10.0.0.2", Some(false), Some(true)),
        ]);
        let b = slice(vec![endpoint("10.0.0.3", None, None)]);
        let specs = specs_from_slices([&a, &b], Some("http"));
        let got: Vec<_> = specs
            .iter()
            .map(|s| (s.id.as_str(), s.ready, s.terminating))
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.1:3000", true, false),
                ("10.0.0.2:3000", false, true),
                ("10.0.0.3:3000", true, false),
            ]
        );
        let by_number = specs_from_slices([&a], Some("9100"));
        assert_eq!(by_number[0].id, "10.0.0.1:9100");
        assert_eq!(specs_from_slices([&a], None)[0].id, "10.0.0.1:9100");
        assert!(specs_from_slices([&a], Some("nope")).is_empty());
    }

    #[test]
    fn an_endpoints_pod_comes_from_its_target_ref() {
        use k8s_openapi::api::core::v1::ObjectReference;
        let target = |kind: &str, namespace: Option<&str>| ObjectReference {
            kind: Some(kind.into()),
            name: Some("todos-7d4b9c-x2k4q".into()),
            namespace: namespace.map(Into::into),
            ..Default::default()
        };
        let mut own = endpoint("10.0.0.1", Some(true), None);
        own.target_ref = Some(target("Pod", Some("shop")));
        let mut inherited = endpoint("10.0.0.2", Some(true), None);
        inherited.target_ref = Some(target("Pod", None));
        let mut not_a_pod = endpoint("10.0.0.3", Some(true), None);
        not_a_pod.target_ref = Some(target("Node", Some("shop")));
        let bare = endpoint("10.0.0.4", Some(true), None);
        let mut s = slice(vec![own, inherited, not_a_pod, bare]);
        s.metadata.namespace = Some("store".into());
        let pods: Vec<_> = specs_from_slices([&s], Some("http"))
            .into_iter()
            .map(|spec| spec.pod.map(|p| format!("{}/{}", p.namespace, p.name)))
            .collect();
        assert_eq!(
            pods,
            [
                Some("shop/todos-7d4b9c-x2k4q".into()),
                Some("store/todos-7d4b9c-x2k4q".into()),
                None,
                None
            ]
        );
    }

    /// A named slice of the Service `todos` at `resource_version`, its pods `todos-<n>` at
    /// `10.0.0.<n>` given as (n, ready, terminating), as the API server serializes it.
    fn slice_json(name: &str, resource_version: &str, pods: &[(u8, bool, bool)]) -> Value {
        let endpoints = pods
            .iter()
            .map(|&(n, ready, terminating)| {
                let mut e = endpoint(&format!("10.0.0.{n}"), Some(ready), Some(terminating));
                // As the EndpointSlice controller writes it (the namespace is the slice's).
                e.target_ref = Some(k8s_openapi::api::core::v1::ObjectReference {
                    kind: Some("Pod".into()),
                    name: Some(format!("todos-{n}")),
                    namespace: Some("shop".into()),
                    ..Default::default()
                });
                e
            })
            .collect();
        let mut s = slice(endpoints);
        s.metadata = ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            resource_version: Some(resource_version.into()),
            labels: Some([("kubernetes.io/service-name".into(), "todos".into())].into()),
            ..Default::default()
        };
        serde_json::to_value(s).unwrap()
    }

    /// A response body the test writes as it goes: a watch stays open until the sender drops.
    type Chunks = futures::channel::mpsc::UnboundedReceiver<Result<Frame<Bytes>, Infallible>>;
    type Server =
        tower_test::mock::Handle<Request<kube::client::Body>, Response<StreamBody<Chunks>>>;
    type Stream = futures::channel::mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>;

    /// Takes the next request, asserts it lists (`watch_from` None) or watches from that
    /// resourceVersion the slices of Service `todos` in namespace `shop`, and answers it with
    /// a stream.
    async fn answer(server: &mut Server, watch_from: Option<&str>) -> Stream {
        let (request, respond) = server.next_request().await.expect("a request");
        let uri = request.uri().clone();
        assert_eq!(request.method(), http::Method::GET, "{uri}");
        assert_eq!(
            uri.path(),
            "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices"
        );
        let query = uri.query().unwrap_or_default();
        let params: Vec<&str> = query.split('&').collect();
        assert!(
            params.contains(&"labelSelector=kubernetes.io%2Fservice-name%3Dtodos"),
            "{uri}"
        );
        match watch_from {
            None => assert!(!params.contains(&"watch=true"), "a list: {uri}"),
            Some(version) => assert!(
                params.contains(&"watch=true")
                    && params.contains(&format!("resourceVersion={version}").as_str()),
                "a watch from {version}: {uri}"
            ),
        }
        let (stream, chunks) = futures::channel::mpsc::unbounded();
        respond.send_response(Response::new(StreamBody::new(chunks)));
        stream
    }

    fn send(stream: &Stream, value: Value) {
        let mut line = serde_json::to_vec(&value).unwrap();
        line.push(b'\n');
        stream.unbounded_send(Ok(Frame::data(line.into()))).unwrap();
    }

    fn list(resource_version: &str, items: Vec<Value>) -> Value {
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
            "metadata": {"resourceVersion": resource_version}, "items": items,
        })
    }

    /// The next list handed to the balancer, as (id, ready, terminating).
    async fn next_backends(
        lists: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<BackendSpec>>,
    ) -> Vec<(String, bool, bool)> {
        let specs = lists.recv().await.expect("the watch is running");
        for s in &specs {
            let n = s
                .addr
                .ip()
                .to_string()
                .rsplit('.')
                .next()
                .unwrap()
                .to_owned();
            let name = format!("todos-{n}");
            assert_eq!(
                s.pod.as_ref().map(|p| (&*p.namespace, &*p.name)),
                Some(("shop", &*name))
            );
        }
        specs
            .into_iter()
            .map(|s| (s.id, s.ready, s.terminating))
            .collect()
    }

    fn pod(n: u8, ready: bool, terminating: bool) -> (String, bool, bool) {
        (format!("10.0.0.{n}:3000"), ready, terminating)
    }

    #[tokio::test(start_paused = true)]
    async fn the_endpointslice_watch_follows_changes_and_resumes_after_a_relist() {
        let (service, mut server) = tower_test::mock::pair();
        let client = kube::Client::new(service, "default");
        let (found, mut lists) = tokio::sync::mpsc::unbounded_channel();
        let watch = tokio::spawn(async move {
            watch_service_with(client, "shop/todos", Some("http"), move |specs| {
                let _ = found.send(specs);
            })
            .await
        });
        let scenario = async {
            let body = answer(&mut server, None).await;
            let two = slice_json("todos-a", "10", &[(1, true, false), (2, true, false)]);
            send(&body, list("10", vec![two]));
            drop(body);
            assert_eq!(
                next_backends(&mut lists).await,
                [pod(1, true, false), pod(2, true, false)]
            );

            let events = answer(&mut server, Some("10")).await;
            let three = [(1, true, false), (2, true, false), (3, true, false)];
            send(
                &events,
                json!({"type": "MODIFIED", "object": slice_json("todos-a", "11", &three)}),
            );
            assert_eq!(
                next_backends(&mut lists).await,
                [
                    pod(1, true, false),
                    pod(2, true, false),
                    pod(3, true, false)
                ]
            );
            let leaving = [(1, true, false), (2, false, true), (3, true, false)];
            send(
                &events,
                json!({"type": "MODIFIED", "object": slice_json("todos-a", "12", &leaving)}),
            );
            assert_eq!(
                next_backends(&mut lists).await,
                [
                    pod(1, true, false),
                    pod(2, false, true),
                    pod(3, true, false)
                ],
                "pod 2 is reported terminating (draining)"
            );
            let gone = [(1, true, false), (3, true, false)];
            send(
                &events,
                json!({"type": "MODIFIED", "object": slice_json("todos-a", "13", &gone)}),
            );
            assert_eq!(
                next_backends(&mut lists).await,
                [pod(1, true, false), pod(3, true, false)]
            );

            // The watch ends (the API server's timeout): it resumes from the last version seen.
            drop(events);
            let events = answer(&mut server, Some("13")).await;
            // That version is too old by now: 410 Gone, so the watcher lists again.
            send(
                &events,
                json!({"type": "ERROR", "object": {
                    "apiVersion": "v1", "kind": "Status", "status": "Failure",
                    "reason": "Expired", "message": "too old resource version", "code": 410,
                }}),
            );
            // What changed meanwhile: slice todos-a was replaced by todos-b, pod 3 left, pod 4
            // joined, and a slice todos-c holds pod 5. Nothing of the old state may survive.
            let body = answer(&mut server, None).await;
            send(
                &body,
                list(
                    "20",
                    vec![
                        slice_json("todos-b", "19", &[(1, true, false), (4, true, false)]),
                        slice_json("todos-c", "20", &[(5, true, false)]),
                    ],
                ),
            );
            drop(body);
            // No list in between: the old one is served until the new one is complete.
            let relisted = [
                pod(1, true, false),
                pod(4, true, false),
                pod(5, true, false),
            ];
            assert_eq!(next_backends(&mut lists).await, relisted);

            // And it watches again from the new list's version.
            let events = answer(&mut server, Some("20")).await;
            send(
                &events,
                json!({"type": "DELETED", "object": slice_json("todos-c", "21", &[(5, true, false)])}),
            );
            assert_eq!(next_backends(&mut lists).await, relisted[..2]);
            events
        };
        let _open = tokio::time::timeout(Duration::from_secs(60), scenario)
            .await
            .expect("the scenario finished within 60 s");
        assert!(lists.try_recv().is_err(), "no further lists");
        watch.abort();
    }

    #[test]
    fn lists_parse() {
        let specs = parse_list("# fleet\n127.0.0.1:3000\n\n[::1]:3001 # six\n").unwrap();
        let ids: Vec<_> = specs.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["127.0.0.1:3000", "[::1]:3001"]);
        assert!(parse_list("not an address").is_err());
    }
}
