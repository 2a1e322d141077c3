//! One command, start to end: read what it needs, decide, send at most one patch (again, on a
//! conflict, after reading the app afresh), and say what happened in the output asked for.

use crate::actions::{self, Decision};
use crate::cli::{Cli, Command, Output};
use crate::cluster::Cluster;
use crate::report::{AppLine, AppReport};
use crate::{render, sessions};
use k8s_openapi::jiff::Timestamp;
use meteor_operator::api::MeteorApp;
use serde::Serialize;

/// A patch guarded by `resourceVersion` is decided again on the app as re-read this many times
/// when another writer (the operator's status, an autoscaler) got in between.
const ATTEMPTS: usize = 3;

/// What a command prints and its exit status.
#[derive(Debug, Default)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl Outcome {
    fn failed(message: String) -> Self {
        Self {
            stdout: String::new(),
            stderr: format!("error: {message}\n"),
            code: 1,
        }
    }
}

/// What `restart`, `rollback`, `park` and `unpark` report.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ActionReport {
    pub app: String,
    pub namespace: String,
    pub action: &'static str,
    /// `patched`, `unchanged`, `refused` or `dry-run`.
    pub result: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<serde_json::Value>,
    /// The app's generation after the patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

#[derive(Serialize)]
struct Items<T> {
    items: Vec<T>,
}

fn encode<T: Serialize>(output: Output, value: &T) -> String {
    match output {
        Output::Json => serde_json::to_string_pretty(value).expect("reports serialize") + "\n",
        Output::Yaml | Output::Text => serde_norway::to_string(value).expect("reports serialize"),
    }
}

/// Runs `cli` against the cluster it names.
pub async fn run(cli: Cli) -> Outcome {
    let cluster = match Cluster::connect(&cli.target).await {
        Ok(cluster) => cluster,
        Err(error) => return Outcome::failed(format!("{error:#}")),
    };
    match execute(&cluster, cli.output, cli.command).await {
        Ok(outcome) => outcome,
        Err(error) => Outcome::failed(format!("{error:#}")),
    }
}

/// Runs one command against `cluster`.
pub async fn execute(
    cluster: &Cluster,
    output: Output,
    command: Command,
) -> anyhow::Result<Outcome> {
    let now = Timestamp::now();
    let text = |stdout: String| Outcome {
        stdout,
        ..Outcome::default()
    };
    match command {
        Command::Status {
            app: None,
            all_namespaces,
            ..
        } => {
            let mut apps = cluster.list_apps(all_namespaces).await?;
            apps.sort_by(|a, b| {
                (&a.metadata.namespace, &a.metadata.name)
                    .cmp(&(&b.metadata.namespace, &b.metadata.name))
            });
            let lines: Vec<AppLine> = apps.iter().map(AppLine::of).collect();
            Ok(text(match output {
                Output::Text => render::apps(&lines, all_namespaces, now),
                _ => encode(output, &Items { items: lines }),
            }))
        }
        Command::Status {
            app: Some(name),
            no_sessions,
            ..
        } => {
            let app = cluster.app(&name).await?;
            let pods = cluster.pods(&name).await?;
            let sessions = if no_sessions {
                None
            } else {
                Some(sessions::gather(cluster, &app, &pods).await)
            };
            let report = AppReport::of(&app, &pods, sessions);
            Ok(text(match output {
                Output::Text => render::app(&report, now),
                _ => encode(output, &report),
            }))
        }
        Command::Sessions { app: name } => {
            let app = cluster.app(&name).await?;
            let pods = cluster.pods(&name).await?;
            let report = sessions::gather(cluster, &app, &pods).await;
            // Proxies run and none could be read: the counts are unknown, not zero.
            let failed = !report.counted && !report.proxies.is_empty();
            let mut outcome = text(match output {
                Output::Text => render::sessions(&report),
                _ => encode(output, &report),
            });
            if failed {
                outcome.code = 1;
            }
            Ok(outcome)
        }
        Command::Restart {
            app,
            force,
            dry_run,
        } => {
            act(cluster, output, &app, "restart", dry_run, |a| {
                actions::restart(a, now, force)
            })
            .await
        }
        Command::Rollback { app, dry_run } => {
            act(
                cluster,
                output,
                &app,
                "rollback",
                dry_run,
                actions::rollback,
            )
            .await
        }
        Command::Park { app, dry_run } => {
            act(cluster, output, &app, "park", dry_run, actions::park).await
        }
        Command::Unpark {
            app,
            replicas,
            dry_run,
        } => {
            act(cluster, output, &app, "unpark", dry_run, |a| {
                actions::unpark(a, replicas)
            })
            .await
        }
    }
}

/// Reads the app, decides, and sends the patch (unless `dry_run`); on a conflict, reads and
/// decides again, at most [`ATTEMPTS`] times.
async fn act(
    cluster: &Cluster,
    output: Output,
    name: &str,
    action: &'static str,
    dry_run: bool,
    decide: impl Fn(&MeteorApp) -> Decision,
) -> anyhow::Result<Outcome> {
    let mut conflicts = Vec::new();
    for _ in 0..ATTEMPTS {
        let app = cluster.app(name).await?;
        let report = |result, message, patch, generation| ActionReport {
            app: name.to_string(),
            namespace: cluster.namespace.clone(),
            action,
            result,
            message,
            patch,
            generation,
        };
        let report = match decide(&app) {
            Decision::Refuse { message } => report("refused", message, None, None),
            Decision::Nothing { message } => {
                report("unchanged", message, None, app.metadata.generation)
            }
            Decision::Patch { patch, message } if dry_run => report(
                "dry-run",
                format!("(dry run, nothing sent) {message}"),
                Some(patch),
                None,
            ),
            Decision::Patch { patch, message } => match cluster.patch_app(name, &patch).await? {
                Ok(stored) => report("patched", message, Some(patch), stored.metadata.generation),
                Err(conflict) => {
                    conflicts.push(conflict.0);
                    continue;
                }
            },
        };
        return Ok(finish(output, report));
    }
    anyhow::bail!(
        "meteorapp {name} kept changing while {action} was written ({} attempts): {}",
        ATTEMPTS,
        conflicts.last().map(String::as_str).unwrap_or("conflict")
    )
}

fn finish(output: Output, report: ActionReport) -> Outcome {
    let code = i32::from(report.result == "refused");
    match output {
        Output::Text if code != 0 => Outcome {
            stdout: String::new(),
            stderr: format!("error: {}\n", report.message),
            code,
        },
        Output::Text => {
            let mut stdout = report.message.clone() + "\n";
            if let Some(patch) = report.patch.as_ref().filter(|_| report.result == "dry-run") {
                stdout.push_str(&format!("patch: {patch}\n"));
            }
            Outcome {
                stdout,
                stderr: String::new(),
                code,
            }
        }
        _ => Outcome {
            stdout: encode(output, &report),
            stderr: String::new(),
            code,
        },
    }
}
