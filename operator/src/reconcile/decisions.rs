//! The Events that explain a reconcile: one per decision, derived from what changed.
//!
//! Events come from the difference between the old and the new status (plus the Deployments
//! deleted), so a reconcile that changes nothing says nothing.

use kube::runtime::events::EventType;

use super::status::{condition, CONDITION_READY, REASON_INVALID_SPEC};
use crate::crd::{InferenceDeploymentStatus, Phase};

/// One decision, ready to publish as an Event on the InferenceDeployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub warning: bool,
    /// PascalCase, shown as REASON in `kubectl events`.
    pub reason: &'static str,
    /// PascalCase verb of what the operator did.
    pub action: &'static str,
    pub note: String,
}

impl Decision {
    pub fn normal(reason: &'static str, action: &'static str, note: String) -> Self {
        Self { warning: false, reason, action, note }
    }

    pub fn warning(reason: &'static str, action: &'static str, note: String) -> Self {
        Self { warning: true, reason, action, note }
    }

    pub fn event_type(&self) -> EventType {
        if self.warning {
            EventType::Warning
        } else {
            EventType::Normal
        }
    }
}

pub fn decisions(
    old: Option<&InferenceDeploymentStatus>,
    new: &InferenceDeploymentStatus,
    deleted_revisions: &[String],
) -> Vec<Decision> {
    let default = InferenceDeploymentStatus::default();
    let old = old.unwrap_or(&default);
    let mut out = Vec::new();

    let invalid = |s: &InferenceDeploymentStatus| {
        condition(s, CONDITION_READY).filter(|c| c.reason == REASON_INVALID_SPEC).map(|c| c.message.clone())
    };
    if let Some(message) = invalid(new) {
        if invalid(old).as_ref() != Some(&message) {
            out.push(Decision::warning(REASON_INVALID_SPEC, "Validate", message));
        }
        return out;
    }

    // Promotions, roll backs and previews are explained by the rollout's own Events; only the
    // very first activation is a plain reconcile decision.
    if old.active_revision.is_none() {
        if let Some(active) = &new.active_revision {
            out.push(Decision::normal(
                "RevisionActivated",
                "SelectActive",
                format!("revision {active} is active and selected by the Service"),
            ));
        }
    }
    if let (Some(before), Some(after)) = (old.replicas, new.replicas) {
        if before != after {
            out.push(Decision::normal(
                "Scaled",
                "Scale",
                format!("active revision scaled from {before} to {after} replicas"),
            ));
        }
    }
    for revision in deleted_revisions {
        out.push(Decision::normal(
            "RevisionDeleted",
            "DeleteRevision",
            format!("revision {revision} is no longer active or in preview; its Deployment was deleted"),
        ));
    }
    if new.phase != old.phase {
        if let Some(phase) = new.phase {
            let note = format!(
                "{} -> {}: {}/{} replicas of the active revision ready",
                old.phase.map_or("None", Phase::as_str),
                phase.as_str(),
                new.ready_replicas.unwrap_or_default(),
                new.replicas.unwrap_or_default(),
            );
            if phase == Phase::Degraded {
                out.push(Decision::warning("Degraded", "UpdatePhase", note));
            } else {
                out.push(Decision::normal("PhaseChanged", "UpdatePhase", note));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(active: &str, preview: Option<&str>, phase: Phase, replicas: i32) -> InferenceDeploymentStatus {
        InferenceDeploymentStatus {
            active_revision: Some(active.into()),
            preview_revision: preview.map(String::from),
            phase: Some(phase),
            replicas: Some(replicas),
            ready_replicas: Some(0),
            ..Default::default()
        }
    }

    fn reasons(d: &[Decision]) -> Vec<&'static str> {
        d.iter().map(|d| d.reason).collect()
    }

    #[test]
    fn unchanged_status_makes_no_events() {
        let s = status("aaa", None, Phase::Healthy, 2);
        assert!(decisions(Some(&s), &s, &[]).is_empty());
    }

    #[test]
    fn first_reconcile_explains_activation_and_phase() {
        let new = status("aaa", None, Phase::Pending, 2);
        assert_eq!(reasons(&decisions(None, &new, &[])), ["RevisionActivated", "PhaseChanged"]);
    }

    #[test]
    fn scale_and_deletion_are_explained() {
        let old = status("aaa", Some("bbb"), Phase::Progressing, 2);
        let new = status("aaa", Some("ccc"), Phase::Progressing, 3);
        let d = decisions(Some(&old), &new, &["bbb".to_string()]);
        assert_eq!(reasons(&d), ["Scaled", "RevisionDeleted"]);
        assert!(d[1].note.contains("bbb"));
    }

    #[test]
    fn degraded_is_a_warning() {
        let old = status("aaa", None, Phase::Healthy, 2);
        let new = status("aaa", None, Phase::Degraded, 2);
        let d = decisions(Some(&old), &new, &[]);
        assert_eq!(reasons(&d), ["Degraded"]);
        assert_eq!(d[0].event_type(), EventType::Warning);
    }
}
