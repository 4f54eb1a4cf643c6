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
    // An abort stays an abort through Restoring: result and Event.
    assert_eq!(finished(&out), [RolloutResult::Aborted]);
    assert_eq!(reasons(&out), ["RolloutAborted"]);
    let s = w.status();
    assert_eq!((s.active_revision.as_deref(), s.failed_revision.as_deref()), (Some(OLD), Some(NEW)));
    assert_eq!(s.previous_revision, None, "the rollout never finished, so there is no previous revision");
    assert_eq!(s.history.last().unwrap().result, RolloutResult::Aborted);
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

// ---- Restoring ---------------------------------------------------------------------------------

/// A regression in the watch while OLD had no ready pods: NEW serves while OLD scales up.
fn restoring_after_a_regression() -> World {
    let mut w = at(RolloutStep::Watching);
    w.ready.insert(OLD.into(), 0);
    w.window_measures(slow(), None);
    let out = w.step(77);
    assert_eq!(reasons(&out), ["RollbackWaiting"]);
    assert_eq!(w.step_now(), Some(RolloutStep::Restoring));
    assert_eq!(w.rollout().result, Some(RolloutResult::RolledBack));
    w
}

/// A roll back by annotation after a finished rollout: NEW serves, OLD scales up.
fn restoring_by_annotation() -> World {
    let mut w = at(RolloutStep::Watching);
    w.command = Some(Command::Promote);
    w.step(50);
    w.ready.insert(OLD.into(), 0);
    w.command = Some(Command::Rollback);
    let out = w.step(60);
    assert_eq!(reasons(&out), ["RestoreStarted"]);
    assert_eq!(w.rollout().result, None);
    // The annotation is removed (the record goes with it), so the next control is a new one.
    w.step(61);
    w
}

#[test]
fn abort_or_rollback_does_not_cancel_a_restore_after_a_failure() {
    for command in [Command::Abort, Command::Rollback] {
        let mut w = restoring_after_a_regression();
        w.command = Some(command);
        let out = w.step(80);
        assert_eq!(reasons(&out), ["ControlIgnored"], "{command:?}");
        assert!(out.events[0].note.contains("under way"), "{:?}", out.events);
        assert_eq!(w.step_now(), Some(RolloutStep::Restoring), "{command:?}");
        assert_eq!(w.plan().replicas[OLD], 2, "{command:?}: OLD still scales up");
        // And it ends as the roll back it is.
        w.ready.insert(OLD.into(), 2);
        let out = w.step(90);
        assert_eq!(finished(&out), [RolloutResult::RolledBack], "{command:?}");
        assert_eq!(reasons(&out), ["RolledBack"], "{command:?}");
        let s = w.status();
        assert_eq!((s.active_revision.as_deref(), s.failed_revision.as_deref()), (Some(OLD), Some(NEW)));
        assert_eq!(s.phase, Some(Phase::RolledBack));
    }
}

#[test]
fn abort_or_rollback_cancels_a_restore_by_annotation() {
    for command in [Command::Abort, Command::Rollback] {
        let mut w = restoring_by_annotation();
        w.command = Some(command);
        let out = w.step(70);
        assert_eq!(reasons(&out), ["RestoreCancelled"], "{command:?}");
        assert!(finished(&out).is_empty());
        assert_eq!(w.step_now(), None, "{command:?}");
        let s = w.status();
        assert_eq!((s.active_revision.as_deref(), s.failed_revision.as_deref()), (Some(NEW), None), "{command:?}");
        assert_eq!(s.phase, Some(Phase::Healthy), "{command:?}");
        assert_eq!(w.plan().replicas[OLD], 0, "{command:?}: OLD goes back to zero");
    }
}

#[test]
fn a_spec_change_cancels_a_restore_unless_it_names_the_restored_revision() {
    let mut w = restoring_after_a_regression();
    w.desired = NEWER.into();
    let out = w.step(80);
    assert_eq!(reasons(&out), ["RestoreCancelled", "RolloutStarted"]);
    assert_eq!((w.rollout().revision.as_str(), w.rollout().baseline.as_str()), (NEWER, NEW));
    // The spec going back to the revision being restored: the restore does exactly that.
    let mut w = restoring_after_a_regression();
    w.desired = OLD.into();
    let out = w.step(80);
    assert!(reasons(&out).is_empty(), "{:?}", out.events);
    assert_eq!(w.step_now(), Some(RolloutStep::Restoring));
    w.ready.insert(OLD.into(), 2);
    w.step(90);
    let s = w.status();
    assert_eq!((s.active_revision.as_deref(), s.failed_revision.as_deref()), (Some(OLD), None));
    assert_eq!(s.phase, Some(Phase::Healthy));
}

