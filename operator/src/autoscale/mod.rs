//! Built-in autoscaling of `spec.replicas` on the servers' own load.
//!
//! [`decide`] is the pure part (the HPA's formula, tolerance and stabilization); [`signal`]
//! reads the active revision's load through the gate's metrics sources; [`Autoscaler`] keeps
//! what one tick needs from the last (recommendations, the Direct source's last scrape).
//! The reconciler writes the decision through the `/scale` subresource, as an HPA would, so
//! `spec.replicas` stays the one number the child Deployments follow.

pub mod decide;
pub mod signal;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::crd::AutoscalingTarget;
use crate::metrics::AUTOSCALE_SIGNALS;
use decide::Recommendation;
pub use signal::{LiveSignals, SignalJob, SignalReader};

/// How often an autoscaled resource is read and decided (the HPA syncs every 15 s; the
/// servers' gauges move faster than that under bursty LLM traffic).
pub const AUTOSCALE_INTERVAL: Duration = Duration::from_secs(5);

/// The field manager of the autoscaler's writes to `/scale`, apart from the operator's own
/// applies, so `kubectl get --show-managed-fields` tells who set the replicas.
pub const AUTOSCALER_FIELD_MANAGER: &str = "infergate-autoscaler";

/// The target's value and the name of its signal, for status, metrics and Events.
pub fn target_of(target: &AutoscalingTarget) -> Option<(&'static str, f64)> {
    let [queue, in_flight, ttft] = AUTOSCALE_SIGNALS;
    if let Some(v) = target.queue_depth_per_replica {
        Some((queue, v))
    } else if let Some(v) = target.in_flight_per_replica {
        Some((in_flight, v))
    } else {
        target.ttft_p95_ms.map(|v| (ttft, f64::from(v)))
    }
}

/// The autoscaler's memory of each resource, keyed like the gate (`namespace/name`). Like the
/// HPA's it is lost on an operator restart: the windows then start empty and the first
/// recommendation after a restart goes through unstabilized, as the HPA's does.
pub struct Autoscaler {
    pub signals: Arc<dyn SignalReader>,
    history: Mutex<HashMap<String, Vec<Recommendation>>>,
}

impl Autoscaler {
    pub fn new(signals: Arc<dyn SignalReader>) -> Self {
        Self { signals, history: Mutex::default() }
    }

    /// The recommendations of `key` still inside a window.
    pub fn history(&self, key: &str) -> Vec<Recommendation> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner).get(key).cloned().unwrap_or_default()
    }

    pub fn set_history(&self, key: &str, history: Vec<Recommendation>) {
        self.history.lock().unwrap_or_else(PoisonError::into_inner).insert(key.to_string(), history);
    }

    /// Drops what is kept for a resource that is gone or no longer autoscaled.
    pub fn forget(&self, key: &str) {
        self.history.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
        self.signals.forget(key);
    }
}
