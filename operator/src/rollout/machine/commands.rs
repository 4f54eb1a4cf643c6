//! Manual controls: which annotation does what in which step, each acted on exactly once.

use super::Machine;
use crate::crd::{AnalysisStatus, ControlRecord, RolloutResult, RolloutState, RolloutStep};
use crate::rollout::{Action, Command};

impl Machine<'_> {
    /// Acts on the control annotation unless status records it as handled already.
    ///
    /// The record is written with the decision (status first), the annotation is removed after
    /// it: a removal that failed leaves annotation and record both present, and then only the
    /// removal is issued again. Once the annotation is gone the record is dropped, so the same
    /// control can be given again.
    pub(super) fn handle_control(&mut self) {
        let handled = self.status.last_control.as_ref().map(|record| record.annotation.clone());
        match (self.observed.command, handled) {
            (Some(command), Some(handled)) if handled == command.annotation() => {
                self.actions.push(Action::ClearControls);
            }
            (Some(command), _) => {
                self.status.last_control =
                    Some(ControlRecord { annotation: command.annotation().to_string(), handled_at: self.now.clone() });
                self.actions.push(Action::ClearControls);
                self.command(command);
            }
            (None, Some(_)) => self.status.last_control = None,
            (None, None) => {}
        }
    }

    fn command(&mut self, command: Command) {
        let step = self.status.rollout.as_ref().map(|r| r.step);
        match (command, step) {
            (Command::Rollback, None) => self.start_restore(),
            (Command::Retry, None) => self.retry_failed(),
            (Command::Promote | Command::Abort, None) => {
                self.warn("ControlIgnored", format!("{}: no rollout in progress", command.annotation()));
            }
            (Command::Promote, Some(step)) => self.manual_promote(step),
            (Command::Retry, Some(RolloutStep::Paused)) => self.restart_analysis(),
            (Command::Retry, Some(step)) => {
                self.warn("ControlIgnored", format!("retry: a rollout is in progress ({step:?})"));
            }
            (Command::Abort | Command::Rollback, Some(RolloutStep::Restoring)) => self.control_restore(command),
            (Command::Abort, Some(_)) => self.roll_back(RolloutResult::Aborted, "aborted by annotation".into()),
            (Command::Rollback, Some(_)) => {
                self.roll_back(RolloutResult::RolledBack, "rolled back by annotation".into())
            }
        }
    }

    /// An abort or rollback while Restoring. A restore after a failure or an abort in the watch
    /// goes on: cancelling it would leave the failing revision serving, unmarked and Ready. A
    /// roll back by annotation is the user's own decision and can be cancelled.
    fn control_restore(&mut self, command: Command) {
        let Some(rollout) = self.status.rollout.clone() else {
            return;
        };
        if rollout.result.is_some() {
            self.warn(
                "ControlIgnored",
                format!(
                    "{}: the roll back from {} to {} is under way and goes on",
                    command.annotation(),
                    rollout.baseline,
                    rollout.revision
                ),
            );
            return;
        }
        self.status.rollout = None;
        self.event(
            "RestoreCancelled",
            format!(
                "{} cancelled the roll back to {}; {} keeps serving",
                command.annotation(),
                rollout.revision,
                rollout.baseline
            ),
        );
    }

    fn manual_promote(&mut self, step: RolloutStep) {
        let Some(rollout) = self.status.rollout.clone() else {
            return;
        };
        match step {
            RolloutStep::WaitingForPreview
            | RolloutStep::WarmingUp
            | RolloutStep::Analyzing
            | RolloutStep::AwaitingPromotion
            | RolloutStep::Paused => {
                if self.ready(&rollout.revision) > 0 {
                    self.event("ManualPromotion", format!("revision {} promoted by annotation", rollout.revision));
                    self.begin_promotion();
                } else {
                    self.warn(
                        "ControlIgnored",
                        format!("cannot promote revision {}: none of its pods is ready", rollout.revision),
                    );
                }
            }
            RolloutStep::Watching | RolloutStep::ScalingDown => {
                self.complete_promotion("promoted by annotation before the watch ended");
            }
            RolloutStep::ScalingUp | RolloutStep::Restoring => {
                self.warn("ControlIgnored", format!("promote: nothing to skip while {step:?}"));
            }
        }
    }

    /// `infergate.dev/retry` between rollouts: the failed revision the spec still names is
    /// rolled out again from the start.
    fn retry_failed(&mut self) {
        match self.status.failed_revision.clone() {
            // It serves already (its roll back failed): the retry only clears the mark.
            Some(failed) if failed == self.desired() && failed == self.active() => {
                self.status.failed_revision = None;
                self.event(
                    "RetryRequested",
                    format!("revision {failed} serves; its failure mark is cleared by annotation"),
                );
            }
            Some(failed) if failed == self.desired() => {
                self.status.failed_revision = None;
                let active = self.active();
                self.event("RetryRequested", format!("retrying failed revision {failed} by annotation"));
                self.start_rollout(active);
            }
            _ => self.warn("ControlIgnored", "retry: no failed revision that the spec still asks for".into()),
        }
    }

    /// `infergate.dev/retry` in the Paused step: a fresh analysis, with fresh counts and deadline.
    fn restart_analysis(&mut self) {
        let Some(rollout) = self.status.rollout.clone() else {
            return;
        };
        self.status.analysis = Some(AnalysisStatus {
            revision: rollout.revision.clone(),
            started_at: Some(self.now.clone()),
            ..AnalysisStatus::default()
        });
        self.set_step(RolloutStep::Analyzing);
        self.event("AnalysisRestarted", format!("analysis of revision {} restarted by annotation", rollout.revision));
        // `advance` opens the first window of the restarted analysis.
    }

    /// Roll back to the previous revision after a finished rollout: scale it up, then switch.
    fn start_restore(&mut self) {
        let active = self.active();
        match self.status.previous_revision.clone() {
            Some(previous) if previous != active => {
                self.status.rollout = Some(RolloutState {
                    revision: previous.clone(),
                    baseline: active.clone(),
                    step: RolloutStep::Restoring,
                    started_at: self.now.clone(),
                    step_started_at: self.now.clone(),
                    window_started_at: None,
                    message: None,
                    result: None,
                });
                self.event(
                    "RestoreStarted",
                    format!("rolling back from {active} to previous revision {previous}: scaling it up"),
                );
            }
            _ => self.warn("ControlIgnored", "rollback: no previous revision to go back to".into()),
        }
    }
}
