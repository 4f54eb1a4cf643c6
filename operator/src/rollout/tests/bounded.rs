//! Bounded analysis: inconclusiveLimit, consecutiveErrorLimit and deadlineSeconds, under both
//! onLimitExceeded policies, and what a paused rollout accepts.

use super::*;
use crate::crd::LimitPolicy;

/// A window the gate could not measure (a scrape failed).
fn unmeasured(w: &mut World) {
    w.window_measures(Sample::default(), None);
    if let Some(report) = w.report.as_mut() {
        report.problem = Some("scrape of 10.0.0.7:8080 failed: connection refused".into());
    }
}

fn analysis(w: &World) -> crate::crd::AnalysisStatus {
    w.status().analysis.clone().expect("analysis status")
}

/// Window reports arrive at 46, 77, 108, ... (every 31 s after Analyzing began at 15).
fn window_end(i: i64) -> i64 {
    46 + 31 * i
}

fn assert_limit_policy(w: &mut World, out: &Outcome, policy: LimitPolicy, why: &str) {
    assert!(out.events.iter().any(|e| e.reason == "AnalysisLimitExceeded" && e.warning), "{:?}", out.events);
    assert!(out.actions.contains(&Action::StopGate));
    match policy {
        LimitPolicy::Rollback => {
            assert_eq!(finished(out), [RolloutResult::RolledBack]);
            assert_eq!(w.step_now(), None);
            let s = w.status();
            assert_eq!(s.phase, Some(Phase::RolledBack));
            assert_eq!(s.failed_revision.as_deref(), Some(NEW));
            assert!(s.history.last().unwrap().reason.as_deref().unwrap().contains(why), "{:?}", s.history);
            assert_eq!(w.plan().replicas[NEW], 0);
        }
        LimitPolicy::Pause => {
            assert!(finished(out).is_empty());
            assert_eq!(w.step_now(), Some(RolloutStep::Paused));
            assert_eq!(w.status().phase, Some(Phase::Paused));
            assert!(w.rollout().message.unwrap().contains(why));
            // The preview keeps its pods for the manual decision; no probe load runs.
            assert_eq!(w.plan().replicas[NEW], 1);
            assert_eq!(w.plan().preview_target(), NEW);
            assert!(!w.busy);
        }
    }
}

#[test]
fn past_the_inconclusive_limit_the_policy_decides() {
    for policy in [LimitPolicy::Rollback, LimitPolicy::Pause] {
        let mut w = World::analyzing(5);
        w.spec.rollout.analysis.on_limit_exceeded = policy;
        for i in 0..3 {
            w.window_measures(empty(), None);
            w.step(window_end(i));
            assert_eq!(w.step_now(), Some(RolloutStep::Analyzing), "{policy:?}: 3 inconclusive windows are tolerated");
        }
        assert_eq!(analysis(&w).inconclusive_checks, 3);
        w.window_measures(empty(), None);
        let out = w.step(window_end(3));
        assert_limit_policy(&mut w, &out, policy, "inconclusiveLimit 3");
    }
}

/// Argo's meaning: the total of the analysis, not a run that a decisive window resets.
#[test]
fn inconclusive_windows_count_in_total_not_in_a_row() {
    let mut w = World::analyzing(5);
    w.spec.rollout.analysis.successful_checks = 3;
    let windows = [empty(), good(), empty(), good(), empty()];
    for (i, sample) in windows.into_iter().enumerate() {
        w.window_measures(sample, None);
        w.step(window_end(i as i64));
        assert_eq!(w.step_now(), Some(RolloutStep::Analyzing), "window {i}");
    }
    let a = analysis(&w);
    assert_eq!((a.inconclusive_checks, a.successful_checks), (3, 2));
    // The fourth, although never two came in a row, ends the analysis.
    w.window_measures(empty(), None);
    let out = w.step(window_end(5));
    assert_limit_policy(&mut w, &out, LimitPolicy::Rollback, "4 inconclusive windows in this analysis");
}

#[test]
fn measurement_errors_are_not_inconclusive_windows() {
    let mut w = World::analyzing(5);
    for i in 0..4 {
        unmeasured(&mut w);
        w.step(window_end(i));
    }
    let a = analysis(&w);
    assert_eq!((a.consecutive_errors, a.inconclusive_checks), (4, 0));
    assert_eq!(
        w.step_now(),
        Some(RolloutStep::Analyzing),
        "4 errors, over the inconclusive limit of 3 had they counted"
    );
}

#[test]
fn past_the_consecutive_error_limit_the_policy_decides() {
    for policy in [LimitPolicy::Rollback, LimitPolicy::Pause] {
        let mut w = World::analyzing(5);
        w.spec.rollout.analysis.on_limit_exceeded = policy;
        for i in 0..4 {
            unmeasured(&mut w);
            w.step(window_end(i));
            assert_eq!(w.step_now(), Some(RolloutStep::Analyzing), "{policy:?}: 4 errors are tolerated");
        }
        let a = analysis(&w);
        assert_eq!((a.consecutive_errors, a.inconclusive_checks), (4, 0), "errors are not inconclusive results");
        unmeasured(&mut w);
        let out = w.step(window_end(4));
        assert_limit_policy(&mut w, &out, policy, "consecutiveErrorLimit 4");
    }
}

