//! The command line of `kubectl infergate` and what each command does.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio::time::Instant;

use super::cluster::{connect, Target};
use super::outcome::{outcome, ExitStatus, Outcome};
use super::render::{render, View};
use super::request::{plan, settled, Control, Settled};
use super::{duration, PluginError};
use crate::crd::InferenceDeployment;

/// How often `--watch` and `--wait` read the resource again.
const POLL: Duration = Duration::from_secs(1);

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-infergate",
    bin_name = "kubectl infergate",
    version,
    about = "Watch and drive InferenceDeployment rollouts",
    after_help = "Exit codes: 0 healthy / the requested outcome, 1 degraded, aborted or rolled back, \
                  2 still progressing when the timeout passed, 3 usage error or a refused request, \
                  4 API or kubeconfig error (not found included)."
)]
pub struct Cli {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// Namespace of the resource (default: the context's namespace).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Sub,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Tree view: phase, step, revisions with their pods, the last measurements, history.
    Get {
        name: String,
        /// Refresh in place until interrupted (or --timeout).
        #[arg(short = 'w', long)]
        watch: bool,
        /// Stop watching after this long (e.g. 30s, 5m).
        #[arg(long)]
        timeout: Option<String>,
    },
    /// One line, and an exit code for scripts.
    Status {
        name: String,
        /// Wait until the resource is healthy, degraded or rolled back.
        #[arg(short = 'w', long)]
        watch: bool,
        /// With --watch: give up (exit 2) after this long (e.g. 30s, 5m).
        #[arg(long)]
        timeout: Option<String>,
    },
    /// Promote the preview now (skip the remaining analysis, or end the post-promotion watch).
    Promote(ControlArgs),
    /// Stop the rollout: the preview is scaled to zero, the active revision keeps serving.
    Abort(ControlArgs),
    /// Roll out the failed revision again, or restart a paused analysis.
    Retry(ControlArgs),
    /// Go back to the previous revision (the rollback annotation).
    Undo {
        #[command(flatten)]
        control: ControlArgs,
        /// Fail unless this is the revision undo goes back to.
        #[arg(long)]
        to_revision: Option<String>,
    },
}

#[derive(Args, Debug)]
struct ControlArgs {
    name: String,
    /// Wait until the operator acted and the rollout ended.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up (exit 2) after this long.
    #[arg(long, default_value = "5m")]
    timeout: String,
}

/// Runs the command; errors are printed to stderr and become their exit code.
pub async fn run(cli: Cli) -> ExitStatus {
    match execute(cli).await {
        Ok(status) => status,
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_status()
        }
    }
}

async fn execute(cli: Cli) -> Result<ExitStatus, PluginError> {
    // Flags are checked before any connection is made.
    let (control, name, wait, timeout) = match &cli.command {
        Sub::Get { name, watch, timeout } => {
            let timeout = timeout.as_deref().map(duration::parse).transpose()?;
            let target = connect(cli.kubeconfig.as_deref(), cli.context.as_deref(), cli.namespace.as_deref()).await?;
            return get(&target, name, *watch, timeout).await;
        }
        Sub::Status { name, watch, timeout } => {
            let timeout = timeout.as_deref().map(duration::parse).transpose()?;
            let target = connect(cli.kubeconfig.as_deref(), cli.context.as_deref(), cli.namespace.as_deref()).await?;
            return status(&target, name, *watch, timeout).await;
        }
        Sub::Promote(c) => (Control::Promote, &c.name, c.wait, &c.timeout),
        Sub::Abort(c) => (Control::Abort, &c.name, c.wait, &c.timeout),
        Sub::Retry(c) => (Control::Retry, &c.name, c.wait, &c.timeout),
        Sub::Undo { control, to_revision } => {
            (Control::Undo { to_revision: to_revision.clone() }, &control.name, control.wait, &control.timeout)
        }
    };
    let timeout = duration::parse(timeout)?;
    let target = connect(cli.kubeconfig.as_deref(), cli.context.as_deref(), cli.namespace.as_deref()).await?;
    control_command(&target, name, &control, wait.then_some(timeout)).await
}

fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.map(|t| Instant::now() + t)
}

fn past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

async fn frame(target: &Target, name: &str) -> Result<String, PluginError> {
    let resource = target.resource(name).await?;
    let pods = target.pods(name).await?;
    Ok(render(&View {
        name,
        namespace: &target.namespace,
        generation: resource.metadata.generation,
        slo: &resource.spec.slo,
        status: resource.status.as_ref(),
        pods: &pods,
    }))
}

