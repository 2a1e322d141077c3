//! [`MongoAdmin`] on the official `mongodb` driver.
//!
//! Every call opens a direct connection (`directConnection=true`) to one member by its stable
//! DNS name, runs one admin command and drops the client. That is a handful of short connections
//! per reconcile, and it keeps no state that could go stale across member restarts.
//!
//! Identities: [`Identity::Root`] is the `root` user of the root Secret (SCRAM, `admin`).
//! [`Identity::Keyfile`] is the internal `__system@local` user whose password is the keyfile
//! (whitespace removed), exactly how members authenticate to each other. It is the only way a
//! client outside the pod can act on a fresh auth-enabled mongod (the localhost exception only
//! applies to connections from inside the pod), and the state machine uses it only until `root`
//! exists.
//!
//! Not exercised in this repository's tests: no mongod runs here. `e2e/mongo/` drives it on a
//! real cluster.

use super::replset::{
    AdminError, Hello, Identity, MemberConfig, MemberState, MemberStatus, MongoAdmin, ReplConfig,
    ReplStatus, UserSpec,
};
use crate::build::mongo::secrets::Credentials;
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::ErrorKind;
use mongodb::options::{ClientOptions, Credential, ServerAddress};
use mongodb::{Client, error::Error as DriverError};
use std::collections::BTreeSet;
use std::time::Duration;

/// MongoDB error codes the state machine tells apart.
mod code {
    pub const AUTHENTICATION_FAILED: i32 = 18;
    pub const ALREADY_INITIALIZED: i32 = 23;
    pub const NOT_YET_INITIALIZED: i32 = 94;
    pub const DUPLICATE_KEY: i32 = 11000;
    pub const USER_ALREADY_EXISTS: i32 = 51003;
}

/// The real admin client.
#[derive(Clone)]
pub struct DriverAdmin {
    root: Credentials,
    keyfile: String,
    timeout: Duration,
}

impl std::fmt::Debug for DriverAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverAdmin")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl DriverAdmin {
    /// An admin client using `root` and the keyfile contents (as read by
    /// [`super::secrets::read_keyfile`]).
    pub fn new(root: Credentials, keyfile: String) -> Self {
        Self {
            root,
            keyfile,
            timeout: Duration::from_secs(5),
        }
    }

    fn client(&self, host: &str, who: Option<Identity>) -> Result<Client, AdminError> {
        let address = ServerAddress::parse(host).map_err(|e| unreachable(host, &e))?;
        let credential = who.map(|who| match who {
            Identity::Root => Credential::builder()
                .username(self.root.username.clone())
                .password(self.root.password.clone())
                .source("admin".to_string())
                .build(),
            Identity::Keyfile => Credential::builder()
                .username("__system".to_string())
                .password(self.keyfile.clone())
                .source("local".to_string())
                .build(),
        });
        let options = ClientOptions::builder()
            .hosts(vec![address])
            .direct_connection(true)
            .connect_timeout(self.timeout)
            .server_selection_timeout(self.timeout)
            .app_name("meteor-operator".to_string())
            .credential(credential)
            .build();
        Client::with_options(options).map_err(|e| unreachable(host, &e))
    }

    async fn run(
        &self,
        host: &str,
        who: Option<Identity>,
        db: &str,
        command: Document,
    ) -> Result<Document, AdminError> {
        let name = command.keys().next().cloned().unwrap_or_default();
        let client = self.client(host, who)?;
        // The driver bounds only connecting and server selection: a member that stops
        // answering mid-command would hold the reconcile for minutes (TCP retransmits).
        let limit = match name.as_str() {
            // May wait its 10 s catch-up period, then for the election.
            "replSetStepDown" => Duration::from_secs(40),
            // Bounded server-side too (maxTimeMS / wtimeout in the commands).
            "replSetReconfig" | "createUser" => Duration::from_secs(30),
            _ => self.timeout * 2,
        };
        match tokio::time::timeout(limit, client.database(db).run_command(command)).await {
            Ok(result) => result.map_err(|e| classify(host, who, &name, &e)),
            Err(_) => Err(AdminError::Unreachable {
                host: host.into(),
                message: format!("{name}: no answer within {limit:?}"),
            }),
        }
    }
}

