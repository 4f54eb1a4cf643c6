//! The conditions and replica counts of the status, derived from what the rollout state
//! machine decided (the only writer of phase and revisions) and the active revision's pods.
//!
//! Pure: the same inputs give the same status, and a condition keeps its lastTransitionTime
//! while its status does not change, so re-reconciling an unchanged world writes nothing.
//! Besides Ready, Available and Progressing, the status carries kstatus' abnormal-true pair
//! (Reconciling, Stalled), so Flux and kstatus-based tools report InProgress or Failed rather
//! than Current while a rollout runs or after a roll back.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{InferenceDeploymentStatus, RolloutStep};
use crate::model_source::SpecError;

pub const CONDITION_READY: &str = "Ready";
pub const CONDITION_AVAILABLE: &str = "Available";
pub const CONDITION_PROGRESSING: &str = "Progressing";
pub const CONDITION_ROLLED_BACK: &str = "RolledBack";
pub const CONDITION_RECONCILING: &str = "Reconciling";
pub const CONDITION_STALLED: &str = "Stalled";
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
pub const REASON_ROLLED_BACK: &str = "RolledBack";
/// A failed revision serves because the roll back away from it did not finish (RestoreFailed).
pub const REASON_ROLLBACK_FAILED: &str = "RollbackFailed";

/// `decided` (the machine's status) with its conditions, generation and replica counts set, for
/// a spec with `replicas` whose active revision has `active_ready` ready pods.
pub fn with_conditions(
    decided: &InferenceDeploymentStatus,
    generation: Option<i64>,
    replicas: i32,
    active_ready: i32,
    now: &Time,
) -> InferenceDeploymentStatus {
    let mut status = decided.clone();
    let active = status.active_revision.clone().unwrap_or_default();
    let ready = active_ready;
    let failed = status.failed_revision.clone();
    let failed_why = failed.as_ref().map(|failed| {
        let why = status
            .history
            .iter()
            .rev()
            .find(|r| &r.revision == failed)
            .and_then(|r| r.reason.clone())
            .unwrap_or_else(|| "the rollout failed".to_string());
        if *failed == active {
            let message = format!(
                "revision {failed} failed and still serves: {why}; annotate infergate.dev/rollback to try the roll \
                 back again, change the spec, or annotate infergate.dev/retry to accept it"
            );
            (REASON_ROLLBACK_FAILED, message)
        } else {
            let message = format!(
                "revision {failed} was rolled back: {why}; {active} serves; change the spec or annotate infergate.dev/retry"
            );
            (REASON_ROLLED_BACK, message)
        }
    });

    let (ready_true, ready_reason, ready_message) = match &failed_why {
        // The spec asks for a revision that does not serve, or a failed one serves: not Ready,
        // whatever the pods say.
        Some((reason, message)) => (false, *reason, message.clone()),
        None if ready >= replicas => {
            (true, "AllReplicasReady", format!("{ready}/{replicas} replicas of active revision {active} ready"))
        }
        None => (false, "ReplicasNotReady", format!("{ready}/{replicas} replicas of active revision {active} ready")),
    };
    let (progressing, progressing_reason, progressing_message) = match (&status.rollout, &failed_why) {
        (Some(rollout), _) => {
            let mut message = format!(
                "rollout of revision {} from {}: {:?} since {}",
                rollout.revision, rollout.baseline, rollout.step, rollout.step_started_at.0
            );
            if let Some(why) = &rollout.message {
                message.push_str(": ");
                message.push_str(why);
            }
            (true, step_reason(rollout.step), message)
        }
        (None, Some((reason, message))) => (false, *reason, message.clone()),
        (None, None) if ready < replicas => {
            (true, "ReplicasStarting", format!("revision {active}: {ready}/{replicas} replicas ready"))
        }
        (None, None) => (false, "Stable", format!("revision {active} serves all {replicas} replicas")),
    };

    let conditions = &mut status.conditions;
    set_condition(conditions, CONDITION_READY, ready_true, ready_reason, ready_message, generation, now);
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
        progressing_message.clone(),
        generation,
        now,
    );
    // kstatus: Reconciling True is InProgress, Stalled True is Failed.
    set_condition(
        conditions,
        CONDITION_RECONCILING,
        progressing,
        progressing_reason,
        progressing_message,
        generation,
        now,
    );
    match &failed_why {
        Some((reason, message)) => {
            set_condition(conditions, CONDITION_STALLED, true, reason, message.clone(), generation, now)
        }
        None => set_condition(
            conditions,
            CONDITION_STALLED,
            false,
            "NotStalled",
            "no failed revision is asked for".to_string(),
            generation,
            now,
        ),
    }

    // RolledBack appears with the first roll back, True while the spec still asks for the
    // failed revision, False once it moved on (or a retry).
    let rolled_back_before = condition(&status, CONDITION_ROLLED_BACK).is_some();
    if let Some((_, message)) = failed_why {
        set_condition(&mut status.conditions, CONDITION_ROLLED_BACK, true, "RolloutFailed", message, generation, now);
    } else if rolled_back_before {
        let message = "the spec no longer asks for a failed revision".to_string();
        set_condition(&mut status.conditions, CONDITION_ROLLED_BACK, false, "SpecChanged", message, generation, now);
    }

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
        RolloutStep::Paused => "Paused",
    }
}

