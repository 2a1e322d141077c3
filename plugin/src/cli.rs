//! The command line: the commands, and the kubeconfig, context and namespace flags kubectl
//! plugins take. Parsing only; nothing here talks to a cluster.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-meteor",
    bin_name = "kubectl meteor",
    version,
    about = "Status, sessions, restart, rollback and parking of MeteorApps (meteorfleet.dev)",
    after_help = "The kubeconfig is found as kubectl finds it: --kubeconfig, else $KUBECONFIG, else \
                  ~/.kube/config, else the in-cluster service account."
)]
pub struct Cli {
    #[command(flatten)]
    pub target: Target,
    /// Output format: plain text (default), json or yaml.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text, global = true, hide_default_value = true)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

/// Where to send requests, as kubectl's own flags say it.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The kubeconfig cluster to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub cluster: Option<String>,
    /// The kubeconfig user to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub user: Option<String>,
    /// The namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NS")]
    pub namespace: Option<String>,
    /// Longest any one request may take, answer read in full (e.g. 10s, 1m; 0 is not allowed).
    #[arg(long, global = true, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    #[value(hide = true)]
    Text,
    Json,
    Yaml,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The `kubectl get meteor` view; with APP also its conditions, rollout, autoscaler, pods
    /// (with their template) and open sessions per pod.
    Status {
        /// One MeteorApp; without it, every MeteorApp of the namespace.
        app: Option<String>,
        /// Every namespace (without APP).
        #[arg(short = 'A', long, conflicts_with = "app")]
        all_namespaces: bool,
        /// Do not ask the proxies for sessions (no `get pods/proxy`).
        #[arg(long)]
        no_sessions: bool,
    },
    /// Open sessions per app pod, summed over every proxy replica.
    Sessions {
        /// The MeteorApp.
        app: String,
    },
    /// Roll every app and worker pod through the pod template, surge-first, each old pod drained.
    Restart {
        /// The MeteorApp.
        app: String,
        /// Restart even while the app is rolled back (that starts a new attempt of the failed
        /// template).
        #[arg(long)]
        force: bool,
        /// Print the patch; send nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Set spec.image back to the image of the last fully available template.
    Rollback {
        /// The MeteorApp.
        app: String,
        /// Print the patch; send nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Scale the app tier to 0, remembering the replica count for `unpark`.
    Park {
        /// The MeteorApp.
        app: String,
        /// Print the patch; send nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Scale a parked app back to the replicas it had (or --replicas).
    Unpark {
        /// The MeteorApp.
        app: String,
        /// Replicas to return to (default: remembered by `park`, else the autoscaler's minimum,
        /// else 2).
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..=1000))]
        replicas: Option<i32>,
        /// Print the patch; send nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `30s`, `2m`, `1h`, `500ms` or plain seconds, as kubectl's `--request-timeout` takes them.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 30s, 2m or 500ms"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: the unit must be ms, s, m or h")),
    };
    if !(seconds > 0.0 && seconds <= 86_400.0) {
        return Err(format!("{text:?}: must be more than 0 and at most 24h"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_kubectl_writes_them() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn flags_go_before_or_after_the_command() {
        let cli = Cli::try_parse_from([
            "kubectl-meteor",
            "-n",
            "prod",
            "status",
            "todos",
            "--context",
            "kind",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.target.namespace.as_deref(), Some("prod"));
        assert_eq!(cli.target.context.as_deref(), Some("kind"));
        assert_eq!(cli.output, Output::Json);
        assert!(matches!(cli.command, Command::Status { app: Some(ref a), .. } if a == "todos"));
        assert!(Cli::try_parse_from(["kubectl-meteor", "status", "todos", "-A"]).is_err());
        assert!(
            Cli::try_parse_from(["kubectl-meteor", "unpark", "todos", "--replicas", "0"]).is_err()
        );
    }
}
