//! The manual controls as users give them, `kubectl annotate infd NAME infergate.dev/...=true`,
//! on a real API server: each acts exactly once (one history record, one Event), the
//! annotation is gone afterwards, and the resource holds still for 30 s. Flips of traffic
//! never leave the active Service without a ready backend.
//!
//! The scenarios run in order on one resource, each starting from whatever the one before
//! left (and creating what it needs when run alone).

use std::time::Duration;

use infergate_operator::crd::{InferenceDeploymentStatus, Phase, RolloutResult, RolloutStep};
use infergate_operator::{names, rollout};
use serde_json::{json, Value};

use super::rollouts::serving;
use super::support::{
    annotate, count_events, expect_all_ok, expect_rolled_back_conditions, expect_stable, gated_manifest, records, set,
    status, summary, wait_status, wait_step, BackendWatch, ClientLoad,
};
use super::Suite;
use crate::bail;
use crate::error::Result;

const NAMESPACE: &str = "e2e-controls";
const NAME: &str = "ctl";
// The operator's own annotation names: the contract the plugin sets too.
const PROMOTE: &str = rollout::ANNOTATION_PROMOTE;
const ABORT: &str = rollout::ANNOTATION_ABORT;
const ROLLBACK: &str = rollout::ANNOTATION_ROLLBACK;
const RETRY: &str = rollout::ANNOTATION_RETRY;
/// How long the resource must hold still after a control.
const STABLE: Duration = Duration::from_secs(30);
const STEP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long an Event may trail the status that recorded its decision.
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);
/// Long enough that a control given during the watch lands inside it.
const LONG_WATCH_SECONDS: u32 = 40;
/// Where nothing happens during the watch: the manifest's short one.
const SHORT_WATCH_SECONDS: u32 = 8;

/// A good variant with the given promotion mode and post-promotion watch.
fn manifest(variant: &str, auto_promote: bool, watch_seconds: u32) -> Value {
    let mut m = gated_manifest(NAME, variant, &[], None);
    set(&mut m, "/spec/rollout/autoPromote", json!(auto_promote));
    set(&mut m, "/spec/rollout/postPromotionWatchSeconds", json!(watch_seconds));
    m
}

/// A variant name no earlier rollout used (the clock's milliseconds), so applying it starts
/// a new rollout.
fn variant(tag: &str) -> String {
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("{tag}-{millis}")
}

async fn start_rollout(
    suite: &Suite,
    tag: &str,
    auto_promote: bool,
    watch_seconds: u32,
) -> Result<(String, InferenceDeploymentStatus)> {
    let active = serving(suite, NAMESPACE, NAME, None).await?;
    let before = status(&suite.client, NAMESPACE, NAME).await?;
    let manifest = manifest(&variant(tag), auto_promote, watch_seconds);
    suite.kubectl.apply(NAMESPACE, &manifest.to_string()).await?;
    Ok((active, before))
}

fn rollout_revision(s: &InferenceDeploymentStatus) -> String {
    s.rollout.as_ref().map(|r| r.revision.clone()).unwrap_or_default()
}

/// Refused controls: none may appear while a control is acted on.
const CONTROL_IGNORED: &str = "ControlIgnored";

/// The Events a control's check counts: the one of its result, the control's own (when it has
/// one besides the result's) and `ControlIgnored`, with their counts before the control.
struct Counted {
    result_event: &'static str,
    control_event: Option<&'static str>,
    before: [usize; 3],
}

impl Counted {
    async fn now(suite: &Suite, result_event: &'static str, control_event: Option<&'static str>) -> Result<Counted> {
        let mut counted = Counted { result_event, control_event, before: [0; 3] };
        counted.before = counted.counts(suite).await?;
        Ok(counted)
    }

    async fn counts(&self, suite: &Suite) -> Result<[usize; 3]> {
        let client = &suite.client;
        let control = match self.control_event {
            Some(reason) => count_events(client, NAMESPACE, NAME, reason).await?,
            None => 0,
        };
        let result = count_events(client, NAMESPACE, NAME, self.result_event).await?;
        let ignored = count_events(client, NAMESPACE, NAME, CONTROL_IGNORED).await?;
        Ok([result, control, ignored])
    }
}

