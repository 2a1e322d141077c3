//! `kubectl-meteor`: on PATH, `kubectl meteor ...` runs it. Parses the command line, runs one
//! command and exits with its status; nothing else.

use clap::Parser;
use kubectl_meteor::cli::Cli;
use std::io::Write;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    let outcome = kubectl_meteor::run::run(cli).await;
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::stdout().write_all(outcome.stdout.as_bytes());
    let _ = std::io::stderr().write_all(outcome.stderr.as_bytes());
    std::process::exit(outcome.code);
}
