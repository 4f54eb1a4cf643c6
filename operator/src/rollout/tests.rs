//! Transitions of the rollout state machine, one behaviour per test, with a simulated clock.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::analysis::Sample;
use crate::crd::{
    InferenceDeploymentSpec, InferenceDeploymentStatus, NoDataPolicy, Phase, RolloutResult, RolloutStep, Verdict,
};
use crate::reconcile::plan::plan_revisions;

mod bounded;
mod commands;

const OLD: &str = "aaaaaaaaaa";
const NEW: &str = "bbbbbbbbbb";
const NEWER: &str = "cccccccccc";

fn t(secs: i64) -> Time {
    Time(Timestamp::from_second(1_800_000_000 + secs).unwrap())
}

/// replicas 2, preview 1, warm-up 10 s, deadline 60 s, windows of 30 s, 2 passes needed, 1
/// failure tolerated, 20 requests minimum, watch 60 s, scale-down delay 30 s, SLO 500 ms / 1 %.
fn spec() -> InferenceDeploymentSpec {
    let mut spec = crate::test_support::spec();
    spec.replicas = 2;
    spec.slo.ttft_p95_ms = 500;
    spec.slo.max_error_rate = 0.01;
    let r = &mut spec.rollout;
    r.preview_replicas = 1;
    r.warmup_seconds = 10;
    r.progress_deadline_seconds = 60;
    r.analysis.interval_seconds = 30;
    r.analysis.successful_checks = 2;
    r.analysis.failure_limit = 1;
    r.analysis.min_requests = 20;
    r.post_promotion_watch_seconds = 60;
    r.scale_down_delay_seconds = 30;
    spec
}

fn good() -> Sample {
    Sample { requests: 100.0, errors: 0.0, ttft_p95_seconds: Some(0.2) }
}
fn slow() -> Sample {
    Sample { requests: 100.0, errors: 0.0, ttft_p95_seconds: Some(0.9) }
}
fn erroring() -> Sample {
    Sample { requests: 100.0, errors: 5.0, ttft_p95_seconds: Some(0.2) }
}
fn empty() -> Sample {
    Sample { requests: 3.0, errors: 0.0, ttft_p95_seconds: Some(0.2) }
}

/// Every WindowReport of these tests is built here, so a new field is a one-line change.
fn report(revision: &str, started_at: Time, candidate: Sample, baseline: Option<Sample>) -> WindowReport {
    WindowReport { baseline, ..WindowReport::of(revision, started_at, candidate) }
}

/// A simulated world: the reconciler's view between calls.
struct World {
    spec: InferenceDeploymentSpec,
    desired: String,
    status: Option<InferenceDeploymentStatus>,
    ready: BTreeMap<String, i32>,
    report: Option<WindowReport>,
    busy: bool,
    command: Option<Command>,
}

impl World {
    /// OLD serves with all replicas; the spec now asks for NEW.
    fn rolling_out() -> World {
        let mut w = World {
            spec: spec(),
            desired: OLD.into(),
            status: None,
            ready: BTreeMap::new(),
            report: None,
            busy: false,
            command: None,
        };
        w.step(0);
        w.ready.insert(OLD.into(), 2);
        w.step(1);
        w.desired = NEW.into();
        w
    }

    fn step(&mut self, secs: i64) -> Outcome {
        let observed = Observed {
            desired: self.desired.clone(),
            ready: self.ready.clone(),
            report: self.report.clone(),
            gate_busy: self.busy,
            command: self.command.take(),
        };
        let outcome = decide(&self.spec, self.status.as_ref(), &observed, &t(secs));
        // Status round-trips through JSON as it does through the apiserver.
        let json = serde_json::to_string(&outcome.status).unwrap();
        self.status = Some(serde_json::from_str(&json).unwrap());
        // Every revision the plan keeps has a Deployment.
        let plan = plan_revisions(&self.spec, &outcome.status, &self.desired);
        for revision in plan.replicas.keys() {
            self.ready.entry(revision.clone()).or_insert(0);
        }
        self.ready.retain(|r, _| plan.replicas.contains_key(r));
        // Open windows keep the gate busy until a report is given.
        if outcome.actions.iter().any(|a| matches!(a, Action::Gate(_))) {
            self.busy = true;
            self.report = None;
        }
        if outcome.actions.contains(&Action::StopGate) {
            self.busy = false;
            self.report = None;
        }
        outcome
    }