fn unreachable(host: &str, e: &dyn std::fmt::Display) -> AdminError {
    AdminError::Unreachable {
        host: host.into(),
        message: e.to_string(),
    }
}

fn classify(host: &str, who: Option<Identity>, command: &str, e: &DriverError) -> AdminError {
    let auth_failed = |identity| AdminError::AuthFailed {
        host: host.into(),
        identity,
    };
    match (&*e.kind, who) {
        (ErrorKind::Authentication { .. }, Some(identity)) => auth_failed(identity),
        (ErrorKind::Command(c), Some(identity)) if c.code == code::AUTHENTICATION_FAILED => {
            auth_failed(identity)
        }
        (ErrorKind::Command(c), _) => AdminError::Command {
            host: host.into(),
            command: command.into(),
            code: c.code,
            message: c.message.clone(),
        },
        _ => unreachable(host, e),
    }
}

fn number(doc: &Document, key: &str) -> Option<f64> {
    match doc.get(key)? {
        Bson::Int32(v) => Some(f64::from(*v)),
        Bson::Int64(v) => Some(*v as f64),
        Bson::Double(v) => Some(*v),
        _ => None,
    }
}

fn parse_config(config: &Document) -> Option<ReplConfig> {
    let members = config
        .get_array("members")
        .ok()?
        .iter()
        .filter_map(|m| {
            let m = m.as_document()?;
            Some(MemberConfig {
                id: number(m, "_id")? as usize,
                host: m.get_str("host").ok()?.to_string(),
                votes: number(m, "votes").unwrap_or(1.0) as i32,
                priority: number(m, "priority").unwrap_or(1.0),
            })
        })
        .collect();
    Some(ReplConfig {
        set_name: config.get_str("_id").ok()?.to_string(),
        version: number(config, "version")? as i64,
        members,
    })
}

fn member_doc(m: &MemberConfig) -> Document {
    doc! {
        "_id": m.id as i32,
        "host": m.host.clone(),
        "votes": m.votes,
        "priority": m.priority,
    }
}

fn state(code: i32) -> MemberState {
    match code {
        1 => MemberState::Primary,
        2 => MemberState::Secondary,
        0 | 3 | 5 => MemberState::Syncing,
        6 | 8 => MemberState::Down,
        _ => MemberState::Other,
    }
}

fn parse_hello(h: &Document) -> Hello {
    Hello {
        set_name: h.get_str("setName").ok().map(Into::into),
        is_writable_primary: h.get_bool("isWritablePrimary").unwrap_or(false),
        secondary: h.get_bool("secondary").unwrap_or(false),
        primary: h.get_str("primary").ok().map(Into::into),
    }
}

fn parse_status(reply: &Document) -> ReplStatus {
    let members = reply
        .get_array("members")
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|m| {
            let m = m.as_document()?;
            Some(MemberStatus {
                id: number(m, "_id")? as usize,
                host: m.get_str("name").ok()?.to_string(),
                state: state(number(m, "state")? as i32),
                optime_seconds: m
                    .get_datetime("optimeDate")
                    .ok()
                    .map(|d| d.timestamp_millis() / 1000),
            })
        })
        .collect();
    ReplStatus { members }
}

/// Seconds from the `ts` of the oplog entry in `oldest` to that in `newest` (two `find`
/// replies); `None` when either batch is empty or has no timestamp.
fn oplog_window(oldest: &Document, newest: &Document) -> Option<i64> {
    let seconds = |reply: &Document| {
        let batch = reply
            .get_document("cursor")
            .ok()?
            .get_array("firstBatch")
            .ok()?;
        match batch.first()?.as_document()?.get("ts")? {
            Bson::Timestamp(ts) => Some(i64::from(ts.time)),
            _ => None,
        }
    };
    Some(seconds(newest)? - seconds(oldest)?)
}

