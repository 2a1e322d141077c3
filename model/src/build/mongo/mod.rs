//! Pure builders of the managed-MongoDB tier: no API calls, one MeteorApp in, objects out.
//!
//! How each object is written (docs/architecture.md, "The managed-MongoDB tier in a reconcile"):
//! - `statefulset`, `service`, `pdb`, `network_policy`, [`urls_secret`]: server-side apply under
//!   the field manager `meteor-operator`, every reconcile. The StatefulSet's `replicas` must be
//!   replaced by [`crate::mongo::replset::Outcome::statefulset_replicas`] before applying, so
//!   pods go only after their member left the replica set.
//! - `create_once`: POST only, never updated; `409 AlreadyExists` means done. The passwords in
//!   them are fresh from the CSPRNG on every call, so writing them any other way would rotate
//!   credentials under a running database.
//!
//! With `persistence.onDelete: Retain` the credential Secrets carry no owner reference (they
//! must outlive the MeteorApp with the volumes they unlock), and the StatefulSet keeps its PVCs
//! (`persistentVolumeClaimRetentionPolicy.whenDeleted: Retain`). With `Delete`, both go with the
//! MeteorApp through garbage collection, without a finalizer.

pub mod names;
pub mod secrets;

pub use names::*;

use crate::api::{ManagedMongo, MeteorApp, OnDelete};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, ExecAction,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext,
    Service, ServicePort, ServiceSpec, TCPSocketAction, TopologySpreadConstraint, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use secrets::{Credentials, OsRandom, SecretSource};
use std::collections::BTreeMap;

/// uid and gid of `mongodb` in the official image.
pub const MONGO_UID: i64 = 999;
/// Name of the data volume claim template (PVCs are `data-<app>-mongo-N`).
pub const DATA_VOLUME: &str = "data";
/// Where the keyfile is copied, owned by mongod with mode 0400 as mongod demands.
const KEYFILE_PATH: &str = "/keyfile/keyfile";
/// Label the operator's own pods carry; the NetworkPolicy lets them in.
pub const OPERATOR_POD_LABEL: (&str, &str) = ("app.kubernetes.io/name", "meteor-operator");

/// A label its value naming the MeteorApp lets a pod of the app's namespace reach the app's
/// replica set: a backup, restore or migration Job of the app's owners.
pub const MONGO_CLIENT_LABEL: &str = "meteorfleet.dev/mongo-client";

/// Everything the operator writes for one managed replica set.
#[derive(Clone, Debug, PartialEq)]
pub struct MongoTier {
    /// `<app>-mongo`; `spec.replicas` is the target member count, see the module doc.
    pub statefulset: StatefulSet,
    /// Headless `<app>-mongo`, publishing not-ready addresses so members find each other
    /// before they are healthy.
    pub service: Service,
    /// At most one member down for voluntary disruptions.
    pub pdb: PodDisruptionBudget,
    /// Only this app's pods, the other members and the operator reach mongod.
    pub network_policy: NetworkPolicy,
    /// Generated credential Secrets, create-only. User-supplied names are absent here.
    pub create_once: Vec<Secret>,
}

/// Knobs that come from the operator's deployment rather than the MeteorApp.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TierOptions {
    /// Namespace the operator runs in; when set, only operator pods there pass the
    /// NetworkPolicy. Unset: operator-labelled pods of any namespace.
    pub operator_namespace: Option<String>,
}

/// The tier of `app`, or `None` when it does not use a managed MongoDB.
pub fn desired(app: &MeteorApp) -> Option<MongoTier> {
    desired_with(app, &TierOptions::default(), &mut OsRandom)
}

/// [`desired`] with explicit options and secret source.
pub fn desired_with(
    app: &MeteorApp,
    options: &TierOptions,
    secrets: &mut impl SecretSource,
) -> Option<MongoTier> {
    let spec = managed(app)?;
    Some(MongoTier {
        statefulset: statefulset(app, spec),
        service: service(app),
        pdb: pdb(app),
        network_policy: network_policy(app, options),
        create_once: credential_secrets(app, spec, secrets),
    })
}

fn meta(app: &MeteorApp, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: app.namespace(),
        labels: Some(labels(app)),
        owner_references: Some(vec![owner_ref(app)]),
        ..ObjectMeta::default()
    }
}

fn selector(app: &MeteorApp) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector_labels(app)),
        ..LabelSelector::default()
    }
}

