//! The seam between a window and where its numbers come from: [`super::direct`] scrapes the
//! pods, [`super::prometheus`] asks Prometheus. The window calls `start` when it opens and
//! `finish` when it ends, for each revision it measures, and never asks which source it has
//! (Argo Rollouts keeps each metric provider behind one interface the same way). The autoscaler
//! reads its signal through the same interface (`load`), so both see the same numbers.

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
    /// Requests in flight (running + waiting) per pod, from the servers' gauges: the mean of the
    /// window's start and end scrapes (Direct) or the value at its end (Prometheus). `None` when
    /// the source could not read them. The watch compares it between the revisions to tell user
    /// traffic on the candidate from the probe's equal share.
    pub in_flight_per_pod: Option<f64>,
    pub failures: Vec<SourceFailure>,
}

/// A source's reading of one revision's load now, for the autoscaler.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReading {
    /// Pods whose numbers are in the reading.
    pub pods: u32,
    /// Requests waiting in the servers' queues, summed over those pods.
    pub waiting: f64,
    /// Requests in the servers' running batches, summed over those pods.
    pub running: f64,
    /// Finished requests and their TTFT since the previous reading (Direct) or over the
    /// source's range (Prometheus); `None` when there is nothing to compare with yet.
    pub recent: Option<Sample>,
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

    /// The autoscaler's reading of `revision` now; `since` is the mark the previous reading
    /// returned (`recent` counts from there), the returned mark is for the next one.
    fn load(
        &self,
        revision: &str,
        targets: &[Target],
        since: Option<Self::Mark>,
    ) -> impl Future<Output = (LoadReading, Self::Mark)> + Send;
}