#[test]
fn a_restore_after_a_failure_that_misses_the_deadline_marks_the_serving_revision_failed() {
    let mut w = restoring_after_a_regression();
    w.ready.insert(OLD.into(), 1);
    w.step(136);
    assert_eq!(w.step_now(), Some(RolloutStep::Restoring), "the deadline is 60 s after 77");
    let out = w.step(137);
    assert_eq!(reasons(&out), ["RestoreFailed"]);
    assert_eq!(finished(&out), [RolloutResult::RolledBack]);
    let s = w.status().clone();
    assert_eq!(w.step_now(), None);
    // NEW keeps serving, but marked failed: never Ready=True, phase Degraded.
    assert_eq!((s.active_revision.as_deref(), s.failed_revision.as_deref()), (Some(NEW), Some(NEW)));
    assert_eq!(s.previous_revision.as_deref(), Some(OLD), "a rollback annotation can try again");
    assert_eq!(s.phase, Some(Phase::Degraded));
    let reason = s.history.last().unwrap().reason.clone().unwrap();
    assert!(reason.contains("regression after promotion") && reason.contains("roll back failed"), "{reason}");
    let with = crate::reconcile::status::with_conditions(&s, Some(3), 2, 2, &t(137));
    let ready = crate::reconcile::status::condition(&with, "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "RollbackFailed"), "{}", ready.message);
    assert_eq!(crate::reconcile::status::condition(&with, "Stalled").unwrap().status, "True");
    assert_eq!(w.plan().active, NEW);
    // Nothing starts by itself: the spec still names NEW, which serves.
    let out = w.step(200);
    assert!(out.events.is_empty() && w.step_now().is_none(), "{:?}", out.events);
    // The rollback annotation tries again.
    w.command = Some(Command::Rollback);
    let out = w.step(210);
    assert_eq!(reasons(&out), ["RestoreStarted"]);
    w.ready.insert(OLD.into(), 2);
    w.step(220);
    let s = w.status();
    assert_eq!((s.active_revision.as_deref(), s.failed_revision.as_deref()), (Some(OLD), Some(NEW)));
    assert_eq!(s.phase, Some(Phase::RolledBack));
}

#[test]
fn retry_of_a_failed_revision_that_serves_clears_its_mark() {
    let mut w = restoring_after_a_regression();
    w.step(137);
    assert_eq!(w.status().failed_revision.as_deref(), Some(NEW));
    w.command = Some(Command::Retry);
    let out = w.step(150);
    assert_eq!(reasons(&out), ["RetryRequested"]);
    assert_eq!(w.step_now(), None, "no rollout of NEW next to itself");
    assert_eq!(w.status().failed_revision, None);
    assert_eq!(w.status().phase, Some(Phase::Healthy));
}

#[test]
fn a_restore_by_annotation_that_misses_the_deadline_leaves_the_healthy_revision_serving() {
    let mut w = restoring_by_annotation();
    let out = w.step(120);
    assert_eq!(reasons(&out), ["RestoreFailed"]);
    assert!(finished(&out).is_empty());
    let s = w.status();
    assert_eq!((s.active_revision.as_deref(), s.failed_revision.as_deref()), (Some(NEW), None));
    assert_eq!(s.phase, Some(Phase::Healthy));
}

#[test]
fn promote_is_ignored_while_scaling_up_or_restoring() {
    for mut w in [at(RolloutStep::ScalingUp), restoring_after_a_regression(), restoring_by_annotation()] {
        let before = w.step_now();
        w.command = Some(Command::Promote);
        let out = w.step(100);
        assert_eq!(reasons(&out), ["ControlIgnored"], "{before:?}");
        assert!(out.events[0].note.contains("nothing to skip"), "{:?}", out.events);
        assert_eq!(w.step_now(), before);
        assert!(finished(&out).is_empty());
    }
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
