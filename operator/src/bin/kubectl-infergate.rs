//! `kubectl-infergate`, the kubectl plugin: put it on PATH and run `kubectl infergate ...`.
//! See [`infergate_operator::cli_plugin`] and operator/README.md for commands and exit codes.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;
use infergate_operator::cli_plugin::{self, Cli, ExitStatus};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // clap exits 2 on usage errors; 2 means "still progressing" here.
            let informational = matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
            let _ = error.print();
            return if informational { ExitStatus::Healthy.into() } else { ExitStatus::Usage.into() };
        }
    };
    cli_plugin::run(cli).await.into()
}
