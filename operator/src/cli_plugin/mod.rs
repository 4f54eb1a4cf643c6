//! `kubectl infergate`: the kubectl plugin for InferenceDeployment rollouts.
//!
//! It reads what the operator writes (the status in [`crate::crd`]) and gives the manual
//! controls the operator already honours, by setting the same annotations a user would set by
//! hand ([`crate::rollout::Command::annotation`]): one contract, never a second path.
//!
//! Pure parts, unit-tested with fixtures: [`outcome`] (status -> one line and an exit code),
//! [`render`] (status and pods -> the tree of `get`), [`request`] (what a control asks for and
//! when it is done), [`duration`]. The rest talks to the API server: [`cluster`], [`commands`].

pub mod cluster;
pub mod commands;
pub mod duration;
pub mod error;
pub mod outcome;
pub mod render;
pub mod request;

#[cfg(test)]
mod fixtures;

pub use commands::{run, Cli};
pub use error::PluginError;
pub use outcome::ExitStatus;
