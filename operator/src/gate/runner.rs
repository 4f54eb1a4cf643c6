//! One background gate job per InferenceDeployment: warm-up load or an analysis window.
//!
//! The reconciler stays short: it starts a job, returns, and on a later reconcile picks up the
//! job's report through [`Gate::observe`]. Jobs live only in memory; the window they belong to is
//! in status, so after an operator restart the state machine sees no job and opens a fresh
//! window (see `rollout::machine`).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kube::Client;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use super::pods::{window_health, ApiPods, PodLister, Restarts, RevisionPods, Target};
use super::probe::{self, ProbeRun};
use super::source::MetricsSource;
use super::spec_source::SpecSource;
use crate::analysis::{GateWork, ProbeWindow, Sample, WindowReport, WindowWork};
use crate::crd::{MetricsSpec, ProbeSpec};

/// What the reconciler learns about a resource's gate job.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GateObservation {
    /// The last finished window (kept until the next job starts).
    pub report: Option<WindowReport>,
    /// A job is still running.
    pub busy: bool,
}

/// Everything a job needs, copied out of the spec when it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct GateJob {
    pub namespace: String,
    pub name: String,
    pub work: GateWork,
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
    /// The candidate's restart counts at the end of the last window, so that a restart between
    /// two windows fails the next one. Kept across jobs; forgotten with the slot when the gate
    /// stops (the step ended) or the operator restarts (then only restarts inside a window count).
    restarts: Arc<Mutex<Restarts>>,
}

/// The real gate: pod discovery through the API, HTTP to pod IPs.
pub struct LiveGate {
    client: Client,
    http: reqwest::Client,
    slots: Mutex<HashMap<String, Slot>>,
}

impl LiveGate {
    pub fn new(client: Client) -> crate::error::Result<Self> {
        Ok(Self { client, http: pod_http_client()?, slots: Mutex::new(HashMap::new()) })
    }
}

