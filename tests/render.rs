//! `render`: what a user sees offline, and the same rejection of bad input as the API.

use std::process::Command;

fn render(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut command = Command::new(env!("CARGO_BIN_EXE_meteor-operator"));
    command.arg("render").args(args);
    command.stdin(std::process::Stdio::piped());
    command.stdout(std::process::Stdio::piped());
    command.stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("binary runs");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn kinds(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .map(str::to_string)
        .collect()
}

/// What the default proxy adds after the app's own objects.
const PROXY_KINDS: [&str; 6] = [
    "Service",
    "Deployment",
    "PodDisruptionBudget",
    "ServiceAccount",
    "RoleBinding",
    "Secret",
];

/// `kind` then `name` of each rendered object, in order.
fn kinds_and_names(yaml: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut kind = None;
    for line in yaml.lines() {
        if line == "---" {
            kind = None;
        } else if let Some(k) = line.strip_prefix("kind: ") {
            kind = Some(k.to_string());
        } else if let (Some(k), Some(name)) = (&kind, line.strip_prefix("  name: ")) {
            out.push((k.clone(), name.to_string()));
            kind = None;
        }
    }
    out
}

#[test]
fn renders_the_minimal_example() {
    let (ok, out, err) = render(&["-f", "examples/minimal.yaml"], None);
    assert!(ok, "{err}");
    let mut expected = vec!["Deployment", "Service", "PodDisruptionBudget"];
    expected.extend(PROXY_KINDS);
    assert_eq!(kinds(&out), expected);
    assert!(out.contains("name: todos"));
}

#[test]
fn renders_the_production_example_with_its_worker_tier() {
    let (ok, out, err) = render(&["-f", "examples/production.yaml"], None);
    assert!(ok, "{err}");
    let mut expected = vec!["Deployment", "Service", "Deployment", "PodDisruptionBudget"];
    expected.extend(PROXY_KINDS);
    assert_eq!(kinds(&out), expected);
    assert!(out.contains("name: chat-worker"));
    assert!(out.contains("namespace: production"));
}

#[test]
fn rejects_bad_input_with_the_apis_message_and_a_failing_exit() {
    let bad = include_str!("../examples/minimal.yaml").replace(
        "rootUrl: https://todos.example.com",
        "rootUrl: ftp://todos.example.com\n  replicas: -3",
    );
    let (ok, out, err) = render(&["-f", "-"], Some(&bad));
    assert!(!ok, "bad input must fail");
    assert!(out.is_empty(), "nothing is printed for bad input: {out}");
    assert!(err.contains("spec.rootUrl"), "{err}");
    assert!(err.contains("spec.replicas"), "{err}");
}

#[test]
fn rejects_missing_required_fields_and_other_kinds() {
    let no_image = include_str!("../examples/minimal.yaml").replace(
        "  image: ghcr.io/example/todos:1.4.2   # a Meteor server bundle listening on $PORT\n",
        "",
    );
    let (ok, _, err) = render(&["-f", "-"], Some(&no_image));
    assert!(!ok);
    assert!(err.contains("image"), "{err}");

    let (ok, _, err) = render(
        &["-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"),
    );
    assert!(!ok);
    assert!(err.contains("expected MeteorApp"), "{err}");

    let (ok, _, err) = render(&["-f", "does-not-exist.yaml"], None);
    assert!(!ok);
    assert!(err.contains("does-not-exist.yaml"), "{err}");
}

#[test]
fn renders_the_proxy_example_with_its_certificate() {
    let (ok, out, err) = render(&["-f", "examples/routing-proxy.yaml"], None);
    assert!(ok, "{err}");
    let names: Vec<(String, String)> = kinds_and_names(&out);
    let expected = [
        ("Deployment", "chat"),
        ("Service", "chat"),
        ("PodDisruptionBudget", "chat"),
        ("Service", "chat-app"),
        ("Deployment", "chat-proxy"),
        ("PodDisruptionBudget", "chat-proxy"),
        ("ServiceAccount", "chat-proxy"),
        ("RoleBinding", "chat-proxy"),
        ("Secret", "chat-proxy-cookie"),
        ("Certificate", "chat"),
    ]
    .map(|(k, n)| (k.to_string(), n.to_string()));
    assert_eq!(names, expected);
    for flag in [
        "--rate-limit",
        "'50'",
        "--tls-cert",
        "--redirect-listen",
        "--drain-timeout",
        "30s",
    ] {
        assert!(out.contains(flag), "{flag} not rendered");
    }
    assert!(out.contains("externalTrafficPolicy: Local"));
    assert!(out.contains("secretName: chat-tls"));
}

#[test]
fn renders_the_ingress_example_behind_nginx() {
    let (ok, out, err) = render(&["-f", "examples/routing-ingress.yaml"], None);
    assert!(ok, "{err}");
    let mut expected = vec!["Deployment", "Service", "PodDisruptionBudget"];
    expected.extend(PROXY_KINDS);
    expected.push("Ingress");
    assert_eq!(kinds(&out), expected);
    assert!(out.contains("ingressClassName: nginx"));
    assert!(out.contains("host: todos.example.com"));
    assert!(out.contains("nginx.ingress.kubernetes.io/proxy-body-size: 10m"));
    // The proxy keeps sessions sticky: no cookie affinity asked of nginx.
    assert!(!out.contains("nginx.ingress.kubernetes.io/affinity"));
}

#[test]
fn renders_the_gateway_example_without_a_proxy() {
    let (ok, out, err) = render(&["-f", "examples/routing-gateway.yaml"], None);
    assert!(ok, "{err}");
    assert_eq!(
        kinds(&out),
        ["Deployment", "Service", "PodDisruptionBudget", "HTTPRoute"]
    );
    assert!(out.contains("apiVersion: gateway.networking.k8s.io/v1"));
    assert!(out.contains("sessionPersistence:"));
    assert!(!out.contains("notes-proxy"));
}

#[test]
fn rejects_an_ingress_for_an_ip_root_url() {
    let bad = include_str!("../examples/routing-ingress.yaml")
        .replace("https://todos.example.com", "https://192.0.2.7");
    let (ok, out, err) = render(&["-f", "-"], Some(&bad));
    assert!(!ok && out.is_empty());
    assert!(err.contains("routing.ingress"), "{err}");
}

#[test]
fn renders_the_autoscaling_example_with_its_hpa() {
    let (ok, out, err) = render(&["-f", "examples/autoscaling.yaml"], None);
    assert!(ok, "{err}");
    let objects = kinds_and_names(&out);
    assert!(
        objects.contains(&("HorizontalPodAutoscaler".to_string(), "chat".to_string())),
        "{objects:?}"
    );
    assert!(
        out.contains("kind: MeteorApp"),
        "the HPA scales the MeteorApp"
    );
}