#[test]
fn a_measured_window_resets_the_error_run() {
    let mut w = World::analyzing(5);
    for i in 0..3 {
        unmeasured(&mut w);
        w.step(window_end(i));
    }
    w.window_measures(empty(), None);
    w.step(window_end(3));
    let a = analysis(&w);
    assert_eq!((a.consecutive_errors, a.inconclusive_checks), (0, 1));
}

#[test]
fn past_the_deadline_the_policy_decides_even_without_a_report() {
    for policy in [LimitPolicy::Rollback, LimitPolicy::Pause] {
        let mut w = World::analyzing(5);
        w.spec.rollout.analysis.deadline_seconds = 100;
        w.spec.rollout.analysis.on_limit_exceeded = policy;
        // The gate hangs: windows are opened again and again, no report ever comes.
        let out = w.step(114);
        assert_eq!(w.step_now(), Some(RolloutStep::Analyzing), "{policy:?}: the deadline is 100 s after 15");
        assert_eq!(out.wake_after, Some(Duration::from_secs(1)), "woken at the deadline");
        let out = w.step(115);
        assert_limit_policy(&mut w, &out, policy, "deadlineSeconds 100");
    }
}

#[test]
fn the_deadline_also_ends_an_analysis_whose_windows_keep_arriving() {
    let mut w = World::analyzing(5);
    w.spec.rollout.analysis.deadline_seconds = 60;
    w.spec.rollout.analysis.successful_checks = 5;
    w.window_measures(good(), None);
    w.step(46);
    w.window_measures(good(), None);
    let out = w.step(77);
    assert_limit_policy(&mut w, &out, LimitPolicy::Rollback, "deadlineSeconds 60");
    assert!(w.status().history[0].reason.as_deref().unwrap().contains("2 passed"));
}

#[test]
fn a_window_that_decides_the_analysis_wins_over_the_deadline() {
    let mut w = World::analyzing(5);
    w.spec.rollout.analysis.deadline_seconds = 60;
    w.window_measures(good(), None);
    w.step(46);
    w.window_measures(good(), None);
    w.step(77);
    assert_eq!(w.step_now(), Some(RolloutStep::ScalingUp));
}

/// A rollout paused past the inconclusive limit.
fn paused() -> World {
    let mut w = World::analyzing(5);
    w.spec.rollout.analysis.on_limit_exceeded = LimitPolicy::Pause;
    w.spec.rollout.analysis.inconclusive_limit = 0;
    w.window_measures(empty(), None);
    w.step(46);
    assert_eq!(w.step_now(), Some(RolloutStep::Paused));
    w
}

#[test]
fn a_paused_rollout_waits_for_a_decision() {
    let mut w = paused();
    for secs in [100, 10_000, 1_000_000] {
        let out = w.step(secs);
        assert_eq!(w.step_now(), Some(RolloutStep::Paused));
        assert!(out.actions.is_empty() && out.events.is_empty(), "{:?}", out);
    }
}

#[test]
fn promote_from_paused_needs_a_ready_preview() {
    let mut w = paused();
    w.ready.insert(NEW.into(), 0);
    w.command = Some(Command::Promote);
    let out = w.step(50);
    assert_eq!(reasons(&out), ["ControlIgnored"]);
    assert_eq!(w.step_now(), Some(RolloutStep::Paused));
    let mut w = paused();
    w.command = Some(Command::Promote);
    let out = w.step(50);
    assert_eq!(reasons(&out), ["ManualPromotion"]);
    assert_eq!(w.step_now(), Some(RolloutStep::ScalingUp));
}

#[test]
fn abort_from_paused_keeps_the_active_revision() {
    let mut w = paused();
    w.command = Some(Command::Abort);
    let out = w.step(50);
    assert_eq!(finished(&out), [RolloutResult::Aborted]);
    assert_eq!(w.status().active_revision.as_deref(), Some(OLD));
    assert_eq!(w.status().failed_revision.as_deref(), Some(NEW));
}

#[test]
fn retry_from_paused_restarts_the_analysis_with_fresh_counts_and_deadline() {
    let mut w = paused();
    w.command = Some(Command::Retry);
    let out = w.step(500);
    assert_eq!(reasons(&out), ["AnalysisRestarted"]);
    assert_eq!(w.step_now(), Some(RolloutStep::Analyzing));
    assert_eq!(w.rollout().step_started_at, t(500));
    assert_eq!(w.rollout().message, None);
    let a = analysis(&w);
    assert_eq!((a.inconclusive_checks, a.consecutive_errors, a.successful_checks), (0, 0, 0));
    assert!(out.actions.iter().any(|a| matches!(a, Action::Gate(GateWork::Measure(w)) if w.started_at == t(500))));
    // The restarted analysis can still promote.
    w.spec.rollout.analysis.successful_checks = 1;
    w.window_measures(good(), None);
    w.step(531);
    assert_eq!(w.step_now(), Some(RolloutStep::ScalingUp));
}

#[test]
fn limits_do_not_end_the_post_promotion_watch() {
    let mut w = watching();
    w.spec.rollout.analysis.inconclusive_limit = 0;
    w.window_measures(empty(), None);
    w.step(77);
    assert_eq!(w.step_now(), Some(RolloutStep::Watching), "the watch is bounded by its own clock");
}