/// The HTTP client for pods: pod IPs only, plain HTTP, so no proxy may sit between the operator
/// and a pod. Used by the gate's probe and scrapes and by the autoscaler's reads.
pub fn pod_http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder().no_proxy().connect_timeout(Duration::from_secs(3)).build()
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
        let restarts = slot.restarts.clone();
        let (client, http) = (self.client.clone(), self.http.clone());
        slot.task = Some(tokio::spawn(async move {
            if let Some(done) = run_job(client, &http, &job, &restarts).await {
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

async fn run_job(
    client: Client,
    http: &reqwest::Client,
    job: &GateJob,
    restarts: &Mutex<Restarts>,
) -> Option<WindowReport> {
    let pods = ApiPods { client, namespace: job.namespace.clone(), name: job.name.clone() };
    match &job.work {
        GateWork::Warmup { revision, seconds } => {
            let targets = match pods.list(revision).await {
                Ok(pods) => pods.targets(),
                Err(error) => {
                    warn!(name = %job.name, %revision, %error, "listing pods failed");
                    Vec::new()
                }
            };
            let duration = Duration::from_secs((*seconds).into());
            let plan = ProbeRun::for_duration(&targets, &job.probe, job.model.as_deref(), duration);
            let window = probe::run(http, &plan).await;
            info!(name = %job.name, %revision, probe = %window.summary(), "warm-up probe finished");
            None
        }
        GateWork::Measure(window) => {
            let before = restarts.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let source = SpecSource::for_spec(http, &job.metrics, &job.namespace, &job.name, window.seconds);
            let (report, after) = measure_window(&source, &pods, http, job, window, &before).await;
            *restarts.lock().unwrap_or_else(PoisonError::into_inner) = after;
            Some(report)
        }
    }
}

/// The pods each side's probe loads: the same number on both, so that every probed pod gets the
/// same share of the same probe workload (`concurrency` requests in flight over that many pods)
/// and the TTFTs compare like with like. Probing one preview pod next to two active pods with
/// the same workload spread over all of them would give the preview pod twice the load per pod.
/// The alternative, concurrency proportional to pod count, would raise the probe's total load
/// with the size of the active revision; this keeps it at twice `concurrency` at most.
/// Without baseline pods the candidate's are all probed (the relative check then reports the
/// missing baseline samples).
pub fn equal_share<'a>(candidate: &'a [Target], baseline: &'a [Target]) -> (&'a [Target], &'a [Target]) {
    if baseline.is_empty() {
        return (candidate, baseline);
    }
    let pods = candidate.len().min(baseline.len());
    (&candidate[..pods], &baseline[..pods])
}

/// One window: pods and source readings at the start, probe load, and at the end the source's
/// sample, the pods again (health) and the probe's results. Returns the report and the
/// candidate's restart counts at the end, for the next window.
pub async fn measure_window<S: MetricsSource, P: PodLister>(
    source: &S,
    pods: &P,
    http: &reqwest::Client,
    job: &GateJob,
    window: &WindowWork,
    before: &Restarts,
) -> (WindowReport, Restarts) {
    let interval = Duration::from_secs(window.seconds.into());
    let opened = Instant::now();
    let end = opened + interval;
    let load = interval.min(Duration::from_secs(job.probe.duration_seconds.into()));
    let revision = window.revision.as_str();
    let mut problems = Vec::new();

    let start_pods = match pods.list(revision).await {
        Ok(listed) => Some(listed),
        Err(error) => {
            problems.push(format!("listing the pods of revision {revision} failed: {error}"));
            None
        }
    };
    let baseline_pods = match &window.baseline {
        Some(baseline) => pods.list(baseline).await.unwrap_or_else(|error| {
            // The relative check then finds no baseline samples and says so.
            warn!(name = %job.name, %baseline, %error, "listing the baseline's pods failed");
            RevisionPods::default()
        }),
        None => RevisionPods::default(),
    };
    let candidate_targets = start_pods.as_ref().map(RevisionPods::targets).unwrap_or_default();
    let baseline_targets = baseline_pods.targets();
    let (candidate_probed, baseline_probed) = equal_share(&candidate_targets, &baseline_targets);

    let (candidate_mark, mut source_failures) = source.start(revision, &candidate_targets).await;
    let baseline_mark = match &window.baseline {
        Some(baseline) => Some(source.start(baseline, &baseline_targets).await.0),
        None => None,
    };

    let model = job.model.as_deref();
    let plan = |targets| ProbeRun { targets, probe: &job.probe, model, stop_sending: opened + load, cut_off: end };
    // Both revisions under the same workload at the same time.
    let (candidate_plan, baseline_plan) = (plan(candidate_probed), plan(baseline_probed));
    let (candidate_probe, baseline_probe) =
        tokio::join!(probe::run(http, &candidate_plan), probe::run(http, &baseline_plan));
    tokio::time::sleep_until(end).await;

    let candidate_reading = source.finish(revision, &candidate_targets, candidate_mark).await;
    source_failures.extend(candidate_reading.failures);
    let baseline_reading = match (&window.baseline, baseline_mark) {
        // The baseline's own source failures are not the candidate's measurement error: the
        // relative check reads the probe's TTFTs, the baseline's sample is only shown.
        (Some(baseline), Some(mark)) => Some(source.finish(baseline, &baseline_targets, mark).await),
        _ => None,
    };
    let end_pods = match pods.list(revision).await {
        Ok(listed) => Some(listed),
        Err(error) => {
            problems.push(format!("listing the pods of revision {revision} failed: {error}"));
            None
        }
    };

    let health = match (&start_pods, &end_pods) {
        (Some(start), Some(end)) => window_health(start, end, before),
        _ => Vec::new(),
    };
    let unhealthy_pods: BTreeSet<&str> = health.iter().filter_map(|h| h.pod.as_deref()).collect();
    // A scrape that failed because its pod died is that pod's health failure, already counted.
    problems.extend(
        source_failures
            .iter()
            .filter(|f| f.pod.as_deref().is_none_or(|pod| !unhealthy_pods.contains(pod)))
            .map(|f| f.message.clone()),
    );
    if candidate_targets.is_empty() && health.is_empty() && start_pods.is_some() {
        problems.push(format!("no ready pod of revision {revision}"));
    }
    let after = end_pods.as_ref().or(start_pods.as_ref()).map_or_else(|| before.clone(), RevisionPods::restarts);
    let with_probe = |sample: Sample, probe: &ProbeWindow| sample.with_client_failures(probe.failed.unseen_by_server());
    let probed_pods = candidate_probed.len().max(1) as f64;
    let report = WindowReport {
        candidate_in_flight: candidate_reading.in_flight_per_pod,
        baseline_in_flight: baseline_reading.as_ref().and_then(|r| r.in_flight_per_pod),
        probe_in_flight_per_pod: f64::from(job.probe.concurrency) / probed_pods,
        revision: revision.to_string(),
        started_at: window.started_at.clone(),
        candidate: with_probe(candidate_reading.sample, &candidate_probe),
        baseline: baseline_reading.map(|r| with_probe(r.sample, &baseline_probe)),
        problem: (!problems.is_empty()).then(|| problems.join("; ")),
        baseline_probe: window.baseline.is_some().then_some(baseline_probe),
        candidate_probe,
        unhealthy: health.into_iter().map(|h| h.message).collect(),
        candidate_serves_users: window.candidate_serves_users,
    };
    (report, after)
}

#[cfg(test)]
mod tests;