/// The live config document `raw` with the operator's members, version `config.version`, and
/// everything else (settings, tags, hidden, ...) as it was. `Err(live version)` when the live
/// config is not the one `config` was planned from.
fn merged_config(mut raw: Document, config: &ReplConfig) -> Result<Document, i64> {
    let live = number(&raw, "version").unwrap_or(0.0) as i64;
    if live + 1 != config.version {
        return Err(live);
    }
    let old: Vec<Document> = raw
        .get_array("members")
        .map(|a| a.iter().filter_map(|m| m.as_document().cloned()).collect())
        .unwrap_or_default();
    let members: Vec<Document> = config
        .members
        .iter()
        .map(|m| {
            let mut d = old
                .iter()
                .find(|d| number(d, "_id") == Some(m.id as f64))
                .cloned()
                .unwrap_or_default();
            d.extend(member_doc(m));
            if m.votes > 0 {
                // mongod refuses priority > 0 on a hidden or delayed member (a hand edit).
                d.insert("hidden", false);
                d.insert("secondaryDelaySecs", 0_i64);
            }
            d
        })
        .collect();
    raw.insert("members", members);
    raw.insert("version", config.version);
    // The server sets the term itself.
    raw.remove("term");
    Ok(raw)
}

impl MongoAdmin for DriverAdmin {
    async fn hello(&self, host: &str) -> Result<Hello, AdminError> {
        let reply = self.run(host, None, "admin", doc! { "hello": 1 }).await?;
        Ok(parse_hello(&reply))
    }

    async fn authenticate(&self, host: &str, who: Identity) -> Result<(), AdminError> {
        // The handshake authenticates; connectionStatus then needs no privilege.
        self.run(host, Some(who), "admin", doc! { "connectionStatus": 1 })
            .await
            .map(drop)
    }

