//! Revisions that fail for real, injected with the server's drill flags: every request
//! erroring (no first token at all), a crash loop, hanging requests. Each is rolled back by the
//! gate on its own, the serving revision untouched.

use std::time::Duration;

use infergate_operator::crd::InferenceDeploymentStatus;
use serde_json::json;

use super::rollouts::roll_back_manifest;
use super::support::{gated_manifest, set, summary};
use super::Suite;
use crate::bail;
use crate::error::Result;

const NAMESPACE: &str = "e2e-failures";
const NAME: &str = "faulty";
/// The probe's per-request deadline in the hang scenario: short, so hung requests count as
/// failed within one window.
const PROBE_REQUEST_TIMEOUT_SECONDS: u32 = 2;
const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(120);

async fn rolled_back_with(suite: &Suite, variant: &str, args: &[&str]) -> Result<InferenceDeploymentStatus> {
    let mut manifest = gated_manifest(NAME, variant, args, None);
    set(&mut manifest, "/spec/rollout/probe/requestTimeoutSeconds", json!(PROBE_REQUEST_TIMEOUT_SECONDS));
    roll_back_manifest(suite, NAMESPACE, &manifest, None, ROLLBACK_TIMEOUT).await
}

/// Every request answers 500 before a first token: the window has no TTFT, but its error
/// rate is 100 %.
pub async fn all_errors_rolled_back(suite: &Suite) -> Result<()> {
    let s = rolled_back_with(suite, "all-errors", &["--inject-error-rate", "1"]).await?;
    let errors = s.last_measurement.as_ref().and_then(|m| m.error_rate).unwrap_or(0.0);
    if errors < 0.99 {
        bail!("rolled back, but the last measurement's error rate is {errors}, not 1: {}", summary(Some(&s)));
    }
    Ok(())
}

/// The preview exits (status 1) after 3 requests and the pod runner restarts it, over and
/// over while the probe keeps sending: restarts (or the pod not ready) during analysis fail
/// the window, and the reason names the pod.
pub async fn crash_looping_rolled_back(suite: &Suite) -> Result<()> {
    let s = rolled_back_with(suite, "crash-loop", &["--inject-crash-after-requests", "3"]).await?;
    let failed = s.failed_revision.clone().unwrap_or_default();
    let reason = s.history.iter().rev().find(|r| r.revision == failed).and_then(|r| r.reason.clone());
    let names_the_pod = reason
        .as_deref()
        .is_some_and(|r| r.contains(&format!("-{failed}-")) && (r.contains("restarted") || r.contains("not ready")));
    if !names_the_pod {
        bail!("rolled back, but the reason names no restarted or not-ready pod of {failed}: {reason:?}");
    }
    Ok(())
}

/// Every request hangs, measured with the default analysis and probe (30 s windows, 20 requests
/// minimum, 10 s request timeout, 4 workers) and `onNoData: Pass`: about 8 requests time out in
/// a window, fewer than `minRequests`, but they alone exceed the error budget, so the window
/// fails instead of passing as "no data".
pub async fn hanging_with_default_probe_timeout_rolled_back(suite: &Suite) -> Result<()> {
    let mut manifest = gated_manifest(NAME, "hanging-defaults", &["--inject-hang-rate", "1"], None);
    if let Some(rollout) = manifest.pointer_mut("/spec/rollout").and_then(|r| r.as_object_mut()) {
        rollout.remove("probe");
    }
    if let Some(analysis) = manifest.pointer_mut("/spec/rollout/analysis").and_then(|a| a.as_object_mut()) {
        analysis.remove("intervalSeconds");
        analysis.remove("minRequests");
    }
    set(&mut manifest, "/spec/rollout/analysis/onNoData", json!("Pass"));
    let s = roll_back_manifest(suite, NAMESPACE, &manifest, None, ROLLBACK_TIMEOUT).await?;
    let Some(m) = s.last_measurement.as_ref() else {
        bail!("rolled back without a measurement: {}", summary(Some(&s)));
    };
    let message = m.message.clone().unwrap_or_default();
    if m.error_rate != Some(1.0) || !message.contains("failures alone exceed the SLO") {
        bail!("rolled back, but not by the timed-out requests below minRequests: {m:?}");
    }
    Ok(())
}

/// Half of the requests are accepted and never answered: they count as failed once past the
/// probe's request deadline instead of being dropped from the window.
pub async fn hanging_rolled_back(suite: &Suite) -> Result<()> {
    let s = rolled_back_with(suite, "hanging", &["--inject-hang-rate", "0.5"]).await?;
    let errors = s.last_measurement.as_ref().and_then(|m| m.error_rate).unwrap_or(0.0);
    if errors <= 0.05 {
        bail!("rolled back, but the last measurement's error rate {errors} is within the SLO: {}", summary(Some(&s)));
    }
    Ok(())
}
