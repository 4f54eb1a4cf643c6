//! The rollout state machine: a pure function from (spec, status, observations, now) to the new
//! status, the actions the reconciler must take and the Events that explain them.
//!
//! Everything that must survive an operator restart is in the status it returns (step, the
//! clocks of the step, the open window, the check counts); the observations carry only what the
//! world looks like now (ready pods per revision, the gate's finished window, a control
//! annotation). The Deployments and Services follow from the status through
//! [`crate::reconcile::plan::plan_revisions`].

mod controls;
mod machine;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub use crate::analysis::{GateWork, WindowReport, WindowWork};
use crate::crd::{InferenceDeploymentSpec, InferenceDeploymentStatus, Measurement, RolloutResult};

pub use controls::{
    Command, ANNOTATION_ABORT, ANNOTATION_PROMOTE, ANNOTATION_RETRY, ANNOTATION_ROLLBACK, CONTROL_ANNOTATIONS,
};

/// What the reconciler saw this time.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Revision of the pod template the spec asks for.
    pub desired: String,
    /// Every revision whose Deployment exists, with its ready pods.
    pub ready: BTreeMap<String, i32>,
    /// The last window the gate finished for this resource, if any (matched against the status).
    pub report: Option<WindowReport>,
    /// Whether the gate still runs probe load or a window for this resource.
    pub gate_busy: bool,
    /// A control annotation present on the object (acted on unless `status.lastControl` records
    /// it as handled already).
    pub command: Option<Command>,
}

/// Side effects the reconciler carries out after writing the status.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Start gate work: warm-up load or an analysis window (replacing what ran before).
    Gate(GateWork),
    /// Cancel every probe and window of this resource.
    StopGate,
    /// A measurement to publish on the operator's gauges.
    Measured(Measurement),
    /// A rollout ended (`infergate_rollouts_total{result}`).
    Finished(RolloutResult),
    /// A control annotation was handled (and is recorded in the status): remove the control
    /// annotations once that status is saved.
    ClearControls,
}

/// An Event explaining one decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutEvent {
    pub warning: bool,
    /// PascalCase REASON.
    pub reason: &'static str,
    pub note: String,
}

/// The result of one step of the machine. Its status is complete as far as the rollout goes:
/// phase, active, preview, failed and previous revisions are decided here and nowhere else;
/// `reconcile::status` only adds conditions and replica counts.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub status: InferenceDeploymentStatus,
    pub actions: Vec<Action>,
    pub events: Vec<RolloutEvent>,
    /// When the next deadline falls; the reconciler looks again then at the latest.
    pub wake_after: Option<Duration>,
}

/// Advances the rollout of `spec` from `old` given what was `observed` at `now`.
pub fn decide(
    spec: &InferenceDeploymentSpec,
    old: Option<&InferenceDeploymentStatus>,
    observed: &Observed,
    now: &Time,
) -> Outcome {
    machine::Machine::new(spec, old, observed, now).run()
}

/// The rollout's part of the status for a spec that cannot be served (a model source the schema
/// let through, see `model_source`): revisions, step and counts stay as they are, so the active
/// revision keeps serving, and the phase is Degraded until the user changes the spec. Decided
/// here like every phase; `reconcile::status` only adds the conditions.
pub fn hold_for_invalid_spec(old: Option<&InferenceDeploymentStatus>) -> InferenceDeploymentStatus {
    let mut status = old.cloned().unwrap_or_default();
    status.phase = Some(crate::crd::Phase::Degraded);
    status
}

/// Status keeps this many measurements and rollout records.
pub const HISTORY_LIMIT: usize = 10;
