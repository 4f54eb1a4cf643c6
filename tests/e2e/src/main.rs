//! `infergate-e2e`: `up` / `down` a local cluster, the `pod-runner` daemon, and `run` (the
//! whole end-to-end suite on a fresh cluster, stopped afterwards whatever happens).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use infergate_e2e::cluster::{self, Cluster, TokenIssuer};
use infergate_e2e::error::{Error, Result};
use infergate_e2e::kubectl::Kubectl;
use infergate_e2e::pod_runner::{self, Runner};
use infergate_e2e::scenarios::{self, Suite};
use infergate_e2e::wait;
use infergate_protocol::process::LogFormat;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;

#[derive(Parser)]
#[command(about = "Local Kubernetes control plane and end-to-end scenarios for infergate")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[arg(long, global = true, env = infergate_protocol::server_flags::LOG_FORMAT.env, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Start a cluster in --dir and print its KUBECONFIG.
    Up(UpArgs),
    /// Stop every process of the cluster in --dir.
    Down {
        #[arg(long)]
        dir: PathBuf,
    },
    /// The kubelet of the KWOK nodes (started by `up`).
    PodRunner(RunnerArgs),
    /// Start a cluster, install the CRD, run the scenarios, stop the cluster.
    Run {
        #[command(flatten)]
        up: UpArgs,
        /// The repository (manifests, CRDs, examples).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[arg(long, default_value = "/usr/bin/prometheus")]
        prometheus_bin: PathBuf,
        /// Only scenarios whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// Leave the cluster running afterwards (for debugging; `down` stops it).
        #[arg(long)]
        keep: bool,
    },
}

#[derive(Args, Clone)]
struct UpArgs {
    #[arg(long)]
    dir: PathBuf,
    /// Folder with etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok.
    #[arg(long)]
    control_plane_bin: PathBuf,
    #[command(flatten)]
    mapping: MappingArgs,
}

#[derive(Args, Clone)]
struct MappingArgs {
    /// IMAGE_NAME=BINARY: what the pod runner starts for pods of that image.
    #[arg(long = "image")]
    images: Vec<String>,
    /// PATH=HOST_PATH: image paths that are host folders (e.g. /models=~/.cache/infergate/models).
    #[arg(long = "mount")]
    mounts: Vec<String>,
}

#[derive(Args)]
struct RunnerArgs {
    #[arg(long)]
    dir: PathBuf,
    #[command(flatten)]
    mapping: MappingArgs,
}

/// kube's client logs every failed request at ERROR; while the harness polls a starting API
/// server those are expected, and real failures come back as errors anyway.
fn init_logs(format: LogFormat, default: &str) {
    infergate_protocol::process::init_logging(format, &format!("{default},kube_client=off"));
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Up(args) => {
            init_logs(cli.log_format, "info");
            up(&args).await.map(|c| {
                println!("cluster up in {}", c.dir.display());
                println!("export KUBECONFIG={}", c.kubeconfig.display());
                true
            })
        }
        Command::Down { dir } => {
            init_logs(cli.log_format, "info");
            let stopped = cluster::down(&dir);
            println!("stopped: {}", if stopped.is_empty() { "nothing".to_string() } else { stopped.join(", ") });
            Ok(true)
        }
        Command::PodRunner(args) => {
            init_logs(cli.log_format, "info");
            pod_runner(args).await.map(|_| true)
        }
        Command::Run { up: up_args, repo, prometheus_bin, filter, keep } => {
            init_logs(cli.log_format, "warn");
            let dir = up_args.dir.clone();
            let outcome = tokio::select! {
                outcome = run(&up_args, repo, prometheus_bin, filter.as_deref()) => outcome,
                _ = infergate_protocol::process::shutdown_signal() => Err(Error::Failed("interrupted".into())),
            };
            if keep {
                println!("cluster left running: infergate-e2e down --dir {}", dir.display());
            } else {
                cluster::down(&dir);
            }
            outcome
        }
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error ({}): {e}", e.metric_label());
            ExitCode::FAILURE
        }
    }
}

async fn up(args: &UpArgs) -> Result<Cluster> {
    let options = cluster::Options {
        dir: absolute(&args.dir)?,
        control_plane_bin: absolute(&args.control_plane_bin)?,
        images: args.mapping.images.clone(),
        mounts: args.mapping.mounts.clone(),
    };
    let started = Instant::now();
    let outcome = cluster::up(&options).await;
    if outcome.is_err() {
        // A half-started cluster is stopped, not leaked.
        cluster::down(&options.dir);
    } else {
        eprintln!("cluster started in {:.1} s", started.elapsed().as_secs_f64());
    }
    outcome
}

fn absolute(path: &std::path::Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(Error::io(format!("resolving {}", path.display())))
}

async fn pod_runner(args: RunnerArgs) -> Result<()> {
    let cluster = Cluster::load(&args.dir)?;
    let client = cluster.client().await?;
    let mapping = pod_runner::parse_mapping(&args.mapping.images, &args.mapping.mounts)?;
    let tokens = TokenIssuer { client: client.clone(), server: cluster.server.clone(), ca: cluster.ca.clone() };
    let runner = Arc::new(Runner::new(client, mapping, args.dir, Some(tokens))?);
    runner.run().await
}

async fn run(args: &UpArgs, repo: PathBuf, prometheus_bin: PathBuf, filter: Option<&str>) -> Result<bool> {
    let started = Instant::now();
    let cluster = up(args).await?;
    let client = cluster.client().await?;
    let kubectl = Kubectl { kubeconfig: cluster.kubeconfig.clone() };
    let repo = absolute(&repo)?;
    kubectl.run(&["apply", "-f", &repo.join("crds").to_string_lossy()], None).await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    wait::until("the CRD Established", Duration::from_secs(30), || async {
        let crd = crds.get("inferencedeployments.infergate.dev").await?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        Ok(established.then_some(()))
    })
    .await?;
    let logs = cluster.dir.join("logs");
    let suite = Suite { cluster, client, kubectl, repo, prometheus_bin };
    scenarios::setup(&suite).await?;
    println!("cluster and operator ready in {:.1} s (logs: {})", started.elapsed().as_secs_f64(), logs.display());
    let (passed, failed) = scenarios::run(&suite, filter).await;
    println!("{passed} passed, {failed} failed ({:.0} s)", started.elapsed().as_secs_f64());
    Ok(failed == 0 && passed > 0)
}