    /// The gate finishes the open window with `sample` (and `baseline`).
    fn window_measures(&mut self, sample: Sample, baseline: Option<Sample>) {
        let rollout = self.rollout();
        self.report = Some(report(
            &rollout.revision,
            rollout.window_started_at.clone().expect("an open window"),
            sample,
            baseline,
        ));
        self.busy = false;
    }

    fn status(&self) -> &InferenceDeploymentStatus {
        self.status.as_ref().unwrap()
    }

    fn rollout(&self) -> crate::crd::RolloutState {
        self.status().rollout.clone().expect("a rollout")
    }

    fn step_now(&self) -> Option<RolloutStep> {
        self.status().rollout.as_ref().map(|r| r.step)
    }

    fn plan(&self) -> crate::reconcile::plan::RevisionPlan {
        plan_revisions(&self.spec, self.status(), &self.desired)
    }

    /// Drives NEW to the Analyzing step at `secs` (preview ready at 5, warm-up 10 s).
    fn analyzing(secs_ready: i64) -> World {
        let mut w = World::rolling_out();
        w.step(2);
        w.ready.insert(NEW.into(), 1);
        w.step(secs_ready);
        w.step(secs_ready + 10);
        assert_eq!(w.step_now(), Some(RolloutStep::Analyzing));
        w
    }
}

fn reasons(outcome: &Outcome) -> Vec<&'static str> {
    outcome.events.iter().map(|e| e.reason).collect()
}

fn finished(outcome: &Outcome) -> Vec<RolloutResult> {
    outcome
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Finished(r) => Some(*r),
            _ => None,
        })
        .collect()
}

// ---- starting ------------------------------------------------------------------------------

#[test]
fn first_reconcile_serves_the_desired_revision_without_a_rollout() {
    let w = World::rolling_out();
    let first = w.status();
    assert_eq!(first.active_revision.as_deref(), Some(OLD));
    assert!(first.history.is_empty());
}

#[test]
fn a_new_template_starts_a_rollout_waiting_for_the_preview() {
    let mut w = World::rolling_out();
    let out = w.step(2);
    assert_eq!(reasons(&out), ["RolloutStarted"]);
    let rollout = w.rollout();
    assert_eq!((rollout.revision.as_str(), rollout.baseline.as_str()), (NEW, OLD));
    assert_eq!(rollout.step, RolloutStep::WaitingForPreview);
    assert_eq!(rollout.step.phase(), Phase::Progressing);
    assert_eq!(w.status().preview_revision.as_deref(), Some(NEW));
    let plan = w.plan();
    assert_eq!(plan.replicas, BTreeMap::from([(OLD.into(), 2), (NEW.into(), 1)]));
    assert_eq!(plan.active, OLD);
    // Nothing to measure yet; look again by the deadline.
    assert!(out.actions.is_empty(), "{:?}", out.actions);
    assert_eq!(out.wake_after, Some(Duration::from_secs(60)));
}

#[test]
fn a_ready_preview_warms_up_under_probe_load_then_opens_the_first_window() {
    let mut w = World::rolling_out();
    w.step(2);
    w.ready.insert(NEW.into(), 1);
    let out = w.step(5);
    assert_eq!(w.step_now(), Some(RolloutStep::WarmingUp));
    assert_eq!(out.actions, vec![Action::Gate(GateWork::Warmup { revision: NEW.into(), seconds: 10 })]);
    assert_eq!(reasons(&out), ["PreviewAvailable"]);
    // One second before the warm-up ends nothing happens.
    let out = w.step(14);
    assert_eq!(w.step_now(), Some(RolloutStep::WarmingUp));
    assert!(out.actions.is_empty());
    assert_eq!(out.wake_after, Some(Duration::from_secs(1)));
    // Exactly at the end: analysis, with a window opened now.
    let out = w.step(15);
    assert_eq!(w.step_now(), Some(RolloutStep::Analyzing));
    assert_eq!(
        out.actions,
        vec![Action::Gate(GateWork::Measure(WindowWork {
            revision: NEW.into(),
            baseline: None,
            started_at: t(15),
            seconds: 30,
            candidate_serves_users: false,
        }))]
    );
    assert_eq!(w.rollout().window_started_at, Some(t(15)));
}

