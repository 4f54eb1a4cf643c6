//! What a control asks the operator for, checked against the status first so that a request
//! the operator would ignore gets a clear refusal here, and when it is done.
//!
//! The plugin only ever sets the annotation ([`Command::annotation`]); what the annotation does
//! is the operator's (rollout/machine/commands.rs). The checks below mirror the cases it
//! ignores with a `ControlIgnored` Event.

use crate::crd::{InferenceDeploymentStatus, RolloutStep};
use crate::rollout::Command;

use super::PluginError;

/// A control as the user asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    Promote,
    Abort,
    Retry,
    /// `undo` (the rollback annotation), optionally naming the revision it must go back to.
    Undo {
        to_revision: Option<String>,
    },
}

/// A control the status admits: the annotation to set and the revision that must serve once
/// the operator has acted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    /// The revision that serves when the control has had its effect.
    pub target: String,
    /// What was requested, in words.
    pub description: String,
}

/// How a requested control ended, once the operator acted on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// The target revision serves and nothing is rolling out.
    Done(String),
    /// The rollout ended, but another revision serves.
    Otherwise(String),
}

pub fn plan(control: &Control, s: &InferenceDeploymentStatus) -> Result<Request, PluginError> {
    let refuse = |why: String| Err(PluginError::Refused(why));
    let rollout = s.rollout.as_ref();
    let active = s.active_revision.clone().unwrap_or_default();
    match control {
        Control::Promote => match rollout {
            None => refuse("nothing to promote: no rollout in progress".into()),
            Some(r) if matches!(r.step, RolloutStep::ScalingUp | RolloutStep::Restoring) => {
                refuse(format!("nothing to promote while the rollout is at step {:?}", r.step))
            }
            Some(r) => Ok(Request {
                command: Command::Promote,
                target: r.revision.clone(),
                description: match r.step {
                    RolloutStep::Watching | RolloutStep::ScalingDown => {
                        format!("promote requested: revision {} ends its post-promotion watch now", r.revision)
                    }
                    step => format!("promote requested: revision {} at step {step:?} takes traffic", r.revision),
                },
            }),
        },
        Control::Abort => match rollout {
            None => refuse("nothing to abort: no rollout in progress".into()),
            Some(r) => Ok(Request {
                command: Command::Abort,
                target: r.baseline.clone(),
                description: format!(
                    "abort requested: rollout of revision {} stops, {} serves",
                    r.revision, r.baseline
                ),
            }),
        },
        Control::Retry => match (rollout, &s.failed_revision) {
            (Some(r), _) if r.step == RolloutStep::Paused => Ok(Request {
                command: Command::Retry,
                target: r.revision.clone(),
                description: format!("retry requested: analysis of revision {} starts again", r.revision),
            }),
            (Some(r), _) => refuse(format!("nothing to retry: a rollout is in progress (step {:?})", r.step)),
            (None, Some(failed)) if s.desired_revision.as_ref() == Some(failed) => Ok(Request {
                command: Command::Retry,
                target: failed.clone(),
                description: format!("retry requested: failed revision {failed} is rolled out again"),
            }),
            (None, Some(failed)) => {
                refuse(format!("nothing to retry: failed revision {failed} is no longer the one the spec asks for"))
            }
            (None, None) => refuse("nothing to retry: no failed revision".into()),
        },
        Control::Undo { to_revision } => {
            let request = match rollout {
                Some(r) => Request {
                    command: Command::Rollback,
                    target: r.baseline.clone(),
                    description: format!(
                        "undo requested: rollout of revision {} is rolled back, {} serves",
                        r.revision, r.baseline
                    ),
                },
                None => match &s.previous_revision {
                    Some(previous) if *previous != active => Request {
                        command: Command::Rollback,
                        target: previous.clone(),
                        description: format!("undo requested: previous revision {previous} replaces {active}"),
                    },
                    _ => return refuse("nothing to undo: no previous revision to go back to".into()),
                },
            };
            match to_revision {
                Some(wanted) if *wanted != request.target => refuse(format!(
                    "no such revision to go back to: {wanted} (undo can only return to {})",
                    request.target
                )),
                _ => Ok(request),
            }
        }
    }
}

