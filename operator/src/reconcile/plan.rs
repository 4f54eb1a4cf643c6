//! Which revisions exist, which one serves, and how many pods each gets.
//!
//! The rollout state machine decides the status (active, preview, previous and failed
//! revisions, the rollout step); this file turns that status into Deployments and Service
//! targets, so the appliers below it only follow the plan.

use std::collections::BTreeMap;

use crate::crd::{InferenceDeploymentSpec, InferenceDeploymentStatus, RolloutStep};

/// The desired children of one InferenceDeployment, by revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionPlan {
    /// Revision of the pod template the spec asks for.
    pub desired: String,
    /// Revision the `<name>` Service selects.
    pub active: String,
    /// Revision under evaluation, if any.
    pub preview: Option<String>,
    /// Every revision whose Deployment is kept, with its replicas. Others are deleted.
    pub replicas: BTreeMap<String, i32>,
}

impl RevisionPlan {
    /// The revision `<name>-preview` selects: the candidate, or the active one between rollouts
    /// so the preview Service always has endpoints.
    pub fn preview_target(&self) -> &str {
        self.preview.as_deref().unwrap_or(&self.active)
    }

    /// Whether the desired revision's Deployment is part of the plan (it is not when that
    /// revision already failed its rollout).
    pub fn deploys_desired(&self) -> bool {
        self.replicas.contains_key(&self.desired)
    }
}

/// The children for `status` as the rollout state machine left it.
pub fn plan_revisions(
    spec: &InferenceDeploymentSpec,
    status: &InferenceDeploymentStatus,
    desired: &str,
) -> RevisionPlan {
    let active = status.active_revision.clone().unwrap_or_else(|| desired.to_string());
    let mut replicas = BTreeMap::from([(active.clone(), spec.replicas)]);
    let mut preview = None;
    if let Some(rollout) = &status.rollout {
        match rollout.step {
            RolloutStep::WaitingForPreview
            | RolloutStep::WarmingUp
            | RolloutStep::Analyzing
            | RolloutStep::AwaitingPromotion
            | RolloutStep::Paused => {
                replicas.insert(rollout.revision.clone(), spec.rollout.preview_replicas);
                preview = Some(rollout.revision.clone());
            }
            // Blue-green: the new revision gets every serving replica before it takes traffic.
            RolloutStep::ScalingUp => {
                replicas.insert(rollout.revision.clone(), spec.replicas);
                preview = Some(rollout.revision.clone());
            }
            // The old revision stays warm, ready to take traffic back at once.
            RolloutStep::Watching | RolloutStep::ScalingDown => {
                replicas.insert(rollout.baseline.clone(), spec.replicas);
            }
            RolloutStep::Restoring => {
                replicas.insert(rollout.revision.clone(), spec.replicas);
            }
        }
    }
    // Kept at zero pods: the previous revision (for a roll back by annotation) and the failed
    // one (scaled to zero at once, kept for inspection until the spec moves on).
    for kept in [&status.previous_revision, &status.failed_revision].into_iter().flatten() {
        replicas.entry(kept.clone()).or_insert(0);
    }
    RevisionPlan { desired: desired.to_string(), active, preview, replicas }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::RolloutState;
    use crate::test_support::spec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn status(active: &str, rollout: Option<(&str, RolloutStep)>) -> InferenceDeploymentStatus {
        let t = Time(Timestamp::from_second(0).unwrap());
        InferenceDeploymentStatus {
            active_revision: Some(active.into()),
            rollout: rollout.map(|(revision, step)| RolloutState {
                revision: revision.into(),
                baseline: "aaa".into(),
                step,
                started_at: t.clone(),
                step_started_at: t.clone(),
                window_started_at: None,
                message: None,
                result: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn first_revision_becomes_active() {
        let plan = plan_revisions(&spec(), &InferenceDeploymentStatus::default(), "aaa");
        assert_eq!(plan.active, "aaa");
        assert_eq!(plan.preview, None);
        assert_eq!(plan.replicas, BTreeMap::from([("aaa".into(), 2)]));
        assert_eq!(plan.preview_target(), "aaa");
    }

    #[test]
    fn preview_runs_preview_replicas_until_promotion_scales_it_up() {
        let mut spec = spec();
        spec.rollout.preview_replicas = 1;
        for step in [
            RolloutStep::WaitingForPreview,
            RolloutStep::WarmingUp,
            RolloutStep::Analyzing,
            RolloutStep::AwaitingPromotion,
            RolloutStep::Paused,
        ] {
            let plan = plan_revisions(&spec, &status("aaa", Some(("bbb", step))), "bbb");
            assert_eq!(plan.preview_target(), "bbb");
            assert_eq!(plan.replicas, BTreeMap::from([("aaa".into(), 2), ("bbb".into(), 1)]), "{step:?}");
        }
        let plan = plan_revisions(&spec, &status("aaa", Some(("bbb", RolloutStep::ScalingUp))), "bbb");
        assert_eq!((plan.active.as_str(), plan.replicas["bbb"]), ("aaa", 2));
    }

    #[test]
    fn old_revision_stays_warm_during_the_watch_and_the_delay() {
        for step in [RolloutStep::Watching, RolloutStep::ScalingDown] {
            let plan = plan_revisions(&spec(), &status("bbb", Some(("bbb", step))), "bbb");
            assert_eq!(plan.active, "bbb");
            assert_eq!(plan.preview, None);
            assert_eq!(plan.replicas, BTreeMap::from([("aaa".into(), 2), ("bbb".into(), 2)]));
        }
    }

    #[test]
    fn a_roll_back_waiting_for_the_baseline_keeps_the_service_on_the_serving_revision() {
        // Aborted during the watch while aaa had no ready pods: bbb serves until aaa is scaled up.
        let mut st = status("bbb", Some(("aaa", RolloutStep::Restoring)));
        if let Some(rollout) = st.rollout.as_mut() {
            rollout.baseline = "bbb".into();
        }
        let plan = plan_revisions(&spec(), &st, "bbb");
        assert_eq!(plan.active, "bbb");
        assert_eq!(plan.preview_target(), "bbb");
        assert_eq!(plan.replicas, BTreeMap::from([("aaa".into(), 2), ("bbb".into(), 2)]));
    }

    #[test]
    fn previous_and_failed_revisions_are_kept_at_zero() {
        let mut st = status("bbb", None);
        st.previous_revision = Some("aaa".into());
        st.failed_revision = Some("ccc".into());
        let plan = plan_revisions(&spec(), &st, "ccc");
        assert_eq!(plan.replicas, BTreeMap::from([("aaa".into(), 0), ("bbb".into(), 2), ("ccc".into(), 0)]));
        assert_eq!(plan.preview, None);
    }
}