#[test]
fn zero_warmup_chains_straight_into_analysis() {
    let mut w = World::rolling_out();
    w.spec.rollout.warmup_seconds = 0;
    w.step(2);
    w.ready.insert(NEW.into(), 1);
    let out = w.step(3);
    assert_eq!(w.step_now(), Some(RolloutStep::Analyzing));
    assert!(!out.actions.iter().any(|a| matches!(a, Action::Gate(GateWork::Warmup { .. }))));
    let windows = out.actions.iter().filter(|a| matches!(a, Action::Gate(GateWork::Measure(_)))).count();
    assert_eq!(windows, 1, "{:?}", out.actions);
}

#[test]
fn a_preview_that_never_becomes_ready_is_rolled_back_at_the_deadline() {
    let mut w = World::rolling_out();
    w.step(2);
    w.ready.insert(NEW.into(), 0);
    w.step(61);
    assert_eq!(w.step_now(), Some(RolloutStep::WaitingForPreview), "deadline is 60 s after the step began at 2");
    let out = w.step(62);
    assert_eq!(w.step_now(), None);
    assert_eq!(finished(&out), [RolloutResult::RolledBack]);
    assert_eq!(reasons(&out), ["RolledBack"]);
    assert!(out.events[0].warning);
    assert!(out.actions.contains(&Action::StopGate));
    let s = w.status();
    assert_eq!(s.active_revision.as_deref(), Some(OLD));
    assert_eq!(s.failed_revision.as_deref(), Some(NEW));
    assert_eq!(s.preview_revision, None);
    assert!(s.history[0].reason.as_deref().unwrap().contains("never became available"));
    // Scaled to zero at once, kept for inspection.
    assert_eq!(w.plan().replicas, BTreeMap::from([(OLD.into(), 2), (NEW.into(), 0)]));
}

// ---- analysis ------------------------------------------------------------------------------

#[test]
fn passing_windows_promote_watch_and_scale_down_to_healthy() {
    let mut w = World::analyzing(5);
    w.window_measures(good(), None);
    let out = w.step(46);
    assert_eq!(w.status().analysis.as_ref().unwrap().successful_checks, 1);
    assert_eq!(w.status().last_measurement.as_ref().unwrap().verdict, Verdict::Pass);
    assert!(out.actions.iter().any(|a| matches!(a, Action::Measured(_))));
    assert!(out.actions.iter().any(|a| matches!(a, Action::Gate(GateWork::Measure(w)) if w.started_at == t(46))));

    w.window_measures(good(), None);
    let out = w.step(77);
    assert_eq!(reasons(&out), ["AnalysisPassed"]);
    // Blue-green: the new revision gets every replica before it takes traffic.
    assert_eq!(w.step_now(), Some(RolloutStep::ScalingUp));
    assert_eq!(w.plan().active, OLD);
    assert_eq!(w.plan().replicas[NEW], 2);

    w.ready.insert(NEW.into(), 2);
    let out = w.step(90);
    assert_eq!(reasons(&out), ["Promoted"]);
    assert_eq!(w.step_now(), Some(RolloutStep::Watching));
    assert_eq!(w.status().active_revision.as_deref(), Some(NEW));
    assert_eq!(w.plan().replicas, BTreeMap::from([(OLD.into(), 2), (NEW.into(), 2)]), "old revision kept warm");
    assert!(out.actions.iter().any(|a| matches!(a, Action::Gate(GateWork::Measure(_)))), "the watch measures too");

    w.window_measures(good(), None);
    w.step(121);
    assert_eq!(w.step_now(), Some(RolloutStep::Watching));
    let out = w.step(150);
    assert_eq!(reasons(&out), ["WatchPassed"]);
    assert_eq!(w.step_now(), Some(RolloutStep::ScalingDown));
    assert_eq!(w.plan().replicas[OLD], 2, "still warm during the scale-down delay");

    w.step(179);
    assert_eq!(w.step_now(), Some(RolloutStep::ScalingDown));
    let out = w.step(180);
    assert_eq!(w.step_now(), None);
    assert_eq!(finished(&out), [RolloutResult::Promoted]);
    assert_eq!(reasons(&out), ["RolloutComplete"]);
    let s = w.status();
    assert_eq!(s.previous_revision.as_deref(), Some(OLD));
    assert_eq!(s.history.last().unwrap().result, RolloutResult::Promoted);
    assert_eq!(w.plan().replicas, BTreeMap::from([(OLD.into(), 0), (NEW.into(), 2)]));
}

