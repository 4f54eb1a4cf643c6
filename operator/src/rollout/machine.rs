//! The transitions. One `Machine` lives for one call of [`super::decide`]; the manual controls
//! are in [`commands`], the analysis windows and their limits in [`analyzing`].

mod analyzing;
mod commands;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::{Action, GateWork, Observed, Outcome, RolloutEvent, HISTORY_LIMIT};
use crate::crd::{
    AnalysisStatus, InferenceDeploymentSpec, InferenceDeploymentStatus, Phase, RolloutRecord, RolloutResult,
    RolloutState, RolloutStep,
};

/// How long after a window's end its report may still arrive (scrapes time out well before).
const REPORT_GRACE_SECONDS: i64 = 30;
/// Upper bound on chained transitions in one call (zero-length steps chain).
const MAX_TRANSITIONS: usize = 16;

pub struct Machine<'a> {
    spec: &'a InferenceDeploymentSpec,
    status: InferenceDeploymentStatus,
    observed: &'a Observed,
    /// Whole seconds: status times round-trip through the apiserver at second precision, and the
    /// window a report belongs to is matched by its start time.
    now: Time,
    actions: Vec<Action>,
    events: Vec<RolloutEvent>,
    wake_after: Option<Duration>,
}

impl<'a> Machine<'a> {
    pub fn new(
        spec: &'a InferenceDeploymentSpec,
        old: Option<&InferenceDeploymentStatus>,
        observed: &'a Observed,
        now: &Time,
    ) -> Self {
        let now = Time(Timestamp::from_second(now.0.as_second()).unwrap_or(now.0));
        Self {
            spec,
            status: old.cloned().unwrap_or_default(),
            observed,
            now,
            actions: Vec::new(),
            events: Vec::new(),
            wake_after: None,
        }
    }

    pub fn run(mut self) -> Outcome {
        let previous_phase = self.status.phase;
        self.settle_revisions();
        self.handle_control();
        self.follow_spec();
        for _ in 0..MAX_TRANSITIONS {
            if !self.advance() {
                break;
            }
        }
        self.settle_phase(previous_phase);
        Outcome { status: self.status, actions: self.actions, events: self.events, wake_after: self.wake_after }
    }

    // ---- bookkeeping ----------------------------------------------------------------------

    fn desired(&self) -> &str {
        &self.observed.desired
    }

    fn exists(&self, revision: &str) -> bool {
        self.observed.ready.contains_key(revision)
    }

    /// A gate job runs, or was started by this very call (a chained transition).
    fn gate_busy(&self) -> bool {
        self.observed.gate_busy || self.actions.iter().any(|a| matches!(a, Action::Gate(_)))
    }

    fn ready(&self, revision: &str) -> i32 {
        self.observed.ready.get(revision).copied().unwrap_or(0)
    }

    /// Seconds since `since`; a clock that went backwards (another node after a restart) counts
    /// as no time passed, never as a deadline reached.
    fn elapsed(&self, since: &Time) -> i64 {
        (self.now.0.as_second() - since.0.as_second()).max(0)
    }

    /// True once `seconds` passed since `since`; otherwise remembers to wake at that deadline.
    fn due(&mut self, since: &Time, seconds: u32) -> bool {
        let left = i64::from(seconds) - self.elapsed(since);
        if left <= 0 {
            return true;
        }
        self.wake_in(left);
        false
    }

    fn wake_in(&mut self, seconds: i64) {
        let wake = Duration::from_secs(seconds.max(1).unsigned_abs());
        self.wake_after = Some(self.wake_after.map_or(wake, |w| w.min(wake)));
    }

    fn event(&mut self, reason: &'static str, note: String) {
        self.events.push(RolloutEvent { warning: false, reason, note });
    }

    fn warn(&mut self, reason: &'static str, note: String) {
        self.events.push(RolloutEvent { warning: true, reason, note });
    }

