//! The operator's own Prometheus metrics (DESIGN.md, "Operator metrics").

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::crd::Phase;
use crate::error::Result;

pub struct Metrics {
    registry: Registry,
    pub reconciliations: IntCounter,
    /// By `Error::metric_label`.
    pub reconcile_errors: IntCounterVec,
    pub reconcile_duration: Histogram,
    /// 1 for the current phase of each resource, 0 for the others.
    pub rollout_phase: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Self> {
        let registry = Registry::new();
        let reconciliations =
            IntCounter::new("infergate_reconciliations_total", "Reconciliations of InferenceDeployments")?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new("infergate_reconcile_errors_total", "Failed reconciliations by error kind"),
            &["error"],
        )?;
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new("infergate_reconcile_duration_seconds", "Duration of one reconciliation")
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )?;
        let rollout_phase = IntGaugeVec::new(
            Opts::new("infergate_rollout_phase", "Current phase of each InferenceDeployment"),
            &["namespace", "name", "phase"],
        )?;
        registry.register(Box::new(reconciliations.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(rollout_phase.clone()))?;
        Ok(Self { registry, reconciliations, reconcile_errors, reconcile_duration, rollout_phase })
    }

    pub fn set_phase(&self, namespace: &str, name: &str, phase: Option<Phase>) {
        for candidate in Phase::ALL {
            let value = i64::from(Some(candidate) == phase);
            self.rollout_phase.with_label_values(&[namespace, name, candidate.as_str()]).set(value);
        }
    }

    /// Drops the series of a deleted resource so the cardinality follows the cluster.
    pub fn forget(&self, namespace: &str, name: &str) {
        for candidate in Phase::ALL {
            // Absent series are fine: nothing to remove.
            let _ = self.rollout_phase.remove_label_values(&[namespace, name, candidate.as_str()]);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_gauge_marks_exactly_the_current_phase() {
        let m = Metrics::new().unwrap();
        m.set_phase("ml", "chat", Some(Phase::Healthy));
        let text = m.render().unwrap();
        assert!(text.contains(r#"infergate_rollout_phase{name="chat",namespace="ml",phase="Healthy"} 1"#));
        assert!(text.contains(r#"infergate_rollout_phase{name="chat",namespace="ml",phase="Pending"} 0"#));
        m.forget("ml", "chat");
        assert!(!m.render().unwrap().contains("chat"));
    }
}