#[test]
fn slow_ttft_fails_windows_until_the_failure_limit_then_rolls_back() {
    let mut w = World::analyzing(5);
    w.window_measures(slow(), None);
    let out = w.step(46);
    assert_eq!(reasons(&out), ["AnalysisFailed"]);
    assert_eq!(w.step_now(), Some(RolloutStep::Analyzing), "one failure is within failureLimit 1");
    w.window_measures(slow(), None);
    let out = w.step(77);
    assert_eq!(w.step_now(), None);
    assert_eq!(finished(&out), [RolloutResult::RolledBack]);
    let s = w.status();
    assert_eq!(s.active_revision.as_deref(), Some(OLD));
    assert_eq!(s.failed_revision.as_deref(), Some(NEW));
    assert!(s.history[0].reason.as_deref().unwrap().contains("P95 TTFT"), "{:?}", s.history);
    assert_eq!(s.last_measurement.as_ref().unwrap().ttft_p95_ms, Some(900.0));
    assert_eq!(w.plan().replicas[NEW], 0);
}

#[test]
fn errors_roll_back_at_once_with_failure_limit_zero() {
    let mut w = World::analyzing(5);
    w.spec.rollout.analysis.failure_limit = 0;
    w.window_measures(erroring(), None);
    let out = w.step(46);
    assert_eq!(finished(&out), [RolloutResult::RolledBack]);
    let reason = w.status().history[0].reason.clone().unwrap();
    assert!(reason.contains("error rate"), "{reason}");
    assert_eq!(w.status().last_measurement.as_ref().unwrap().error_rate, Some(0.05));
}

#[test]
fn no_data_is_inconclusive_by_default_and_keeps_measuring_up_to_the_inconclusive_limit() {
    let mut w = World::analyzing(5);
    for (i, secs) in [46, 77, 108].into_iter().enumerate() {
        w.window_measures(empty(), None);
        let out = w.step(secs);
        assert_eq!(w.step_now(), Some(RolloutStep::Analyzing));
        assert!(finished(&out).is_empty());
        let analysis = w.status().analysis.clone().unwrap();
        assert_eq!((analysis.inconclusive_checks, analysis.failed_checks), (i as u32 + 1, 0));
    }
    assert_eq!(w.status().last_measurement.as_ref().unwrap().verdict, Verdict::Inconclusive);
}

#[test]
fn no_data_under_fail_counts_failures() {
    let mut w = World::analyzing(5);
    w.spec.rollout.analysis.on_no_data = NoDataPolicy::Fail;
    w.window_measures(empty(), None);
    w.step(46);
    assert_eq!(w.status().analysis.as_ref().unwrap().failed_checks, 1);
    w.window_measures(Sample::default(), None);
    let out = w.step(77);
    assert_eq!(finished(&out), [RolloutResult::RolledBack]);
    assert!(w.status().history[0].reason.as_deref().unwrap().contains("no data"));
}

#[test]
fn no_data_under_pass_counts_passes() {
    let mut w = World::analyzing(5);
    w.spec.rollout.analysis.on_no_data = NoDataPolicy::Pass;
    w.window_measures(empty(), None);
    w.step(46);
    w.window_measures(Sample::default(), None);
    w.step(77);
    assert_eq!(w.step_now(), Some(RolloutStep::ScalingUp));
}

#[test]
fn an_unmeasurable_window_is_no_data_with_the_problem_in_the_message() {
    let mut w = World::analyzing(5);
    w.window_measures(Sample::default(), None);
    if let Some(report) = w.report.as_mut() {
        report.problem = Some("no ready pod of revision bbbbbbbbbb".into());
    }
    w.step(46);
    let m = w.status().last_measurement.clone().unwrap();
    assert_eq!(m.verdict, Verdict::Inconclusive);
    assert!(m.message.unwrap().contains("no ready pod"));
}

