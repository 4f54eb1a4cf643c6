//! Manual controls: exactly once through the status record, retry, autoPromote rechecked, each
//! control in the steps where it matters, the phase written by the machine, and the Service
//! never moved to a revision without ready pods.

use super::*;
use crate::crd::ControlRecord;

/// Reaches `step` with NEW rolling out next to OLD.
fn at(step: RolloutStep) -> World {
    let mut w = World::rolling_out();
    match step {
        RolloutStep::WaitingForPreview => {
            w.step(2);
        }
        RolloutStep::WarmingUp => {
            w.step(2);
            w.ready.insert(NEW.into(), 1);
            w.step(5);
        }
        RolloutStep::Analyzing => w = World::analyzing(5),
        RolloutStep::AwaitingPromotion => {
            w = World::analyzing(5);
            w.spec.rollout.auto_promote = false;
            w.spec.rollout.analysis.successful_checks = 1;
            w.window_measures(good(), None);
            w.step(46);
        }
        RolloutStep::ScalingUp => {
            w = World::analyzing(5);
            w.spec.rollout.analysis.successful_checks = 1;
            w.window_measures(good(), None);
            w.step(46);
        }
        RolloutStep::Watching => w = watching(),
        other => panic!("no fixture for {other:?}"),
    }
    assert_eq!(w.step_now(), Some(step));
    w
}

// ---- exactly once --------------------------------------------------------------------------

#[test]
fn a_handled_control_is_recorded_with_the_decision() {
    let mut w = at(RolloutStep::Analyzing);
    w.command = Some(Command::Promote);
    w.step(20);
    let record = w.status().last_control.clone().expect("a record");
    assert_eq!(record, ControlRecord { annotation: ANNOTATION_PROMOTE.into(), handled_at: t(20) });
}

#[test]
fn a_recorded_control_still_on_the_object_is_only_cleared_again() {
    let mut w = at(RolloutStep::Analyzing);
    w.command = Some(Command::Abort);
    let first = w.step(20);
    assert_eq!(finished(&first), [RolloutResult::Aborted]);
    let after_first = w.status().clone();
    // The removal failed: the next reconcile still sees the annotation, and the record.
    w.command = Some(Command::Abort);
    let again = w.step(21);
    assert_eq!(again.actions, vec![Action::ClearControls]);
    assert!(again.events.is_empty(), "no ControlIgnored, nothing acted on: {:?}", again.events);
    assert_eq!(w.status(), &after_first);
    // Removed now: the record goes, so the same control works for the next rollout.
    let dropped = w.step(22);
    assert!(dropped.actions.is_empty() && dropped.events.is_empty());
    assert_eq!(w.status().last_control, None);
}

#[test]
fn another_control_than_the_recorded_one_is_acted_on() {
    let mut w = at(RolloutStep::Analyzing);
    w.command = Some(Command::Promote);
    w.step(20);
    assert_eq!(w.step_now(), Some(RolloutStep::ScalingUp));
    // The promote's removal failed and the user now aborts.
    w.command = Some(Command::Abort);
    let out = w.step(21);
    assert_eq!(finished(&out), [RolloutResult::Aborted]);
    assert_eq!(w.status().last_control.as_ref().map(|c| c.annotation.as_str()), Some(ANNOTATION_ABORT));
}

// ---- each control where it matters ---------------------------------------------------------------

#[test]
fn abort_in_every_step_before_promotion_keeps_the_active_revision() {
    for step in [
        RolloutStep::WaitingForPreview,
        RolloutStep::WarmingUp,
        RolloutStep::Analyzing,
        RolloutStep::AwaitingPromotion,
        RolloutStep::ScalingUp,
    ] {
        let mut w = at(step);
        w.command = Some(Command::Abort);
        let out = w.step(50);
        assert_eq!(finished(&out), [RolloutResult::Aborted], "{step:?}");
        assert!(out.actions.contains(&Action::StopGate), "{step:?}");
        let s = w.status();
        assert_eq!((s.active_revision.as_deref(), s.failed_revision.as_deref()), (Some(OLD), Some(NEW)), "{step:?}");
        assert_eq!(s.phase, Some(Phase::RolledBack), "{step:?}");
        assert_eq!(w.plan().active, OLD, "{step:?}");
        assert_eq!(w.plan().replicas[NEW], 0, "{step:?}");
    }
}

