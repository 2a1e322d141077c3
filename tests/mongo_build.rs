//! Builders of the managed-MongoDB tier, the app wiring, generated secrets and `render`.

use k8s_openapi::api::core::v1::Secret;
use meteor_operator::api::MeteorApp;
use meteor_operator::build::mongo::secrets::{
    Credentials, OsRandom, SecretError, SecretSource, read_credentials, read_keyfile,
};
use meteor_operator::build::mongo::{self, SecretKind, wiring};
use meteor_operator::build::mongo::{MongoTier, TierOptions, desired, desired_with, urls_secret};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const UID: &str = "5b1c8f3e-0000-4000-8000-000000000001";

fn app(mongo: Value, extra: Value) -> MeteorApp {
    let mut v = json!({
        "apiVersion": "meteorfleet.dev/v1alpha1",
        "kind": "MeteorApp",
        "metadata": { "name": "shop", "namespace": "prod", "uid": UID },
        "spec": {
            "image": "registry.example/shop:1",
            "rootUrl": "https://shop.example",
            "mongo": mongo,
        }
    });
    if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(v).expect("a MeteorApp")
}

fn managed(m: Value) -> MeteorApp {
    app(json!({ "managed": m }), json!({}))
}

/// Counts calls so each generated value is distinct and recognisable.
#[derive(Default)]
struct Counter(u32);

impl SecretSource for Counter {
    fn password(&mut self) -> String {
        self.0 += 1;
        format!("pw{}", self.0)
    }
    fn keyfile(&mut self) -> String {
        self.0 += 1;
        format!("keyfile{}", self.0)
    }
}

fn tier(app: &MeteorApp) -> MongoTier {
    desired_with(app, &TierOptions::default(), &mut Counter::default()).expect("managed")
}

/// The names of the Secrets the tier creates once.
fn created_once(tier: &MongoTier) -> Vec<String> {
    tier.create_once
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect()
}

fn json_of<T: serde::Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap()
}

fn data(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

#[test]
fn external_mongo_has_no_tier() {
    let a = app(
        json!({ "external": { "url": { "name": "db", "key": "url" } } }),
        json!({}),
    );
    assert!(desired(&a).is_none());
}

#[test]
fn every_object_is_labelled_owned_and_named() {
    let a = managed(json!({}));
    let t = tier(&a);
    let metas = [
        ("StatefulSet", json_of(&t.statefulset)["metadata"].clone()),
        ("Service", json_of(&t.service)["metadata"].clone()),
        ("PDB", json_of(&t.pdb)["metadata"].clone()),
        (
            "NetworkPolicy",
            json_of(&t.network_policy)["metadata"].clone(),
        ),
    ];
    for (kind, m) in metas {
        assert_eq!(m["name"], "shop-mongo", "{kind}");
        assert_eq!(m["namespace"], "prod", "{kind}");
        assert_eq!(
            m["labels"],
            json!({
                "app.kubernetes.io/name": "meteor",
                "app.kubernetes.io/instance": "shop",
                "app.kubernetes.io/component": "mongo",
                "app.kubernetes.io/managed-by": "meteor-operator",
            }),
            "{kind}"
        );
        assert_eq!(m["ownerReferences"][0]["uid"], UID, "{kind}");
        assert_eq!(m["ownerReferences"][0]["controller"], true, "{kind}");
        assert_eq!(m["ownerReferences"][0]["kind"], "MeteorApp", "{kind}");
    }
}

#[test]
fn statefulset_runs_an_authenticated_replica_set_member() {
    let a = managed(json!({ "members": 5, "version": "7.0" }));
    let s = json_of(&tier(&a).statefulset);
    let spec = &s["spec"];
    assert_eq!(spec["replicas"], 5);
    assert_eq!(spec["serviceName"], "shop-mongo");
    assert_eq!(spec["podManagementPolicy"], "Parallel");
    let pod = &spec["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "mongo:7.0");
    assert_eq!(c["command"], json!(["mongod"]));
    let args: Vec<String> = serde_json::from_value(c["args"].clone()).unwrap();
    let joined = args.join(" ");
    assert!(joined.contains("--replSet shop"), "{joined}");
    assert!(joined.contains("--keyFile /keyfile/keyfile"), "{joined}");
    assert!(joined.contains("--bind_ip_all"), "{joined}");
    assert!(
        joined.contains("enableLocalhostAuthBypass=false"),
        "{joined}"
    );
    // Default 2Gi limit: 50% of (2 GiB - 1 GiB).
    assert!(joined.contains("--wiredTigerCacheSizeGB 0.50"), "{joined}");
    // The keyfile comes from the Secret, copied so mongod owns it with mode 0400.
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"],
        "shop-mongo-keyfile"
    );
    let init = pod["initContainers"][0]["command"][2].as_str().unwrap();
    assert!(init.contains("chmod 0400 /keyfile/keyfile"), "{init}");
    // A re-run of the init container (same emptyDir, new sandbox) must not trip on the old copy.
    assert!(init.starts_with("rm -f /keyfile/keyfile && "), "{init}");
    // Probes reflect mongod: the port for liveness, ping to start, PRIMARY/SECONDARY for readiness.
    assert!(
        c["readinessProbe"]["exec"]["command"]
            .to_string()
            .contains("isWritablePrimary || h.secondary")
    );
    assert_eq!(c["livenessProbe"]["tcpSocket"]["port"], 27017);
    assert!(
        c["startupProbe"]["exec"]["command"]
            .to_string()
            .contains("ping")
    );
    // Volumes: one claim per member.
    let claim = &spec["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"], "data");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "10Gi");
    assert_eq!(
        c["volumeMounts"][0],
        json!({ "name": "data", "mountPath": "/data/db" })
    );
}

