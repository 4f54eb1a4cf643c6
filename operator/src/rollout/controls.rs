//! Manual controls, kubectl-friendly: `kubectl annotate infd NAME infergate.dev/promote=true`.
//!
//! Each annotation is a one-shot command: the operator records it in status
//! (`status.lastControl`), acts on it, and then removes it, so the same command can be given
//! again for the next rollout and one whose removal failed is never acted on twice.

use std::collections::BTreeMap;

/// Promote the preview now, skipping the remaining analysis (or end the post-promotion watch).
pub const ANNOTATION_PROMOTE: &str = "infergate.dev/promote";
/// Stop the rollout: the preview is scaled to zero and the active revision keeps serving.
pub const ANNOTATION_ABORT: &str = "infergate.dev/abort";
/// Go back to the previous revision: during a rollout like abort (flip back after promotion),
/// after one the previous revision is scaled up and takes traffic again.
pub const ANNOTATION_ROLLBACK: &str = "infergate.dev/rollback";
/// Re-run the failed revision the spec still asks for (or restart a paused analysis), without
/// changing the spec.
pub const ANNOTATION_RETRY: &str = "infergate.dev/retry";

pub const CONTROL_ANNOTATIONS: [&str; 4] =
    [ANNOTATION_ABORT, ANNOTATION_ROLLBACK, ANNOTATION_RETRY, ANNOTATION_PROMOTE];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Promote,
    Abort,
    Rollback,
    Retry,
}

impl Command {
    /// The command in `annotations`; when several are set the safest wins (abort, rollback,
    /// retry, promote: the order of [`CONTROL_ANNOTATIONS`]), and all of them are cleared.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Option<Command> {
        CONTROL_ANNOTATIONS.iter().find(|key| annotations.contains_key(**key)).and_then(|key| Command::of(key))
    }

    fn of(annotation: &str) -> Option<Command> {
        [Command::Abort, Command::Rollback, Command::Retry, Command::Promote]
            .into_iter()
            .find(|c| c.annotation() == annotation)
    }

    pub fn annotation(self) -> &'static str {
        match self {
            Command::Promote => ANNOTATION_PROMOTE,
            Command::Abort => ANNOTATION_ABORT,
            Command::Rollback => ANNOTATION_ROLLBACK,
            Command::Retry => ANNOTATION_RETRY,
        }
    }
}
