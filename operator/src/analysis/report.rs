//! A finished analysis window: what the gate hands to the rollout state machine.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::probe_window::ProbeWindow;
use super::sample::Sample;

/// One finished analysis window, as the gate measured it.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowReport {
    pub revision: String,
    /// Identifies the window: the `windowStartedAt` it was opened with.
    pub started_at: Time,
    /// The candidate's window: the metrics source's counts plus the probe's failures the server
    /// cannot have counted ([`super::FailureCounts::unseen_by_server`]).
    pub candidate: Sample,
    /// The active revision under the same probe load, when the relative check is on.
    pub baseline: Option<Sample>,
    /// Why the window could not be measured: the metrics source failed (a scrape of a healthy
    /// pod, Prometheus). Judged as a measurement error unless the data still shows a failure.
    pub problem: Option<String>,
    /// The probe's view of the candidate.
    pub candidate_probe: ProbeWindow,
    /// The probe's view of the baseline, when the relative check is on.
    pub baseline_probe: Option<ProbeWindow>,
    /// Health failures of the candidate's pods during the window (a restart, a pod not ready or
    /// gone, no ready pod although the Deployment wants some): each fails the window.
    pub unhealthy: Vec<String>,
    /// The candidate also served user traffic (post-promotion watch).
    pub candidate_serves_users: bool,
    /// Requests in flight per pod of the candidate and of the baseline, from the metrics
    /// source's gauges (see `gate::source::Reading`), when it could read them.
    pub candidate_in_flight: Option<f64>,
    pub baseline_in_flight: Option<f64>,
    /// The probe's own requests in flight per probed pod (the same on both sides).
    pub probe_in_flight_per_pod: f64,
}

impl WindowReport {
    /// A report of `candidate` alone, everything else empty; tests and sources fill in the rest.
    pub fn of(revision: &str, started_at: Time, candidate: Sample) -> WindowReport {
        WindowReport {
            revision: revision.to_string(),
            started_at,
            candidate,
            baseline: None,
            problem: None,
            candidate_probe: ProbeWindow::default(),
            baseline_probe: None,
            unhealthy: Vec::new(),
            candidate_serves_users: false,
            candidate_in_flight: None,
            baseline_in_flight: None,
            probe_in_flight_per_pod: 0.0,
        }
    }
}
