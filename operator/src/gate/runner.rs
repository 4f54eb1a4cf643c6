//! One background gate job per InferenceDeployment: warm-up load or an analysis window.
//!
//! The reconciler stays short: it starts a job, returns, and on a later reconcile picks up the
//! job's report through [`Gate::observe`]. Jobs live only in memory; the window they belong to is
//! in status, so after an operator restart the state machine sees no job and opens a fresh
//! window (see `rollout::machine`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::pods::{ready_targets, Target};
use super::window_delta::window_delta;
use super::{direct, probe, prometheus};
use crate::analysis::{Sample, WindowReport};
use crate::crd::{MetricsSource, MetricsSpec, ProbeSpec};

/// What the reconciler learns about a resource's gate job.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GateObservation {
    /// The last finished window (kept until the next job starts).
    pub report: Option<WindowReport>,
    /// A job is still running.
    pub busy: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum JobKind {
    Warmup { revision: String, seconds: u32 },
    Measure { revision: String, baseline: Option<String>, started_at: Time, seconds: u32 },
}

/// Everything a job needs, copied out of the spec when it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct GateJob {
    pub namespace: String,
    pub name: String,
    pub kind: JobKind,
    pub probe: ProbeSpec,
    pub metrics: MetricsSpec,
    /// `model` of the probe requests; the server's default when unset.
    pub model: Option<String>,
}

/// The seam between the reconciler and the measuring machinery (a fake in the mock tests).
pub trait Gate: Send + Sync {
    /// `key` is `namespace/name`.
    fn observe(&self, key: &str) -> GateObservation;
    /// Starts `job`, replacing whatever ran for `key`.
    fn start(&self, key: &str, job: GateJob);
    /// Cancels the running job of `key` (probe load stops at once) and forgets its report.
    fn stop(&self, key: &str);
}

#[derive(Default)]
struct Slot {
    task: Option<JoinHandle<()>>,
    report: Arc<Mutex<Option<WindowReport>>>,
}

/// The real gate: pod discovery through the API, HTTP to pod IPs.
pub struct LiveGate {
    client: Client,
    http: reqwest::Client,
    slots: Mutex<HashMap<String, Slot>>,
}

impl LiveGate {
    pub fn new(client: Client) -> crate::error::Result<Self> {
        // Pod IPs only, plain HTTP: no proxy may sit between the operator and a pod.
        let http = reqwest::Client::builder().no_proxy().connect_timeout(Duration::from_secs(3)).build()?;
        Ok(Self { client, http, slots: Mutex::new(HashMap::new()) })
    }
}

impl Gate for LiveGate {
    fn observe(&self, key: &str) -> GateObservation {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(slot) = slots.get(key) else {
            return GateObservation::default();
        };
        let busy = slot.task.as_ref().is_some_and(|t| !t.is_finished());
        let report = slot.report.lock().unwrap_or_else(PoisonError::into_inner).clone();
        GateObservation { report, busy }
    }

    fn start(&self, key: &str, job: GateJob) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = slots.entry(key.to_string()).or_default();
        if let Some(task) = slot.task.take() {
            task.abort();
        }
        let report = Arc::new(Mutex::new(None));
        slot.report = report.clone();
        let (client, http) = (self.client.clone(), self.http.clone());
        slot.task = Some(tokio::spawn(async move {
            if let Some(done) = run_job(&client, &http, &job).await {
                *report.lock().unwrap_or_else(PoisonError::into_inner) = Some(done);
            }
        }));
    }

    fn stop(&self, key: &str) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.remove(key) {
            if let Some(task) = slot.task {
                task.abort();
            }
        }
    }
}

async fn run_job(client: &Client, http: &reqwest::Client, job: &GateJob) -> Option<WindowReport> {
    match &job.kind {
        JobKind::Warmup { revision, seconds } => {
            let targets = targets_or_log(client, job, revision).await;
            let stats =
                probe::run(http, &targets, &job.probe, job.model.as_deref(), Duration::from_secs((*seconds).into()))
                    .await;
            info!(name = %job.name, %revision, ?stats, "warm-up probe finished");
            None
        }
        JobKind::Measure { revision, baseline, started_at, seconds } => {
            Some(measure(client, http, job, revision, baseline.as_deref(), started_at, *seconds).await)
        }
    }
}

