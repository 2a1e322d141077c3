//! The controller: watches MeteorApps and what they own, reconciles, reports status.

/// Command-line configuration of `meteor-operator run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {}

/// Runs the controller until SIGTERM.
pub async fn run(_args: RunArgs) -> anyhow::Result<()> {
    anyhow::bail!("the controller is not built yet")
}
