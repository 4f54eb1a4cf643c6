//! The seam between a window and where its numbers come from: [`super::direct`] scrapes the
//! pods, [`super::prometheus`] asks Prometheus. The window calls `start` when it opens and
//! `finish` when it ends, for each revision it measures, and never asks which source it has
//! (Argo Rollouts keeps each metric provider behind one interface the same way).

use std::future::Future;

use super::pods::Target;
use crate::analysis::Sample;

/// Why (part of) a window could not be read from the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFailure {
    /// The pod whose scrape failed, when the failure concerns one pod.
    pub pod: Option<String>,
    pub message: String,
}

/// A source's reading of one revision over one window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    pub sample: Sample,
    pub failures: Vec<SourceFailure>,
}

pub trait MetricsSource: Sync {
    /// What `start` remembers for `finish` (the Direct source's counters at the start).
    type Mark: Send;

    /// The window opens on `targets`, the ready pods of `revision`.
    fn start(
        &self,
        revision: &str,
        targets: &[Target],
    ) -> impl Future<Output = (Self::Mark, Vec<SourceFailure>)> + Send;

    /// The window ends: its sample of `revision`.
    fn finish(&self, revision: &str, targets: &[Target], mark: Self::Mark) -> impl Future<Output = Reading> + Send;
}