    fn set_step(&mut self, step: RolloutStep) {
        if let Some(rollout) = self.status.rollout.as_mut() {
            rollout.step = step;
            rollout.step_started_at = self.now.clone();
            rollout.window_started_at = None;
            rollout.message = None;
        }
    }

    fn record(&mut self, revision: String, previous: Option<String>, result: RolloutResult, reason: String) {
        self.status.history.push(RolloutRecord {
            revision,
            previous_revision: previous,
            result,
            reason: Some(reason),
            time: self.now.clone(),
        });
        let excess = self.status.history.len().saturating_sub(HISTORY_LIMIT);
        self.status.history.drain(..excess);
        self.actions.push(Action::Finished(result));
    }

    // ---- what holds regardless of the step -----------------------------------------------------

    /// Revisions whose Deployments vanished cannot serve; a spec that moved off the failed
    /// revision makes it eligible again.
    fn settle_revisions(&mut self) {
        let active = self.status.active_revision.clone().filter(|a| self.exists(a));
        if active.is_none() {
            // First reconcile, or the serving Deployment is gone: serve the spec's revision.
            if self.status.rollout.take().is_some() {
                self.actions.push(Action::StopGate);
                self.warn(
                    "RolloutAbandoned",
                    "the active revision's Deployment is gone; serving the desired revision directly".into(),
                );
            }
            self.status.active_revision = Some(self.desired().to_string());
            self.status.preview_revision = None;
        }
        if self.status.failed_revision.as_deref().is_some_and(|f| f != self.desired()) {
            self.status.failed_revision = None;
        }
        if self.status.previous_revision.as_deref().is_some_and(|p| !self.exists(p)) {
            self.status.previous_revision = None;
        }
    }

    /// The phase follows from the rollout step, or between rollouts from the failed revision
    /// and the active revision's ready pods. Only the machine writes it.
    fn settle_phase(&mut self, previous: Option<Phase>) {
        let ready = self.ready(&self.active());
        let phase = if let Some(rollout) = &self.status.rollout {
            rollout.step.phase()
        } else if self.status.failed_revision.as_deref().is_some_and(|f| f == self.active()) {
            // The roll back away from it failed (RestoreFailed): a failed revision serves.
            Phase::Degraded
        } else if self.status.failed_revision.is_some() {
            Phase::RolledBack
        } else if ready >= self.spec.replicas {
            Phase::Healthy
        } else if ready > 0 {
            Phase::Progressing
        } else if matches!(previous, None | Some(Phase::Pending)) {
            Phase::Pending
        } else {
            Phase::Degraded
        };
        self.status.phase = Some(phase);
        self.status.desired_revision = Some(self.desired().to_string());
    }

    fn active(&self) -> String {
        self.status.active_revision.clone().unwrap_or_else(|| self.desired().to_string())
    }

    /// A spec that moved on ends the rollout in flight; a new template starts a rollout.
    fn follow_spec(&mut self) {
        if let Some(rollout) = self.status.rollout.clone() {
            let target_changed = match rollout.step {
                // Restoring moves away from the baseline the spec still names; the spec moving
                // elsewhere means the user decided otherwise, unless it now names the revision
                // being restored (the restore already does what the spec asks).
                RolloutStep::Restoring => {
                    rollout.baseline != self.desired()
                        && rollout.revision != self.desired()
                        && self.status.failed_revision.as_deref() != Some(self.desired())
                }
                _ => rollout.revision != self.desired(),
            };
            if !target_changed {
                return;
            }
            match rollout.step {
                RolloutStep::Watching | RolloutStep::ScalingDown => {
                    // The new revision already serves: finish that promotion, then roll out the next.
                    self.complete_promotion("the spec changed during the post-promotion watch");
                }
                RolloutStep::Restoring => {
                    self.status.rollout = None;
                    self.actions.push(Action::StopGate);
                    self.event(
                        "RestoreCancelled",
                        format!("the spec changed; roll back to {} cancelled", rollout.revision),
                    );
                }
                _ => {
                    self.status.rollout = None;
                    self.status.preview_revision = None;
                    self.actions.push(Action::StopGate);
                    let reason = format!("superseded by revision {}", self.desired());
                    self.record(
                        rollout.revision.clone(),
                        Some(rollout.baseline.clone()),
                        RolloutResult::Aborted,
                        reason,
                    );
                    self.event(
                        "RolloutSuperseded",
                        format!(
                            "rollout of {} superseded by a newer spec (revision {})",
                            rollout.revision,
                            self.desired()
                        ),
                    );
                }
            }
        }
        let active = self.active();
        if self.status.rollout.is_none()
            && self.desired() != active
            && self.status.failed_revision.as_deref() != Some(self.desired())
        {
            self.start_rollout(active);
        }
    }

