//! What the scenarios share: the InferenceDeployment they roll, waits on its status, and
//! OpenAI clients that reach its pods as a Service would route them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use infergate_bench::client::Target as LoadTarget;
use infergate_bench::report::RequestRecord;
use infergate_operator::crd::{InferenceDeployment, InferenceDeploymentStatus, Phase, RolloutResult, RolloutStep};
use infergate_operator::names;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::Client;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::services::ready_backends;
use crate::wait;

pub const SERVER_IMAGE: &str = "infergate-server:0.1.0";
pub const MODEL_PATH: &str = "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const SERVED_NAME: &str = "smollm2";
/// The gate's limits in these scenarios: far above what a healthy pod shows under the probe
/// load on this machine, far below the injected faults.
pub const SLO_TTFT_MS: u32 = 1500;
pub const SLOW_TTFT_DELAY_MS: &str = "3000";
pub const ERROR_RATE: &str = "0.5";

/// A fast, gated InferenceDeployment: one replica, short windows, probe load strong enough to
/// give every window its minimum requests even when the preview is slow.
pub fn gated_manifest(name: &str, variant: &str, extra_args: &[&str], prometheus_url: Option<&str>) -> Value {
    let metrics = match prometheus_url {
        Some(url) => json!({"source": "Prometheus", "prometheusUrl": url}),
        None => json!({"source": "Direct"}),
    };
    json!({
        "apiVersion": "infergate.dev/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {"name": name},
        "spec": {
            "image": SERVER_IMAGE,
            "model": {"source": MODEL_PATH, "servedName": SERVED_NAME},
            "replicas": 1,
            "resources": {"cpu": "1", "memory": "1Gi"},
            "server": {
                "maxBatchSize": 8,
                "drainTimeoutSeconds": 10,
                "extraArgs": extra_args,
                // One compute thread per server: several servers share this machine's cores.
                // E2E_VARIANT only changes the pod template, so it makes a new revision.
                "extraEnv": [
                    {"name": infergate_protocol::server_flags::THREADS.env, "value": "1"},
                    {"name": "E2E_VARIANT", "value": variant},
                ],
            },
            "slo": {"ttftP95Ms": SLO_TTFT_MS, "maxErrorRate": 0.05},
            "rollout": {
                "autoPromote": true,
                "previewReplicas": 1,
                "progressDeadlineSeconds": 120,
                "warmupSeconds": 3,
                "analysis": {
                    "intervalSeconds": 8,
                    "successfulChecks": 2,
                    "failureLimit": 0,
                    "minRequests": 5,
                    "onNoData": "Inconclusive",
                },
                // The request timeout must be below the window (a CEL rule): a hung request
                // then counts as failed inside the window that sent it.
                "probe": {"concurrency": 4, "maxTokens": 8, "durationSeconds": 8, "requestTimeoutSeconds": 6},
                "postPromotionWatchSeconds": 8,
                "scaleDownDelaySeconds": 3,
            },
            "metrics": metrics,
        },
    })
}

pub fn api(client: &Client, namespace: &str) -> Api<InferenceDeployment> {
    Api::namespaced(client.clone(), namespace)
}

pub async fn status(client: &Client, namespace: &str, name: &str) -> Result<InferenceDeploymentStatus> {
    Ok(api(client, namespace).get_status(name).await?.status.unwrap_or_default())
}

/// Waits until the status satisfies `done`; a status that satisfies `failed` ends the wait
/// early with the status in the error.
pub async fn wait_status(
    client: &Client,
    namespace: &str,
    name: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&InferenceDeploymentStatus) -> bool,
) -> Result<InferenceDeploymentStatus> {
    let result = wait::until(what, timeout, || async {
        let status = status(client, namespace, name).await?;
        Ok(done(&status).then_some(status))
    })
    .await;
    match result {
        Err(Error::Timeout { what, seconds, .. }) => {
            let status = status(client, namespace, name).await.ok();
            Err(Error::Timeout { what, seconds, detail: format!("; status: {}", summary(status.as_ref())) })
        }
        other => other,
    }
}