/// The conditions for a spec that cannot be served, on `decided`
/// ([`crate::rollout::hold_for_invalid_spec`]: revisions and phase as the machine left them).
pub fn invalid_spec_status(
    decided: &InferenceDeploymentStatus,
    generation: Option<i64>,
    error: &SpecError,
    now: &Time,
) -> InferenceDeploymentStatus {
    let mut status = decided.clone();
    for kind in [CONDITION_READY, CONDITION_PROGRESSING, CONDITION_RECONCILING] {
        set_condition(&mut status.conditions, kind, false, REASON_INVALID_SPEC, error.to_string(), generation, now);
    }
    // Nothing happens until the user changes the spec: kstatus reads that as Failed.
    set_condition(
        &mut status.conditions,
        CONDITION_STALLED,
        true,
        REASON_INVALID_SPEC,
        error.to_string(),
        generation,
        now,
    );
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
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::crd::{Phase, RolloutRecord, RolloutResult, RolloutState};

    fn time(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn decided(active: &str, phase: Phase) -> InferenceDeploymentStatus {
        InferenceDeploymentStatus {
            active_revision: Some(active.into()),
            phase: Some(phase),
            ..InferenceDeploymentStatus::default()
        }
    }

    fn is(s: &InferenceDeploymentStatus, kind: &str) -> (String, String) {
        let c = condition(s, kind).unwrap_or_else(|| panic!("no {kind} condition"));
        (c.status.clone(), c.reason.clone())
    }

    fn pair(status: &str, reason: &str) -> (String, String) {
        (status.to_string(), reason.to_string())
    }

    #[test]
    fn starting_pods_are_not_ready_and_reconciling() {
        let s = with_conditions(&decided("aaa", Phase::Pending), Some(1), 2, 0, &time(10));
        assert_eq!(s.phase, Some(Phase::Pending), "the machine's phase is kept as decided");
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(is(&s, CONDITION_READY), pair("False", "ReplicasNotReady"));
        assert_eq!(is(&s, CONDITION_PROGRESSING).0, "True");
        assert_eq!(is(&s, CONDITION_RECONCILING), pair("True", "ReplicasStarting"));
        assert_eq!(is(&s, CONDITION_STALLED).0, "False");
        assert!(s.conditions.iter().all(|c| c.observed_generation == Some(1)));
    }

    #[test]
    fn all_ready_is_ready_and_transition_time_moves_only_on_flips() {
        let pending = with_conditions(&decided("aaa", Phase::Pending), Some(1), 2, 0, &time(10));
        let healthy = with_conditions(&pending, Some(1), 2, 2, &time(20));
        let c = condition(&healthy, CONDITION_READY).unwrap();
        assert_eq!((c.status.as_str(), c.last_transition_time.clone()), ("True", time(20)));
        assert_eq!(is(&healthy, CONDITION_PROGRESSING), pair("False", "Stable"));
        assert_eq!(is(&healthy, CONDITION_RECONCILING).0, "False");
        // Nothing changed: identical status, so no write and no event.
        assert_eq!(with_conditions(&healthy, Some(1), 2, 2, &time(30)), healthy);
    }

    #[test]
    fn losing_every_pod_is_unavailable() {
        let s = with_conditions(&decided("aaa", Phase::Degraded), Some(1), 2, 0, &time(20));
        assert_eq!(is(&s, CONDITION_AVAILABLE).0, "False");
    }

    #[test]
    fn a_rollout_in_progress_is_reconciling_while_the_active_revision_stays_ready() {
        let mut s = decided("aaa", Phase::Paused);
        s.rollout = Some(RolloutState {
            revision: "bbb".into(),
            baseline: "aaa".into(),
            step: RolloutStep::Paused,
            started_at: time(0),
            step_started_at: time(5),
            window_started_at: None,
            message: Some("4 inconclusive windows in this analysis".into()),
            result: None,
        });
        let s = with_conditions(&s, Some(2), 2, 2, &time(20));
        assert_eq!(is(&s, CONDITION_READY).0, "True");
        assert_eq!(is(&s, CONDITION_RECONCILING), pair("True", "Paused"));
        let progressing = condition(&s, CONDITION_PROGRESSING).unwrap();
        assert!(progressing.message.contains("inconclusive windows"), "{}", progressing.message);
        assert_eq!(is(&s, CONDITION_STALLED).0, "False");
    }

    #[test]
    fn a_failed_revision_is_not_ready_and_stalled_until_it_is_cleared() {
        let mut s = decided("aaa", Phase::RolledBack);
        s.failed_revision = Some("bbb".into());
        s.history.push(RolloutRecord {
            revision: "bbb".into(),
            previous_revision: Some("aaa".into()),
            result: RolloutResult::RolledBack,
            reason: Some("error rate 1.0000 exceeds the SLO".into()),
            time: time(5),
        });
        let rolled_back = with_conditions(&s, Some(2), 2, 2, &time(10));
        assert_eq!(is(&rolled_back, CONDITION_READY), pair("False", REASON_ROLLED_BACK));
        assert!(condition(&rolled_back, CONDITION_READY).unwrap().message.contains("error rate"));
        assert_eq!(is(&rolled_back, CONDITION_STALLED), pair("True", REASON_ROLLED_BACK));
        assert_eq!(is(&rolled_back, CONDITION_RECONCILING).0, "False");
        assert_eq!(is(&rolled_back, CONDITION_ROLLED_BACK), pair("True", "RolloutFailed"));
        assert_eq!(rolled_back.observed_generation, Some(2));

        // The spec moved on (or a retry): the machine cleared failedRevision.
        let mut cleared = rolled_back.clone();
        cleared.failed_revision = None;
        let s = with_conditions(&cleared, Some(3), 2, 2, &time(20));
        assert_eq!(is(&s, CONDITION_READY), pair("True", "AllReplicasReady"));
        assert_eq!(is(&s, CONDITION_STALLED).0, "False");
        assert_eq!(is(&s, CONDITION_ROLLED_BACK), pair("False", "SpecChanged"));
    }

    #[test]
    fn invalid_spec_keeps_revisions_and_explains() {
        let healthy = with_conditions(&decided("aaa", Phase::Healthy), Some(1), 2, 2, &time(10));
        let err = SpecError("model.source \"x\": bad".into());
        let s = invalid_spec_status(&crate::rollout::hold_for_invalid_spec(Some(&healthy)), Some(2), &err, &time(20));
        assert_eq!(s.phase, Some(Phase::Degraded));
        assert_eq!(s.active_revision.as_deref(), Some("aaa"));
        assert_eq!(s.observed_generation, Some(2));
        let c = condition(&s, CONDITION_READY).unwrap();
        assert_eq!(c.reason, REASON_INVALID_SPEC);
        assert!(c.message.contains("model.source"));
        assert_eq!(is(&s, CONDITION_STALLED), pair("True", REASON_INVALID_SPEC));
    }
}
