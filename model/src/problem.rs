//! Why a MeteorApp cannot be reconciled as written. Each problem maps to a condition reason and
//! a Warning event; while one stands, running children are left exactly as they are.

/// A problem the user has to fix; retrying does not help until something changes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The spec breaks a rule of the API (the CRD's CEL rules, evaluated client-side too).
    #[error("{0}")]
    InvalidSpec(String),
    /// A referenced Secret or ConfigMap, or a key in it, does not exist.
    #[error("{0}")]
    ReferenceNotFound(String),
    /// The settings JSON does not parse.
    #[error("{0}")]
    InvalidSettings(String),
    /// An object the operator would create exists already and belongs to someone else.
    #[error("{0}")]
    NameConflict(String),
}

impl Problem {
    /// The condition reason (CamelCase) and event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Problem::InvalidSpec(_) => "InvalidSpec",
            Problem::ReferenceNotFound(_) => "ReferenceNotFound",
            Problem::InvalidSettings(_) => "InvalidSettings",
            Problem::NameConflict(_) => "NameConflict",
        }
    }
}
