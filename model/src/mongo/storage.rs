//! Storage safety: whether a `storage.size` change can reach existing volumes.
//!
//! A StatefulSet's claim template cannot change, so the size in it stays what the set was
//! created with ([`pin_claim_templates`]); growth is applied to each PVC instead, and only where
//! the StorageClass has `allowVolumeExpansion`. Otherwise the change is refused with a condition
//! and nothing is touched. Shrinking is rejected by the CRD already and refused here as well.

use k8s_openapi::api::apps::v1::StatefulSet;

/// What to do about the volume size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageDecision {
    /// Every PVC already requests the desired size (or there are none yet).
    Unchanged,
    /// Patch `spec.resources.requests.storage` of these PVCs to `size`.
    Expand {
        /// PVC names to patch.
        pvcs: Vec<String>,
        /// The new request.
        size: String,
    },
    /// Do nothing and say why.
    Refused {
        /// Human-readable reason for the condition.
        message: String,
    },
}

/// What the operator saw of the volumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageFacts {
    /// `spec.mongo.managed.storage.size`.
    pub desired: String,
    /// Each existing PVC of the set with its current storage request.
    pub pvcs: Vec<(String, String)>,
    /// Name of the StorageClass of the PVCs (`None`: the cluster default, unresolved).
    pub storage_class: Option<String>,
    /// `allowVolumeExpansion` of that StorageClass; `None` when it could not be read.
    pub allow_expansion: Option<bool>,
}

/// Decides, without side effects, how to bring existing volumes to the desired size.
pub fn decide(facts: &StorageFacts) -> StorageDecision {
    let Some(want) = crate::build::quantity::bytes(&facts.desired) else {
        return StorageDecision::Refused {
            message: format!("storage.size {:?} is not a quantity", facts.desired),
        };
    };
    let mut grow = Vec::new();
    for (pvc, current) in &facts.pvcs {
        match crate::build::quantity::bytes(current) {
            Some(have) if have == want => {}
            Some(have) if have > want => {
                return StorageDecision::Refused {
                    message: format!(
                        "storage.size {} is smaller than PVC {pvc} ({current}); volumes never shrink",
                        facts.desired
                    ),
                };
            }
            Some(_) => grow.push(pvc.clone()),
            None => {
                return StorageDecision::Refused {
                    message: format!("PVC {pvc} requests an unreadable size {current:?}"),
                };
            }
        }
    }
    if grow.is_empty() {
        return StorageDecision::Unchanged;
    }
    let class = facts
        .storage_class
        .as_deref()
        .unwrap_or("the default StorageClass");
    match facts.allow_expansion {
        Some(true) => StorageDecision::Expand {
            pvcs: grow,
            size: facts.desired.clone(),
        },
        Some(false) => StorageDecision::Refused {
            message: format!(
                "storage.size change to {} refused: {class} does not allow volume expansion; \
                 volumes stay as they are",
                facts.desired
            ),
        },
        None => StorageDecision::Refused {
            message: format!(
                "storage.size change to {} refused: could not read {class} to check it allows \
                 volume expansion",
                facts.desired
            ),
        },
    }
}

/// Keeps the claim templates of the existing StatefulSet in the desired one (they are
/// immutable; an apply that changes them would fail the whole reconcile).
pub fn pin_claim_templates(desired: &mut StatefulSet, existing: Option<&StatefulSet>) {
    let existing = existing
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.volume_claim_templates.clone());
    if let (Some(spec), Some(templates)) = (desired.spec.as_mut(), existing) {
        spec.volume_claim_templates = Some(templates);
    }
}
