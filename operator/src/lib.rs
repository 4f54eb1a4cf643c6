//! infergate-operator: reconciles `InferenceDeployment` resources into infergate-server
//! revisions (Deployments), their Services and a PodDisruptionBudget.
//!
//! Layers, each usable without the next: [`crd`] (the resource types) -> [`reconcile`] (pure
//! builders and plan, then the apply loop) -> [`rollout`] (the pure rollout state machine) ->
//! [`analysis`] (pure judging of windows) -> [`gate`] (metric sources, probe load) -> [`run`] (controller, HTTP endpoints, leader
//! election). The binaries only parse flags.

pub mod analysis;
pub mod autoscale;
pub mod cli_plugin;
pub mod crd;
pub mod crdgen;
pub mod error;
pub mod gate;
pub mod metrics;
pub mod model_source;
pub mod names;
pub mod reconcile;
pub mod revision;
pub mod rollout;
pub mod run;
pub mod telemetry;

#[cfg(test)]
mod test_support;

pub use crate::crd::{InferenceDeployment, InferenceDeploymentSpec, InferenceDeploymentStatus};
pub use crate::error::{Error, Result};
