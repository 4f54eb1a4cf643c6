//! `infergate-operator`: flags in, [`infergate_operator::run`] out.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use infergate_operator::run::{self, Config, LeaderElection};
use infergate_operator::telemetry::{self, LogFormat};

#[derive(Parser, Debug)]
#[command(version, about = "Reconciles InferenceDeployments into infergate-server revisions")]
struct Args {
    /// Watch only this namespace; the whole cluster when unset.
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address of /metrics and /health.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Campaign for a Lease before reconciling (required when running more than one replica).
    #[arg(long, env = "LEADER_ELECTION")]
    leader_election: bool,
    #[arg(long, env = "LEASE_NAME", default_value = "infergate-operator")]
    lease_name: String,
    /// Namespace of the Lease: the operator's own namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This instance's identity in the Lease and in Events.
    #[arg(long, env = "POD_NAME", default_value = "infergate-operator")]
    identity: String,
    #[arg(long, env = infergate_protocol::server_flags::LOG_FORMAT.env, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    telemetry::init(args.log_format);
    let config = Config {
        namespace: args.namespace,
        http_addr: args.http_addr,
        leader_election: args
            .leader_election
            .then_some(LeaderElection { lease_name: args.lease_name, lease_namespace: args.lease_namespace }),
        identity: args.identity,
    };
    match run::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, kind = error.metric_label(), "operator stopped");
            ExitCode::FAILURE
        }
    }
}
