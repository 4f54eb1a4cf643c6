//! After the gate: a revision that passes analysis and regresses only once it serves is
//! flipped back during the post-promotion watch, with clients streaming through the Service
//! and not one failed request; and a fair comparison of a 2-replica active revision with a
//! 1-replica preview does not roll back a good revision.

use std::time::{Duration, Instant};

use infergate_operator::crd::{Phase, RolloutResult, RolloutStep, Verdict};
use infergate_operator::names;
use serde_json::json;

use super::rollouts::serving;
use super::support::{
    apply_and_wait_healthy, expect_all_ok, gated_manifest, namespace, records, request_tokens_via_service, set, status,
    summary, wait_status, BackendWatch, ClientLoad,
};
use super::Suite;
use crate::bail;
use crate::error::Result;
use crate::services::ready_backends;

const NAMESPACE: &str = "e2e-watch";
const NAME: &str = "regress";
/// Analysis window of `gated_manifest`.
const INTERVAL_SECONDS: u64 = 8;
/// The probe's workload in `gated_manifest`: workers and tokens per completion.
const PROBE_WORKERS: usize = 4;
const PROBE_TOKENS: usize = 8;
/// Seconds of probe load a preview sees before promotion: warm-up (3), two windows (16), and
/// the reconciles between them.
const ANALYSIS_SECONDS: f64 = 25.0;
/// The regression starts after this multiple of the requests analysis is expected to send:
/// enough margin for a faster machine during analysis, little enough that the watch reaches
/// it within a few windows.
const REGRESSION_MARGIN: f64 = 1.75;
/// Long enough for the regression to start and for two more windows; the flip back ends it
/// early.
const WATCH_SECONDS: u32 = 120;

/// Completed requests per second of the probe's workload on the serving revision: the
/// request count after which the preview turns slow is sized from it, as this machine's speed
/// varies several-fold with what else runs on it.
async fn probe_rate(suite: &Suite, service: &str) -> f64 {
    const SECONDS: f64 = 4.0;
    let started = Instant::now();
    let workers = (0..PROBE_WORKERS).map(|w| async move {
        let mut completed = 0usize;
        // Bounded by time and by count.
        while started.elapsed().as_secs_f64() < SECONDS && completed < 10_000 {
            let prompt = format!("Calibration {w}: list three uses of a binary search tree.");
            let record = request_tokens_via_service(&suite.client, NAMESPACE, service, &prompt, PROBE_TOKENS).await;
            if record.error.is_some() {
                break;
            }
            completed += 1;
        }
        completed
    });
    let completed: usize = futures::future::join_all(workers).await.into_iter().sum();
    completed as f64 / started.elapsed().as_secs_f64()
}

fn variant(tag: &str) -> String {
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("{tag}-{millis}")
}

/// Generation requests a pod has counted (every status), from its own /metrics.
async fn pod_requests(http: &reqwest::Client, base_url: &str) -> Option<u64> {
    let text = http.get(format!("{base_url}/metrics")).send().await.ok()?.text().await.ok()?;
    let total = text
        .lines()
        .filter(|l| l.starts_with(infergate_protocol::metrics::REQUESTS.full))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    Some(total as u64)
}