/// Exactly one `result` record for `revision` more than `before` had, exactly one more result
/// Event and control Event than before, and no `ControlIgnored`.
async fn acted_once(
    suite: &Suite,
    before: &InferenceDeploymentStatus,
    counted: &Counted,
    after: &InferenceDeploymentStatus,
    revision: &str,
    result: RolloutResult,
) -> Result<()> {
    let new_records = records(after, revision, result).saturating_sub(records(before, revision, result));
    if new_records != 1 {
        bail!("{new_records} new {result:?} records for {revision} (expected exactly 1): {:?}", after.history);
    }
    // Events are published right after the status that records the decision, so the status
    // can be seen first: wait (bounded) for them to appear, then check that each came once.
    let expected =
        [counted.before[0] + 1, counted.before[1] + usize::from(counted.control_event.is_some()), counted.before[2]];
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    let mut now = counted.counts(suite).await?;
    while (now[0] < expected[0] || now[1] < expected[1]) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        now = counted.counts(suite).await?;
    }
    let new = |i: usize| now[i].saturating_sub(counted.before[i]);
    if now[0] != expected[0] {
        bail!("{} new {} events (expected exactly 1)", new(0), counted.result_event);
    }
    if let Some(control) = counted.control_event {
        if now[1] != expected[1] {
            bail!("{} new {control} events (expected exactly 1)", new(1));
        }
    }
    if now[2] != expected[2] {
        bail!("{} new {CONTROL_IGNORED} events (expected none)", new(2));
    }
    Ok(())
}

/// `autoPromote: false`: analysis passes and waits at AwaitingPromotion; the promote
/// annotation moves it on.
pub async fn promote(suite: &Suite) -> Result<()> {
    let (old, before) = start_rollout(suite, "promote", false, SHORT_WATCH_SECONDS).await?;
    let waiting = wait_step(&suite.client, NAMESPACE, NAME, RolloutStep::AwaitingPromotion, STEP_TIMEOUT).await?;
    let new = rollout_revision(&waiting);
    let counted = Counted::now(suite, "RolloutComplete", Some("ManualPromotion")).await?;
    annotate(suite, NAMESPACE, NAME, PROMOTE).await?;
    // The watch is part of the promotion; the promote annotation is spent on AwaitingPromotion.
    let done = wait_status(&suite.client, NAMESPACE, NAME, "promoted", STEP_TIMEOUT, |s| {
        s.rollout.is_none() && s.active_revision.as_deref() == Some(new.as_str())
    })
    .await?;
    if done.previous_revision.as_deref() != Some(old.as_str()) || done.phase != Some(Phase::Healthy) {
        bail!("promoted, but not Healthy with previous revision {old}: {}", summary(Some(&done)));
    }
    acted_once(suite, &before, &counted, &done, &new, RolloutResult::Promoted).await?;
    expect_stable(&suite.client, NAMESPACE, NAME, STABLE).await.map(|_| ())
}

/// Abort while Analyzing: the preview goes away, the active revision never changed.
pub async fn abort_during_analysis(suite: &Suite) -> Result<()> {
    let (old, before) = start_rollout(suite, "abort-analysis", true, SHORT_WATCH_SECONDS).await?;
    let analyzing = wait_step(&suite.client, NAMESPACE, NAME, RolloutStep::Analyzing, STEP_TIMEOUT).await?;
    let new = rollout_revision(&analyzing);
    let counted = Counted::now(suite, "RolloutAborted", None).await?;
    annotate(suite, NAMESPACE, NAME, ABORT).await?;
    let done = aborted(suite, &old, &new).await?;
    acted_once(suite, &before, &counted, &done, &new, RolloutResult::Aborted).await?;
    expect_stable(&suite.client, NAMESPACE, NAME, STABLE).await.map(|_| ())
}

/// Abort during the post-promotion watch: traffic flips back to the old revision, which
/// stayed warm, while clients stream through the Service without one failure.
pub async fn abort_during_watch(suite: &Suite) -> Result<()> {
    let (old, before) = start_rollout(suite, "abort-watch", true, LONG_WATCH_SECONDS).await?;
    let service = names::active_service_name(NAME);
    let backends = BackendWatch::start(&suite.client, NAMESPACE, &service);
    let load = ClientLoad::start(&suite.client, NAMESPACE, &service, 2, 500);
    let outcome = async {
        let watching = wait_step(&suite.client, NAMESPACE, NAME, RolloutStep::Watching, STEP_TIMEOUT).await?;
        let new = rollout_revision(&watching);
        // The abort's own Event is its result's, also when it went through Restoring.
        let counted = Counted::now(suite, "RolloutAborted", None).await?;
        annotate(suite, NAMESPACE, NAME, ABORT).await?;
        let done = aborted(suite, &old, &new).await?;
        acted_once(suite, &before, &counted, &done, &new, RolloutResult::Aborted).await
    }
    .await;
    let records = load.finish().await;
    let gaps = backends.finish().await;
    outcome?;
    gaps?;
    expect_all_ok(&records, 10)?;
    expect_stable(&suite.client, NAMESPACE, NAME, STABLE).await.map(|_| ())
}