/// Phase, revisions and the last measurement, for failure messages.
pub fn summary(status: Option<&InferenceDeploymentStatus>) -> String {
    let Some(s) = status else { return "none".into() };
    let last = s.last_measurement.as_ref().map(|m| {
        format!(
            "{:?} ttft_p95_ms={:?} errors={:?} requests={} {}",
            m.verdict,
            m.ttft_p95_ms,
            m.error_rate,
            m.requests,
            m.message.clone().unwrap_or_default()
        )
    });
    format!(
        "phase={:?} active={:?} preview={:?} failed={:?} last={last:?}",
        s.phase, s.active_revision, s.preview_revision, s.failed_revision
    )
}

pub fn is_phase(s: &InferenceDeploymentStatus, phase: Phase) -> bool {
    s.phase == Some(phase)
}

/// Healthy with a serving revision other than `previous` (or any, when `None`).
pub fn healthy_on_new_revision(previous: Option<&str>) -> impl Fn(&InferenceDeploymentStatus) -> bool + '_ {
    move |s| is_phase(s, Phase::Healthy) && s.active_revision.is_some() && s.active_revision.as_deref() != previous
}

/// Applies `manifest` and waits until it is Healthy on a new revision; returns that revision.
pub async fn apply_and_wait_healthy(
    suite: &super::Suite,
    namespace: &str,
    manifest: &Value,
    previous: Option<&str>,
    timeout: Duration,
) -> Result<String> {
    let name = manifest["metadata"]["name"].as_str().unwrap_or_default().to_string();
    suite.kubectl.apply(namespace, &manifest.to_string()).await?;
    let status = wait_status(
        &suite.client,
        namespace,
        &name,
        "Healthy on a new revision",
        timeout,
        healthy_on_new_revision(previous),
    )
    .await?;
    status.active_revision.ok_or_else(|| Error::Failed("Healthy without an active revision".into()))
}

/// The spec replicas of one revision's Deployment (None when it does not exist).
pub async fn revision_replicas(client: &Client, namespace: &str, name: &str, revision: &str) -> Result<Option<i32>> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    Ok(deployments
        .get_opt(&names::deployment_name(name, revision))
        .await?
        .and_then(|d| d.spec)
        .and_then(|s| s.replicas))
}

/// Pods of one revision still present (terminating ones included).
pub async fn revision_pods(client: &Client, namespace: &str, name: &str, revision: &str) -> Result<usize> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{}={name},{}={revision}", names::LABEL_NAME, names::LABEL_REVISION);
    Ok(pods.list(&ListParams::default().labels(&selector)).await?.items.len())
}

/// Events the operator recorded about `name`, as "reason: note".
pub async fn events(client: &Client, namespace: &str, name: &str) -> Result<Vec<String>> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), namespace);
    let list = api.list(&ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| format!("{}: {}", e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect())
}

fn load_target(base_url: &str, max_tokens: usize) -> Result<LoadTarget> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    Ok(LoadTarget {
        client,
        endpoint: format!("{base_url}/v1/completions"),
        max_tokens,
        model: Some(SERVED_NAME.to_string()),
        timeout: Duration::from_secs(30),
        deadline: tokio::time::Instant::now() + Duration::from_secs(3600),
    })
}

/// One streamed completion through the Service `service`.
pub async fn request_via_service(client: &Client, namespace: &str, service: &str, prompt: &str) -> RequestRecord {
    request_tokens_via_service(client, namespace, service, prompt, 12).await
}

/// `request_via_service` with `max_tokens` tokens.
pub async fn request_tokens_via_service(
    client: &Client,
    namespace: &str,
    service: &str,
    prompt: &str,
    max_tokens: usize,
) -> RequestRecord {
    let backends = match ready_backends(client, namespace, service).await {
        Ok(b) if !b.is_empty() => b,
        Ok(_) => return failed_record(format!("service {service} has no ready backend")),
        Err(e) => return failed_record(format!("resolving service {service}: {e}")),
    };
    // Spread requests over the backends as kube-proxy would.
    let pick = &backends[rand_index(backends.len())];
    match load_target(&pick.base_url, max_tokens) {
        Ok(target) => target.run(prompt).await,
        Err(e) => failed_record(e.to_string()),
    }
}

