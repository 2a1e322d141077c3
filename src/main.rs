//! The `meteor-operator` command: the controller, its CRD, an offline renderer and the proxy.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "meteor-operator",
    version,
    about = "Runs fleets of Meteor.js apps on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller against the cluster in KUBECONFIG or the in-cluster config.
    Run(meteor_operator::controller::RunArgs),
    /// Print the MeteorApp CustomResourceDefinition as YAML.
    Crd,
    /// Print, offline, every object the operator would create for the MeteorApp in FILE.
    Render {
        /// A YAML file holding one or more MeteorApps ("-" for standard input).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Run the Meteor-aware sticky load balancer.
    Proxy(meteor_proxy::ProxyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => {
            print!("{}", meteor_operator::crd_yaml());
            Ok(())
        }
        Command::Render { file } => {
            meteor_operator::render::render_file(&file).map(|yaml| print!("{yaml}"))
        }
        Command::Run(args) => tokio_main(meteor_operator::controller::run(args)),
        Command::Proxy(args) => tokio_main(meteor_proxy::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn tokio_main(future: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(future);
    // Dropping the runtime would wait for every blocking task, such as a DNS lookup of an API
    // server that does not answer; the exit must not.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}