/// The mongod command line. Auth is on through `--keyFile`; the localhost exception is off
/// because the operator never needs it (it bootstraps with the keyfile identity, see
/// `replset`), and leaving it on would let anyone with `exec` create the first user.
pub fn mongod_args(app: &MeteorApp, spec: &ManagedMongo) -> Vec<String> {
    let mut args = vec![
        "--replSet".to_string(),
        replica_set_name(app),
        "--keyFile".into(),
        KEYFILE_PATH.into(),
        "--bind_ip_all".into(),
        "--port".into(),
        MONGO_PORT.to_string(),
        "--dbpath".into(),
        "/data/db".into(),
        "--setParameter".into(),
        "enableLocalhostAuthBypass=false".into(),
    ];
    if let Some(gb) = wired_tiger_cache_gb(&resources(spec)) {
        args.push("--wiredTigerCacheSizeGB".into());
        args.push(gb);
    }
    args
}

/// mongod sizes its cache from the host's RAM, not the container limit, on some versions and
/// cgroup setups; pin it to MongoDB's own formula applied to the limit: 50% of (limit - 1 GiB),
/// at least 0.25 GB.
pub fn wired_tiger_cache_gb(resources: &ResourceRequirements) -> Option<String> {
    let limit = resources.limits.as_ref()?.get("memory")?;
    let bytes = crate::build::quantity::bytes(&limit.0)?;
    let gib = bytes as f64 / (1u64 << 30) as f64;
    let cache = ((gib - 1.0) * 0.5).max(0.25);
    Some(format!("{:.2}", (cache * 100.0).floor() / 100.0))
}

fn resources(spec: &ManagedMongo) -> ResourceRequirements {
    spec.resources
        .clone()
        .unwrap_or_else(|| ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity("500m".into())),
                ("memory".into(), Quantity("1Gi".into())),
            ])),
            limits: Some(BTreeMap::from([("memory".into(), Quantity("2Gi".into()))])),
            ..ResourceRequirements::default()
        })
}

/// The image: `spec.image`, else the official `mongo:<version>`.
pub fn image(spec: &ManagedMongo) -> String {
    spec.image
        .clone()
        .unwrap_or_else(|| format!("mongo:{}", spec.version))
}

fn mongosh_probe(script: &str, period: i32, timeout: i32, failures: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec![
                "mongosh".into(),
                "--quiet".into(),
                "--norc".into(),
                "--port".into(),
                MONGO_PORT.to_string(),
                "--eval".into(),
                script.into(),
            ]),
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// Alive: mongod answers `ping` (unauthenticated commands need no credentials in the probe).
const PING: &str = "quit(db.adminCommand({ ping: 1 }).ok === 1 ? 0 : 1)";
/// Ready: this member serves as PRIMARY or SECONDARY, so the PDB counts real members.
const SERVING: &str = "const h = db.hello(); quit(h.isWritablePrimary || h.secondary ? 0 : 1)";

fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(MONGO_UID),
        run_as_group: Some(MONGO_UID),
        ..SecurityContext::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn empty_dir(name: &str, medium: Option<&str>, size: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: medium.map(Into::into),
            size_limit: Some(Quantity(size.into())),
        }),
        ..Volume::default()
    }
}

fn default_spread(app: &MeteorApp) -> Vec<TopologySpreadConstraint> {
    let spread = |key: &str, when: &str| TopologySpreadConstraint {
        max_skew: 1,
        topology_key: key.into(),
        when_unsatisfiable: when.into(),
        label_selector: Some(selector(app)),
        // Nodes the members cannot run on (tainted control planes, GPU pools) must not count as
        // empty domains, or a required spread would leave a member Pending forever.
        node_taints_policy: Some("Honor".into()),
        ..TopologySpreadConstraint::default()
    };
    vec![
        // Required across nodes: on a single-node cluster the skew is always 0, so it still
        // schedules; on many nodes two members never share one while another is empty.
        spread("kubernetes.io/hostname", "DoNotSchedule"),
        // Best effort across zones: clusters without zone labels must still schedule.
        spread("topology.kubernetes.io/zone", "ScheduleAnyway"),
    ]
}

