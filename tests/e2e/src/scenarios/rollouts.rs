//! Gated blue-green rollouts with the Direct gate source: a good revision is promoted while
//! clients stream through the Service without one failure; a slow one and an erroring one
//! are rolled back on their own, their previews scaled to zero.

use std::time::Duration;

use infergate_operator::crd::{InferenceDeploymentStatus, Phase, Verdict};
use infergate_operator::names;

use super::support::{
    apply_and_wait_healthy, events, expect_all_ok, expect_rolled_back_conditions, gated_manifest, namespace,
    revision_pods, revision_replicas, status, summary, wait_status, ClientLoad, ERROR_RATE, SLOW_TTFT_DELAY_MS,
    SLO_TTFT_MS,
};
use super::Suite;
use crate::bail;
use crate::error::Result;
use crate::wait;

const NAMESPACE: &str = "e2e-rollout";
const NAME: &str = "chat";

/// The serving revision, creating the resource first if an earlier scenario did not.
pub async fn serving(suite: &Suite, namespace_name: &str, name: &str, prometheus: Option<&str>) -> Result<String> {
    namespace(suite, namespace_name).await?;
    let current = status(&suite.client, namespace_name, name).await.ok();
    match current.as_ref().and_then(|s| s.active_revision.clone()) {
        Some(revision) => Ok(revision),
        None => {
            let manifest = gated_manifest(name, "v1", &[], prometheus);
            apply_and_wait_healthy(suite, namespace_name, &manifest, None, Duration::from_secs(90)).await
        }
    }
}

pub async fn good_promoted(suite: &Suite) -> Result<()> {
    promote_under_client_load(suite, NAMESPACE, NAME, None).await.map(|_| ())
}

/// Rolls out a new good variant while clients stream through the active Service; returns the
/// new revision once the old one's pods are gone.
pub async fn promote_under_client_load(
    suite: &Suite,
    namespace_name: &str,
    name: &str,
    prometheus: Option<&str>,
) -> Result<String> {
    let old = serving(suite, namespace_name, name, prometheus).await?;
    let load = ClientLoad::start(&suite.client, namespace_name, &names::active_service_name(name), 2, 500);
    let variant = format!("good-{}", &old[..old.len().min(6)]);
    let outcome = async {
        let manifest = gated_manifest(name, &variant, &[], prometheus);
        let new =
            apply_and_wait_healthy(suite, namespace_name, &manifest, Some(&old), Duration::from_secs(150)).await?;
        // Keep the clients going until the old revision's pods have drained and gone.
        wait::until("the old revision's pods gone", Duration::from_secs(60), || async {
            Ok((revision_pods(&suite.client, namespace_name, name, &old).await? == 0).then_some(()))
        })
        .await?;
        Ok::<_, crate::error::Error>(new)
    }
    .await;
    let records = load.finish().await;
    let new = outcome?;
    expect_all_ok(&records, 20)?;
    if revision_replicas(&suite.client, namespace_name, name, &old).await?.unwrap_or(0) != 0 {
        bail!("the old revision {old} is still scaled up");
    }
    let events = events(&suite.client, namespace_name, name).await?;
    if !events.iter().any(|e| e.starts_with("Promoted")) {
        bail!("no Promoted event; events: {events:?}");
    }
    Ok(new)
}

pub async fn slow_rolled_back(suite: &Suite) -> Result<()> {
    let s = roll_back(suite, NAMESPACE, NAME, "slow", &["--inject-ttft-delay-ms", SLOW_TTFT_DELAY_MS], None).await?;
    let ttft = s.last_measurement.as_ref().and_then(|m| m.ttft_p95_ms).unwrap_or(0.0);
    if ttft <= f64::from(SLO_TTFT_MS) {
        bail!("rolled back, but the last measurement's P95 TTFT {ttft} ms is within the SLO: {}", summary(Some(&s)));
    }
    Ok(())
}

pub async fn erroring_rolled_back(suite: &Suite) -> Result<()> {
    let s = roll_back(suite, NAMESPACE, NAME, "erroring", &["--inject-error-rate", ERROR_RATE], None).await?;
    let errors = s.last_measurement.as_ref().and_then(|m| m.error_rate).unwrap_or(0.0);
    if errors <= 0.05 {
        bail!("rolled back, but the last measurement's error rate {errors} is within the SLO: {}", summary(Some(&s)));
    }
    Ok(())
}

/// Rolls out a faulty variant and checks the automatic roll back: phase RolledBack, the
/// serving revision untouched, the preview scaled to zero with its pods gone, a failed
/// measurement and an Event.
pub async fn roll_back(
    suite: &Suite,
    namespace_name: &str,
    name: &str,
    variant: &str,
    args: &[&str],
    prometheus: Option<&str>,
) -> Result<InferenceDeploymentStatus> {
    let manifest = gated_manifest(name, variant, args, prometheus);
    roll_back_manifest(suite, namespace_name, &manifest, prometheus, Duration::from_secs(120)).await
}

/// `roll_back` of any faulty manifest, waiting up to `timeout` for the roll back.
pub async fn roll_back_manifest(
    suite: &Suite,
    namespace_name: &str,
    manifest: &serde_json::Value,
    prometheus: Option<&str>,
    timeout: Duration,
) -> Result<InferenceDeploymentStatus> {
    let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
    let active = serving(suite, namespace_name, name, prometheus).await?;
    // An earlier roll back leaves its own failed revision in status; this one must be new.
    let earlier_failure = status(&suite.client, namespace_name, name).await?.failed_revision;
    suite.kubectl.apply(namespace_name, &manifest.to_string()).await?;
    let s = wait_status(&suite.client, namespace_name, name, "RolledBack", timeout, |s| {
        s.phase == Some(Phase::RolledBack) && s.failed_revision.is_some() && s.failed_revision != earlier_failure
    })
    .await?;
    if s.active_revision.as_deref() != Some(active.as_str()) {
        bail!("the active revision changed from {active}: {}", summary(Some(&s)));
    }
    let failed = s.failed_revision.clone().unwrap_or_default();
    if failed == active {
        bail!("the serving revision was marked failed: {}", summary(Some(&s)));
    }
    // The failed measurement is the failed revision's, not the active one's.
    match &s.last_measurement {
        Some(m) if m.verdict == Verdict::Fail && m.revision == failed => {}
        _ => bail!("no failed measurement of {failed} recorded: {}", summary(Some(&s))),
    }
    expect_rolled_back_conditions(&s)?;
    wait::until("the failed preview scaled to zero", Duration::from_secs(60), || async {
        let replicas = revision_replicas(&suite.client, namespace_name, name, &failed).await?.unwrap_or(0);
        let pods = revision_pods(&suite.client, namespace_name, name, &failed).await?;
        Ok((replicas == 0 && pods == 0).then_some(()))
    })
    .await?;
    let events = events(&suite.client, namespace_name, name).await?;
    if !events.iter().any(|e| e.starts_with("RolledBack")) {
        bail!("no RolledBack event; events: {events:?}");
    }
    Ok(s)
}