    fn start_rollout(&mut self, baseline: String) {
        let revision = self.desired().to_string();
        self.status.rollout = Some(RolloutState {
            revision: revision.clone(),
            baseline: baseline.clone(),
            step: RolloutStep::WaitingForPreview,
            started_at: self.now.clone(),
            step_started_at: self.now.clone(),
            window_started_at: None,
            message: None,
            result: None,
        });
        self.status.preview_revision = Some(revision.clone());
        self.status.analysis = Some(AnalysisStatus {
            revision: revision.clone(),
            started_at: Some(self.now.clone()),
            ..AnalysisStatus::default()
        });
        self.event(
            "RolloutStarted",
            format!(
                "revision {revision} deployed as preview ({} replicas) next to active revision {baseline}",
                self.spec.rollout.preview_replicas
            ),
        );
    }

    // ---- steps -----------------------------------------------------------------------------

    /// Runs the current step once; true when it moved to another step.
    fn advance(&mut self) -> bool {
        let Some(rollout) = self.status.rollout.clone() else {
            return false;
        };
        let rollout_spec = &self.spec.rollout;
        match rollout.step {
            RolloutStep::WaitingForPreview => {
                let ready = self.ready(&rollout.revision);
                if ready >= rollout_spec.preview_replicas {
                    self.set_step(RolloutStep::WarmingUp);
                    if rollout_spec.warmup_seconds > 0 {
                        self.actions.push(Action::Gate(GateWork::Warmup {
                            revision: rollout.revision.clone(),
                            seconds: rollout_spec.warmup_seconds,
                        }));
                    }
                    self.event(
                        "PreviewAvailable",
                        format!(
                            "preview {} has {ready} ready pods; warming up for {}s",
                            rollout.revision, rollout_spec.warmup_seconds
                        ),
                    );
                    return true;
                }
                if self.due(&rollout.step_started_at, rollout_spec.progress_deadline_seconds) {
                    let reason = format!(
                        "preview never became available: {ready}/{} pods ready after {}s",
                        rollout_spec.preview_replicas, rollout_spec.progress_deadline_seconds
                    );
                    self.roll_back(RolloutResult::RolledBack, reason);
                    return true;
                }
                false
            }
            RolloutStep::WarmingUp => {
                if self.due(&rollout.step_started_at, rollout_spec.warmup_seconds) {
                    self.set_step(RolloutStep::Analyzing);
                    self.open_window(&rollout);
                    return true;
                }
                if !self.gate_busy() {
                    // The operator restarted mid warm-up: resume the probe load for what is left.
                    let left = i64::from(rollout_spec.warmup_seconds) - self.elapsed(&rollout.step_started_at);
                    self.actions.push(Action::Gate(GateWork::Warmup {
                        revision: rollout.revision.clone(),
                        seconds: u32::try_from(left.max(1)).unwrap_or(u32::MAX),
                    }));
                }
                false
            }
            RolloutStep::Analyzing | RolloutStep::Watching => self.analyze(&rollout),
            RolloutStep::AwaitingPromotion => {
                // autoPromote is read on every reconcile: turning it on promotes what passed.
                if rollout_spec.auto_promote {
                    self.event(
                        "AnalysisPassed",
                        format!("revision {} passed its analysis and autoPromote is on; promoting", rollout.revision),
                    );
                    self.begin_promotion();
                    return true;
                }
                false
            }
            // Only an annotation moves a paused rollout on (see `commands`).
            RolloutStep::Paused => false,
            RolloutStep::ScalingUp => {
                let ready = self.ready(&rollout.revision);
                if ready >= self.spec.replicas {
                    self.switch_traffic(&rollout);
                    return true;
                }
                if self.due(&rollout.step_started_at, rollout_spec.progress_deadline_seconds) {
                    let reason = format!(
                        "revision {} reached only {ready}/{} ready pods within {}s before promotion",
                        rollout.revision, self.spec.replicas, rollout_spec.progress_deadline_seconds
                    );
                    self.roll_back(RolloutResult::RolledBack, reason);
                    return true;
                }
                false
            }
            RolloutStep::ScalingDown => {
                if self.due(&rollout.step_started_at, rollout_spec.scale_down_delay_seconds) {
                    self.complete_promotion("post-promotion watch passed");
                    return true;
                }
                false
            }
            RolloutStep::Restoring => {
                let ready = self.ready(&rollout.revision);
                if ready >= self.spec.replicas {
                    self.finish_restore(&rollout);
                    return true;
                }
                if self.due(&rollout.step_started_at, rollout_spec.progress_deadline_seconds) {
                    self.restore_failed(&rollout, ready);
                    return true;
                }
                false
            }
        }
    }

