//! The reconcile's autoscaling step: read the active revision's signal, decide with
//! [`crate::autoscale::decide`], and say what to record (status, gauges, an Event) and whether
//! `/scale` must be written. The write itself happens after the children are applied, so a
//! scale and a rollout decision never race inside one reconcile.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::decisions::Decision;
use super::gate_key;
use super::Context;
use crate::autoscale::decide::{self, Recommendation};
use crate::autoscale::{target_of, SignalJob};
use crate::crd::{AutoscalingStatus, InferenceDeployment, InferenceDeploymentStatus, RolloutStep};

/// What one tick decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Tick {
    pub status: AutoscalingStatus,
    /// `spec.replicas` to write through `/scale`, when it changes.
    pub scale_to: Option<i32>,
    pub event: Option<Decision>,
}

/// Steps whose analysis windows measure the pods they started with: no scale-down then.
pub fn holds_scale_down(status: &InferenceDeploymentStatus) -> bool {
    status.rollout.as_ref().is_some_and(|r| matches!(r.step, RolloutStep::ScalingUp | RolloutStep::Watching))
}

/// Reads and decides for `obj`, whose rollout left `decided`; `None` without `spec.autoscaling`.
pub async fn tick(
    obj: &InferenceDeployment,
    ctx: &Context,
    namespace: &str,
    decided: &InferenceDeploymentStatus,
    now: &Time,
) -> Option<Tick> {
    let spec = obj.spec.autoscaling.as_ref()?;
    let name = obj.metadata.name.clone().unwrap_or_default();
    let key = gate_key(namespace, &name);
    let (signal_name, target) = target_of(&spec.target)?;
    let revision = decided.active_revision.clone()?;
    let job = SignalJob {
        key: key.clone(),
        namespace: namespace.to_string(),
        name: name.clone(),
        revision,
        metrics: obj.spec.metrics.clone(),
        target: spec.target.clone(),
    };
    let reading = ctx.autoscaler.signals.read(job).await;
    if !reading.failures.is_empty() {
        tracing::debug!(%name, %namespace, failures = ?reading.failures, "autoscaling signal partly unread");
    }
    let at = now.0.as_second();
    let mut history = ctx.autoscaler.history(&key);
    let current = obj.spec.replicas;
    let decision = decide::decide(spec, target, current, reading.signal, &history, at, holds_scale_down(decided));
    if let Some(replicas) = decision.recommendation {
        history.push(Recommendation { at, replicas });
    }
    decide::prune(&mut history, at, spec);
    ctx.autoscaler.set_history(&key, history);

    let previous = decided.autoscaling.as_ref();
    let scale_to = (decision.desired != current).then_some(decision.desired);
    let signal_value = reading.signal.map(|s| s.value);
    let event = scale_to.map(|to| {
        let why = match signal_value {
            Some(value) => format!("{signal_name} {value:.2} per replica (target {target})"),
            None => "no signal; keeping within minReplicas..maxReplicas".to_string(),
        };
        Decision::normal("Autoscaled", "Scale", format!("autoscaler scaled from {current} to {to} replicas: {why}"))
    });
    let status = AutoscalingStatus {
        current_replicas: reading.signal.map_or(current, |s| s.pods),
        desired_replicas: decision.desired,
        last_scale_time: if scale_to.is_some() {
            Some(now.clone())
        } else {
            previous.and_then(|p| p.last_scale_time.clone())
        },
        signal_value,
    };
    Some(Tick { status, scale_to, event })
}