#[test]
fn regression_against_the_active_revision_measures_both_and_fails() {
    let mut w = World::rolling_out();
    w.spec.rollout.analysis.max_regression_percent = Some(10.0);
    w.spec.rollout.analysis.failure_limit = 0;
    w.step(2);
    w.ready.insert(NEW.into(), 1);
    w.step(5);
    let out = w.step(15);
    assert_eq!(
        out.actions,
        vec![Action::Gate(GateWork::Measure(WindowWork {
            revision: NEW.into(),
            baseline: Some(OLD.into()),
            started_at: t(15),
            seconds: 30,
            candidate_serves_users: false,
        }))]
    );
    let base = Sample { requests: 100.0, errors: 0.0, ttft_p95_seconds: Some(0.1) };
    let candidate = Sample { requests: 100.0, errors: 0.0, ttft_p95_seconds: Some(0.2) };
    w.window_measures(candidate, Some(base));
    // The regression is judged on the probe's client-side TTFTs of both revisions.
    let probe = |from: f64| crate::analysis::ProbeWindow {
        ttfts_seconds: (0..40).map(|i| from + f64::from(i) * 1e-4).collect(),
        ..Default::default()
    };
    let report = w.report.as_mut().expect("a report");
    (report.candidate_probe, report.baseline_probe) = (probe(0.2), Some(probe(0.1)));
    let out = w.step(46);
    assert_eq!(finished(&out), [RolloutResult::RolledBack]);
    assert_eq!(w.status().last_measurement.as_ref().unwrap().baseline_ttft_p95_ms, Some(100.0));
    assert!(w.status().history[0].reason.as_deref().unwrap().contains("regression"));
}

#[test]
fn a_report_of_another_window_is_ignored() {
    let mut w = World::analyzing(5);
    w.report = Some(report(NEW, t(0), slow(), None));
    w.busy = true;
    let out = w.step(46);
    assert_eq!(w.status().analysis.as_ref().unwrap().failed_checks, 0);
    assert!(out.actions.is_empty(), "still waiting for the open window: {:?}", out.actions);
    assert_eq!(w.rollout().window_started_at, Some(t(15)));
}

#[test]
fn a_window_whose_report_never_comes_is_measured_again() {
    let mut w = World::analyzing(5);
    // Still busy 29 s after the window's end: wait.
    w.step(74);
    assert_eq!(w.rollout().window_started_at, Some(t(15)));
    // 30 s after its end (60 s after its start) it is given up and a new one opened.
    let out = w.step(75);
    assert_eq!(w.rollout().window_started_at, Some(t(75)));
    assert!(out.actions.iter().any(|a| matches!(a, Action::Gate(GateWork::Measure(_)))));
}

// ---- restart -------------------------------------------------------------------------------

#[test]
fn restart_mid_analysis_keeps_the_counts_and_measures_a_fresh_window() {
    let mut w = World::analyzing(5);
    w.window_measures(good(), None);
    w.step(46);
    // The operator restarts: the in-memory gate is empty.
    w.busy = false;
    w.report = None;
    let out = w.step(50);
    assert_eq!(w.status().analysis.as_ref().unwrap().successful_checks, 1);
    assert_eq!(w.rollout().window_started_at, Some(t(50)));
    assert!(out.actions.iter().any(|a| matches!(a, Action::Gate(GateWork::Measure(w)) if w.started_at == t(50))));
    // One more pass promotes, as it would have without the restart.
    w.window_measures(good(), None);
    w.step(81);
    assert_eq!(w.step_now(), Some(RolloutStep::ScalingUp));
}

#[test]
fn restart_mid_warmup_resumes_the_probe_for_the_time_left() {
    let mut w = World::rolling_out();
    w.step(2);
    w.ready.insert(NEW.into(), 1);
    w.step(5);
    w.busy = false;
    let out = w.step(8);
    assert_eq!(out.actions, vec![Action::Gate(GateWork::Warmup { revision: NEW.into(), seconds: 7 })]);
    assert_eq!(w.step_now(), Some(RolloutStep::WarmingUp));
}

#[test]
fn restart_mid_watch_keeps_the_watch_clock() {
    let mut w = World::analyzing(5);
    w.spec.rollout.analysis.successful_checks = 1;
    w.window_measures(good(), None);
    w.ready.insert(NEW.into(), 2);
    w.step(46);
    assert_eq!(w.step_now(), Some(RolloutStep::Watching));
    assert_eq!(w.rollout().step_started_at, t(46));
    w.busy = false;
    w.report = None;
    w.step(100);
    assert_eq!(w.step_now(), Some(RolloutStep::Watching));
    w.step(106);
    assert_eq!(w.step_now(), Some(RolloutStep::ScalingDown), "the watch ends 60 s after it began, restart or not");
}