pub async fn regression_flipped_back(suite: &Suite) -> Result<()> {
    let old = serving(suite, NAMESPACE, NAME, None).await?;
    let service = names::active_service_name(NAME);
    let rate = probe_rate(suite, &service).await;
    let regress_after = ((rate * ANALYSIS_SECONDS * REGRESSION_MARGIN) as u64).max(50);
    tracing::info!(rate, regress_after, "sized the regression from the serving revision's rate");
    let after = regress_after.to_string();
    let args = ["--inject-ttft-delay-ms", "3000", "--inject-ttft-delay-after-requests", after.as_str()];
    let mut manifest = gated_manifest(NAME, &variant("regress"), &args, None);
    set(&mut manifest, "/spec/rollout/postPromotionWatchSeconds", json!(WATCH_SECONDS));
    let load = ClientLoad::start(&suite.client, NAMESPACE, &service, 2, 2000);
    let backends = BackendWatch::start(&suite.client, NAMESPACE, &service);
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build()?;
    let outcome = async {
        suite.kubectl.apply(NAMESPACE, &manifest.to_string()).await?;
        // A roll back during analysis (the regression came too early) ends the wait as well.
        let watching = wait_status(&suite.client, NAMESPACE, NAME, "Watching", Duration::from_secs(90), |s| {
            s.rollout.as_ref().is_some_and(|r| r.step == RolloutStep::Watching)
                || (s.rollout.is_none() && s.failed_revision.is_some())
        })
        .await?;
        let Some(new) = watching.rollout.as_ref().map(|r| r.revision.clone()) else {
            bail!("rolled back before promotion (the regression began during analysis?): {}", summary(Some(&watching)));
        };
        let promoted_at = Instant::now();
        // Until the flip back: note when the new pod passed the request count (the regression
        // starts there) by asking the pod itself.
        let mut regressed_at = None;
        let deadline = Instant::now() + Duration::from_secs(150);
        let (done, flipped_at) = loop {
            let s = status(&suite.client, NAMESPACE, NAME).await?;
            if s.active_revision.as_deref() == Some(old.as_str()) && s.rollout.is_none() {
                break (s, Instant::now());
            }
            if Instant::now() >= deadline {
                bail!(
                    "not flipped back after 150 s; {}; regression started: {}",
                    summary(Some(&s)),
                    regressed_at.is_some()
                );
            }
            if regressed_at.is_none() {
                for b in ready_backends(&suite.client, NAMESPACE, &service).await.unwrap_or_default() {
                    if b.pod.contains(&new) && pod_requests(&http, &b.base_url).await > Some(regress_after) {
                        regressed_at = Some(Instant::now());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        if done.failed_revision.as_deref() != Some(new.as_str()) || done.phase != Some(Phase::RolledBack) {
            bail!("flipped back, but {new} is not marked failed (RolledBack): {}", summary(Some(&done)));
        }
        if records(&done, &new, RolloutResult::RolledBack) != 1 || records(&done, &new, RolloutResult::Promoted) != 0 {
            bail!("expected exactly one RolledBack record and no Promoted one for {new}: {:?}", done.history);
        }
        // The flip back came with the first failed window of the watch.
        let failed_windows =
            done.measurements.iter().filter(|m| m.revision == new && m.verdict == Verdict::Fail).count();
        if failed_windows != 1 {
            bail!("{failed_windows} failed windows of {new} (expected the flip at the first): {:?}", done.measurements);
        }
        let Some(regressed_at) = regressed_at else {
            bail!("flipped back before the new pod served {regress_after} requests: {}", summary(Some(&done)));
        };
        // Within one window of the regression (plus the window already open when it began).
        let seconds = flipped_at.duration_since(regressed_at).as_secs();
        tracing::info!(seconds, watch_s = promoted_at.elapsed().as_secs(), "regression to flip back");
        if seconds > 2 * INTERVAL_SECONDS + 6 {
            bail!("flipped back {seconds} s after the regression started (windows of {INTERVAL_SECONDS} s)");
        }
        Ok(())
    }
    .await;
    let requests = load.finish().await;
    let gaps = backends.finish().await;
    outcome?;
    gaps?;
    expect_all_ok(&requests, 20)
}

const COMPARE_NAMESPACE: &str = "e2e-compare";
const COMPARE_NAME: &str = "fair";

/// Two active replicas, one preview replica, the relative check on: the same model under equal
/// per-pod probe load is no regression, so it is promoted, having been compared.
pub async fn two_vs_one_replica_good_promoted(suite: &Suite) -> Result<()> {
    namespace(suite, COMPARE_NAMESPACE).await?;
    let manifest = |variant: &str| {
        let mut m = gated_manifest(COMPARE_NAME, variant, &[], None);
        set(&mut m, "/spec/replicas", json!(2));
        set(&mut m, "/spec/rollout/previewReplicas", json!(1));
        set(&mut m, "/spec/rollout/analysis/maxRegressionPercent", json!(50));
        m
    };
    let current = status(&suite.client, COMPARE_NAMESPACE, COMPARE_NAME).await.ok().and_then(|s| s.active_revision);
    let old = match current {
        Some(revision) => revision,
        None => {
            apply_and_wait_healthy(suite, COMPARE_NAMESPACE, &manifest("v1"), None, Duration::from_secs(90)).await?
        }
    };
    let new_manifest = manifest(&variant("same"));
    suite.kubectl.apply(COMPARE_NAMESPACE, &new_manifest.to_string()).await?;
    let done = wait_status(
        &suite.client,
        COMPARE_NAMESPACE,
        COMPARE_NAME,
        "the good revision promoted",
        Duration::from_secs(150),
        |s| s.rollout.is_none() && (s.active_revision.as_deref() != Some(old.as_str()) || s.failed_revision.is_some()),
    )
    .await?;
    let new = done.active_revision.clone().unwrap_or_default();
    if new == old || done.failed_revision.is_some() || done.phase != Some(Phase::Healthy) {
        bail!("the good revision was not promoted: {}", summary(Some(&done)));
    }
    if done.ready_replicas != Some(2) {
        bail!("promoted, but {:?} ready replicas (expected 2): {}", done.ready_replicas, summary(Some(&done)));
    }
    // The comparison ran: a window of the preview measured the baseline too.
    let compared = done.measurements.iter().any(|m| m.revision == new && m.baseline_ttft_p95_ms.is_some());
    if !compared {
        bail!("no window of {new} measured the baseline: {:?}", done.measurements);
    }
    Ok(())
}
