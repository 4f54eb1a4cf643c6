//! `kubectl-infergate`, the kubectl plugin: put it on PATH and run `kubectl infergate ...`.
//! See [`infergate_operator::cli_plugin`] and operator/README.md for commands and exit codes.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Arg, CommandFactory, FromArgMatches};
use infergate_operator::cli_plugin::{self, Cli, ExitStatus};
use infergate_protocol::process::{init_logging, LogFormat};
use infergate_protocol::server_flags::LOG_FORMAT;

/// The plugin's output is for people: only warnings and errors are logged unless `RUST_LOG`
/// asks for more.
const DEFAULT_FILTER: &str = "warn";

/// `--log-format`, the option every infergate binary has, added to the plugin's own.
const LOG_FORMAT_ARG: &str = "log_format";

fn command() -> clap::Command {
    Cli::command().arg(
        Arg::new(LOG_FORMAT_ARG)
            .long("log-format")
            .env(LOG_FORMAT.env)
            .global(true)
            .value_parser(clap::builder::EnumValueParser::<LogFormat>::new())
            .default_value("text")
            .help("How logs (stderr) are written; RUST_LOG picks what is logged (default: warn)"),
    )
}

fn parse() -> Result<(Cli, LogFormat), clap::Error> {
    let matches = command().try_get_matches()?;
    let format = matches.get_one::<LogFormat>(LOG_FORMAT_ARG).copied().unwrap_or_default();
    Ok((Cli::from_arg_matches(&matches)?, format))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match parse() {
        Ok((cli, format)) => {
            init_logging(format, DEFAULT_FILTER);
            cli
        }
        Err(error) => {
            // clap exits 2 on usage errors; 2 means "still progressing" here.
            let informational = matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
            let _ = error.print();
            return if informational { ExitStatus::Healthy.into() } else { ExitStatus::Usage.into() };
        }
    };
    cli_plugin::run(cli).await.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_is_accepted_before_and_after_the_subcommand() {
        for args in [
            &["kubectl-infergate", "--log-format", "json", "status", "x"][..],
            &["kubectl-infergate", "status", "x", "--log-format", "json"][..],
        ] {
            let matches = command().try_get_matches_from(args).unwrap();
            assert_eq!(matches.get_one::<LogFormat>(LOG_FORMAT_ARG), Some(&LogFormat::Json), "{args:?}");
            Cli::from_arg_matches(&matches).unwrap();
        }
        let matches = command().try_get_matches_from(["kubectl-infergate", "status", "x"]).unwrap();
        assert_eq!(matches.get_one::<LogFormat>(LOG_FORMAT_ARG), Some(&LogFormat::Text));
        assert!(command().try_get_matches_from(["kubectl-infergate", "--log-format", "xml", "status", "x"]).is_err());
    }
}
