//! `meteor-proxy`: the sticky proxy alone, exactly `meteor-operator proxy` (same flags, same
//! `run`); the proxy crate's integration tests run it. The image ships `meteor-operator` only.

use clap::Parser;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "meteor-proxy",
    version,
    about = "Runs the Meteor-aware sticky load balancer"
)]
struct Cli {
    #[command(flatten)]
    args: meteor_proxy::ProxyArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(meteor_proxy::run(cli.args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
