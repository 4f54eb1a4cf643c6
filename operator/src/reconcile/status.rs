//! The status the reconciler writes: phase, revisions and conditions, from what it observed.
//!
//! Pure: the same inputs give the same status, and a condition keeps its lastTransitionTime
//! while its status does not change, so re-reconciling an unchanged world writes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::plan::RevisionPlan;
use crate::crd::{InferenceDeploymentStatus, Phase, RolloutStep};
use crate::model_source::SpecError;

pub const CONDITION_READY: &str = "Ready";
pub const CONDITION_AVAILABLE: &str = "Available";
pub const CONDITION_PROGRESSING: &str = "Progressing";
pub const CONDITION_ROLLED_BACK: &str = "RolledBack";
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";

/// What the Deployments report for the planned revisions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// Ready pods of the active revision.
    pub active_ready: i32,
    /// Ready pods of the preview revision, when there is one.
    pub preview_ready: i32,
}

/// The status after applying `plan` for a spec with `replicas` and generation `generation`.
pub fn next_status(
    old: Option<&InferenceDeploymentStatus>,
    generation: Option<i64>,
    plan: &RevisionPlan,
    replicas: i32,
    observed: &Observation,
    now: &Time,
) -> InferenceDeploymentStatus {
    let mut status = old.cloned().unwrap_or_default();
    let previous_phase = status.phase;
    let active = plan.active.as_str();
    let ready = observed.active_ready;
    // A failed revision stays marked only while the spec still asks for it.
    let failed = status.failed_revision.take().filter(|failed| *failed == plan.desired);

    let rollout = status.rollout.clone();
    let phase = if let Some(rollout) = &rollout {
        rollout.step.phase()
    } else if plan.preview.is_some() {
        Phase::Progressing
    } else if failed.is_some() {
        Phase::RolledBack
    } else if ready >= replicas {
        Phase::Healthy
    } else if ready > 0 {
        Phase::Progressing
    } else if matches!(previous_phase, None | Some(Phase::Pending)) {
        Phase::Pending
    } else {
        Phase::Degraded
    };

    let (progressing, progressing_reason, progressing_message) = match (&rollout, &plan.preview) {
        (Some(rollout), _) => (
            true,
            step_reason(rollout.step),
            format!(
                "rollout of revision {} from {}: {:?} since {}",
                rollout.revision,
                rollout.baseline,
                rollout.step,
                rollout.step_started_at.0
            ),
        ),
        (None, Some(preview)) => (
            true,
            "PreviewDeployed",
            format!(
                "revision {preview} runs as preview ({}/{} ready) next to active revision {active}; promotion awaits analysis",
                observed.preview_ready,
                plan.replicas.get(preview).copied().unwrap_or_default()
            ),
        ),
        (None, None) if ready < replicas => (
            true,
            "ReplicasStarting",
            format!("revision {active}: {ready}/{replicas} replicas ready"),
        ),
        (None, None) => (
            false,
            "Stable",
            format!("revision {active} serves all {replicas} replicas"),
        ),
    };

    let conditions = &mut status.conditions;
    set_condition(
        conditions,
        CONDITION_READY,
        ready >= replicas,
        if ready >= replicas { "AllReplicasReady" } else { "ReplicasNotReady" },
        format!("{ready}/{replicas} replicas of active revision {active} ready"),
        generation,
        now,
    );
    set_condition(
        conditions,
        CONDITION_AVAILABLE,
        ready > 0,
        if ready > 0 { "MinimumReplicasAvailable" } else { "NoReplicasAvailable" },
        format!("{ready} ready replicas behind the active Service"),
        generation,
        now,
    );
    set_condition(
        conditions,
        CONDITION_PROGRESSING,
        progressing,
        progressing_reason,
        progressing_message,
        generation,
        now,
    );

    // RolledBack appears with the first roll back, True while the spec still asks for the
    // failed revision, False once it moved on.
    let rolled_back_before = condition(&status, CONDITION_ROLLED_BACK).is_some();
    if let Some(failed) = &failed {
        let why = status
            .history
            .iter()
            .rev()
            .find(|r| &r.revision == failed)
            .and_then(|r| r.reason.clone())
            .unwrap_or_else(|| "the rollout failed".to_string());
        let message = format!("revision {failed} was rolled back: {why}; it is not retried until the spec changes");
        set_condition(&mut status.conditions, CONDITION_ROLLED_BACK, true, "RolloutFailed", message, generation, now);
    } else if rolled_back_before {
        let message = "the spec no longer asks for a failed revision".to_string();
        set_condition(&mut status.conditions, CONDITION_ROLLED_BACK, false, "SpecChanged", message, generation, now);
    }

    status.phase = Some(phase);
    status.active_revision = Some(plan.active.clone());
    status.preview_revision = plan.preview.clone();
    status.desired_revision = Some(plan.desired.clone());
    status.failed_revision = failed;
    status.observed_generation = generation;
    status.replicas = Some(replicas);
    status.ready_replicas = Some(ready);
    status
}

fn step_reason(step: RolloutStep) -> &'static str {
    match step {
        RolloutStep::WaitingForPreview => "WaitingForPreview",
        RolloutStep::WarmingUp => "WarmingUp",
        RolloutStep::Analyzing => "Analyzing",
        RolloutStep::AwaitingPromotion => "AwaitingPromotion",
        RolloutStep::ScalingUp => "ScalingUp",
        RolloutStep::Watching => "Watching",
        RolloutStep::ScalingDown => "ScalingDown",
        RolloutStep::Restoring => "Restoring",
    }
}