async fn aborted(suite: &Suite, old: &str, new: &str) -> Result<InferenceDeploymentStatus> {
    let done = wait_status(&suite.client, NAMESPACE, NAME, "aborted", STEP_TIMEOUT, |s| s.rollout.is_none()).await?;
    if done.active_revision.as_deref() != Some(old) || done.failed_revision.as_deref() != Some(new) {
        bail!("aborted, but {old} is not active with {new} failed: {}", summary(Some(&done)));
    }
    if done.phase != Some(Phase::RolledBack) {
        bail!("aborted, phase is not RolledBack: {}", summary(Some(&done)));
    }
    expect_rolled_back_conditions(&done)?;
    Ok(done)
}

/// After a finished promotion, `rollback` brings the previous revision back: it is scaled up
/// first and takes traffic only when ready.
pub async fn rollback_after_promotion(suite: &Suite) -> Result<()> {
    let mut s = status(&suite.client, NAMESPACE, NAME).await?;
    if s.previous_revision.is_none() || s.failed_revision.is_some() || s.rollout.is_some() {
        // Run alone, or after an abort: promote a fresh revision first.
        start_rollout(suite, "to-roll-back", true, SHORT_WATCH_SECONDS).await?;
        s = wait_status(&suite.client, NAMESPACE, NAME, "promoted", Duration::from_secs(120), |s| {
            s.rollout.is_none() && s.previous_revision.is_some() && s.phase == Some(Phase::Healthy)
        })
        .await?;
    }
    let (current, previous) =
        (s.active_revision.clone().unwrap_or_default(), s.previous_revision.clone().unwrap_or_default());
    let service = names::active_service_name(NAME);
    let backends = BackendWatch::start(&suite.client, NAMESPACE, &service);
    let load = ClientLoad::start(&suite.client, NAMESPACE, &service, 2, 500);
    let counted = Counted::now(suite, "RolledBack", Some("RestoreStarted")).await?;
    let outcome = async {
        annotate(suite, NAMESPACE, NAME, ROLLBACK).await?;
        let done = wait_status(&suite.client, NAMESPACE, NAME, "rolled back", STEP_TIMEOUT, |s| {
            s.rollout.is_none() && s.active_revision.as_deref() == Some(previous.as_str())
        })
        .await?;
        if done.failed_revision.as_deref() != Some(current.as_str()) || done.phase != Some(Phase::RolledBack) {
            bail!("rolled back, but {current} is not marked failed (RolledBack): {}", summary(Some(&done)));
        }
        expect_rolled_back_conditions(&done)?;
        acted_once(suite, &s, &counted, &done, &current, RolloutResult::RolledBack).await
    }
    .await;
    let records = load.finish().await;
    let gaps = backends.finish().await;
    outcome?;
    gaps?;
    expect_all_ok(&records, 5)?;
    expect_stable(&suite.client, NAMESPACE, NAME, STABLE).await.map(|_| ())
}

/// `retry` re-runs the rolled-back revision the spec still names, without a spec change; a
/// good revision is then promoted.
pub async fn retry(suite: &Suite) -> Result<()> {
    let mut s = status(&suite.client, NAMESPACE, NAME).await?;
    if s.failed_revision.is_none() || s.rollout.is_some() {
        // Run alone: make a rolled-back revision first (abort a good one while it is analysed).
        start_rollout(suite, "to-retry", true, SHORT_WATCH_SECONDS).await?;
        wait_step(&suite.client, NAMESPACE, NAME, RolloutStep::Analyzing, STEP_TIMEOUT).await?;
        annotate(suite, NAMESPACE, NAME, ABORT).await?;
        s = wait_status(&suite.client, NAMESPACE, NAME, "aborted", STEP_TIMEOUT, |s| {
            s.rollout.is_none() && s.failed_revision.is_some()
        })
        .await?;
    }
    let failed = s.failed_revision.clone().unwrap_or_default();
    let counted = Counted::now(suite, "RolloutComplete", Some("RetryRequested")).await?;
    annotate(suite, NAMESPACE, NAME, RETRY).await?;
    let done =
        wait_status(&suite.client, NAMESPACE, NAME, "the retried revision promoted", Duration::from_secs(150), |s| {
            s.rollout.is_none() && s.active_revision.as_deref() == Some(failed.as_str())
        })
        .await?;
    if done.failed_revision.is_some() || done.phase != Some(Phase::Healthy) {
        bail!("retried and promoted, but not Healthy without a failed revision: {}", summary(Some(&done)));
    }
    acted_once(suite, &s, &counted, &done, &failed, RolloutResult::Promoted).await?;
    expect_stable(&suite.client, NAMESPACE, NAME, STABLE).await.map(|_| ())
}
