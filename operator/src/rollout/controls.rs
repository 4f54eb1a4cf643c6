//! Manual controls, kubectl-friendly: `kubectl annotate infd NAME infergate.dev/promote=true`.
//!
//! Each annotation is a one-shot command: the operator acts on it and removes it, so the same
//! command can be given again for the next rollout and a stale one never acts twice.

use std::collections::BTreeMap;

/// Promote the preview now, skipping the remaining analysis (or end the post-promotion watch).
pub const ANNOTATION_PROMOTE: &str = "infergate.dev/promote";
/// Stop the rollout: the preview is scaled to zero and the active revision keeps serving.
pub const ANNOTATION_ABORT: &str = "infergate.dev/abort";
/// Go back to the previous revision: during a rollout like abort (flip back after promotion),
/// after one the previous revision is scaled up and takes traffic again.
pub const ANNOTATION_ROLLBACK: &str = "infergate.dev/rollback";

pub const CONTROL_ANNOTATIONS: [&str; 3] = [ANNOTATION_ABORT, ANNOTATION_ROLLBACK, ANNOTATION_PROMOTE];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Promote,
    Abort,
    Rollback,
}

impl Command {
    /// The command in `annotations`; when several are set the safest wins (abort, rollback,
    /// promote), and all of them are cleared.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Option<Command> {
        if annotations.contains_key(ANNOTATION_ABORT) {
            Some(Command::Abort)
        } else if annotations.contains_key(ANNOTATION_ROLLBACK) {
            Some(Command::Rollback)
        } else if annotations.contains_key(ANNOTATION_PROMOTE) {
            Some(Command::Promote)
        } else {
            None
        }
    }

    pub fn annotation(self) -> &'static str {
        match self {
            Command::Promote => ANNOTATION_PROMOTE,
            Command::Abort => ANNOTATION_ABORT,
            Command::Rollback => ANNOTATION_ROLLBACK,
        }
    }
}