async fn targets_or_log(client: &Client, job: &GateJob, revision: &str) -> Vec<Target> {
    match ready_targets(client, &job.namespace, &job.name, revision).await {
        Ok(targets) => targets,
        Err(error) => {
            warn!(name = %job.name, %revision, %error, "listing pods failed");
            Vec::new()
        }
    }
}

/// One window on the ready pods of `revision` (and of `baseline`).
async fn measure(
    client: &Client,
    http: &reqwest::Client,
    job: &GateJob,
    revision: &str,
    baseline: Option<&str>,
    started_at: &Time,
    seconds: u32,
) -> WindowReport {
    let candidate = targets_or_log(client, job, revision).await;
    let baseline = match baseline {
        Some(b) => Some((b, targets_or_log(client, job, b).await)),
        None => None,
    };
    measure_window(
        http,
        job,
        (revision, &candidate),
        baseline.as_ref().map(|(b, t)| (*b, t.as_slice())),
        started_at,
        seconds,
    )
    .await
}

/// One window on known targets: start scrape, probe load until the window ends, end scrape
/// (Direct), or the PromQL at the window's end (Prometheus).
pub async fn measure_window(
    http: &reqwest::Client,
    job: &GateJob,
    (revision, candidate_targets): (&str, &[Target]),
    baseline: Option<(&str, &[Target])>,
    started_at: &Time,
    seconds: u32,
) -> WindowReport {
    let window = Duration::from_secs(seconds.into());
    let load = window.min(Duration::from_secs(job.probe.duration_seconds.into()));
    let (baseline_revision, baseline_targets) = baseline.unwrap_or(("", &[]));
    let mut problems = Vec::new();
    if candidate_targets.is_empty() {
        problems.push(format!("no ready pod of revision {revision}"));
    }
    let direct = job.metrics.source == MetricsSource::Direct;
    let (start_c, start_b) = if direct {
        let (c, failed_c) = direct::scrape_all(http, candidate_targets, revision).await;
        let (b, _) = direct::scrape_all(http, baseline_targets, baseline_revision).await;
        problems.extend(failed_c);
        (c, b)
    } else {
        Default::default()
    };
    let end = tokio::time::Instant::now() + window;
    let model = job.model.as_deref();
    // The same probe workload on both revisions, at the same time, so they see the same load.
    tokio::join!(
        probe::run(http, candidate_targets, &job.probe, model, load),
        probe::run(http, baseline_targets, &job.probe, model, load),
    );
    tokio::time::sleep_until(end).await;

    let (candidate, baseline_sample) = if direct {
        let (end_c, failed_c) = direct::scrape_all(http, candidate_targets, revision).await;
        let (end_b, _) = direct::scrape_all(http, baseline_targets, baseline_revision).await;
        problems.extend(failed_c);
        (window_delta(&start_c, &end_c), baseline.map(|_| window_delta(&start_b, &end_b)))
    } else {
        let url = job.metrics.prometheus_url.clone().unwrap_or_default();
        let at = Timestamp::now();
        let c = prometheus::measure(http, &url, &job.namespace, revision, seconds, at).await.unwrap_or_else(|e| {
            problems.push(e.to_string());
            Sample::default()
        });
        let b = match baseline {
            Some((b, _)) => prometheus::measure(http, &url, &job.namespace, b, seconds, at).await.ok(),
            None => None,
        };
        (c, b)
    };
    WindowReport {
        revision: revision.to_string(),
        started_at: started_at.clone(),
        candidate,
        baseline: baseline_sample,
        problem: (!problems.is_empty()).then(|| problems.join("; ")),
    }
}

#[cfg(test)]
mod tests;
