//! What the rollout state machine asks the gate to do. One definition: `rollout::Action::Gate`
//! carries it and `gate::runner` runs it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

#[derive(Clone, Debug, PartialEq)]
pub enum GateWork {
    /// Probe load on `revision` for `seconds`; nothing is measured (warm-up).
    Warmup { revision: String, seconds: u32 },
    /// One analysis window.
    Measure(WindowWork),
}

/// One analysis window on `revision` (and on `baseline`, for the relative check).
#[derive(Clone, Debug, PartialEq)]
pub struct WindowWork {
    pub revision: String,
    pub baseline: Option<String>,
    /// Identifies the window; its report carries it back.
    pub started_at: Time,
    pub seconds: u32,
    /// The candidate also serves user traffic (the post-promotion watch), so its pods'
    /// counters hold more than the probe's requests.
    pub candidate_serves_users: bool,
}