fn failed_record(error: String) -> RequestRecord {
    RequestRecord { error: Some(error), ..RequestRecord::default() }
}

fn rand_index(n: usize) -> usize {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    nanos as usize % n.max(1)
}

/// Clients streaming completions through a Service until stopped: what users see during a
/// rollout. Bounded by `max_requests` per worker.
pub struct ClientLoad {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<Vec<RequestRecord>>>,
}

impl ClientLoad {
    pub fn start(client: &Client, namespace: &str, service: &str, workers: usize, max_requests: usize) -> ClientLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|w| {
                let (client, namespace, service, stop) =
                    (client.clone(), namespace.to_string(), service.to_string(), stop.clone());
                tokio::spawn(async move {
                    let mut records = Vec::new();
                    while !stop.load(Ordering::Relaxed) && records.len() < max_requests {
                        let prompt = format!("Worker {w}, request {}: name three colors.", records.len());
                        records.push(request_via_service(&client, &namespace, &service, &prompt).await);
                    }
                    records
                })
            })
            .collect();
        ClientLoad { stop, workers }
    }

    pub async fn finish(self) -> Vec<RequestRecord> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for worker in self.workers {
            all.extend(worker.await.unwrap_or_default());
        }
        all
    }
}

/// Fails unless every record succeeded and there were at least `min` of them.
pub fn expect_all_ok(records: &[RequestRecord], min: usize) -> Result<()> {
    let failed: Vec<&str> = records.iter().filter_map(|r| r.error.as_deref()).collect();
    if !failed.is_empty() {
        let mut distinct = failed.clone();
        distinct.dedup();
        return Err(Error::Failed(format!(
            "{} of {} client requests failed: {}",
            failed.len(),
            records.len(),
            distinct.into_iter().take(3).collect::<Vec<_>>().join(" | ")
        )));
    }
    if records.len() < min {
        return Err(Error::Failed(format!("only {} client requests ran (expected at least {min})", records.len())));
    }
    Ok(())
}

/// A namespace for one scenario.
pub async fn namespace(suite: &super::Suite, name: &str) -> Result<()> {
    let manifest = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    suite.kubectl.run(&["apply", "-f", "-"], Some(&manifest.to_string())).await.map(|_| ())
}

/// Sets the value at a JSON pointer (`/spec/rollout/autoPromote`), creating objects on the way:
/// scenarios start from `gated_manifest` and change only what they test.
pub fn set(manifest: &mut Value, pointer: &str, value: Value) {
    let mut at = manifest;
    for key in pointer.trim_start_matches('/').split('/') {
        if !at.is_object() {
            *at = json!({});
        }
        let Value::Object(map) = at else { unreachable!("made an object above") };
        at = map.entry(key.to_string()).or_insert(Value::Null);
    }
    *at = value;
}

/// `kubectl annotate infd NAME KEY=true`: a manual control given as users give it.
pub async fn annotate(suite: &super::Suite, namespace: &str, name: &str, key: &str) -> Result<()> {
    let assignment = format!("{key}=true");
    suite.kubectl.run(&["annotate", "-n", namespace, "--overwrite", "infd", name, &assignment], None).await.map(|_| ())
}

/// Waits until the rollout in flight is at `step`.
pub async fn wait_step(
    client: &Client,
    namespace: &str,
    name: &str,
    step: RolloutStep,
    timeout: Duration,
) -> Result<InferenceDeploymentStatus> {
    wait_status(client, namespace, name, &format!("rollout step {step:?}"), timeout, |s| {
        s.rollout.as_ref().is_some_and(|r| r.step == step)
    })
    .await
}

/// What GitOps tools read after a roll back: not Ready (reason RolledBack) and Stalled, until
/// the spec changes or a retry.
pub fn expect_rolled_back_conditions(s: &InferenceDeploymentStatus) -> Result<()> {
    let condition =
        |kind: &str| s.conditions.iter().find(|c| c.type_ == kind).map(|c| (c.status.as_str(), c.reason.as_str()));
    if condition("Ready") != Some(("False", "RolledBack")) || condition("Stalled").map(|c| c.0) != Some("True") {
        return Err(Error::Failed(format!(
            "rolled back, but Ready is {:?} and Stalled {:?} (expected False/RolledBack and True)",
            condition("Ready"),
            condition("Stalled")
        )));
    }
    Ok(())
}

