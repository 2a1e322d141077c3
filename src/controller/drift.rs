//! Drift detection without caching a child's spec: who owns which fields, read from
//! `metadata.managedFields` when a child enters the cache, condensed into two cache-only
//! annotations. Never sent to the API.
//!
//! Server-side apply records the fields each manager set. When someone else changes a field the
//! operator applied (`kubectl scale`, `kubectl edit`, `rollout undo`), the API moves that field
//! to their entry, so the fields the operator owns change. Comparing a hash of the operator's
//! entry with the one seen right after its last write ("baseline") finds every such edit, and a
//! steady state compares two strings and sends nothing.
//!
//! After an operator restart there is no baseline yet: a child is then taken as drifted when
//! another manager owns something under `spec` (outside the status subresource), and re-applied
//! once; its fields are then the baseline.

use crate::build::meta::FIELD_MANAGER;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::HashMap;
use std::sync::Mutex;

/// Cache-only annotation: hash of the fields the operator's apply entry owns (absent: none).
pub const OWNED_FIELDS: &str = "cache.meteorfleet.dev/owned-fields";
/// Cache-only annotation, present when another manager owns fields under `spec`.
pub const FOREIGN_SPEC: &str = "cache.meteorfleet.dev/foreign-spec";

/// Hash of the operator's apply entry in `managedFields`, if it has one.
pub fn owned_fields(meta: &ObjectMeta) -> Option<String> {
    let entries: Vec<_> = meta
        .managed_fields
        .iter()
        .flatten()
        .filter(|e| {
            e.manager.as_deref() == Some(FIELD_MANAGER)
                && e.operation.as_deref() == Some("Apply")
                && e.subresource.as_deref().unwrap_or("").is_empty()
        })
        .map(|e| e.fields_v1.as_ref().map(|f| &f.0))
        .collect();
    (!entries.is_empty()).then(|| crate::build::meta::content_hash(&entries))
}

/// Whether a manager other than the operator owns fields under `spec` (the status subresource
/// aside: controllers write status there).
pub fn foreign_spec(meta: &ObjectMeta) -> bool {
    meta.managed_fields.iter().flatten().any(|e| {
        e.manager.as_deref() != Some(FIELD_MANAGER)
            && e.subresource.as_deref() != Some("status")
            && e.fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:spec"))
                .is_some()
    })
}

/// Replaces `managedFields` (often most of an object's bytes) by the two annotations above.
pub fn condense(meta: &mut ObjectMeta) {
    let owned = owned_fields(meta);
    let foreign = foreign_spec(meta);
    meta.managed_fields = None;
    let annotations = meta.annotations.get_or_insert_with(Default::default);
    match owned {
        Some(hash) => annotations.insert(OWNED_FIELDS.into(), hash),
        None => annotations.remove(OWNED_FIELDS),
    };
    if foreign {
        annotations.insert(FOREIGN_SPEC.into(), String::new());
    } else {
        annotations.remove(FOREIGN_SPEC);
    }
}

/// The owned-fields hash of an object as the API returned it (full managedFields) or as the
/// cache holds it (condensed).
fn owned_of(meta: &ObjectMeta) -> Option<String> {
    match meta.managed_fields {
        Some(_) => owned_fields(meta),
        None => meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(OWNED_FIELDS).cloned()),
    }
}

fn foreign_of(meta: &ObjectMeta) -> bool {
    match meta.managed_fields {
        Some(_) => foreign_spec(meta),
        None => meta
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(FOREIGN_SPEC)),
    }
}

/// The owned-fields hash of each child right after the operator's last write, by uid.
#[derive(Default)]
pub struct Baselines {
    by_uid: Mutex<HashMap<String, Option<String>>>,
}

impl Baselines {
    /// Whether `observed` was changed by someone else since the operator last wrote it. A child
    /// found unchanged becomes its own baseline.
    pub fn drifted(&self, observed: &ObjectMeta) -> bool {
        let Some(uid) = observed.uid.clone() else {
            return false;
        };
        let owned = owned_of(observed);
        let mut by_uid = self.by_uid.lock().expect("lock is never poisoned");
        match by_uid.get(&uid) {
            Some(baseline) => *baseline != owned,
            None if foreign_of(observed) => true,
            None => {
                by_uid.insert(uid, owned);
                false
            }
        }
    }

