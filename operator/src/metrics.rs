//! The operator's own Prometheus metrics (DESIGN.md, "Operator metrics").

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};

use crate::crd::{Measurement, Phase, RolloutResult};
use crate::error::Result;

/// The `signal` label values of `infergate_autoscale_signal`: the names of the targets.
pub const AUTOSCALE_SIGNALS: [&str; 3] = ["queueDepthPerReplica", "inFlightPerReplica", "ttftP95Ms"];

pub struct Metrics {
    registry: Registry,
    pub reconciliations: IntCounter,
    /// By `Error::metric_label`.
    pub reconcile_errors: IntCounterVec,
    pub reconcile_duration: Histogram,
    /// 1 for the current phase of each resource, 0 for the others.
    pub rollout_phase: IntGaugeVec,
    /// Finished rollouts by result (Promoted, RolledBack, Aborted).
    pub rollouts: IntCounterVec,
    /// P95 TTFT of the last analysis window, per revision.
    pub gate_ttft_p95: GaugeVec,
    /// Error rate of the last analysis window, per revision.
    pub gate_error_rate: GaugeVec,
    /// Replicas the built-in autoscaler decided, per resource.
    pub autoscale_desired_replicas: IntGaugeVec,
    /// The autoscaler's per-replica signal of its last reading, per resource and signal name.
    pub autoscale_signal: GaugeVec,
    /// Revisions with gate series, per (namespace, name), so a deleted resource's go too.
    gate_revisions: Mutex<BTreeMap<(String, String), BTreeSet<String>>>,
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
        let rollouts =
            IntCounterVec::new(Opts::new("infergate_rollouts_total", "Finished rollouts by result"), &["result"])?;
        let gate_ttft_p95 = GaugeVec::new(
            Opts::new("infergate_gate_ttft_p95_seconds", "P95 time to first token of the last analysis window"),
            &["namespace", "name", "revision"],
        )?;
        let gate_error_rate = GaugeVec::new(
            Opts::new("infergate_gate_error_rate", "Error rate (5xx and 429) of the last analysis window"),
            &["namespace", "name", "revision"],
        )?;
        let autoscale_desired_replicas = IntGaugeVec::new(
            Opts::new("infergate_autoscale_desired_replicas", "Replicas the built-in autoscaler decided"),
            &["namespace", "name"],
        )?;
        let autoscale_signal = GaugeVec::new(
            Opts::new("infergate_autoscale_signal", "Per-replica signal of the autoscaler's last reading"),
            &["namespace", "name", "signal"],
        )?;
        registry.register(Box::new(autoscale_desired_replicas.clone()))?;
        registry.register(Box::new(autoscale_signal.clone()))?;
        registry.register(Box::new(rollout_phase.clone()))?;
        registry.register(Box::new(rollouts.clone()))?;
        registry.register(Box::new(gate_ttft_p95.clone()))?;
        registry.register(Box::new(gate_error_rate.clone()))?;
        for result in [RolloutResult::Promoted, RolloutResult::RolledBack, RolloutResult::Aborted] {
            // Present from the start, so rate() and alerts see a zero before the first rollout.
            rollouts.with_label_values(&[result.as_str()]);
        }
        Ok(Self {
            registry,
            reconciliations,
            reconcile_errors,
            reconcile_duration,
            rollout_phase,
            rollouts,
            gate_ttft_p95,
            gate_error_rate,
            autoscale_desired_replicas,
            autoscale_signal,
            gate_revisions: Mutex::default(),
        })
    }

    /// Publishes one window's measurement; a window without data removes the series (a stale
    /// value would look like a measurement).
    pub fn record_measurement(&self, namespace: &str, name: &str, m: &Measurement) {
        let labels = [namespace, name, m.revision.as_str()];
        self.gate_revisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((namespace.to_string(), name.to_string()))
            .or_default()
            .insert(m.revision.clone());
        match m.ttft_p95_ms {
            Some(ms) => self.gate_ttft_p95.with_label_values(&labels).set(ms / 1000.0),
            None => {
                let _ = self.gate_ttft_p95.remove_label_values(&labels);
            }
        }
        match m.error_rate {
            Some(rate) => self.gate_error_rate.with_label_values(&labels).set(rate),
            None => {
                let _ = self.gate_error_rate.remove_label_values(&labels);
            }
        }
    }

    /// Publishes one autoscaler decision; a reading without signal removes the signal series
    /// (a stale value would look like a reading).
    pub fn record_autoscale(&self, namespace: &str, name: &str, signal: &str, desired: i32, value: Option<f64>) {
        self.autoscale_desired_replicas.with_label_values(&[namespace, name]).set(i64::from(desired));
        let labels = [namespace, name, signal];
        match value {
            Some(value) => self.autoscale_signal.with_label_values(&labels).set(value),
            None => {
                let _ = self.autoscale_signal.remove_label_values(&labels);
            }
        }
    }

    /// Drops the autoscaler's series of a resource (deleted, or no longer autoscaled).
    pub fn forget_autoscale(&self, namespace: &str, name: &str) {
        let _ = self.autoscale_desired_replicas.remove_label_values(&[namespace, name]);
        for signal in AUTOSCALE_SIGNALS {
            let _ = self.autoscale_signal.remove_label_values(&[namespace, name, signal]);
        }
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
        self.forget_autoscale(namespace, name);
        let revisions = self
            .gate_revisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(namespace.to_string(), name.to_string()))
            .unwrap_or_default();
        for revision in revisions {
            let labels = [namespace, name, revision.as_str()];
            let _ = self.gate_ttft_p95.remove_label_values(&labels);
            let _ = self.gate_error_rate.remove_label_values(&labels);
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

    #[test]
    fn rollouts_and_gate_gauges() {
        let m = Metrics::new().unwrap();
        assert!(m.render().unwrap().contains(r#"infergate_rollouts_total{result="RolledBack"} 0"#));
        m.rollouts.with_label_values(&["Promoted"]).inc();
        let measurement = Measurement {
            revision: "bbb".into(),
            time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            ttft_p95_ms: Some(250.0),
            tpot_p95_ms: None,
            error_rate: Some(0.5),
            requests: 10,
            baseline_ttft_p95_ms: None,
            verdict: crate::crd::Verdict::Fail,
            message: None,
        };
        m.record_measurement("ml", "chat", &measurement);
        let text = m.render().unwrap();
        assert!(text.contains(r#"infergate_rollouts_total{result="Promoted"} 1"#), "{text}");
        assert!(
            text.contains(r#"infergate_gate_ttft_p95_seconds{name="chat",namespace="ml",revision="bbb"} 0.25"#),
            "{text}"
        );
        assert!(text.contains(r#"infergate_gate_error_rate{name="chat",namespace="ml",revision="bbb"} 0.5"#), "{text}");
        m.forget("ml", "chat");
        let text = m.render().unwrap();
        assert!(!text.contains(r#"revision="bbb""#), "{text}");
    }

    #[test]
    fn autoscale_gauges_follow_the_last_decision() {
        let m = Metrics::new().unwrap();
        m.record_autoscale("ml", "chat", "queueDepthPerReplica", 3, Some(4.5));
        let text = m.render().unwrap();
        assert!(text.contains(r#"infergate_autoscale_desired_replicas{name="chat",namespace="ml"} 3"#), "{text}");
        assert!(
            text.contains(
                r#"infergate_autoscale_signal{name="chat",namespace="ml",signal="queueDepthPerReplica"} 4.5"#
            ),
            "{text}"
        );
        m.record_autoscale("ml", "chat", "queueDepthPerReplica", 1, None);
        let text = m.render().unwrap();
        assert!(!text.contains("infergate_autoscale_signal{"), "{text}");
        m.forget("ml", "chat");
        assert!(!m.render().unwrap().contains("chat"));
    }
}
