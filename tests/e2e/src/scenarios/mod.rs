//! The end-to-end scenarios, run in order against one local cluster with the operator
//! installed from `operator/deploy/operator.yaml` (two replicas, leader election, its own
//! service account and RBAC). Each prints one line; the suite ends with `N passed, M failed`.

mod autoscaling;
mod controls;
mod example;
mod failures;
mod helm;
mod operator_pods;
mod plugin;
mod prometheus;
mod rollouts;
mod support;
mod validation;
mod watch;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use kube::Client;

use crate::cluster::Cluster;
use crate::error::Result;
use crate::kubectl::Kubectl;

pub struct Suite {
    pub cluster: Cluster,
    pub client: Client,
    pub kubectl: Kubectl,
    /// The repository root (manifests, CRDs, examples).
    pub repo: PathBuf,
    /// Debian's prometheus binary, for the Prometheus gate source.
    pub prometheus_bin: PathBuf,
}

type ScenarioFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + 'a>>;
type Scenario = for<'a> fn(&'a Suite) -> ScenarioFuture<'a>;

/// Name, time limit, body. Order matters: later scenarios build on the operator installed by
/// the earlier ones.
fn scenarios() -> Vec<(&'static str, Duration, Scenario)> {
    vec![
        ("crd-rejects-invalid-resources", Duration::from_secs(60), |s| Box::pin(validation::rejects_invalid(s))),
        ("operator-runs-with-leader-election", Duration::from_secs(60), |s| Box::pin(operator_pods::leader_elected(s))),
        ("example-becomes-healthy-and-serves", Duration::from_secs(180), |s| Box::pin(example::healthy_and_serving(s))),
        ("good-revision-promoted-zero-client-errors", Duration::from_secs(240), |s| {
            Box::pin(rollouts::good_promoted(s))
        }),
        ("slow-revision-rolled-back", Duration::from_secs(180), |s| Box::pin(rollouts::slow_rolled_back(s))),
        ("erroring-revision-rolled-back", Duration::from_secs(180), |s| Box::pin(rollouts::erroring_rolled_back(s))),
        ("all-errors-revision-rolled-back", Duration::from_secs(180), |s| {
            Box::pin(failures::all_errors_rolled_back(s))
        }),
        ("crash-looping-revision-rolled-back", Duration::from_secs(150), |s| {
            Box::pin(failures::crash_looping_rolled_back(s))
        }),
        ("hanging-revision-rolled-back", Duration::from_secs(150), |s| Box::pin(failures::hanging_rolled_back(s))),
        ("hanging-revision-default-probe-timeout-rolled-back", Duration::from_secs(150), |s| {
            Box::pin(failures::hanging_with_default_probe_timeout_rolled_back(s))
        }),
        ("leader-killed-mid-analysis-rollout-completes", Duration::from_secs(240), |s| {
            Box::pin(operator_pods::leader_killed_mid_analysis(s))
        }),
        ("operator-restart-during-watch", Duration::from_secs(150), |s| {
            Box::pin(operator_pods::leader_killed_during_watch(s))
        }),
        ("post-promotion-regression-flipped-back", Duration::from_secs(270), |s| {
            Box::pin(watch::regression_flipped_back(s))
        }),
        ("two-replica-active-vs-one-replica-preview-good-revision-promoted", Duration::from_secs(240), |s| {
            Box::pin(watch::two_vs_one_replica_good_promoted(s))
        }),
        // The controls, in order on one resource: each leaves what the next starts from.
        ("control-promote-at-awaiting-promotion", Duration::from_secs(180), |s| Box::pin(controls::promote(s))),
        ("control-abort-during-analysis", Duration::from_secs(150), |s| Box::pin(controls::abort_during_analysis(s))),
        ("control-abort-during-watch", Duration::from_secs(180), |s| Box::pin(controls::abort_during_watch(s))),
        ("control-rollback-after-promotion", Duration::from_secs(240), |s| {
            Box::pin(controls::rollback_after_promotion(s))
        }),
        ("control-retry-rolled-back-revision", Duration::from_secs(240), |s| Box::pin(controls::retry(s))),
        // `kubectl infergate`, the plugin, drives the same controls on its own resource.
        ("plugin-promote-at-awaiting-promotion", Duration::from_secs(200), |s| Box::pin(plugin::promote(s))),
        ("plugin-abort-during-analysis", Duration::from_secs(180), |s| Box::pin(plugin::abort(s))),
        ("prometheus-gate-promotes-and-rolls-back", Duration::from_secs(300), |s| Box::pin(prometheus::gate(s))),
        ("autoscaling-burst-scales-up-idle-scales-down", Duration::from_secs(300), |s| {
            Box::pin(autoscaling::burst_scales_up_and_idle_scales_down(s))
        }),
        ("autoscaling-kubectl-scale-through-scale-subresource", Duration::from_secs(150), |s| {
            Box::pin(autoscaling::kubectl_scale_drives_the_scale_subresource(s))
        }),
        ("delete-removes-every-child", Duration::from_secs(120), |s| Box::pin(example::delete_removes_children(s))),
        // Last: it replaces the manifest-installed operator with the chart's and uninstalls it.
        ("helm-install-upgrade-uninstall", Duration::from_secs(300), |s| Box::pin(helm::install_upgrade_uninstall(s))),
    ]
}

/// Installs the operator as users do; every scenario needs it.
pub async fn setup(suite: &Suite) -> Result<()> {
    operator_pods::install(suite).await
}

/// Runs every scenario (or those whose name contains `filter`, or one of its `|`-separated
/// parts); returns (passed, failed).
pub async fn run(suite: &Suite, filter: Option<&str>) -> (usize, usize) {
    let (mut passed, mut failed) = (0, 0);
    for (name, limit, scenario) in scenarios() {
        if filter.is_some_and(|f| !f.split('|').any(|part| name.contains(part))) {
            continue;
        }
        let started = Instant::now();
        let outcome = match tokio::time::timeout(limit, scenario(suite)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(crate::error::Error::Failed(format!("did not finish within {} s", limit.as_secs()))),
        };
        let seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => {
                passed += 1;
                println!("PASS {name} ({seconds:.1} s)");
            }
            Err(e) => {
                failed += 1;
                println!("FAIL {name} ({seconds:.1} s): {e}");
            }
        }
    }
    (passed, failed)
}
