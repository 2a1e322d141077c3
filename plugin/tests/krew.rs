//! The krew manifest names this crate's binary, version and commands, in the shape krew reads.

use serde_json::Value;

fn manifest() -> Value {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("krew/meteor.yaml"),
    )
    .unwrap();
    serde_norway::from_str(&text).unwrap()
}

#[test]
fn the_krew_manifest_installs_this_binary_at_this_version() {
    let m = manifest();
    assert_eq!(
        m["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(m["kind"], "Plugin");
    // `kubectl meteor` runs `kubectl-meteor`.
    assert_eq!(m["metadata"]["name"], "meteor");
    let spec = &m["spec"];
    assert_eq!(
        spec["version"],
        format!("v{}", env!("CARGO_PKG_VERSION")),
        "the manifest's version follows Cargo.toml"
    );
    assert!(spec["shortDescription"].as_str().unwrap().len() <= 64);
    let description = spec["description"].as_str().unwrap();
    for command in [
        "status [APP]",
        "sessions APP",
        "restart APP",
        "rollback APP",
        "park APP",
        "unpark APP",
    ] {
        assert!(
            description.contains(&format!("kubectl meteor {command}")),
            "{command}"
        );
    }
    let platforms = spec["platforms"].as_array().unwrap();
    assert!(!platforms.is_empty());
    for platform in platforms {
        let labels = &platform["selector"]["matchLabels"];
        let (os, arch) = (
            labels["os"].as_str().unwrap(),
            labels["arch"].as_str().unwrap(),
        );
        assert_eq!(platform["bin"], "kubectl-meteor");
        let uri = platform["uri"].as_str().unwrap();
        assert!(
            uri.ends_with(&format!(
                "/v{}/kubectl-meteor-{os}-{arch}.tar.gz",
                env!("CARGO_PKG_VERSION")
            )),
            "{uri}"
        );
        let sha = platform["sha256"].as_str().unwrap();
        assert!(
            sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()),
            "{sha}"
        );
        let files: Vec<&str> = platform["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["from"].as_str().unwrap())
            .collect();
        assert_eq!(files, ["kubectl-meteor", "LICENSE"]);
    }
}