#[test]
fn rollback_before_promotion_is_an_abort_recorded_as_rolled_back() {
    let mut w = at(RolloutStep::Analyzing);
    w.command = Some(Command::Rollback);
    let out = w.step(20);
    assert_eq!(finished(&out), [RolloutResult::RolledBack]);
    assert_eq!(w.status().active_revision.as_deref(), Some(OLD));
}

#[test]
fn promote_in_every_step_before_promotion_scales_up_a_ready_preview() {
    for step in [RolloutStep::WarmingUp, RolloutStep::Analyzing, RolloutStep::AwaitingPromotion] {
        let mut w = at(step);
        w.command = Some(Command::Promote);
        let out = w.step(50);
        assert_eq!(reasons(&out), ["ManualPromotion"], "{step:?}");
        assert_eq!(w.step_now(), Some(RolloutStep::ScalingUp), "{step:?}");
        assert!(out.actions.contains(&Action::StopGate), "{step:?}");
    }
    let mut w = at(RolloutStep::ScalingUp);
    w.command = Some(Command::Promote);
    let out = w.step(50);
    assert_eq!(reasons(&out), ["ControlIgnored"]);
}

#[test]
fn abort_during_the_watch_flips_back_to_the_warm_baseline_at_once() {
    let mut w = at(RolloutStep::Watching);
    w.command = Some(Command::Abort);
    let out = w.step(50);
    assert_eq!(finished(&out), [RolloutResult::Aborted]);
    assert_eq!(w.plan().active, OLD);
    assert_eq!(w.plan().replicas, BTreeMap::from([(OLD.into(), 2), (NEW.into(), 0)]));
}

#[test]
fn abort_during_the_watch_without_ready_baseline_pods_keeps_the_service_on_the_serving_revision() {
    let mut w = at(RolloutStep::Watching);
    w.ready.insert(OLD.into(), 0);
    w.command = Some(Command::Abort);
    let out = w.step(50);
    assert_eq!(reasons(&out), ["RollbackWaiting"]);
    assert!(finished(&out).is_empty());
    assert_eq!(w.step_now(), Some(RolloutStep::Restoring));
    // NEW keeps the traffic and its pods; OLD is scaled up.
    let plan = w.plan();
    assert_eq!(plan.active, NEW);
    assert_eq!(plan.replicas, BTreeMap::from([(OLD.into(), 2), (NEW.into(), 2)]));
    // One pod of two is not enough to take the traffic back.
    w.ready.insert(OLD.into(), 1);
    w.step(60);
    assert_eq!(w.plan().active, NEW);
    w.ready.insert(OLD.into(), 2);
    let out = w.step(70);
    assert_eq!(finished(&out), [RolloutResult::RolledBack]);
    let s = w.status();
    assert_eq!((s.active_revision.as_deref(), s.failed_revision.as_deref()), (Some(OLD), Some(NEW)));
    assert_eq!(s.previous_revision, None, "the rollout never finished, so there is no previous revision");
    assert!(s.history.last().unwrap().reason.as_deref().unwrap().contains("aborted by annotation"));
    assert_eq!(w.plan().active, OLD);
    assert_eq!(w.plan().replicas, BTreeMap::from([(OLD.into(), 2), (NEW.into(), 0)]));
}

#[test]
fn a_regression_during_the_watch_without_ready_baseline_pods_waits_for_them_too() {
    let mut w = at(RolloutStep::Watching);
    w.ready.insert(OLD.into(), 0);
    w.window_measures(slow(), None);
    w.step(77);
    assert_eq!(w.step_now(), Some(RolloutStep::Restoring));
    assert_eq!(w.plan().active, NEW);
}