// ---- after promotion -------------------------------------------------------------------------

fn watching() -> World {
    let mut w = World::analyzing(5);
    w.spec.rollout.analysis.successful_checks = 1;
    w.window_measures(good(), None);
    w.ready.insert(NEW.into(), 2);
    w.step(46);
    assert_eq!(w.step_now(), Some(RolloutStep::Watching));
    w
}

#[test]
fn a_regression_during_the_watch_flips_back_at_once() {
    let mut w = watching();
    w.window_measures(slow(), None);
    let out = w.step(77);
    assert_eq!(finished(&out), [RolloutResult::RolledBack]);
    let s = w.status();
    assert_eq!(s.active_revision.as_deref(), Some(OLD), "the warm old revision takes traffic back");
    assert_eq!(s.failed_revision.as_deref(), Some(NEW));
    assert!(s.history[0].reason.as_deref().unwrap().contains("regression after promotion"));
    assert_eq!(w.plan().replicas, BTreeMap::from([(OLD.into(), 2), (NEW.into(), 0)]));
}

#[test]
fn a_spec_change_during_the_watch_finishes_that_promotion_and_rolls_out_the_next() {
    let mut w = watching();
    w.desired = NEWER.into();
    let out = w.step(60);
    assert_eq!(finished(&out), [RolloutResult::Promoted]);
    let rollout = w.rollout();
    assert_eq!((rollout.revision.as_str(), rollout.baseline.as_str()), (NEWER, NEW));
    assert_eq!(w.status().previous_revision.as_deref(), Some(OLD));
}

// ---- the failed revision -----------------------------------------------------------------------

#[test]
fn a_failed_revision_is_not_retried_until_the_spec_changes() {
    let mut w = watching();
    w.window_measures(slow(), None);
    w.step(77);
    for secs in [100, 1000, 100_000] {
        let out = w.step(secs);
        assert_eq!(w.step_now(), None);
        assert!(out.events.is_empty() && out.actions.is_empty());
    }
    assert_eq!(w.status().failed_revision.as_deref(), Some(NEW));
    w.desired = NEWER.into();
    let out = w.step(100_001);
    assert_eq!(reasons(&out), ["RolloutStarted"]);
    assert_eq!(w.status().failed_revision, None);
    assert_eq!(w.rollout().baseline, OLD);
}

#[test]
fn a_newer_spec_supersedes_the_rollout_in_analysis() {
    let mut w = World::analyzing(5);
    w.desired = NEWER.into();
    let out = w.step(20);
    assert_eq!(reasons(&out), ["RolloutSuperseded", "RolloutStarted"]);
    assert_eq!(finished(&out), [RolloutResult::Aborted]);
    assert!(out.actions.contains(&Action::StopGate));
    assert_eq!(w.rollout().revision, NEWER);
    assert_eq!(w.rollout().baseline, OLD);
    assert!(!w.plan().replicas.contains_key(NEW), "the superseded preview is deleted");
}

#[test]
fn reverting_the_spec_cancels_the_rollout() {
    let mut w = World::analyzing(5);
    w.desired = OLD.into();
    let out = w.step(20);
    assert_eq!(reasons(&out), ["RolloutSuperseded"]);
    assert_eq!(w.step_now(), None);
    assert_eq!(w.plan().replicas, BTreeMap::from([(OLD.into(), 2)]));
}

// ---- manual controls -----------------------------------------------------------------------

#[test]
fn promote_annotation_skips_the_remaining_analysis() {
    let mut w = World::analyzing(5);
    w.command = Some(Command::Promote);
    let out = w.step(20);
    assert!(out.actions.contains(&Action::ClearControls));
    assert_eq!(reasons(&out), ["ManualPromotion"]);
    assert_eq!(w.step_now(), Some(RolloutStep::ScalingUp));
}

