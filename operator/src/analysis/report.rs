//! One finished analysis window as the gate hands it to the rollout state machine.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::sample::Sample;

/// One finished analysis window, as the gate measured it.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowReport {
    pub revision: String,
    /// Identifies the window: the `windowStartedAt` it was opened with.
    pub started_at: Time,
    pub candidate: Sample,
    /// The active revision under the same probe load, when the relative check is on.
    pub baseline: Option<Sample>,
    /// Why the window could not be measured (e.g. no pod could be scraped); judged as no data.
    pub problem: Option<String>,
}