    // ---- endings -------------------------------------------------------------------------

    fn begin_promotion(&mut self) {
        self.actions.push(Action::StopGate);
        self.set_step(RolloutStep::ScalingUp);
    }

    /// The `<name>` Service now selects the new revision; the old one stays warm for the watch.
    fn switch_traffic(&mut self, rollout: &RolloutState) {
        self.status.active_revision = Some(rollout.revision.clone());
        self.status.preview_revision = None;
        self.set_step(RolloutStep::Watching);
        self.event(
            "Promoted",
            format!(
                "revision {} now takes traffic; {} stays warm for a {}s watch",
                rollout.revision, rollout.baseline, self.spec.rollout.post_promotion_watch_seconds
            ),
        );
    }

    fn complete_promotion(&mut self, why: &str) {
        let Some(rollout) = self.status.rollout.take() else {
            return;
        };
        self.actions.push(Action::StopGate);
        self.status.active_revision = Some(rollout.revision.clone());
        self.status.preview_revision = None;
        self.status.previous_revision = Some(rollout.baseline.clone());
        self.record(rollout.revision.clone(), Some(rollout.baseline.clone()), RolloutResult::Promoted, why.to_string());
        self.event(
            "RolloutComplete",
            format!("revision {} promoted ({why}); {} scaled to zero", rollout.revision, rollout.baseline),
        );
    }

