//! The autoscaler's signal: the active revision's load, read through the gate's metrics
//! sources ([`MetricsSource::load`]) from its ready pods, as a per-replica value.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::PoisonError;

use futures::future::BoxFuture;
use kube::Client;

use super::decide::Signal;
use crate::crd::{AutoscalingTarget, MetricsSpec};
use crate::gate::pods::{ApiPods, PodLister};
use crate::gate::source::{LoadReading, MetricsSource};
use crate::gate::spec_source::{SpecMark, SpecSource};

/// What one reading needs, copied out of the resource.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalJob {
    pub key: String,
    pub namespace: String,
    pub name: String,
    /// The active revision: the one serving the traffic being scaled for.
    pub revision: String,
    pub metrics: MetricsSpec,
    pub target: AutoscalingTarget,
}

/// A reading and why it is partial or missing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SignalReading {
    /// `None`: no pod could be read (or, for TTFT on Direct, this is the first scrape).
    pub signal: Option<Signal>,
    pub failures: Vec<String>,
}

/// Where the autoscaler reads its signal (the pods and metrics sources; a fixed value in tests).
pub trait SignalReader: Send + Sync {
    fn read(&self, job: SignalJob) -> BoxFuture<'_, SignalReading>;
    /// Drops what is kept for `key` (the Direct source's last scrape).
    fn forget(&self, key: &str);
}

/// The source's last mark for a revision (the Direct source's scrape), with the revision it is of.
type LastScrape = (String, SpecMark);

/// Reads through the API (pods) and the resource's metrics source.
pub struct LiveSignals {
    client: Client,
    http: reqwest::Client,
    /// The Direct source's last scrape per resource, with the revision it was of.
    last_scrape: Mutex<HashMap<String, LastScrape>>,
}

impl LiveSignals {
    pub fn new(client: Client) -> crate::error::Result<Self> {
        Ok(Self { client, http: crate::gate::runner::pod_http_client()?, last_scrape: Mutex::default() })
    }

    async fn read_now(&self, job: SignalJob) -> SignalReading {
        let pods = ApiPods { client: self.client.clone(), namespace: job.namespace.clone(), name: job.name.clone() };
        let targets = match pods.list(&job.revision).await {
            Ok(pods) => pods.targets(),
            Err(error) => return SignalReading { signal: None, failures: vec![format!("listing pods: {error}")] },
        };
        let source = SpecSource::for_spec(&self.http, &job.metrics, &job.namespace, &job.name, 0);
        let since = {
            let mut kept = self.last_scrape.lock().unwrap_or_else(PoisonError::into_inner);
            kept.remove(&job.key).filter(|(revision, _)| *revision == job.revision).map(|(_, mark)| mark)
        };
        let (reading, mark) = source.load(&job.revision, &targets, since).await;
        self.last_scrape
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(job.key.clone(), (job.revision.clone(), mark));
        SignalReading {
            signal: per_replica(&reading, &job.target),
            failures: reading.failures.iter().map(|f| f.message.clone()).collect(),
        }
    }
}

impl SignalReader for LiveSignals {
    fn read(&self, job: SignalJob) -> BoxFuture<'_, SignalReading> {
        Box::pin(self.read_now(job))
    }

    fn forget(&self, key: &str) {
        self.last_scrape.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
    }
}

/// The target's per-replica value of `reading`: queue or queue + running averaged over the
/// pods read, or the P95 TTFT in milliseconds (a window without requests is an idle revision:
/// 0, so idleness scales down). `None` without pods, or without a window to measure TTFT in.
pub fn per_replica(reading: &LoadReading, target: &AutoscalingTarget) -> Option<Signal> {
    if reading.pods == 0 {
        return None;
    }
    let pods = i32::try_from(reading.pods).unwrap_or(i32::MAX);
    let per_pod = |total: f64| total / f64::from(reading.pods);
    let value = if target.queue_depth_per_replica.is_some() {
        per_pod(reading.waiting)
    } else if target.in_flight_per_replica.is_some() {
        per_pod(reading.waiting + reading.running)
    } else {
        let recent = reading.recent.as_ref()?;
        if recent.requests <= 0.0 {
            0.0
        } else {
            recent.ttft_p95_seconds? * 1000.0
        }
    };
    Some(Signal { pods, value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::Sample;

    fn target(queue: Option<f64>, in_flight: Option<f64>, ttft: Option<u32>) -> AutoscalingTarget {
        AutoscalingTarget { queue_depth_per_replica: queue, in_flight_per_replica: in_flight, ttft_p95_ms: ttft }
    }

    fn reading(pods: u32, waiting: f64, running: f64, recent: Option<Sample>) -> LoadReading {
        LoadReading { pods, waiting, running, recent, failures: Vec::new() }
    }

    #[test]
    fn gauges_are_averaged_over_the_pods_read() {
        let r = reading(2, 6.0, 4.0, None);
        assert_eq!(per_replica(&r, &target(Some(1.0), None, None)), Some(Signal { pods: 2, value: 3.0 }));
        assert_eq!(per_replica(&r, &target(None, Some(1.0), None)), Some(Signal { pods: 2, value: 5.0 }));
        assert_eq!(per_replica(&reading(0, 6.0, 4.0, None), &target(Some(1.0), None, None)), None);
    }

    #[test]
    fn ttft_needs_a_window_and_an_idle_window_is_zero() {
        let t = target(None, None, Some(500));
        assert_eq!(per_replica(&reading(2, 0.0, 0.0, None), &t), None);
        let busy = Sample { requests: 10.0, errors: 0.0, ttft_p95_seconds: Some(0.8) };
        assert_eq!(per_replica(&reading(2, 0.0, 0.0, Some(busy)), &t), Some(Signal { pods: 2, value: 800.0 }));
        let idle = Sample::default();
        assert_eq!(per_replica(&reading(2, 0.0, 0.0, Some(idle)), &t), Some(Signal { pods: 2, value: 0.0 }));
    }
}
