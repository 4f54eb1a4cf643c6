//! Where a resource stands, in one line and an exit code for scripts, as
//! `kubectl argo rollouts status` reports it.
//!
//! Exit codes: 0 healthy (the last rollout completed), 1 degraded, aborted or rolled back,
//! 2 still progressing (when a `--watch` timed out, or at once without `--watch`), 3 usage error
//! or a request the resource's state refuses, 4 API or kubeconfig error (not found included).

use std::process::ExitCode;

use crate::crd::{InferenceDeploymentStatus, Phase, RolloutStep};
use crate::reconcile::status::{condition, CONDITION_READY};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Healthy = 0,
    Failed = 1,
    Progressing = 2,
    Usage = 3,
    ApiError = 4,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> ExitCode {
        ExitCode::from(status.code())
    }
}

/// What a resource's status says, for `status` and for `--wait`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The active revision serves and nothing is rolling out.
    Healthy(String),
    /// The active revision lacks ready replicas, or the spec cannot be served.
    Degraded(String),
    /// The last rollout was aborted or rolled back; the previous revision serves.
    RolledBack(String),
    /// The operator has work left: a rollout in flight, a pause, a spec not yet observed.
    Progressing(String),
}

impl Outcome {
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Outcome::Healthy(_) => ExitStatus::Healthy,
            Outcome::Degraded(_) | Outcome::RolledBack(_) => ExitStatus::Failed,
            Outcome::Progressing(_) => ExitStatus::Progressing,
        }
    }

    /// A state a `--watch` stops at.
    pub fn is_final(&self) -> bool {
        !matches!(self, Outcome::Progressing(_))
    }

    pub fn line(&self) -> &str {
        match self {
            Outcome::Healthy(l) | Outcome::Degraded(l) | Outcome::RolledBack(l) | Outcome::Progressing(l) => l,
        }
    }
}