#[test]
fn pods_meet_the_restricted_pod_security_standard() {
    let s = json_of(&tier(&managed(json!({}))).statefulset);
    let pod = &s["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 999);
    assert_eq!(pod["securityContext"]["fsGroup"], 999);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    for c in pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(pod["initContainers"].as_array().unwrap())
    {
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{c}");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{c}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{c}");
        assert_eq!(sc["runAsNonRoot"], true, "{c}");
    }
    // Writable places a read-only root needs.
    let mounts = pod["containers"][0]["volumeMounts"].to_string();
    assert!(
        mounts.contains("/tmp") && mounts.contains("/data/db"),
        "{mounts}"
    );
}

#[test]
fn placement_spreads_by_default_and_is_overridable() {
    let s = json_of(&tier(&managed(json!({}))).statefulset);
    let spread = &s["spec"]["template"]["spec"]["topologySpreadConstraints"];
    assert_eq!(spread[0]["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(spread[0]["whenUnsatisfiable"], "DoNotSchedule");
    assert_eq!(spread[1]["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(spread[1]["whenUnsatisfiable"], "ScheduleAnyway");
    assert_eq!(
        spread[0]["labelSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "mongo"
    );

    let off = managed(json!({ "placement": {
        "topologySpreadConstraints": [],
        "nodeSelector": { "disk": "ssd" },
        "tolerations": [{ "key": "db", "operator": "Exists" }],
    }}));
    let s = json_of(&tier(&off).statefulset);
    let pod = &s["spec"]["template"]["spec"];
    assert!(pod.get("topologySpreadConstraints").is_none());
    assert_eq!(pod["nodeSelector"], json!({ "disk": "ssd" }));
    assert_eq!(pod["tolerations"][0]["key"], "db");
}

#[test]
fn service_is_headless_and_publishes_not_ready_members() {
    let s = json_of(&tier(&managed(json!({}))).service);
    assert_eq!(s["spec"]["clusterIP"], "None");
    assert_eq!(s["spec"]["publishNotReadyAddresses"], true);
    assert_eq!(s["spec"]["ports"][0]["port"], 27017);
    assert_eq!(
        s["spec"]["selector"]["app.kubernetes.io/component"],
        "mongo"
    );
}

#[test]
fn disruption_budget_allows_one_member_down() {
    let p = json_of(&tier(&managed(json!({}))).pdb);
    assert_eq!(p["spec"]["maxUnavailable"], 1);
    assert_eq!(
        p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"],
        "shop"
    );
}

#[test]
fn network_policy_admits_only_this_app_its_labelled_clients_and_the_operator() {
    let a = managed(json!({}));
    let n = json_of(&tier(&a).network_policy);
    assert_eq!(n["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(
        n["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "mongo"
    );
    let rule = &n["spec"]["ingress"][0];
    assert_eq!(rule["ports"], json!([{ "port": 27017, "protocol": "TCP" }]));
    let app_peer = &rule["from"][0]["podSelector"];
    assert_eq!(
        app_peer["matchLabels"]["app.kubernetes.io/instance"],
        "shop"
    );
    assert_eq!(app_peer["matchLabels"]["app.kubernetes.io/name"], "meteor");
    assert_eq!(
        app_peer["matchExpressions"][0]["values"],
        json!(["app", "worker", "mongo"])
    );
    // No namespaceSelector: only pods of the app's own namespace.
    assert!(rule["from"][0].get("namespaceSelector").is_none());
    let op = &rule["from"][1];
    assert_eq!(
        op["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "meteor-operator"
    );
    assert_eq!(op["namespaceSelector"], json!({}));
    // A dump or restore Job its owners label for this app, from the app's namespace only.
    let client = &rule["from"][2];
    assert_eq!(
        client["podSelector"]["matchLabels"],
        json!({ "meteorfleet.dev/mongo-client": "shop" })
    );
    assert!(client.get("namespaceSelector").is_none());
    assert_eq!(rule["from"].as_array().unwrap().len(), 3);

    let options = TierOptions {
        operator_namespace: Some("meteor-system".into()),
    };
    let t = desired_with(&a, &options, &mut Counter::default()).unwrap();
    let n = json_of(&t.network_policy);
    assert_eq!(
        n["spec"]["ingress"][0]["from"][1]["namespaceSelector"]["matchLabels"],
        json!({ "kubernetes.io/metadata.name": "meteor-system" })
    );
}

#[test]
fn generated_secrets_and_their_retention() {
    let a = managed(json!({}));
    let t = tier(&a);
    let names = created_once(&t);
    assert_eq!(
        names,
        [
            "shop-mongo-keyfile",
            "shop-mongo-root",
            "shop-mongo-app",
            "shop-mongo-oplog"
        ]
    );
    assert_eq!(
        data(&t.create_once[0]),
        BTreeMap::from([("keyfile".into(), "keyfile1".into())])
    );
    assert_eq!(
        data(&t.create_once[2]),
        BTreeMap::from([
            ("username".into(), "app".into()),
            ("password".into(), "pw3".into())
        ])
    );
    // Retain (default): credentials outlive the MeteorApp, and so do the PVCs.
    assert!(
        t.create_once
            .iter()
            .all(|s| s.metadata.owner_references.is_none())
    );
    let sts = json_of(&t.statefulset);
    assert_eq!(
        sts["spec"]["persistentVolumeClaimRetentionPolicy"],
        json!({ "whenDeleted": "Retain", "whenScaled": "Retain" })
    );

    let d = managed(json!({ "persistence": { "onDelete": "Delete" } }));
    let t = tier(&d);
    assert!(t.create_once.iter().all(|s| {
        s.metadata
            .owner_references
            .as_ref()
            .is_some_and(|o| o[0].uid == UID)
    }));
    let sts = json_of(&t.statefulset);
    assert_eq!(
        sts["spec"]["persistentVolumeClaimRetentionPolicy"],
        json!({ "whenDeleted": "Delete", "whenScaled": "Retain" })
    );
}

#[test]
fn user_supplied_secrets_are_used_not_generated() {
    let a = managed(json!({ "secrets": { "root": "my-root", "keyfile": "my-key" } }));
    let t = tier(&a);
    let names = created_once(&t);
    assert_eq!(names, ["shop-mongo-app", "shop-mongo-oplog"]);
    assert_eq!(mongo::secret_name(&a, SecretKind::Root), "my-root");
    let sts = json_of(&t.statefulset);
    assert_eq!(
        sts["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
        "my-key"
    );
}

#[test]
fn os_random_gives_long_distinct_url_safe_values() {
    let mut r = OsRandom;
    let (a, b) = (r.password(), r.password());
    assert_ne!(a, b);
    assert_eq!(a.len(), 48);
    assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    let k = r.keyfile();
    assert!((6..=1024).contains(&k.len()), "{}", k.len());
    assert_ne!(k, r.keyfile());
    // Fresh passwords on every build: which is why these Secrets are create-only.
    let a1 = desired(&managed(json!({}))).unwrap();
    let a2 = desired(&managed(json!({}))).unwrap();
    assert_ne!(a1.create_once[1].data, a2.create_once[1].data);
}

fn secret(name: &str, kv: &[(&str, &str)]) -> Secret {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "stringData": kv.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    }))
    .unwrap()
}

#[test]
fn credentials_and_keyfiles_are_checked() {
    let ok = secret("root", &[("username", "root"), ("password", "s3cret")]);
    assert_eq!(
        read_credentials(&ok).unwrap(),
        Credentials {
            username: "root".into(),
            password: "s3cret".into()
        }
    );
    assert!(!format!("{:?}", read_credentials(&ok).unwrap()).contains("s3cret"));
    assert_eq!(
        read_credentials(&secret("root", &[("username", "root")])).unwrap_err(),
        SecretError::MissingKey {
            secret: "root".into(),
            key: "password".into()
        }
    );
    assert_eq!(
        read_keyfile(&secret("k", &[("keyfile", "abc def\nghij")])).unwrap(),
        "abcdefghij"
    );
    for bad in ["abc", "has*star1234", &"a".repeat(1025)] {
        assert_eq!(
            read_keyfile(&secret("k", &[("keyfile", bad)])).unwrap_err(),
            SecretError::BadKeyfile { secret: "k".into() },
            "{bad}"
        );
    }
}

#[test]
fn urls_secret_lists_every_member_and_the_right_users() {
    let a = managed(json!({ "members": 3, "database": "shopdb" }));
    let creds = |u: &str, p: &str| Credentials {
        username: u.into(),
        password: p.into(),
    };
    let s = urls_secret(&a, &creds("app", "p@ss/word"), &creds("oplog", "op"));
    let d = data(&s);
    let hosts = "shop-mongo-0.shop-mongo.prod.svc.cluster.local:27017,\
                 shop-mongo-1.shop-mongo.prod.svc.cluster.local:27017,\
                 shop-mongo-2.shop-mongo.prod.svc.cluster.local:27017";
    assert_eq!(
        d["MONGO_URL"],
        format!("mongodb://app:p%40ss%2Fword@{hosts}/shopdb?replicaSet=shop&authSource=admin")
    );
    assert_eq!(
        d["MONGO_OPLOG_URL"],
        format!("mongodb://oplog:op@{hosts}/local?replicaSet=shop&authSource=admin")
    );
    assert_eq!(s.metadata.name.as_deref(), Some("shop-mongo-urls"));
    // Derived data: owned by the MeteorApp, goes with it.
    assert_eq!(s.metadata.owner_references.as_ref().unwrap()[0].uid, UID);
}

#[test]
fn wiring_uses_secret_references_only() {
    let a = managed(json!({}));
    let w = wiring(&a);
    assert_eq!(w.url.name, "shop-mongo-urls");
    assert_eq!(w.url.key, "MONGO_URL");
    assert_eq!(w.oplog_url.as_ref().unwrap().key, "MONGO_OPLOG_URL");
    assert_eq!(w.reactivity_order, None);

    let cs_only = app(
        json!({ "managed": {} }),
        json!({ "reactivity": ["changeStreams", "polling"] }),
    );
    let w = wiring(&cs_only);
    assert_eq!(
        w.oplog_url, None,
        "the oplog is not wired when reactivity leaves it out"
    );
    assert_eq!(w.reactivity_order.as_deref(), Some("changeStreams,polling"));

    let ext = app(
        json!({ "external": {
            "url": { "name": "db", "key": "url" },
            "oplogUrl": { "name": "db", "key": "oplog" } } }),
        json!({ "reactivity": ["oplog"] }),
    );
    let w = wiring(&ext);
    assert_eq!((w.url.name.as_str(), w.url.key.as_str()), ("db", "url"));
    assert_eq!(w.oplog_url.unwrap().key, "oplog");
    assert_eq!(w.reactivity_order.as_deref(), Some("oplog"));
}

#[test]
fn app_pods_get_mongo_from_secret_references() {
    use meteor_operator::build::{Inputs, MongoWiring};
    let a = app(
        json!({ "managed": {} }),
        json!({ "reactivity": ["oplog", "polling"] }),
    );
    let inputs = Inputs {
        config_hash: "h".into(),
        mongo: MongoWiring::for_app(&a).unwrap(),
    };
    let d = json_of(&meteor_operator::build::desired(&a, &inputs).app);
    let env = d["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    let find = |n: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == n)
            .cloned()
    };
    assert_eq!(
        find("MONGO_URL").unwrap()["valueFrom"]["secretKeyRef"]["name"],
        "shop-mongo-urls"
    );
    assert!(find("MONGO_URL").unwrap().get("value").is_none());
    assert_eq!(
        find("MONGO_OPLOG_URL").unwrap()["valueFrom"]["secretKeyRef"]["key"],
        "MONGO_OPLOG_URL"
    );
    assert_eq!(
        find("METEOR_REACTIVITY_ORDER").unwrap()["value"],
        "oplog,polling"
    );
}

#[test]
fn render_shows_the_full_tier_for_the_managed_examples() {
    // Each count includes the proxy's cookie Secret (the proxy is on by default).
    for (file, secrets) in [
        ("examples/managed-dev.yaml", 6),
        // The root Secret is the user's own there.
        ("examples/managed-production.yaml", 5),
    ] {
        let text = std::fs::read_to_string(file).unwrap();
        let yaml = meteor_operator::render::render_str(&text).expect(file);
        let kinds: Vec<String> = serde_norway::Deserializer::from_str(&yaml)
            .map(|d| {
                let v: Value = serde::Deserialize::deserialize(d).unwrap();
                v["kind"].as_str().unwrap().to_string()
            })
            .collect();
        for kind in ["StatefulSet", "NetworkPolicy", "Deployment"] {
            assert!(kinds.contains(&kind.to_string()), "{file}: {kinds:?}");
        }
        assert_eq!(
            kinds.iter().filter(|k| *k == "Secret").count(),
            secrets,
            "{file}"
        );
        assert!(yaml.contains("name: todos-dev-mongo") || yaml.contains("name: shop-mongo"));
        assert!(yaml.contains("publishNotReadyAddresses: true"));
        // No real credential is invented offline.
        assert!(
            yaml.contains("generated-once-at-creation")
                || yaml.contains("Z2VuZXJhdGVkLW9uY2UtYXQtY3JlYXRpb24")
        );
    }
}

#[test]
fn wired_tiger_cache_follows_the_memory_limit() {
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use meteor_operator::build::mongo::wired_tiger_cache_gb;
    let limit = |q: &str| ResourceRequirements {
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity(q.into()),
        )])),
        ..ResourceRequirements::default()
    };
    assert_eq!(wired_tiger_cache_gb(&limit("4Gi")).as_deref(), Some("1.50"));
    assert_eq!(wired_tiger_cache_gb(&limit("1Gi")).as_deref(), Some("0.25"));
    assert_eq!(
        wired_tiger_cache_gb(&limit("512Mi")).as_deref(),
        Some("0.25")
    );
    assert_eq!(
        wired_tiger_cache_gb(&limit("10Gi")).as_deref(),
        Some("4.50")
    );
    assert_eq!(wired_tiger_cache_gb(&ResourceRequirements::default()), None);
    // No limit given: mongod sizes its own cache.
    let a = managed(json!({ "resources": { "requests": { "memory": "1Gi" } } }));
    let args = json_of(&tier(&a).statefulset)["spec"]["template"]["spec"]["containers"][0]["args"]
        .to_string();
    assert!(!args.contains("wiredTigerCacheSizeGB"), "{args}");
}
