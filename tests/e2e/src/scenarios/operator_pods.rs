//! The operator as users install it (`operator/deploy/operator.yaml`): two replicas in pods
//! with their own service account, RBAC and a Lease; and a leader killed mid-analysis.

use std::time::Duration;

use infergate_operator::crd::{Phase, RolloutResult, RolloutStep};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::ResourceExt;

use serde_json::json;

use super::support::{
    apply_and_wait_healthy, gated_manifest, namespace, records, set, status, summary, wait_status, wait_step,
};
use super::Suite;
use crate::bail;
use crate::error::{Error, Result};
use crate::{process, wait};

pub const OPERATOR_NAMESPACE: &str = "infergate-system";
const OPERATOR_NAME: &str = "infergate-operator";
const NAMESPACE: &str = "e2e-leader";
/// The watch in `leader_killed_during_watch`: longer than a Lease takeover plus a window
/// (8 s), so the next leader measures at least one window of the watch.
const WATCH_SECONDS: u32 = 45;

/// Setup for every scenario: `kubectl apply` of the operator's manifest, then two available
/// replicas.
pub async fn install(suite: &Suite) -> Result<()> {
    suite.kubectl.apply_file(OPERATOR_NAMESPACE, &suite.repo.join("operator/deploy/operator.yaml")).await?;
    let deployments: Api<Deployment> = Api::namespaced(suite.client.clone(), OPERATOR_NAMESPACE);
    wait::until("2 available operator replicas", Duration::from_secs(90), || async {
        let d = deployments.get(OPERATOR_NAME).await?;
        Ok((d.status.and_then(|s| s.available_replicas) == Some(2)).then_some(()))
    })
    .await
}

/// Exactly one of the operator's pods holds the Lease.
pub async fn leader_elected(suite: &Suite) -> Result<()> {
    let holder = leader(suite).await?;
    let pods: Api<Pod> = Api::namespaced(suite.client.clone(), OPERATOR_NAMESPACE);
    let names: Vec<String> = pods.list(&ListParams::default()).await?.items.iter().map(|p| p.name_any()).collect();
    if names.len() != 2 || !names.contains(&holder) {
        bail!("the Lease is held by {holder:?}; operator pods: {names:?}");
    }
    Ok(())
}

/// The pod name holding the operator's Lease.
async fn leader(suite: &Suite) -> Result<String> {
    let leases: Api<Lease> = Api::namespaced(suite.client.clone(), OPERATOR_NAMESPACE);
    wait::until("an operator leader", Duration::from_secs(60), || async {
        let lease = leases.get_opt(OPERATOR_NAME).await?;
        Ok(lease.and_then(|l| l.spec).and_then(|s| s.holder_identity).filter(|h| !h.is_empty()))
    })
    .await
}

pub async fn leader_killed_mid_analysis(suite: &Suite) -> Result<()> {
    let name = "restart";
    namespace(suite, NAMESPACE).await?;
    let v1 =
        apply_and_wait_healthy(suite, NAMESPACE, &gated_manifest(name, "v1", &[], None), None, Duration::from_secs(90))
            .await?;
    suite.kubectl.apply(NAMESPACE, &gated_manifest(name, "v2", &[], None).to_string()).await?;
    // Mid-analysis: one window of the new revision passed and is recorded in status.
    let mid = wait_status(&suite.client, NAMESPACE, name, "one passed analysis window", Duration::from_secs(90), |s| {
        s.rollout.as_ref().is_some_and(|r| r.step == RolloutStep::Analyzing)
            && s.analysis.as_ref().is_some_and(|a| a.successful_checks >= 1)
    })
    .await?;
    let v2 = mid.rollout.map(|r| r.revision).unwrap_or_default();

    kill_leader(suite).await?;

    let done = wait_status(
        &suite.client,
        NAMESPACE,
        name,
        "the rollout finished after the kill",
        Duration::from_secs(150),
        |s| s.phase == Some(Phase::Healthy) && s.active_revision.as_deref() == Some(v2.as_str()),
    )
    .await?;
    let promotions = done.history.iter().filter(|r| r.revision == v2 && r.result == RolloutResult::Promoted).count();
    if promotions != 1 {
        bail!("revision {v2} has {promotions} promotions in the history (expected exactly 1)");
    }
    if done.previous_revision.as_deref() != Some(v1.as_str()) {
        bail!("previous revision is {:?}, expected {v1}", done.previous_revision);
    }
    let after = status(&suite.client, NAMESPACE, name).await?;
    if after.failed_revision.is_some() {
        bail!("a revision was marked failed: {:?}", after.failed_revision);
    }
    Ok(())
}

