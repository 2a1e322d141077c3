//! `kubectl meteor`: what an on-call engineer asks of a MeteorApp (status, sessions) and the few
//! things they do to one (restart, rollback, park, unpark). It writes nothing but a merge patch of
//! the MeteorApp's own fields, and never touches an object the operator owns: the operator would
//! put it back.
//!
//! `cli` is the command line, `cluster` the only holder of a client (every request bounded in
//! time), `report` and `sessions` gather what `render` prints, and `actions` decides each patch
//! from the MeteorApp alone (pure: no client, no clock).

pub mod actions;
pub mod cli;
pub mod cluster;
pub mod render;
pub mod report;
pub mod run;
pub mod sessions;

/// Field manager of every patch the plugin sends (shown in the MeteorApp's `managedFields`).
pub const FIELD_MANAGER: &str = "kubectl-meteor";
