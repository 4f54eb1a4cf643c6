//! Which revisions exist, which one serves, and how many pods each gets.
//!
//! This is the seam for the rollout state machine: today the plan only brings up a new pod
//! template as the preview next to the serving revision; the rollout state machine will decide
//! promotion, rollback and scale-down from status and measurements and hand back the same
//! [`RevisionPlan`], so the appliers below it do not change.

use std::collections::BTreeMap;

use crate::crd::{InferenceDeploymentSpec, InferenceDeploymentStatus};

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

/// Decides the revisions for `spec`, given the last status and the revisions whose Deployments
/// exist now.
pub fn plan_revisions(
    spec: &InferenceDeploymentSpec,
    status: Option<&InferenceDeploymentStatus>,
    desired: &str,
    existing: &[String],
) -> RevisionPlan {
    // An active revision whose Deployment vanished cannot serve: start over from the spec.
    let active =
        status.and_then(|s| s.active_revision.as_deref()).filter(|active| existing.iter().any(|e| e == active));
    let failed = status.and_then(|s| s.failed_revision.as_deref());

    match active {
        Some(active) if active != desired && failed != Some(desired) => RevisionPlan {
            desired: desired.to_string(),
            active: active.to_string(),
            preview: Some(desired.to_string()),
            replicas: BTreeMap::from([
                (active.to_string(), spec.replicas),
                (desired.to_string(), spec.rollout.preview_replicas),
            ]),
        },
        // The spec asks for a revision that already failed: keep serving the active one.
        Some(active) if active != desired => RevisionPlan {
            desired: desired.to_string(),
            active: active.to_string(),
            preview: None,
            replicas: BTreeMap::from([(active.to_string(), spec.replicas)]),
        },
        _ => RevisionPlan {
            desired: desired.to_string(),
            active: desired.to_string(),
            preview: None,
            replicas: BTreeMap::from([(desired.to_string(), spec.replicas)]),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::spec;

    fn status(active: Option<&str>, failed: Option<&str>) -> InferenceDeploymentStatus {
        InferenceDeploymentStatus {
            active_revision: active.map(String::from),
            failed_revision: failed.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn first_revision_becomes_active() {
        let plan = plan_revisions(&spec(), None, "aaa", &[]);
        assert_eq!(plan.active, "aaa");
        assert_eq!(plan.preview, None);
        assert_eq!(plan.replicas, BTreeMap::from([("aaa".into(), 2)]));
        assert_eq!(plan.preview_target(), "aaa");
    }

    #[test]
    fn unchanged_template_only_scales() {
        let mut spec = spec();
        spec.replicas = 5;
        let st = status(Some("aaa"), None);
        let plan = plan_revisions(&spec, Some(&st), "aaa", &["aaa".into()]);
        assert_eq!(plan.replicas, BTreeMap::from([("aaa".into(), 5)]));
        assert_eq!(plan.preview, None);
    }

    #[test]
    fn changed_template_becomes_preview_next_to_active() {
        let mut spec = spec();
        spec.rollout.preview_replicas = 1;
        let st = status(Some("aaa"), None);
        let plan = plan_revisions(&spec, Some(&st), "bbb", &["aaa".into()]);
        assert_eq!(plan.active, "aaa");
        assert_eq!(plan.preview.as_deref(), Some("bbb"));
        assert_eq!(plan.preview_target(), "bbb");
        assert_eq!(plan.replicas, BTreeMap::from([("aaa".into(), 2), ("bbb".into(), 1)]));
    }

    #[test]
    fn a_newer_template_replaces_an_older_preview() {
        let mut st = status(Some("aaa"), None);
        st.preview_revision = Some("bbb".into());
        let plan = plan_revisions(&spec(), Some(&st), "ccc", &["aaa".into(), "bbb".into()]);
        assert_eq!(plan.preview.as_deref(), Some("ccc"));
        assert!(!plan.replicas.contains_key("bbb"));
    }

    #[test]
    fn failed_revision_is_not_retried() {
        let st = status(Some("aaa"), Some("bbb"));
        let plan = plan_revisions(&spec(), Some(&st), "bbb", &["aaa".into(), "bbb".into()]);
        assert_eq!(plan.active, "aaa");
        assert_eq!(plan.preview, None);
        assert!(!plan.deploys_desired());
    }

    #[test]
    fn vanished_active_revision_is_replaced_by_the_desired_one() {
        let st = status(Some("aaa"), None);
        let plan = plan_revisions(&spec(), Some(&st), "bbb", &[]);
        assert_eq!(plan.active, "bbb");
        assert_eq!(plan.preview, None);
    }
}
