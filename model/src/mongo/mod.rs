//! Managed MongoDB: a replica set per MeteorApp (`spec.mongo.managed`).
//!
//! Contracts, by submodule:
//! - [`replset`]: the replica-set state machine behind the [`replset::MongoAdmin`] trait. One
//!   call of [`replset::step`] observes, then makes at most one change, and says whether to come
//!   back. It keeps no memory between calls, so an interrupted operator resumes from what it sees.
//! - [`storage`]: whether a `storage.size` change can be applied to existing volumes.
//! - [`target`]: the replica set an app should have, from its spec and its users' credentials.
//!
//! The tier's objects, names and credentials are built in [`crate::build::mongo`]. The operator
//! holds the rest: [`replset::MongoAdmin`] on the official `mongodb` driver (its `mongo::driver`,
//! not in this crate, so the model never links the driver) and the tier's I/O in a reconcile
//! (`controller::mongo`).

pub mod replset;
pub mod storage;

use crate::api::MeteorApp;
use crate::build::mongo::secrets::{Credentials, UserCredentials};
use crate::build::mongo::{database, managed, member_host, replica_set_name};

/// The replica set `app` should have, for [`replset::step`].
pub fn target(app: &MeteorApp, users: &UserCredentials) -> Option<replset::Target> {
    let spec = managed(app)?;
    let user = |c: &Credentials, role: &str, db: String| replset::UserSpec {
        name: c.username.clone(),
        password: c.password.clone(),
        roles: vec![(role.to_string(), db)],
    };
    Some(replset::Target {
        set_name: replica_set_name(app),
        members: spec.members.clamp(1, replset::MAX_MEMBERS as i32) as usize,
        hosts: (0..replset::MAX_MEMBERS)
            .map(|i| member_host(app, i))
            .collect(),
        root: user(&users.root, "root", "admin".into()),
        users: vec![
            user(&users.app, "readWrite", database(app)),
            user(&users.oplog, "read", "local".into()),
        ],
    })
}
