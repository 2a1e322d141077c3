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
use super::secrets::Credentials;
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
        let result = client.database(db).run_command(command).await;
        result.map_err(|e| classify(host, who, &name, &e))
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

impl MongoAdmin for DriverAdmin {
    async fn hello(&self, host: &str) -> Result<Hello, AdminError> {
        let h = self.run(host, None, "admin", doc! { "hello": 1 }).await?;
        Ok(Hello {
            set_name: h.get_str("setName").ok().map(Into::into),
            is_writable_primary: h.get_bool("isWritablePrimary").unwrap_or(false),
            secondary: h.get_bool("secondary").unwrap_or(false),
            primary: h.get_str("primary").ok().map(Into::into),
        })
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
        Ok(ReplStatus { members })
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
        let mut raw = reply.get_document("config").cloned().unwrap_or_default();
        let live = number(&raw, "version").unwrap_or(0.0) as i64;
        if live + 1 != config.version {
            return Err(AdminError::Command {
                host: host.into(),
                command: "replSetReconfig".into(),
                code: 0,
                message: format!(
                    "config version moved to {live} since observed ({}); retrying from fresh facts",
                    config.version - 1
                ),
            });
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
                d
            })
            .collect();
        raw.insert("members", members);
        raw.insert("version", config.version);
        // The server sets the term itself.
        raw.remove("term");
        self.run(host, Some(who), "admin", doc! { "replSetReconfig": raw })
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
