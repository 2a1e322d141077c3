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
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use super::balancer::BackendSpec;

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
            for ip in &endpoint.addresses {
                let Ok(ip) = ip.parse() else { continue };
                let addr = SocketAddr::new(ip, number);
                specs.push(BackendSpec {
                    id: addr.to_string(),
                    addr,
                    ready,
                    terminating,
                });
            }
        }
    }
    specs.sort_by(|a, b| a.id.cmp(&b.id));
    specs.dedup_by(|a, b| a.id == b.id);
    specs
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
            Ok(None) => return Ok(()),
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
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

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
    fn lists_parse() {
        let specs = parse_list("# fleet\n127.0.0.1:3000\n\n[::1]:3001 # six\n").unwrap();
        let ids: Vec<_> = specs.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["127.0.0.1:3000", "[::1]:3001"]);
        assert!(parse_list("not an address").is_err());
    }
}
