//! The Meteor-aware sticky load balancer (`meteor-operator proxy`). Being built (issue 4).

/// Command-line configuration of the proxy.
#[derive(clap::Args, Debug, Clone)]
pub struct ProxyArgs {}

/// Runs the proxy until SIGTERM.
pub async fn run(_args: ProxyArgs) -> anyhow::Result<()> {
    anyhow::bail!("the proxy is not built yet")
}