    async fn get_config(
        &self,
        host: &str,
        who: Identity,
    ) -> Result<Option<ReplConfig>, AdminError> {
        match self
            .run(host, Some(who), "admin", doc! { "replSetGetConfig": 1 })
            .await
        {
            Ok(reply) => {
                let config = reply.get_document("config").ok().and_then(parse_config);
                config.map(Some).ok_or_else(|| AdminError::Command {
                    host: host.into(),
                    command: "replSetGetConfig".into(),
                    code: 0,
                    message: "unreadable config document".into(),
                })
            }
            Err(AdminError::Command { code, .. }) if code == code::NOT_YET_INITIALIZED => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn status(&self, host: &str, who: Identity) -> Result<ReplStatus, AdminError> {
        let reply = self
            .run(host, Some(who), "admin", doc! { "replSetGetStatus": 1 })
            .await?;
        Ok(parse_status(&reply))
    }

    async fn oplog_window(&self, host: &str, who: Identity) -> Result<Option<i64>, AdminError> {
        // The oldest and the newest entry, in natural (insertion) order: what
        // `rs.printReplicationInfo()` reports as the log length.
        let end = |direction: i32| {
            doc! {
                "find": "oplog.rs",
                "sort": { "$natural": direction },
                "projection": { "ts": 1, "_id": 0 },
                "limit": 1,
                "singleBatch": true,
                "maxTimeMS": 5000,
            }
        };
        let oldest = self.run(host, Some(who), "local", end(1)).await?;
        let newest = self.run(host, Some(who), "local", end(-1)).await?;
        Ok(oplog_window(&oldest, &newest))
    }

    async fn initiate(
        &self,
        host: &str,
        who: Identity,
        config: &ReplConfig,
    ) -> Result<(), AdminError> {
        let members: Vec<Document> = config.members.iter().map(member_doc).collect();
        let command = doc! {
            "replSetInitiate": {
                "_id": config.set_name.clone(),
                "version": config.version,
                "members": members,
            }
        };
        match self.run(host, Some(who), "admin", command).await {
            // An earlier attempt went through before the connection dropped.
            Err(AdminError::Command { code, .. }) if code == code::ALREADY_INITIALIZED => Ok(()),
            other => other.map(drop),
        }
    }

    async fn reconfig(
        &self,
        host: &str,
        who: Identity,
        config: &ReplConfig,
    ) -> Result<(), AdminError> {
        // Start from the live document so settings and member fields the operator does not
        // manage (tags, hidden, ...) survive, and refuse if it moved since it was observed.
        let reply = self
            .run(host, Some(who), "admin", doc! { "replSetGetConfig": 1 })
            .await?;
        let raw = reply.get_document("config").cloned().unwrap_or_default();
        let raw = merged_config(raw, config).map_err(|live| AdminError::Command {
            host: host.into(),
            command: "replSetReconfig".into(),
            code: 0,
            message: format!(
                "config version moved to {live} since observed ({}); retrying from fresh facts",
                config.version - 1
            ),
        })?;
        // maxTimeMS: the server gives up waiting for a majority to install the config rather
        // than waiting forever; a timed-out reconfig that still lands is seen by the next step.
        self.run(
            host,
            Some(who),
            "admin",
            doc! { "replSetReconfig": raw, "maxTimeMS": 20_000 },
        )
        .await
        .map(drop)
    }

    async fn step_down(&self, host: &str, who: Identity) -> Result<(), AdminError> {
        self.run(
            host,
            Some(who),
            "admin",
            doc! { "replSetStepDown": 60, "secondaryCatchUpPeriodSecs": 10 },
        )
        .await
        .map(drop)
    }

    async fn existing_users(
        &self,
        host: &str,
        who: Identity,
        names: &[String],
    ) -> Result<BTreeSet<String>, AdminError> {
        let users: Vec<Document> = names
            .iter()
            .map(|n| doc! { "user": n.clone(), "db": "admin" })
            .collect();
        let reply = self
            .run(host, Some(who), "admin", doc! { "usersInfo": users })
            .await?;
        Ok(reply
            .get_array("users")
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|u| u.as_document()?.get_str("user").ok().map(Into::into))
            .collect())
    }

    async fn create_user(
        &self,
        host: &str,
        who: Identity,
        user: &UserSpec,
    ) -> Result<(), AdminError> {
        let roles: Vec<Document> = user
            .roles
            .iter()
            .map(|(role, db)| doc! { "role": role.clone(), "db": db.clone() })
            .collect();
        let command = doc! {
            "createUser": user.name.clone(),
            "pwd": user.password.clone(),
            "roles": roles,
            "writeConcern": { "w": "majority", "wtimeout": 10_000 },
        };
        match self.run(host, Some(who), "admin", command).await {
            Err(AdminError::Command { code, .. })
                if code == code::USER_ALREADY_EXISTS || code == code::DUPLICATE_KEY =>
            {
                Err(AdminError::UserExists(user.name.clone()))
            }
            other => other.map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The document handling of the driver path, on documents shaped like mongod's replies.
    use super::*;
    use mongodb::bson::DateTime;

    fn find_reply(batch: Vec<Document>) -> Document {
        doc! { "cursor": { "firstBatch": batch, "id": 0_i64, "ns": "local.oplog.rs" }, "ok": 1.0 }
    }

    fn entry(time: u32) -> Document {
        doc! { "ts": Bson::Timestamp(mongodb::bson::Timestamp { time, increment: 3 }) }
    }

    #[test]
    fn the_oplog_window_spans_the_oldest_to_the_newest_entry() {
        let oldest = find_reply(vec![entry(1_700_000_000)]);
        let newest = find_reply(vec![entry(1_700_090_000)]);
        assert_eq!(oplog_window(&oldest, &newest), Some(90_000));
        // An empty oplog, or an entry without a timestamp, gives no figure.
        assert_eq!(oplog_window(&find_reply(vec![]), &newest), None);
        assert_eq!(
            oplog_window(&oldest, &find_reply(vec![doc! { "ts": 5 }])),
            None
        );
    }

    fn live_config() -> Document {
        doc! {
            "_id": "shop",
            "version": 4,
            "term": 7_i64,
            "protocolVersion": 1_i64,
            "members": [
                { "_id": 0, "host": "shop-mongo-0.x:27017", "votes": 1, "priority": 1.0,
                  "tags": { "zone": "a" }, "hidden": false },
                { "_id": 1, "host": "shop-mongo-1.x:27017", "votes": 0, "priority": 0.0 },
            ],
            "settings": { "electionTimeoutMillis": 10000, "replicaSetId": "abc" },
        }
    }

    #[test]
    fn reads_the_config_mongod_returns() {
        let c = parse_config(&live_config()).unwrap();
        assert_eq!(c.set_name, "shop");
        assert_eq!(c.version, 4);
        assert_eq!(c.members.len(), 2);
        assert_eq!(
            (c.members[1].id, c.members[1].votes, c.members[1].priority),
            (1, 0, 0.0)
        );
    }

    #[test]
    fn reconfig_keeps_unmanaged_fields_and_drops_the_term() {
        let mut next = parse_config(&live_config()).unwrap();
        next.version = 5;
        next.members[1].votes = 1;
        next.members[1].priority = 1.0;
        next.members.push(MemberConfig {
            id: 2,
            host: "shop-mongo-2.x:27017".into(),
            votes: 0,
            priority: 0.0,
        });
        let merged = merged_config(live_config(), &next).unwrap();
        assert_eq!(merged.get_i64("version").unwrap(), 5);
        assert!(merged.get("term").is_none());
        assert_eq!(
            merged
                .get_document("settings")
                .unwrap()
                .get_str("replicaSetId")
                .unwrap(),
            "abc"
        );
        let members = merged.get_array("members").unwrap();
        let m0 = members[0].as_document().unwrap();
        assert_eq!(
            m0.get_document("tags").unwrap().get_str("zone").unwrap(),
            "a"
        );
        let m1 = members[1].as_document().unwrap();
        assert_eq!(
            (
                m1.get_i32("votes").unwrap(),
                m1.get_f64("priority").unwrap()
            ),
            (1, 1.0)
        );
        // A voter cannot be hidden or delayed: mongod would refuse its priority.
        assert!(!m1.get_bool("hidden").unwrap());
        assert_eq!(m1.get_i64("secondaryDelaySecs").unwrap(), 0);
        let m2 = members[2].as_document().unwrap();
        assert!(
            m2.get("hidden").is_none(),
            "non-voters are left as they are"
        );
        assert_eq!(m2.get_i32("_id").unwrap(), 2);
        assert_eq!(m2.get_str("host").unwrap(), "shop-mongo-2.x:27017");
        assert_eq!(m2.get_i32("votes").unwrap(), 0);
        // Removing a member drops its document.
        next.members.retain(|m| m.id != 1);
        let merged = merged_config(live_config(), &next).unwrap();
        assert_eq!(merged.get_array("members").unwrap().len(), 2);
    }

    #[test]
    fn reconfig_refuses_a_config_that_moved() {
        let mut next = parse_config(&live_config()).unwrap();
        next.version = 7;
        assert_eq!(merged_config(live_config(), &next), Err(4));
    }

    #[test]
    fn reads_hello_and_status() {
        let h = parse_hello(&doc! {
            "isWritablePrimary": false, "secondary": true, "setName": "shop",
            "primary": "shop-mongo-0.x:27017",
        });
        assert_eq!(h.set_name.as_deref(), Some("shop"));
        assert!(h.secondary && !h.is_writable_primary);
        // An uninitiated member started with --replSet: no setName.
        let fresh = parse_hello(
            &doc! { "isWritablePrimary": false, "secondary": false, "isreplicaset": true },
        );
        assert_eq!(fresh, Hello::default());

        let s = parse_status(&doc! { "members": [
            { "_id": 0, "name": "a:27017", "state": 1, "optimeDate": DateTime::from_millis(100_000) },
            { "_id": 1, "name": "b:27017", "state": 2, "optimeDate": DateTime::from_millis(97_000) },
            { "_id": 2, "name": "c:27017", "state": 5 },
            { "_id": 3, "name": "d:27017", "state": 8 },
        ]});
        let states: Vec<MemberState> = s.members.iter().map(|m| m.state).collect();
        assert_eq!(
            states,
            [
                MemberState::Primary,
                MemberState::Secondary,
                MemberState::Syncing,
                MemberState::Down
            ]
        );
        assert_eq!(s.members[1].optime_seconds, Some(97));
        assert_eq!(s.members[2].optime_seconds, None);
    }
}