fn statefulset(app: &MeteorApp, spec: &ManagedMongo) -> StatefulSet {
    let name = tier_name(app);
    let image = image(spec);
    let keyfile_copy = Container {
        name: "keyfile".into(),
        image: Some(image.clone()),
        // Secret volumes are root-owned; mongod refuses a keyfile readable by anyone but itself.
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            // rm first: a re-run (new sandbox, same emptyDir) finds the old 0400 copy, which
            // uid 999 without capabilities cannot overwrite.
            format!(
                "rm -f {KEYFILE_PATH} && cp /keyfile-secret/{KEYFILE_KEY} {KEYFILE_PATH} && chmod 0400 {KEYFILE_PATH}"
            ),
        ]),
        security_context: Some(restricted_container_security()),
        volume_mounts: Some(vec![
            mount("keyfile-secret", "/keyfile-secret", true),
            mount("keyfile", "/keyfile", false),
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity("10m".into())),
                ("memory".into(), Quantity("16Mi".into())),
            ])),
            limits: Some(BTreeMap::from([("memory".into(), Quantity("64Mi".into()))])),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    };
    let mongod = Container {
        name: "mongod".into(),
        image: Some(image),
        command: Some(vec!["mongod".into()]),
        args: Some(mongod_args(app, spec)),
        // mongosh (probes) writes its state under $HOME; the root filesystem is read-only.
        env: Some(vec![EnvVar {
            name: "HOME".into(),
            value: Some("/tmp".into()),
            ..EnvVar::default()
        }]),
        ports: Some(vec![ContainerPort {
            name: Some("mongodb".into()),
            container_port: MONGO_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(resources(spec)),
        security_context: Some(restricted_container_security()),
        volume_mounts: Some(vec![
            mount(DATA_VOLUME, "/data/db", false),
            mount("keyfile", "/keyfile", true),
            mount("tmp", "/tmp", false),
        ]),
        // Crash recovery of a big data set can take long: 10 minutes to answer at all.
        startup_probe: Some(mongosh_probe(PING, 10, 5, 60)),
        readiness_probe: Some(mongosh_probe(SERVING, 10, 10, 3)),
        // Liveness only needs the port: a mongosh (a Node process) every few seconds costs
        // memory inside mongod's limit and flaps on a starved CPU.
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(MONGO_PORT),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(20),
            timeout_seconds: Some(5),
            failure_threshold: Some(6),
            ..Probe::default()
        }),
        ..Container::default()
    };
    let placement = &spec.placement;
    let pod = PodSpec {
        init_containers: Some(vec![keyfile_copy]),
        containers: vec![mongod],
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        // mongod steps down and flushes on SIGTERM; give it time.
        termination_grace_period_seconds: Some(60),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(MONGO_UID),
            run_as_group: Some(MONGO_UID),
            fs_group: Some(MONGO_UID),
            fs_group_change_policy: Some("OnRootMismatch".into()),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        volumes: Some(vec![
            Volume {
                name: "keyfile-secret".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret_name(app, SecretKind::Keyfile)),
                    // Group-readable: files are root-owned with group fsGroup.
                    default_mode: Some(0o440),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
            empty_dir("keyfile", Some("Memory"), "1Mi"),
            empty_dir("tmp", None, "256Mi"),
        ]),
        node_selector: (!placement.node_selector.is_empty())
            .then(|| placement.node_selector.clone()),
        tolerations: (!placement.tolerations.is_empty()).then(|| placement.tolerations.clone()),
        affinity: placement.affinity.clone(),
        topology_spread_constraints: Some(
            placement
                .topology_spread_constraints
                .clone()
                .unwrap_or_else(|| default_spread(app)),
        )
        .filter(|c| !c.is_empty()),
        ..PodSpec::default()
    };
    let when_deleted = match spec.persistence.on_delete {
        OnDelete::Retain => "Retain",
        OnDelete::Delete => "Delete",
    };
    StatefulSet {
        metadata: meta(app, name.clone()),
        spec: Some(StatefulSetSpec {
            service_name: Some(name),
            replicas: Some(spec.members),
            selector: selector(app),
            // Members start together; the operator, not pod order, sequences the replica set.
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            // Scaling down never deletes a volume; deleting the MeteorApp does only on request.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(when_deleted.into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(app)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(DATA_VOLUME.into()),
                    labels: Some(labels(app)),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: spec.storage.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".into(),
                            Quantity(spec.storage.size.clone()),
                        )])),
                        ..VolumeResourceRequirements::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                ..PersistentVolumeClaim::default()
            }]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