/// The status for a spec that cannot be served. Children and revisions are left as they are, so
/// the active revision keeps serving while the user fixes the spec.
pub fn invalid_spec_status(
    old: Option<&InferenceDeploymentStatus>,
    generation: Option<i64>,
    error: &SpecError,
    now: &Time,
) -> InferenceDeploymentStatus {
    let mut status = old.cloned().unwrap_or_default();
    for kind in [CONDITION_READY, CONDITION_PROGRESSING] {
        set_condition(&mut status.conditions, kind, false, REASON_INVALID_SPEC, error.to_string(), generation, now);
    }
    status.phase = Some(Phase::Degraded);
    status.observed_generation = generation;
    status
}

/// Sets condition `kind`; lastTransitionTime only moves when its status flips.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    kind: &str,
    is_true: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if is_true { "True" } else { "False" }.to_string();
    let last_transition_time = conditions
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    let condition = Condition {
        type_: kind.to_string(),
        status,
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    };
    match conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
}

pub fn condition<'a>(status: &'a InferenceDeploymentStatus, kind: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == kind)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn time(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn plan(active: &str, preview: Option<&str>) -> RevisionPlan {
        let mut replicas = BTreeMap::from([(active.to_string(), 2)]);
        if let Some(p) = preview {
            replicas.insert(p.to_string(), 1);
        }
        RevisionPlan {
            desired: preview.unwrap_or(active).to_string(),
            active: active.to_string(),
            preview: preview.map(String::from),
            replicas,
        }
    }

    fn ready(n: i32) -> Observation {
        Observation { active_ready: n, preview_ready: 0 }
    }

    #[test]
    fn new_resource_is_pending_until_pods_are_ready() {
        let s = next_status(None, Some(1), &plan("aaa", None), 2, &ready(0), &time(10));
        assert_eq!(s.phase, Some(Phase::Pending));
        assert_eq!(s.active_revision.as_deref(), Some("aaa"));
        assert_eq!(s.observed_generation, Some(1));
        let ready_cond = condition(&s, CONDITION_READY).unwrap();
        assert_eq!(ready_cond.status, "False");
        assert_eq!(ready_cond.reason, "ReplicasNotReady");
        assert_eq!(condition(&s, CONDITION_PROGRESSING).unwrap().status, "True");
    }

    #[test]
    fn all_ready_is_healthy_and_transition_time_moves_only_on_flips() {
        let pending = next_status(None, Some(1), &plan("aaa", None), 2, &ready(0), &time(10));
        let healthy = next_status(Some(&pending), Some(1), &plan("aaa", None), 2, &ready(2), &time(20));
        assert_eq!(healthy.phase, Some(Phase::Healthy));
        let c = condition(&healthy, CONDITION_READY).unwrap();
        assert_eq!((c.status.as_str(), c.last_transition_time.clone()), ("True", time(20)));
        assert_eq!(condition(&healthy, CONDITION_PROGRESSING).unwrap().reason, "Stable");
        // Nothing changed: identical status, so no write and no event.
        let again = next_status(Some(&healthy), Some(1), &plan("aaa", None), 2, &ready(2), &time(30));
        assert_eq!(again, healthy);
    }

    #[test]
    fn losing_every_pod_after_serving_is_degraded() {
        let healthy = next_status(None, Some(1), &plan("aaa", None), 2, &ready(2), &time(10));
        let lost = next_status(Some(&healthy), Some(1), &plan("aaa", None), 2, &ready(0), &time(20));
        assert_eq!(lost.phase, Some(Phase::Degraded));
        assert_eq!(condition(&lost, CONDITION_AVAILABLE).unwrap().status, "False");
    }

    #[test]
    fn preview_is_progressing_with_both_revisions_recorded() {
        let healthy = next_status(None, Some(1), &plan("aaa", None), 2, &ready(2), &time(10));
        let s = next_status(Some(&healthy), Some(2), &plan("aaa", Some("bbb")), 2, &ready(2), &time(20));
        assert_eq!(s.phase, Some(Phase::Progressing));
        assert_eq!(s.active_revision.as_deref(), Some("aaa"));
        assert_eq!(s.preview_revision.as_deref(), Some("bbb"));
        assert_eq!(s.desired_revision.as_deref(), Some("bbb"));
        assert_eq!(condition(&s, CONDITION_PROGRESSING).unwrap().reason, "PreviewDeployed");
        // The active revision still serves, so Ready stays True.
        assert_eq!(condition(&s, CONDITION_READY).unwrap().status, "True");
    }

    #[test]
    fn invalid_spec_keeps_revisions_and_explains() {
        let healthy = next_status(None, Some(1), &plan("aaa", None), 2, &ready(2), &time(10));
        let err = SpecError("model.source \"x\": bad".into());
        let s = invalid_spec_status(Some(&healthy), Some(2), &err, &time(20));
        assert_eq!(s.phase, Some(Phase::Degraded));
        assert_eq!(s.active_revision.as_deref(), Some("aaa"));
        assert_eq!(s.observed_generation, Some(2));
        let c = condition(&s, CONDITION_READY).unwrap();
        assert_eq!(c.reason, REASON_INVALID_SPEC);
        assert!(c.message.contains("model.source"));
    }
}