    /// Records what the API answered to a write.
    pub fn written(&self, answer: &ObjectMeta) {
        if let Some(uid) = answer.uid.clone() {
            self.by_uid
                .lock()
                .expect("lock is never poisoned")
                .insert(uid, owned_of(answer));
        }
    }

    /// Forgets a deleted child.
    pub fn forget(&self, uid: &str) {
        self.by_uid
            .lock()
            .expect("lock is never poisoned")
            .remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};

    fn entry(
        manager: &str,
        operation: &str,
        sub: Option<&str>,
        fields: serde_json::Value,
    ) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            subresource: sub.map(Into::into),
            fields_v1: Some(FieldsV1(fields)),
            ..ManagedFieldsEntry::default()
        }
    }

    fn ours(replicas: bool) -> ManagedFieldsEntry {
        let mut spec = serde_json::json!({"f:template": {}});
        if replicas {
            spec["f:replicas"] = serde_json::json!({});
        }
        entry(
            FIELD_MANAGER,
            "Apply",
            None,
            serde_json::json!({"f:spec": spec}),
        )
    }

    fn meta(entries: Vec<ManagedFieldsEntry>) -> ObjectMeta {
        ObjectMeta {
            uid: Some("u1".into()),
            managed_fields: Some(entries),
            ..ObjectMeta::default()
        }
    }

    fn condensed(entries: Vec<ManagedFieldsEntry>) -> ObjectMeta {
        let mut m = meta(entries);
        condense(&mut m);
        m
    }

    #[test]
    fn status_writers_and_metadata_writers_are_not_drift() {
        let status = entry(
            "kube-controller-manager",
            "Update",
            Some("status"),
            serde_json::json!({"f:status": {}}),
        );
        let revision = entry(
            "kube-controller-manager",
            "Update",
            None,
            serde_json::json!({"f:metadata": {"f:annotations": {}}}),
        );
        let m = condensed(vec![ours(true), status, revision]);
        assert!(m.managed_fields.is_none());
        let baselines = Baselines::default();
        assert!(!baselines.drifted(&m), "fresh start, nobody else owns spec");
        assert!(!baselines.drifted(&m), "unchanged");
    }

    #[test]
    fn a_scale_by_someone_else_is_drift_after_a_restart_too() {
        // `kubectl scale`: replicas moved from our entry to kubectl's scale entry.
        let scaled = condensed(vec![
            ours(false),
            entry(
                "kubectl",
                "Update",
                Some("scale"),
                serde_json::json!({"f:spec": {"f:replicas": {}}}),
            ),
        ]);
        // Known baseline: our fields changed.
        let baselines = Baselines::default();
        baselines.written(&meta(vec![ours(true)]));
        assert!(baselines.drifted(&scaled));
        // No baseline (operator restarted): another manager owns spec.
        assert!(Baselines::default().drifted(&scaled));
    }

    #[test]
    fn a_foreign_field_we_do_not_set_costs_one_write_per_restart_then_nothing() {
        let extra = entry(
            "kubectl-patch",
            "Update",
            None,
            serde_json::json!({"f:spec": {"f:paused": {}}}),
        );
        let observed = condensed(vec![ours(true), extra.clone()]);
        let baselines = Baselines::default();
        assert!(
            baselines.drifted(&observed),
            "unknown after a restart: apply once"
        );
        // The re-apply's answer keeps their field and ours: that is the new baseline.
        baselines.written(&meta(vec![ours(true), extra]));
        assert!(!baselines.drifted(&observed));
    }

    #[test]
    fn wiped_managed_fields_are_drift_once_a_baseline_exists() {
        let baselines = Baselines::default();
        baselines.written(&meta(vec![ours(true)]));
        assert!(baselines.drifted(&condensed(vec![])));
        baselines.forget("u1");
        assert!(
            !baselines.drifted(&condensed(vec![])),
            "forgotten: no baseline, no foreign owner"
        );
    }
}