fn service(app: &MeteorApp) -> Service {
    Service {
        metadata: meta(app, tier_name(app)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(app)),
            ports: Some(vec![ServicePort {
                name: Some("mongodb".into()),
                port: MONGO_PORT,
                target_port: Some(IntOrString::String("mongodb".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn pdb(app: &MeteorApp) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(app, tier_name(app)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(selector(app)),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

fn network_policy(app: &MeteorApp, options: &TierOptions) -> NetworkPolicy {
    let same_app = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".into(), "meteor".into()),
                ("app.kubernetes.io/instance".into(), app.name_any()),
            ])),
            // The other members replicate from each other over the same port.
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "app.kubernetes.io/component".into(),
                operator: "In".into(),
                values: Some(vec!["app".into(), "worker".into(), "mongo".into()]),
            }]),
        }),
        ..NetworkPolicyPeer::default()
    };
    let operator = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                OPERATOR_POD_LABEL.0.into(),
                OPERATOR_POD_LABEL.1.into(),
            )])),
            ..LabelSelector::default()
        }),
        namespace_selector: Some(LabelSelector {
            match_labels: options
                .operator_namespace
                .as_ref()
                .map(|ns| BTreeMap::from([("kubernetes.io/metadata.name".into(), ns.clone())])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let labelled_client = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                MONGO_CLIENT_LABEL.into(),
                app.name_any(),
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    NetworkPolicy {
        metadata: meta(app, tier_name(app)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(app)),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![same_app, operator, labelled_client]),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(MONGO_PORT)),
                    protocol: Some("TCP".into()),
                    ..NetworkPolicyPort::default()
                }]),
            }]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// Default user names of generated user Secrets (all users live in `admin`).
pub fn default_username(kind: SecretKind) -> &'static str {
    match kind {
        SecretKind::Keyfile => "",
        SecretKind::Root => "root",
        SecretKind::App => "app",
        SecretKind::Oplog => "oplog",
    }
}

fn credential_secrets(
    app: &MeteorApp,
    spec: &ManagedMongo,
    source: &mut impl SecretSource,
) -> Vec<Secret> {
    SecretKind::ALL
        .into_iter()
        .filter(|kind| user_secret_name(app, *kind).is_none())
        .map(|kind| {
            let data = match kind {
                SecretKind::Keyfile => BTreeMap::from([(KEYFILE_KEY.into(), source.keyfile())]),
                _ => BTreeMap::from([
                    (USERNAME_KEY.into(), default_username(kind).to_string()),
                    (PASSWORD_KEY.into(), source.password()),
                ]),
            };
            let mut metadata = meta(app, secret_name(app, kind));
            if spec.persistence.on_delete == OnDelete::Retain {
                // Outlives the MeteorApp together with the volumes it unlocks.
                metadata.owner_references = None;
            }
            Secret {
                metadata,
                type_: Some("Opaque".into()),
                data: Some(
                    data.into_iter()
                        .map(|(k, v)| (k, ByteString(v.into_bytes())))
                        .collect(),
                ),
                ..Secret::default()
            }
        })
        .collect()
}

/// Percent-encodes a userinfo part of a connection string (RFC 3986 unreserved kept).
fn encode_userinfo(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn connection_url(app: &MeteorApp, creds: &Credentials, db: &str) -> String {
    let members = managed(app).map_or(1, |m| m.members.max(1)) as usize;
    let hosts: Vec<String> = (0..members).map(|i| member_host(app, i)).collect();
    format!(
        "mongodb://{}:{}@{}/{db}?replicaSet={}&authSource=admin",
        encode_userinfo(&creds.username),
        encode_userinfo(&creds.password),
        hosts.join(","),
        replica_set_name(app),
    )
}

/// `MONGO_URL` (all members, the app user, the app database) and `MONGO_OPLOG_URL` (the oplog
/// user, `local`), derived from the credentials: owned by the MeteorApp, applied every reconcile
/// (host lists follow `members`).
pub fn urls_secret(app: &MeteorApp, app_user: &Credentials, oplog_user: &Credentials) -> Secret {
    let data = BTreeMap::from([
        (
            MONGO_URL_KEY.to_string(),
            connection_url(app, app_user, &database(app)),
        ),
        (
            MONGO_OPLOG_URL_KEY.to_string(),
            connection_url(app, oplog_user, "local"),
        ),
    ]);
    Secret {
        metadata: meta(app, urls_secret_name(app)),
        type_: Some("Opaque".into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    }
}
