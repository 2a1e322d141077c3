//! The operator's pods as its cache holds them: only what crash-loop detection and deletion costs
//! read. Deserialized straight into this compact type (unknown fields skipped), a pod costs a few
//! hundred bytes in memory instead of the kilobytes of a whole `k8s-openapi` Pod, whose spec the
//! operator never reads. Never written through the API: deletion costs are merge patches.

use super::cached::{Entries, entries, entry, identity};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A pod of one of the operator's tiers.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CachedPod {
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CachedPodStatus>,
    /// The labels it is selected by, moved out of `metadata` by [`CachedPod::keep`] (a label
    /// map costs a 540-byte B-tree node).
    #[serde(skip)]
    labels: Entries,
    /// Its `controller.kubernetes.io/pod-deletion-cost`, likewise.
    #[serde(skip)]
    deletion_cost: Option<Box<str>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedPodStatus {
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_statuses: Vec<CachedContainerStatus>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedContainerStatus {
    #[serde(default)]
    pub restart_count: i32,
}

impl CachedPod {
    /// Cuts a pod as the API sent it to what the cache keeps: identity, its controller, the
    /// labels that place it in a tier and template (`app.kubernetes.io/name`, `/instance`,
    /// `/component`, the template hash; not our `managed-by`, which the watch selects on), its
    /// deletion cost. (Its status was already cut to the IP and restart counts on the way in.)
    pub fn keep(&mut self) {
        let mut meta = std::mem::take(&mut self.metadata);
        self.labels = entries(meta.labels.take().map(|labels| {
            labels
                .into_iter()
                .filter(|(key, _)| {
                    matches!(
                        key.as_str(),
                        "app.kubernetes.io/name"
                            | "app.kubernetes.io/instance"
                            | "app.kubernetes.io/component"
                            | crate::build::meta::TEMPLATE_HASH_LABEL
                    )
                })
                .collect()
        }));
        self.deletion_cost = meta
            .annotations
            .take()
            .and_then(|mut annotations| annotations.remove(crate::plan::POD_DELETION_COST))
            .map(String::into_boxed_str);
        self.metadata = identity(meta);
    }

    /// Whether it carries every label of `selector` (of those [`CachedPod::keep`] kept).
    pub fn has_labels(&self, selector: &BTreeMap<String, String>) -> bool {
        crate::build::meta::selects(selector, |key| entry(&self.labels, key))
    }

    /// Its pod deletion cost, if set.
    pub fn deletion_cost(&self) -> Option<&str> {
        self.deletion_cost.as_deref()
    }

    /// The most restarts of any of its containers.
    pub fn restarts(&self) -> Option<i32> {
        self.status
            .as_ref()?
            .container_statuses
            .iter()
            .map(|c| c.restart_count)
            .max()
    }

    pub fn ip(&self) -> Option<IpAddr> {
        self.status.as_ref()?.pod_ip.as_ref()?.parse().ok()
    }

    /// The name and uid of the ReplicaSet that controls it, as its owner reference says: a
    /// ReplicaSet is then read by name, never found by listing the namespace's.
    pub fn replica_set(&self) -> Option<(&str, &str)> {
        let owner = self
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true) && r.kind == "ReplicaSet")?;
        Some((owner.name.as_str(), owner.uid.as_str()))
    }
}

impl Resource for CachedPod {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod as the API sends it: everything but identity, labels, annotations, owners, the IP
    /// and the restart counts is skipped on the way in.
    #[test]
    fn a_whole_pod_reads_into_the_compact_one() {
        let pod: CachedPod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "todos-1", "namespace": "shop", "labels": { "a": "b" } },
            "spec": { "containers": [{ "name": "meteor", "image": "todos:1" }] },
            "status": { "phase": "Running", "podIP": "10.244.0.7",
                "containerStatuses": [
                    { "name": "meteor", "restartCount": 2, "image": "x", "imageID": "", "ready": true },
                    { "name": "log-shipper", "restartCount": 5, "image": "y", "imageID": "", "ready": true }] },
        }))
        .unwrap();
        assert_eq!(pod.restarts(), Some(5));
        assert_eq!(pod.ip(), Some("10.244.0.7".parse().unwrap()));
        assert_eq!(pod.metadata.labels.as_ref().unwrap()["a"], "b");
        assert_eq!(
            CachedPod::url_path(&(), Some("shop")),
            "/api/v1/namespaces/shop/pods"
        );
    }

    /// What the cache keeps of a pod's metadata: its selecting labels and deletion cost, out
    /// of the maps; the rest of its labels and annotations go.
    #[test]
    fn a_kept_pod_is_selected_by_its_tier_labels_only() {
        let mut pod: CachedPod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "todos-1", "namespace": "shop",
                "labels": { "app.kubernetes.io/instance": "todos",
                    "app.kubernetes.io/component": "app", "team": "blue" },
                "annotations": { "controller.kubernetes.io/pod-deletion-cost": "7",
                    "note": "x" } },
        }))
        .unwrap();
        pod.keep();
        assert!(pod.metadata.labels.is_none() && pod.metadata.annotations.is_none());
        assert_eq!(pod.deletion_cost(), Some("7"));
        let selector = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(pod.has_labels(&selector(&[
            ("app.kubernetes.io/instance", "todos"),
            ("app.kubernetes.io/component", "app"),
        ])));
        assert!(!pod.has_labels(&selector(&[("app.kubernetes.io/component", "proxy")])));
        assert!(!pod.has_labels(&selector(&[("team", "blue")])), "not kept");
        assert_eq!(pod.metadata.name.as_deref(), Some("todos-1"));
    }
}