/// The outcome of a resource whose metadata.generation is `generation` and whose status is
/// `status`; `name` is used in the hints the line gives.
pub fn outcome(name: &str, generation: Option<i64>, status: Option<&InferenceDeploymentStatus>) -> Outcome {
    let Some(s) = status.filter(|s| s.phase.is_some()) else {
        return Outcome::Progressing("Pending: waiting for the operator to report a status".into());
    };
    if let (Some(generation), observed) = (generation, s.observed_generation) {
        if observed.is_none_or(|o| o < generation) {
            return Outcome::Progressing(format!(
                "Progressing: waiting for the operator to observe generation {generation}"
            ));
        }
    }
    let active = s.active_revision.as_deref().unwrap_or("none");
    let ready = format!("{}/{}", s.ready_replicas.unwrap_or(0), s.replicas.unwrap_or(0));
    if let Some(rollout) = &s.rollout {
        let line = match rollout.step {
            RolloutStep::AwaitingPromotion => format!(
                "Paused: revision {} passed analysis and awaits promotion (kubectl infergate promote {name})",
                rollout.revision
            ),
            RolloutStep::Paused => format!(
                "Paused: revision {}: {} (kubectl infergate promote, abort or retry {name})",
                rollout.revision,
                rollout.message.as_deref().unwrap_or("analysis stopped at a limit")
            ),
            RolloutStep::Analyzing => {
                let checks = s
                    .analysis
                    .as_ref()
                    .filter(|a| a.revision == rollout.revision)
                    .map(|a| {
                        format!(
                            ", {} passed, {} failed, {} inconclusive",
                            a.successful_checks, a.failed_checks, a.inconclusive_checks
                        )
                    })
                    .unwrap_or_default();
                format!("Analyzing: revision {}{checks}; {active} serves", rollout.revision)
            }
            step => {
                format!("{}: revision {} at step {step:?}; {active} serves", step.phase().as_str(), rollout.revision)
            }
        };
        return Outcome::Progressing(line);
    }
    let ready_message = condition(s, CONDITION_READY).map(|c| c.message.clone()).filter(|m| !m.is_empty());
    match s.phase {
        Some(Phase::Healthy) => Outcome::Healthy(format!("Healthy: revision {active} serves, {ready} replicas ready")),
        Some(Phase::RolledBack) => {
            let last = s.history.last().map(|r| {
                format!(
                    "{} {}{}",
                    r.revision,
                    r.result.as_str(),
                    r.reason.as_ref().map(|w| format!(": {w}")).unwrap_or_default()
                )
            });
            let detail = last.or(ready_message).unwrap_or_else(|| "the last rollout failed".into());
            Outcome::RolledBack(format!("RolledBack: {detail}; {active} serves, {ready} replicas ready"))
        }
        Some(Phase::Degraded) => Outcome::Degraded(format!(
            "Degraded: {}",
            ready_message.unwrap_or_else(|| format!("revision {active} has {ready} replicas ready"))
        )),
        Some(phase) => Outcome::Progressing(format!("{}: revision {active}, {ready} replicas ready", phase.as_str())),
        None => Outcome::Progressing("Pending: waiting for the operator to report a status".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli_plugin::fixtures;
    use crate::crd::RolloutStep;

    fn of(s: &InferenceDeploymentStatus) -> Outcome {
        outcome("chat", Some(2), Some(s))
    }

    #[test]
    fn healthy_is_zero() {
        let o = of(&fixtures::healthy());
        assert_eq!(o.exit_status().code(), 0);
        assert!(o.is_final());
        assert_eq!(o.line(), "Healthy: revision aaa111 serves, 2/2 replicas ready");
    }

    #[test]
    fn rolled_back_and_degraded_are_one() {
        let rolled = of(&fixtures::rolled_back());
        assert_eq!(rolled.exit_status().code(), 1);
        assert!(rolled.line().contains("bbb222 Aborted: aborted by annotation"), "{}", rolled.line());
        let mut degraded = fixtures::healthy();
        degraded.phase = Some(Phase::Degraded);
        assert_eq!(of(&degraded).exit_status().code(), 1);
    }

    #[test]
    fn every_rollout_step_is_progressing_with_a_hint_at_a_pause() {
        for step in [
            RolloutStep::WaitingForPreview,
            RolloutStep::WarmingUp,
            RolloutStep::Analyzing,
            RolloutStep::AwaitingPromotion,
            RolloutStep::ScalingUp,
            RolloutStep::Watching,
            RolloutStep::ScalingDown,
            RolloutStep::Restoring,
            RolloutStep::Paused,
        ] {
            let o = of(&fixtures::rolling(step));
            assert_eq!(o.exit_status().code(), 2, "{step:?}");
            assert!(!o.is_final());
        }
        let waiting = of(&fixtures::rolling(RolloutStep::AwaitingPromotion));
        assert!(waiting.line().contains("kubectl infergate promote chat"), "{}", waiting.line());
        let analyzing = of(&fixtures::rolling(RolloutStep::Analyzing));
        assert!(analyzing.line().contains("1 passed, 0 failed"), "{}", analyzing.line());
    }

    #[test]
    fn a_spec_not_yet_observed_is_progressing_even_when_healthy() {
        let mut s = fixtures::healthy();
        s.observed_generation = Some(1);
        let o = of(&s);
        assert_eq!(o.exit_status(), ExitStatus::Progressing);
        assert!(o.line().contains("generation 2"));
        // Nor is a RolledBack resource final before the operator saw its new spec.
        let mut rolled = fixtures::rolled_back();
        rolled.observed_generation = None;
        assert_eq!(of(&rolled).exit_status(), ExitStatus::Progressing);
    }

    #[test]
    fn no_status_is_progressing() {
        assert_eq!(outcome("chat", Some(1), None).exit_status(), ExitStatus::Progressing);
        assert_eq!(
            outcome("chat", Some(1), Some(&InferenceDeploymentStatus::default())).exit_status(),
            ExitStatus::Progressing
        );
    }

    #[test]
    fn exit_codes_are_the_documented_ones() {
        let codes: Vec<u8> =
            [ExitStatus::Healthy, ExitStatus::Failed, ExitStatus::Progressing, ExitStatus::Usage, ExitStatus::ApiError]
                .into_iter()
                .map(ExitStatus::code)
                .collect();
        assert_eq!(codes, [0, 1, 2, 3, 4]);
    }
}