/// `None` while the operator has not acted yet (the annotation is still on the object) or the
/// rollout it started is still going.
pub fn settled(request: &Request, annotation_present: bool, s: &InferenceDeploymentStatus) -> Option<Settled> {
    if annotation_present || s.rollout.is_some() {
        return None;
    }
    let active = s.active_revision.as_deref().unwrap_or("none");
    if active == request.target {
        let what = match request.command {
            Command::Promote => "promoted",
            Command::Abort => "aborted",
            Command::Rollback => "rolled back",
            Command::Retry => "retried and promoted",
        };
        Some(Settled::Done(format!("{what}: revision {active} serves")))
    } else {
        let failed = s.failed_revision.as_deref().map(|f| format!(" (revision {f} failed)")).unwrap_or_default();
        Some(Settled::Otherwise(format!(
            "the rollout ended with revision {active} serving, not {}{failed}",
            request.target
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli_plugin::fixtures;
    use crate::crd::Phase;

    fn refusal(control: Control, s: &InferenceDeploymentStatus) -> String {
        match plan(&control, s) {
            Err(PluginError::Refused(why)) => why,
            other => panic!("{control:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn promote_targets_the_rollout_revision() {
        let r = plan(&Control::Promote, &fixtures::rolling(RolloutStep::AwaitingPromotion)).ok();
        assert_eq!(r.as_ref().map(|r| (r.command, r.target.as_str())), Some((Command::Promote, "bbb222")));
        assert_eq!(refusal(Control::Promote, &fixtures::healthy()), "nothing to promote: no rollout in progress");
        assert!(refusal(Control::Promote, &fixtures::rolling(RolloutStep::ScalingUp)).contains("ScalingUp"));
    }

    #[test]
    fn abort_and_undo_during_a_rollout_return_to_the_baseline() {
        let s = fixtures::rolling(RolloutStep::Analyzing);
        assert_eq!(plan(&Control::Abort, &s).ok().map(|r| r.target), Some("aaa111".into()));
        let undo = plan(&Control::Undo { to_revision: None }, &s).ok();
        assert_eq!(undo.map(|r| (r.command, r.target)), Some((Command::Rollback, "aaa111".into())));
        assert_eq!(refusal(Control::Abort, &fixtures::healthy()), "nothing to abort: no rollout in progress");
    }

    #[test]
    fn undo_after_a_rollout_needs_a_previous_revision_and_checks_the_named_one() {
        assert!(refusal(Control::Undo { to_revision: None }, &fixtures::healthy()).contains("no previous revision"));
        let mut s = fixtures::healthy();
        s.previous_revision = Some("zzz000".into());
        assert_eq!(plan(&Control::Undo { to_revision: None }, &s).ok().map(|r| r.target), Some("zzz000".into()));
        assert_eq!(
            plan(&Control::Undo { to_revision: Some("zzz000".into()) }, &s).ok().map(|r| r.target),
            Some("zzz000".into())
        );
        let why = refusal(Control::Undo { to_revision: Some("nope".into()) }, &s);
        assert!(why.starts_with("no such revision to go back to: nope"), "{why}");
    }

    #[test]
    fn retry_needs_a_failed_revision_the_spec_still_asks_for_or_a_pause() {
        assert_eq!(plan(&Control::Retry, &fixtures::rolled_back()).ok().map(|r| r.target), Some("bbb222".into()));
        assert_eq!(
            plan(&Control::Retry, &fixtures::rolling(RolloutStep::Paused)).ok().map(|r| r.target),
            Some("bbb222".into())
        );
        assert!(refusal(Control::Retry, &fixtures::healthy()).contains("no failed revision"));
        assert!(refusal(Control::Retry, &fixtures::rolling(RolloutStep::Analyzing)).contains("in progress"));
        let mut moved_on = fixtures::rolled_back();
        moved_on.desired_revision = Some("ccc333".into());
        assert!(refusal(Control::Retry, &moved_on).contains("no longer"));
    }

    #[test]
    fn settles_only_after_the_annotation_is_gone_and_the_rollout_ended() {
        let request = plan(&Control::Promote, &fixtures::rolling(RolloutStep::AwaitingPromotion)).ok();
        let Some(request) = request else { panic!("promote refused") };
        let watching = fixtures::rolling(RolloutStep::Watching);
        assert_eq!(settled(&request, true, &watching), None);
        assert_eq!(settled(&request, false, &watching), None);
        let mut promoted = fixtures::healthy();
        promoted.active_revision = Some("bbb222".into());
        assert_eq!(settled(&request, true, &promoted), None);
        assert_eq!(settled(&request, false, &promoted), Some(Settled::Done("promoted: revision bbb222 serves".into())));
        let mut rolled = fixtures::rolled_back();
        rolled.phase = Some(Phase::RolledBack);
        assert!(
            matches!(settled(&request, false, &rolled), Some(Settled::Otherwise(m)) if m.contains("bbb222 failed"))
        );
    }
}