/// Kills the process of the operator pod holding the Lease, as a node failure would.
async fn kill_leader(suite: &Suite) -> Result<()> {
    let holder = leader(suite).await?;
    let pid_file = suite.cluster.dir.join("pids").join(format!("pod.{OPERATOR_NAMESPACE}.{holder}"));
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .map_err(Error::io(format!("reading {}", pid_file.display())))?
        .trim()
        .parse()
        .map_err(|e| Error::Failed(format!("pid file {}: {e}", pid_file.display())))?;
    process::kill(pid);
    Ok(())
}

/// The leader dies during the post-promotion watch; the next leader finishes the watch from
/// the times in status: one promotion, nothing marked failed.
pub async fn leader_killed_during_watch(suite: &Suite) -> Result<()> {
    let name = "watch-restart";
    namespace(suite, NAMESPACE).await?;
    let before = status(&suite.client, NAMESPACE, name).await.ok().and_then(|s| s.active_revision);
    let old = match before {
        Some(revision) => revision,
        None => {
            let manifest = gated_manifest(name, "v1", &[], None);
            apply_and_wait_healthy(suite, NAMESPACE, &manifest, None, Duration::from_secs(90)).await?
        }
    };
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let mut manifest = gated_manifest(name, &format!("watched-{millis}"), &[], None);
    // Longer than a Lease takeover, so the next leader sees the watch still running.
    set(&mut manifest, "/spec/rollout/postPromotionWatchSeconds", json!(WATCH_SECONDS));
    suite.kubectl.apply(NAMESPACE, &manifest.to_string()).await?;
    let watching = wait_step(&suite.client, NAMESPACE, name, RolloutStep::Watching, Duration::from_secs(90)).await?;
    let new = watching.rollout.map(|r| r.revision).unwrap_or_default();
    kill_leader(suite).await?;
    let killed_at = k8s_openapi::jiff::Timestamp::now().as_second();

    let done = wait_status(
        &suite.client,
        NAMESPACE,
        name,
        "the watch finished after the kill",
        Duration::from_secs(u64::from(WATCH_SECONDS) + 60),
        |s| s.rollout.is_none() && s.phase == Some(Phase::Healthy),
    )
    .await?;
    if done.active_revision.as_deref() != Some(new.as_str()) || done.failed_revision.is_some() {
        bail!("the watched revision {new} does not serve, or one is marked failed: {}", summary(Some(&done)));
    }
    let promotions = records(&done, &new, RolloutResult::Promoted);
    if promotions != 1 || done.history.iter().any(|r| r.revision == new && r.result != RolloutResult::Promoted) {
        bail!("revision {new}: {promotions} promotions, history {:?} (expected exactly 1 record)", done.history);
    }
    if done.previous_revision.as_deref() != Some(old.as_str()) {
        bail!("previous revision is {:?}, expected {old}", done.previous_revision);
    }
    // The next leader went on measuring the watch, not only waiting out its clock.
    let measured_after_kill = done.measurements.iter().any(|m| m.revision == new && m.time.0.as_second() > killed_at);
    if !measured_after_kill {
        bail!("no window of {new} was measured after the leader was killed: {:?}", done.measurements);
    }
    Ok(())
}