// ---- retry ---------------------------------------------------------------------------------------

fn rolled_back() -> World {
    let mut w = at(RolloutStep::Analyzing);
    w.spec.rollout.analysis.failure_limit = 0;
    w.window_measures(erroring(), None);
    w.step(46);
    assert_eq!(w.status().failed_revision.as_deref(), Some(NEW));
    // Scaled to zero: its pods are gone.
    w.ready.insert(NEW.into(), 0);
    w
}

#[test]
fn retry_rolls_the_failed_revision_out_again_without_a_spec_change() {
    let mut w = rolled_back();
    assert_eq!(w.status().phase, Some(Phase::RolledBack));
    w.command = Some(Command::Retry);
    let out = w.step(100);
    assert_eq!(reasons(&out), ["RetryRequested", "RolloutStarted"]);
    let s = w.status();
    assert_eq!(s.failed_revision, None);
    assert_eq!(s.phase, Some(Phase::Progressing));
    let rollout = w.rollout();
    assert_eq!((rollout.revision.as_str(), rollout.baseline.as_str()), (NEW, OLD));
    assert_eq!(rollout.step, RolloutStep::WaitingForPreview);
    assert_eq!(w.status().analysis.as_ref().unwrap().failed_checks, 0, "a fresh analysis");
    assert_eq!(w.plan().replicas[NEW], 1);
}

#[test]
fn retry_without_a_failed_revision_or_during_a_rollout_is_ignored() {
    let mut w = World::rolling_out();
    w.desired = OLD.into();
    w.command = Some(Command::Retry);
    let out = w.step(5);
    assert_eq!(reasons(&out), ["ControlIgnored"]);
    assert!(out.actions.contains(&Action::ClearControls));
    let mut w = at(RolloutStep::Analyzing);
    w.command = Some(Command::Retry);
    let out = w.step(20);
    assert_eq!(reasons(&out), ["ControlIgnored"]);
    assert_eq!(w.step_now(), Some(RolloutStep::Analyzing));
}

#[test]
fn retry_after_the_spec_moved_on_has_nothing_to_retry() {
    let mut w = rolled_back();
    w.desired = NEWER.into();
    w.step(60);
    assert_eq!(w.rollout().revision, NEWER);
    w.command = Some(Command::Retry);
    let out = w.step(61);
    assert_eq!(reasons(&out), ["ControlIgnored"]);
}

// ---- autoPromote -------------------------------------------------------------------------------

#[test]
fn turning_auto_promote_on_at_awaiting_promotion_promotes() {
    let mut w = at(RolloutStep::AwaitingPromotion);
    w.step(100);
    assert_eq!(w.step_now(), Some(RolloutStep::AwaitingPromotion));
    w.spec.rollout.auto_promote = true;
    let out = w.step(101);
    assert_eq!(reasons(&out), ["AnalysisPassed"]);
    assert_eq!(w.step_now(), Some(RolloutStep::ScalingUp));
}

// ---- the phase, written by the machine alone ----------------------------------------------------

#[test]
fn the_machine_writes_the_phase() {
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
    assert_eq!(w.status().phase, Some(Phase::Pending));
    assert_eq!(w.status().desired_revision.as_deref(), Some(OLD));
    w.ready.insert(OLD.into(), 1);
    w.step(1);
    assert_eq!(w.status().phase, Some(Phase::Progressing));
    w.ready.insert(OLD.into(), 2);
    w.step(2);
    assert_eq!(w.status().phase, Some(Phase::Healthy));
    w.ready.insert(OLD.into(), 0);
    w.step(3);
    assert_eq!(w.status().phase, Some(Phase::Degraded));
    w.ready.insert(OLD.into(), 2);
    w.desired = NEW.into();
    w.step(4);
    assert_eq!(w.status().phase, Some(Phase::Progressing));
    assert_eq!(w.status().desired_revision.as_deref(), Some(NEW));
    assert_eq!(w.status().preview_revision.as_deref(), Some(NEW));
}
