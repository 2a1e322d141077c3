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

#[test]
fn renders_the_minimal_example() {
    let (ok, out, err) = render(&["-f", "examples/minimal.yaml"], None);
    assert!(ok, "{err}");
    assert_eq!(
        kinds(&out),
        ["Deployment", "Service", "PodDisruptionBudget"]
    );
    assert!(out.contains("name: todos"));
}

#[test]
fn renders_the_production_example_with_its_worker_tier() {
    let (ok, out, err) = render(&["-f", "examples/production.yaml"], None);
    assert!(ok, "{err}");
    assert_eq!(
        kinds(&out),
        ["Deployment", "Service", "Deployment", "PodDisruptionBudget"]
    );
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