async fn get(target: &Target, name: &str, watch: bool, timeout: Option<Duration>) -> Result<ExitStatus, PluginError> {
    let mut out = std::io::stdout();
    let first = frame(target, name).await?;
    if !watch {
        out.write_all(first.as_bytes())?;
        return Ok(ExitStatus::Healthy);
    }
    // On a terminal the tree is redrawn in place; into a pipe each changed tree is appended.
    let terminal = out.is_terminal();
    let until = deadline(timeout);
    let mut last = String::new();
    let mut text = first;
    loop {
        if text != last {
            if terminal {
                out.write_all(b"\x1b[H\x1b[2J")?;
            } else if !last.is_empty() {
                out.write_all(b"---\n")?;
            }
            out.write_all(text.as_bytes())?;
            out.flush()?;
            last = text;
        }
        if past(until) {
            return Ok(ExitStatus::Healthy);
        }
        tokio::time::sleep(POLL).await;
        text = frame(target, name).await?;
    }
}

async fn current_outcome(target: &Target, name: &str) -> Result<(Outcome, InferenceDeployment), PluginError> {
    let resource = target.resource(name).await?;
    Ok((outcome(name, resource.metadata.generation, resource.status.as_ref()), resource))
}

async fn status(
    target: &Target,
    name: &str,
    watch: bool,
    timeout: Option<Duration>,
) -> Result<ExitStatus, PluginError> {
    let (mut now, _) = current_outcome(target, name).await?;
    println!("{}", now.line());
    if !watch {
        return Ok(now.exit_status());
    }
    let until = deadline(timeout);
    while !now.is_final() {
        if past(until) {
            eprintln!("timed out after {} s while progressing", timeout.map_or(0, |t| t.as_secs()));
            return Ok(ExitStatus::Progressing);
        }
        tokio::time::sleep(POLL).await;
        let (next, _) = current_outcome(target, name).await?;
        if next != now {
            println!("{}", next.line());
        }
        now = next;
    }
    Ok(now.exit_status())
}

async fn control_command(
    target: &Target,
    name: &str,
    control: &Control,
    wait: Option<Duration>,
) -> Result<ExitStatus, PluginError> {
    let resource = target.resource(name).await?;
    let request = plan(control, &resource.status.clone().unwrap_or_default())?;
    let annotation = request.command.annotation();
    target.annotate(name, annotation).await?;
    println!("{}", request.description);
    println!("annotated inferencedeployment {}/{name} {annotation}=true", target.namespace);
    let Some(timeout) = wait else {
        return Ok(ExitStatus::Healthy);
    };
    let until = deadline(Some(timeout));
    let mut shown = String::new();
    loop {
        let resource = target.resource(name).await?;
        let present = resource.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(annotation));
        let s = resource.status.clone().unwrap_or_default();
        match settled(&request, present, &s) {
            Some(Settled::Done(line)) => {
                println!("{line}");
                return Ok(ExitStatus::Healthy);
            }
            Some(Settled::Otherwise(line)) => {
                println!("{line}");
                return Ok(ExitStatus::Failed);
            }
            None => {
                let line = outcome(name, resource.metadata.generation, Some(&s)).line().to_string();
                if line != shown {
                    println!("{line}");
                    shown = line;
                }
            }
        }
        if past(until) {
            let waiting = if present { "for the operator to act on the annotation" } else { "for the rollout to end" };
            eprintln!("timed out after {} s waiting {waiting}", timeout.as_secs());
            return Ok(ExitStatus::Progressing);
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere_and_undo_takes_a_revision() {
        let cli = Cli::try_parse_from([
            "kubectl-infergate",
            "undo",
            "chat",
            "-n",
            "ml",
            "--context",
            "kind",
            "--to-revision",
            "abc",
        ]);
        let Ok(cli) = cli else { panic!("rejected: {cli:?}") };
        assert_eq!(cli.namespace.as_deref(), Some("ml"));
        assert_eq!(cli.context.as_deref(), Some("kind"));
        assert!(matches!(cli.command, Sub::Undo { to_revision: Some(ref r), .. } if r == "abc"));
    }

    #[test]
    fn a_name_is_required() {
        assert!(Cli::try_parse_from(["kubectl-infergate", "promote"]).is_err());
    }
}