/// History records of `revision` with `result`.
pub fn records(status: &InferenceDeploymentStatus, revision: &str, result: RolloutResult) -> usize {
    status.history.iter().filter(|r| r.revision == revision && r.result == result).count()
}

/// How many times the operator recorded an Event with `reason` about `name`: repeats of one
/// Event are folded into its series, so the series count is what counts.
pub async fn count_events(client: &Client, namespace: &str, name: &str, reason: &str) -> Result<usize> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), namespace);
    let list = api.list(&ListParams::default()).await?;
    Ok(list
        .items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.series.as_ref().map_or(1, |s| s.count.max(1) as usize))
        .sum())
}

/// The control annotations (`infergate.dev/...`) present on the resource.
pub async fn control_annotations(client: &Client, namespace: &str, name: &str) -> Result<Vec<String>> {
    let resource = api(client, namespace).get(name).await?;
    Ok(resource
        .metadata
        .annotations
        .unwrap_or_default()
        .into_keys()
        .filter(|k| infergate_operator::rollout::CONTROL_ANNOTATIONS.contains(&k.as_str()))
        .collect())
}

/// Polls the resource for `period` after a control was applied; fails if the phase, the
/// active revision, the rollout step or the history length change, or a control annotation is
/// (back) on the resource: a control acts once, and its effect holds.
pub async fn expect_stable(
    client: &Client,
    namespace: &str,
    name: &str,
    period: Duration,
) -> Result<InferenceDeploymentStatus> {
    let first = status(client, namespace, name).await?;
    // The history is bounded, so its last record is compared as well as its length.
    let key = |s: &InferenceDeploymentStatus| {
        let last = s.history.last().map(|r| (r.revision.clone(), r.result, r.time.clone()));
        (s.phase, s.active_revision.clone(), s.rollout.as_ref().map(|r| r.step), s.history.len(), last)
    };
    let started = tokio::time::Instant::now();
    while started.elapsed() < period {
        let now = status(client, namespace, name).await?;
        if key(&now) != key(&first) {
            return Err(Error::Failed(format!(
                "not stable {:.0} s after the control: was {}, history {}; now {}, history {}",
                started.elapsed().as_secs_f64(),
                summary(Some(&first)),
                first.history.len(),
                summary(Some(&now)),
                now.history.len()
            )));
        }
        let left = control_annotations(client, namespace, name).await?;
        if !left.is_empty() {
            return Err(Error::Failed(format!("control annotations still on the resource: {left:?}")));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(first)
}

/// Watches the Service `service` until stopped and notes every moment it selects no ready,
/// non-terminating pod: what a flip of traffic must never do.
pub struct BackendWatch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl BackendWatch {
    pub fn start(client: &Client, namespace: &str, service: &str) -> BackendWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let (client, namespace, service, flag) =
            (client.clone(), namespace.to_string(), service.to_string(), stop.clone());
        let task = tokio::spawn(async move {
            let (mut polls, mut gaps) = (0, Vec::new());
            // Bounded: one poll every 200 ms for at most an hour.
            while !flag.load(Ordering::Relaxed) && polls < 18_000 {
                polls += 1;
                match ready_backends(&client, &namespace, &service).await {
                    Ok(b) if !b.is_empty() => {}
                    Ok(_) => gaps.push(format!("poll {polls}: no ready backend")),
                    Err(e) => gaps.push(format!("poll {polls}: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (polls, gaps)
        });
        BackendWatch { stop, task }
    }

    /// Fails when the Service had no ready backend at some poll.
    pub async fn finish(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let (polls, gaps) = self.task.await.unwrap_or_default();
        if !gaps.is_empty() {
            return Err(Error::Failed(format!(
                "the Service had no ready backend at {} of {polls} polls: {}",
                gaps.len(),
                gaps.into_iter().take(3).collect::<Vec<_>>().join(" | ")
            )));
        }
        Ok(())
    }
}