#[test]
fn promote_annotation_without_a_ready_pod_is_refused() {
    let mut w = World::rolling_out();
    w.step(2);
    w.command = Some(Command::Promote);
    let out = w.step(3);
    assert!(out.actions.contains(&Action::ClearControls));
    assert_eq!(reasons(&out), ["ControlIgnored"]);
    assert_eq!(w.step_now(), Some(RolloutStep::WaitingForPreview));
}

#[test]
fn promote_annotation_during_the_watch_completes_the_promotion() {
    let mut w = watching();
    w.command = Some(Command::Promote);
    let out = w.step(50);
    assert_eq!(finished(&out), [RolloutResult::Promoted]);
    assert_eq!(w.status().previous_revision.as_deref(), Some(OLD));
}

#[test]
fn without_auto_promote_analysis_pauses_for_the_annotation() {
    let mut w = World::analyzing(5);
    w.spec.rollout.auto_promote = false;
    w.spec.rollout.analysis.successful_checks = 1;
    w.window_measures(good(), None);
    let out = w.step(46);
    assert_eq!(reasons(&out), ["AwaitingPromotion"]);
    assert_eq!(w.step_now(), Some(RolloutStep::AwaitingPromotion));
    assert_eq!(RolloutStep::AwaitingPromotion.phase(), Phase::Paused);
    // It waits however long it takes.
    w.step(100_000);
    assert_eq!(w.step_now(), Some(RolloutStep::AwaitingPromotion));
    w.command = Some(Command::Promote);
    w.step(100_001);
    assert_eq!(w.step_now(), Some(RolloutStep::ScalingUp));
}

#[test]
fn abort_annotation_rolls_back_and_keeps_the_active_revision() {
    let mut w = World::analyzing(5);
    w.command = Some(Command::Abort);
    let out = w.step(20);
    assert_eq!(finished(&out), [RolloutResult::Aborted]);
    assert_eq!(reasons(&out), ["RolloutAborted"]);
    assert_eq!(w.status().active_revision.as_deref(), Some(OLD));
    assert_eq!(w.status().failed_revision.as_deref(), Some(NEW));
    assert_eq!(w.plan().replicas[NEW], 0);
}

#[test]
fn rollback_annotation_during_the_watch_flips_back() {
    let mut w = watching();
    w.command = Some(Command::Rollback);
    let out = w.step(50);
    assert_eq!(finished(&out), [RolloutResult::RolledBack]);
    assert_eq!(w.status().active_revision.as_deref(), Some(OLD));
}

#[test]
fn rollback_annotation_after_a_rollout_restores_the_previous_revision() {
    let mut w = watching();
    w.command = Some(Command::Promote);
    w.step(50);
    assert_eq!(w.plan().replicas, BTreeMap::from([(OLD.into(), 0), (NEW.into(), 2)]));
    w.ready.insert(OLD.into(), 0);
    w.command = Some(Command::Rollback);
    let out = w.step(60);
    assert_eq!(reasons(&out), ["RestoreStarted"]);
    assert_eq!(w.step_now(), Some(RolloutStep::Restoring));
    // NEW keeps serving while OLD scales up.
    assert_eq!(w.plan().active, NEW);
    assert_eq!(w.plan().replicas, BTreeMap::from([(OLD.into(), 2), (NEW.into(), 2)]));
    w.ready.insert(OLD.into(), 2);
    let out = w.step(70);
    assert_eq!(finished(&out), [RolloutResult::RolledBack]);
    let s = w.status();
    assert_eq!(s.active_revision.as_deref(), Some(OLD));
    assert_eq!(s.failed_revision.as_deref(), Some(NEW), "the spec still names NEW: not rolled out again");
    assert_eq!(w.plan().replicas, BTreeMap::from([(OLD.into(), 2), (NEW.into(), 0)]));
    w.step(80);
    assert_eq!(w.step_now(), None);
}

#[test]
fn a_control_with_nothing_to_act_on_is_ignored_and_cleared() {
    let mut w = World::rolling_out();
    w.desired = OLD.into();
    for command in [Command::Promote, Command::Abort, Command::Rollback] {
        w.command = Some(command);
        let out = w.step(5);
        assert_eq!(reasons(&out), ["ControlIgnored"], "{command:?}");
        assert!(out.actions.contains(&Action::ClearControls));
    }
}