    /// Any failure: the baseline serves (it never stopped before promotion, and stayed warm
    /// after), the candidate is scaled to zero at once and is not retried until the spec changes.
    ///
    /// After promotion the baseline takes traffic back only if it has ready pods; otherwise the
    /// candidate keeps serving while the baseline is scaled up (the Restoring step), so the
    /// Service never selects a revision without ready pods.
    fn roll_back(&mut self, result: RolloutResult, reason: String) {
        let Some(rollout) = self.status.rollout.take() else {
            return;
        };
        let serving = matches!(rollout.step, RolloutStep::Watching | RolloutStep::ScalingDown);
        if serving && self.ready(&rollout.baseline) == 0 {
            self.actions.push(Action::StopGate);
            self.warn(
                "RollbackWaiting",
                format!(
                    "{reason}; {} has no ready pods, so {} keeps serving until it is scaled up",
                    rollout.baseline, rollout.revision
                ),
            );
            self.status.rollout = Some(RolloutState {
                revision: rollout.baseline.clone(),
                baseline: rollout.revision.clone(),
                step: RolloutStep::Restoring,
                started_at: self.now.clone(),
                step_started_at: self.now.clone(),
                window_started_at: None,
                message: Some(reason),
                result: Some(result),
            });
            return;
        }
        self.actions.push(Action::StopGate);
        self.status.active_revision = Some(rollout.baseline.clone());
        self.status.preview_revision = None;
        self.status.failed_revision = Some(rollout.revision.clone());
        self.record(rollout.revision.clone(), Some(rollout.baseline.clone()), result, reason.clone());
        self.warn(
            if result == RolloutResult::Aborted { "RolloutAborted" } else { "RolledBack" },
            format!(
                "revision {} {}: {reason}; {} keeps serving, {} scaled to zero",
                rollout.revision,
                if result == RolloutResult::Aborted { "aborted" } else { "rolled back" },
                rollout.baseline,
                rollout.revision
            ),
        );
    }

    fn finish_restore(&mut self, rollout: &RolloutState) {
        self.status.rollout = None;
        self.status.active_revision = Some(rollout.revision.clone());
        if self.status.previous_revision.as_ref() == Some(&rollout.revision) {
            self.status.previous_revision = None;
        }
        // The spec still names the revision we left; it must not roll out again by itself.
        if rollout.baseline == self.desired() {
            self.status.failed_revision = Some(rollout.baseline.clone());
        }
        // An abort in the watch ends as an abort, whatever step it went through.
        let result = rollout.result.unwrap_or(RolloutResult::RolledBack);
        self.record(
            rollout.baseline.clone(),
            Some(rollout.revision.clone()),
            result,
            rollout
                .message
                .clone()
                .unwrap_or_else(|| format!("rolled back to previous revision {} by annotation", rollout.revision)),
        );
        let (reason, what) = if result == RolloutResult::Aborted {
            ("RolloutAborted", "aborted")
        } else {
            ("RolledBack", "rolled back")
        };
        self.warn(
            reason,
            format!(
                "revision {} {what}: previous revision {} serves again; {} scaled to zero",
                rollout.baseline, rollout.revision, rollout.baseline
            ),
        );
    }

    /// The previous revision did not get ready within `progressDeadlineSeconds`, so the
    /// revision being left keeps serving. After a failure or an abort in the watch that
    /// revision is marked failed (Ready=False, Stalled=True, phase Degraded) instead of reading
    /// healthy, and `previousRevision` names the one that did not come up, so that
    /// `infergate.dev/rollback` can try again.
    fn restore_failed(&mut self, rollout: &RolloutState, ready: i32) {
        self.status.rollout = None;
        let why = format!(
            "previous revision {} reached only {ready}/{} ready pods within {}s; {} keeps serving",
            rollout.revision, self.spec.replicas, self.spec.rollout.progress_deadline_seconds, rollout.baseline
        );
        let Some(result) = rollout.result else {
            // A roll back by annotation of a healthy revision: nothing failed but the restore.
            self.warn("RestoreFailed", why);
            return;
        };
        if rollout.baseline == self.desired() {
            self.status.failed_revision = Some(rollout.baseline.clone());
        }
        self.status.previous_revision = Some(rollout.revision.clone());
        let failure = rollout.message.clone().unwrap_or_else(|| "the rollout failed".to_string());
        self.record(
            rollout.baseline.clone(),
            Some(rollout.revision.clone()),
            result,
            format!("{failure}; the roll back failed: {why}"),
        );
        self.warn(
            "RestoreFailed",
            format!(
                "{why}, marked failed ({failure}); annotate infergate.dev/rollback to try again or change the spec"
            ),
        );
    }
}