#[test]
fn controls_come_from_annotations_safest_first() {
    let annotations = |keys: &[&str]| keys.iter().map(|k| (k.to_string(), "true".to_string())).collect();
    assert_eq!(Command::from_annotations(&annotations(&[])), None);
    assert_eq!(Command::from_annotations(&annotations(&[ANNOTATION_PROMOTE])), Some(Command::Promote));
    assert_eq!(Command::from_annotations(&annotations(&[ANNOTATION_PROMOTE, ANNOTATION_ABORT])), Some(Command::Abort));
    assert_eq!(
        Command::from_annotations(&annotations(&[ANNOTATION_PROMOTE, ANNOTATION_ROLLBACK])),
        Some(Command::Rollback)
    );
}

// ---- clocks ------------------------------------------------------------------------------

#[test]
fn a_clock_that_went_backwards_reaches_no_deadline() {
    let mut w = World::rolling_out();
    w.step(100);
    // Another operator replica with a clock 50 s behind takes over.
    let out = w.step(50);
    assert_eq!(w.step_now(), Some(RolloutStep::WaitingForPreview));
    assert!(finished(&out).is_empty());
    assert_eq!(out.wake_after, Some(Duration::from_secs(60)));
}

#[test]
fn sub_second_clocks_are_truncated_so_windows_match_after_a_status_round_trip() {
    let mut w = World::rolling_out();
    w.spec.rollout.warmup_seconds = 0;
    w.step(2);
    w.ready.insert(NEW.into(), 1);
    let observed = Observed { desired: NEW.into(), ready: w.ready.clone(), ..Observed::default() };
    let late = Time(Timestamp::from_millisecond(t(3).0.as_millisecond() + 999).unwrap());
    let out = decide(&w.spec, w.status.as_ref(), &observed, &late);
    assert!(out.actions.iter().any(|a| matches!(a, Action::Gate(GateWork::Measure(w)) if w.started_at == t(3))));
}

#[test]
fn scaling_up_that_misses_the_deadline_rolls_back() {
    let mut w = World::analyzing(5);
    w.spec.rollout.analysis.successful_checks = 1;
    w.window_measures(good(), None);
    w.step(46);
    assert_eq!(w.step_now(), Some(RolloutStep::ScalingUp));
    w.step(105);
    assert_eq!(w.step_now(), Some(RolloutStep::ScalingUp));
    let out = w.step(106);
    assert_eq!(finished(&out), [RolloutResult::RolledBack]);
    assert_eq!(w.status().active_revision.as_deref(), Some(OLD));
}

#[test]
fn a_vanished_active_deployment_abandons_the_rollout() {
    let mut w = World::analyzing(5);
    w.ready.remove(OLD);
    let out = w.step(20);
    assert_eq!(reasons(&out), ["RolloutAbandoned"]);
    assert_eq!(w.status().active_revision.as_deref(), Some(NEW));
    assert_eq!(w.step_now(), None);
}

#[test]
fn history_and_measurements_are_bounded() {
    let mut w = World::analyzing(5);
    w.spec.rollout.analysis.inconclusive_limit = 100;
    for i in 0..15 {
        w.window_measures(empty(), None);
        w.step(46 + 31 * i);
    }
    assert_eq!(w.status().measurements.len(), HISTORY_LIMIT);
}

#[test]
fn rollback_annotation_after_a_failed_rollout_restores_the_revision_before_the_active_one() {
    let mut w = watching();
    w.command = Some(Command::Promote);
    w.step(50);
    // NEW serves, OLD is the previous revision (scaled to zero); NEWER then fails to come up.
    w.ready.insert(OLD.into(), 0);
    w.desired = NEWER.into();
    w.step(60);
    w.step(121);
    assert_eq!(w.status().failed_revision.as_deref(), Some(NEWER));
    w.command = Some(Command::Rollback);
    let out = w.step(130);
    assert_eq!(reasons(&out), ["RestoreStarted"]);
    w.step(131);
    assert_eq!(w.step_now(), Some(RolloutStep::Restoring), "the failed spec does not cancel the restore");
    w.ready.insert(OLD.into(), 2);
    w.step(140);
    let s = w.status();
    assert_eq!(s.active_revision.as_deref(), Some(OLD));
    assert_eq!(s.failed_revision.as_deref(), Some(NEWER));
    assert_eq!(w.plan().replicas, BTreeMap::from([(OLD.into(), 2), (NEWER.into(), 0)]));
}
