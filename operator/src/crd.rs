//! The `InferenceDeployment` custom resource (`infergate.dev/v1alpha1`).
//!
//! Field names and status phases are the contract in DESIGN.md. Defaults and validation live in
//! the schema (the apiserver applies them), so the reconciler sees complete, checked specs; the
//! rules that CEL cannot express (the model source grammar) are checked again in
//! `model_source` and reported as a condition.
//!
//! The rollout, analysis, probe, slo and metrics fields are read by the rollout state machine and
//! the gate; this layer only declares them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of an LLM serving deployment with gated blue-green rollouts.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "infergate.dev",
    version = "v1alpha1",
    kind = "InferenceDeployment",
    namespaced,
    shortname = "infd",
    status = "InferenceDeploymentStatus",
    doc = "An LLM served by infergate-server, rolled out blue-green and gated on P95 TTFT",
    // `<name>-preview` and the revision suffix must still fit a 63-character DNS label.
    validation = kube::core::Rule::new("size(self.metadata.name) <= 52")
        .message("metadata.name must be at most 52 characters"),
    // The name becomes Service and Deployment names, so it must be a DNS-1035 label; without
    // this rule `llama.v3` is admitted and then every reconcile fails creating the Service.
    validation = kube::core::Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS-1035 label: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit"),
    // `kubectl scale`, an HPA or KEDA drive `.spec.replicas`; the selector picks the active
    // revision's pods, the ones an HPA averages its metrics over.
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "ACTIVE",
        type_ = "string",
        json_path = ".status.activeRevision"
    ),
    printcolumn(
        name = "PREVIEW",
        type_ = "string",
        json_path = ".status.previewRevision"
    ),
    printcolumn(name = "PHASE", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "STEP",
        type_ = "string",
        description = "Step of the rollout in progress",
        json_path = ".status.rollout.step"
    ),
    printcolumn(
        name = "READY",
        type_ = "string",
        description = "Status of the Ready condition",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "P95-TTFT",
        type_ = "number",
        description = "P95 time to first token of the last measurement, in milliseconds",
        json_path = ".status.lastMeasurement.ttftP95Ms"
    ),
    printcolumn(
        name = "ERRORS",
        type_ = "number",
        description = "Error rate of the last measurement",
        json_path = ".status.lastMeasurement.errorRate"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct InferenceDeploymentSpec {
    /// The model every serving pod loads.
    pub model: ModelSpec,
    /// Container image running infergate-server.
    #[x_kube(validation = kube::core::Rule::new("self != ''").message("image must not be empty"))]
    pub image: String,
    /// Serving replicas of the active revision. The `/scale` subresource writes it (`kubectl
    /// scale`, an HPA, KEDA, or the operator itself under `autoscaling`); the child Deployments
    /// always follow it.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1))]
    pub replicas: i32,
    #[serde(default)]
    pub resources: ResourcesSpec,
    #[serde(default)]
    pub scheduling: SchedulingSpec,
    #[serde(default)]
    pub server: ServerSpec,
    #[serde(default)]
    pub slo: SloSpec,
    #[serde(default)]
    pub rollout: RolloutSpec,
    #[serde(default)]
    pub metrics: MetricsSpec,
    /// Built-in autoscaling of `replicas` on the servers' load; absent keeps `replicas` as set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
}

/// Built-in autoscaling: the operator computes the replicas the HPA would (same formula, same
/// tolerance, same stabilization) from the servers' own load and writes them through `/scale`.
/// Scale to zero needs an activator in front of the Service, so `minReplicas` is at least 1.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.maxReplicas >= self.minReplicas")
    .message("autoscaling.maxReplicas must be at least minReplicas"))]
pub struct AutoscalingSpec {
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    pub target: AutoscalingTarget,
    /// Scale-up follows the lowest recommendation of this window (HPA default: 0).
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_up_stabilization_seconds: u32,
    /// Scale-down follows the highest recommendation of this window (HPA default: 300).
    #[serde(default = "default_scale_down_stabilization_seconds")]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_down_stabilization_seconds: u32,
}

fn default_min_replicas() -> i32 {
    1
}

fn default_scale_down_stabilization_seconds() -> u32 {
    300
}

/// The per-replica value the autoscaler keeps the active revision at; exactly one is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "(has(self.queueDepthPerReplica) ? 1 : 0) + (has(self.inFlightPerReplica) ? 1 : 0) + (has(self.ttftP95Ms) ? 1 : 0) == 1"
).message("autoscaling.target sets exactly one of queueDepthPerReplica, inFlightPerReplica, ttftP95Ms"))]
pub struct AutoscalingTarget {
    /// Requests waiting in the server's queue, averaged over the ready pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01))]
    pub queue_depth_per_replica: Option<f64>,
    /// Requests running or waiting, averaged over the ready pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01))]
    pub in_flight_per_replica: Option<f64>,
    /// P95 time to first token of the active revision since the previous reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub ttft_p95_ms: Option<u32>,
}

fn default_replicas() -> i32 {
    1
}

/// Where the weights come from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.quantization) || !self.source.endsWith('.gguf')"
).message("quantization applies to safetensors models; a GGUF file is already quantized"))]
pub struct ModelSpec {
    /// `hf://org/repo[@revision]/file.gguf`, `file:///path`, an absolute path in the image, or
    /// `pvc://claim/path/in/claim` (the claim is mounted read-only).
    #[x_kube(validation = kube::core::Rule::new(
        format!("self.matches('{}')", infergate_protocol::model_source::CEL_PATTERN)
    ).message(infergate_protocol::model_source::CEL_MESSAGE))]
    // Bounded so the apiserver's CEL cost estimate for the regex above stays within budget.
    #[schemars(length(min = 1, max = 1024))]
    pub source: String,
    /// Quantize a safetensors model at load time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<Quantization>,
    /// Model name the OpenAI API serves (defaults to the server's choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_name: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantization {
    #[serde(rename = "q8_0")]
    Q8_0,
}

impl Quantization {
    pub fn as_arg(self) -> &'static str {
        match self {
            Quantization::Q8_0 => "q8_0",
        }
    }
}

/// Per-pod resources. cpu and memory become requests, memory also the limit.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesSpec {
    /// `nvidia.com/gpu` per pod; 0 runs on CPU.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub gpu: u32,
    /// CPU request per pod (a Kubernetes quantity, e.g. `2` or `500m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory request and limit per pod (a Kubernetes quantity, e.g. `16Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

/// infergate-server knobs; unset ones keep the server's own defaults.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_batching: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_batch_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_queue_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub request_timeout_seconds: Option<u32>,
    /// How long a terminating pod lets in-flight requests finish; sizes the grace period.
    #[serde(default = "default_drain_timeout_seconds")]
    #[schemars(range(min = 0, max = 3600))]
    pub drain_timeout_seconds: u32,
    /// Upper bound on model download + load + warm-up; sizes the startup probe.
    #[serde(default = "default_startup_timeout_seconds")]
    #[schemars(range(min = 10, max = 86400))]
    pub startup_timeout_seconds: u32,
    /// Appended to the server's command line (e.g. fault injection flags).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_env: Vec<EnvVar>,
}

fn default_drain_timeout_seconds() -> u32 {
    30
}

fn default_startup_timeout_seconds() -> u32 {
    600
}

impl Default for ServerSpec {
    fn default() -> Self {
        Self {
            enable_batching: None,
            max_batch_size: None,
            max_wait_ms: None,
            max_queue_size: None,
            request_timeout_seconds: None,
            drain_timeout_seconds: default_drain_timeout_seconds(),
            startup_timeout_seconds: default_startup_timeout_seconds(),
            extra_args: Vec::new(),
            extra_env: Vec::new(),
        }
    }
}

/// The service level a new revision must meet before it takes traffic.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SloSpec {
    #[serde(default = "default_ttft_p95_ms")]
    #[schemars(range(min = 1))]
    pub ttft_p95_ms: u32,
    /// Fraction of failed requests tolerated, in [0, 1].
    #[serde(default = "default_max_error_rate")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tpot_p95_ms: Option<u32>,
}

fn default_ttft_p95_ms() -> u32 {
    1000
}

fn default_max_error_rate() -> f64 {
    0.01
}

impl Default for SloSpec {
    fn default() -> Self {
        Self { ttft_p95_ms: default_ttft_p95_ms(), max_error_rate: default_max_error_rate(), tpot_p95_ms: None }
    }
}

/// How a new revision is brought up, measured and promoted.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "self.progressDeadlineSeconds > self.warmupSeconds"
).message("progressDeadlineSeconds must exceed warmupSeconds"))]
// A hung request must time out inside the window that sent it, or it is never counted.
#[x_kube(validation = kube::core::Rule::new(
    "self.probe.requestTimeoutSeconds < self.analysis.intervalSeconds"
).message("probe.requestTimeoutSeconds must be less than analysis.intervalSeconds, so that a hung request times out inside its analysis window and counts as failed"))]
pub struct RolloutSpec {
    /// Promote on passing analysis; when false the rollout pauses for a manual promote.
    #[serde(default = "default_true")]
    pub auto_promote: bool,
    #[serde(default = "default_preview_replicas")]
    #[schemars(range(min = 1))]
    pub preview_replicas: i32,
    /// Time the preview revision must become Available before the rollout fails.
    #[serde(default = "default_progress_deadline_seconds")]
    #[schemars(range(min = 30))]
    pub progress_deadline_seconds: u32,
    /// Probe load before the first analysis window counts.
    #[serde(default = "default_warmup_seconds")]
    pub warmup_seconds: u32,
    #[serde(default)]
    pub analysis: AnalysisSpec,
    #[serde(default)]
    pub probe: ProbeSpec,
    /// After promotion the previous revision stays warm this long; a regression flips back.
    #[serde(default = "default_post_promotion_watch_seconds")]
    pub post_promotion_watch_seconds: u32,
    /// After the watch, the previous revision is scaled to zero after this delay.
    #[serde(default = "default_scale_down_delay_seconds")]
    pub scale_down_delay_seconds: u32,
}

fn default_true() -> bool {
    true
}
fn default_preview_replicas() -> i32 {
    1
}
fn default_progress_deadline_seconds() -> u32 {
    900
}
fn default_warmup_seconds() -> u32 {
    30
}
fn default_post_promotion_watch_seconds() -> u32 {
    120
}
fn default_scale_down_delay_seconds() -> u32 {
    30
}

impl Default for RolloutSpec {
    fn default() -> Self {
        Self {
            auto_promote: true,
            preview_replicas: default_preview_replicas(),
            progress_deadline_seconds: default_progress_deadline_seconds(),
            warmup_seconds: default_warmup_seconds(),
            analysis: AnalysisSpec::default(),
            probe: ProbeSpec::default(),
            post_promotion_watch_seconds: default_post_promotion_watch_seconds(),
            scale_down_delay_seconds: default_scale_down_delay_seconds(),
        }
    }
}

/// The measurement loop on the preview revision.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisSpec {
    #[serde(default = "default_interval_seconds")]
    #[schemars(range(min = 5))]
    pub interval_seconds: u32,
    /// Passing windows needed to promote.
    #[serde(default = "default_successful_checks")]
    #[schemars(range(min = 1))]
    pub successful_checks: u32,
    /// Failed windows tolerated; one more rolls back.
    #[serde(default = "default_failure_limit")]
    pub failure_limit: u32,
    /// A window with fewer requests is "no data" and handled by `onNoData`, unless its failures
    /// alone already exceed `slo.maxErrorRate` x `minRequests`: then it fails, because the error
    /// rate would be over the SLO even if every missing request had succeeded (a revision that
    /// hangs gives a few timed-out probe requests per window, and is failed, not waited for).
    /// TTFT is judged only on windows with enough requests.
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    #[serde(default)]
    pub on_no_data: NoDataPolicy,
    /// Largest allowed P95 TTFT increase of the preview over the active revision under the same
    /// probe load, in percent; unset disables the relative check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_regression_percent: Option<f64>,
    /// Confidence of the one-sided Mann-Whitney U test that the preview's probe TTFTs are
    /// greater than the active revision's; a regression needs both this and the P95 ratio.
    #[serde(default = "default_regression_confidence")]
    #[schemars(range(min = 0.5, max = 0.999))]
    pub regression_confidence: f64,
    /// Inconclusive windows tolerated in one analysis, in total (as Argo Rollouts counts them:
    /// not only in a row); one more ends the analysis (`onLimitExceeded`). Windows that could not
    /// be measured are not inconclusive results; `consecutiveErrorLimit` bounds those. Argo's
    /// default is 0 (any inconclusive measurement pauses); ours tolerates 3, since a window
    /// with too few requests (a slow start, a short window) is common and says nothing bad.
    #[serde(default = "default_inconclusive_limit")]
    pub inconclusive_limit: u32,
    /// Windows in a row that could not be measured (a scrape or query failed) tolerated; one more
    /// ends the analysis. Any measured window resets the run. Argo Rollouts' default, 4.
    #[serde(default = "default_consecutive_error_limit")]
    pub consecutive_error_limit: u32,
    /// Overall bound on the Analyzing step, counted from its start; past it the analysis ends.
    #[serde(default = "default_analysis_deadline_seconds")]
    #[schemars(range(min = 10))]
    pub deadline_seconds: u32,
    /// What happens past `inconclusiveLimit`, `consecutiveErrorLimit` or `deadlineSeconds`.
    #[serde(default)]
    pub on_limit_exceeded: LimitPolicy,
}

fn default_interval_seconds() -> u32 {
    30
}
fn default_successful_checks() -> u32 {
    3
}
fn default_failure_limit() -> u32 {
    1
}
fn default_min_requests() -> u32 {
    20
}
fn default_regression_confidence() -> f64 {
    0.95
}
fn default_inconclusive_limit() -> u32 {
    3
}
/// Argo Rollouts' default.
fn default_consecutive_error_limit() -> u32 {
    4
}
fn default_analysis_deadline_seconds() -> u32 {
    600
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        Self {
            interval_seconds: default_interval_seconds(),
            successful_checks: default_successful_checks(),
            failure_limit: default_failure_limit(),
            min_requests: default_min_requests(),
            on_no_data: NoDataPolicy::default(),
            max_regression_percent: None,
            regression_confidence: default_regression_confidence(),
            inconclusive_limit: default_inconclusive_limit(),
            consecutive_error_limit: default_consecutive_error_limit(),
            deadline_seconds: default_analysis_deadline_seconds(),
            on_limit_exceeded: LimitPolicy::default(),
        }
    }
}

/// What an analysis that ran out of its limits leads to.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LimitPolicy {
    /// The candidate is scaled to zero and not retried until the spec changes (or a retry).
    #[default]
    Rollback,
    /// The rollout waits in the `Paused` step for a promote, abort or retry annotation.
    Pause,
}

/// What a window without enough requests (and without failures that decide it anyway, see
/// `minRequests`) counts as.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NoDataPolicy {
    /// Neither a pass nor a failure; the window is measured again.
    #[default]
    Inconclusive,
    Fail,
    Pass,
}

/// The synthetic load sent to the preview (and, as the baseline, to the active revision).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    /// Concurrent probe requests.
    #[serde(default = "default_probe_concurrency")]
    #[schemars(range(min = 1, max = 256))]
    pub concurrency: u32,
    #[serde(default = "default_probe_max_tokens")]
    #[schemars(range(min = 1))]
    pub max_tokens: u32,
    /// Prompts sent round-robin; empty uses the operator's built-in set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<String>,
    #[serde(default = "default_probe_duration_seconds")]
    #[schemars(range(min = 1))]
    pub duration_seconds: u32,
    /// A probe request still open this long after it was sent counts as failed (a hang). Must
    /// be less than `analysis.intervalSeconds`.
    #[serde(default = "default_probe_request_timeout_seconds")]
    #[schemars(range(min = 1))]
    pub request_timeout_seconds: u32,
}

fn default_probe_concurrency() -> u32 {
    4
}
fn default_probe_max_tokens() -> u32 {
    16
}
fn default_probe_duration_seconds() -> u32 {
    30
}
fn default_probe_request_timeout_seconds() -> u32 {
    10
}

impl Default for ProbeSpec {
    fn default() -> Self {
        Self {
            concurrency: default_probe_concurrency(),
            max_tokens: default_probe_max_tokens(),
            prompts: Vec::new(),
            duration_seconds: default_probe_duration_seconds(),
            request_timeout_seconds: default_probe_request_timeout_seconds(),
        }
    }
}

/// Where the gate reads the servers' histograms.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "self.source != 'Prometheus' || (has(self.prometheusUrl) && self.prometheusUrl != '')"
).message("metrics.prometheusUrl is required when metrics.source is Prometheus"))]
pub struct MetricsSpec {
    #[serde(default)]
    pub source: MetricsSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_url: Option<String>,
    /// How often Prometheus scrapes the pods. The Prometheus source's window is at least four
    /// scrape intervals, so that `rate` always has samples to work with.
    #[serde(default = "default_scrape_interval_seconds")]
    #[schemars(range(min = 1))]
    pub scrape_interval_seconds: u32,
}

fn default_scrape_interval_seconds() -> u32 {
    15
}

impl Default for MetricsSpec {
    fn default() -> Self {
        Self {
            source: MetricsSource::default(),
            prometheus_url: None,
            scrape_interval_seconds: default_scrape_interval_seconds(),
        }
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MetricsSource {
    /// Scrape the preview pods' /metrics directly.
    #[default]
    Direct,
    Prometheus,
}

/// Observed state; everything a restarted operator needs to continue a rollout.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct InferenceDeploymentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Revision the `<name>` Service selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_revision: Option<String>,
    /// Revision under evaluation, selected by `<name>-preview`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_revision: Option<String>,
    /// Revision of the current pod template (the one the spec asks for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_revision: Option<String>,
    /// A revision that failed its rollout; not retried until the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_revision: Option<String>,
    /// The revision that served before the last promotion; its Deployment is kept at zero
    /// replicas so the `infergate.dev/rollback` annotation can bring it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_revision: Option<String>,
    /// The rollout in progress: its step and the clocks of that step. Absent between rollouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Desired replicas of the active revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Ready pods of the active revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Label selector (string form) of the active revision's pods, for the `/scale` subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The built-in autoscaler's last decision; absent without `spec.autoscaling`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingStatus>,
    /// kstatus-compatible: a map keyed by type, so each condition type appears once and
    /// server-side apply merges them by type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The last control annotation acted on, kept while the annotation is still on the object:
    /// a control whose removal failed is then cleared again, never acted on twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_control: Option<ControlRecord>,
    /// Progress of the analysis of the preview revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_measurement: Option<Measurement>,
    /// The last few analysis windows, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<Measurement>,
    /// The last few rollouts, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RolloutRecord>,
}

/// The built-in autoscaler's last reading and decision.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingStatus {
    /// Ready pods of the active revision the signal was read from.
    pub current_replicas: i32,
    /// Replicas after the formula, the stabilization windows and the bounds.
    pub desired_replicas: i32,
    /// When the autoscaler last changed `spec.replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// The per-replica signal of the last reading (same unit as the target); absent without data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_value: Option<f64>,
}

/// A control annotation the operator handled.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ControlRecord {
    /// The annotation key, e.g. `infergate.dev/promote`.
    pub annotation: String,
    pub handled_at: Time,
}

/// Lifecycle phase shown in `kubectl get infd`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No revision is serving yet.
    Pending,
    /// A new revision is being brought up.
    Progressing,
    /// The preview revision is being measured.
    Analyzing,
    /// Traffic is moving to the preview revision (post-promotion watch included).
    Promoting,
    /// The active revision serves all its replicas; nothing is rolling out.
    Healthy,
    /// The last rollout failed; the previous revision keeps serving.
    RolledBack,
    /// The active revision lacks ready replicas, or the spec cannot be served.
    Degraded,
    /// Waiting for a manual decision.
    Paused,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::Pending,
        Phase::Progressing,
        Phase::Analyzing,
        Phase::Promoting,
        Phase::Healthy,
        Phase::RolledBack,
        Phase::Degraded,
        Phase::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Progressing => "Progressing",
            Phase::Analyzing => "Analyzing",
            Phase::Promoting => "Promoting",
            Phase::Healthy => "Healthy",
            Phase::RolledBack => "RolledBack",
            Phase::Degraded => "Degraded",
            Phase::Paused => "Paused",
        }
    }
}

/// Where a rollout stands. Every deadline is computed from the times here, so a restarted
/// operator continues the rollout where the previous one left it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutState {
    /// The revision being rolled out (the preview until promotion, then the active one).
    pub revision: String,
    /// The revision that served when the rollout started; kept warm until the scale-down.
    pub baseline: String,
    pub step: RolloutStep,
    pub started_at: Time,
    /// When the current step began; its deadline counts from here.
    pub step_started_at: Time,
    /// Start of the analysis window being measured, if one is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_started_at: Option<Time>,
    /// Why the rollout is in this step when that is not obvious (a pause past an analysis limit,
    /// a roll back waiting for the previous revision's pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `Restoring` only, when the operator flips back from a revision that failed or was
    /// aborted during the watch: the result recorded once the previous revision serves
    /// (`RolledBack` or `Aborted`). Such a restore cannot be cancelled by another abort or
    /// rollback. Absent for a roll back to `previousRevision` by annotation, which an abort or
    /// rollback cancels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<RolloutResult>,
}

/// The steps of a rollout, in order.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutStep {
    /// The preview Deployment is starting; `progressDeadlineSeconds` bounds the wait.
    WaitingForPreview,
    /// Probe load runs for `warmupSeconds`; nothing is measured.
    WarmingUp,
    /// Analysis windows run every `intervalSeconds`.
    Analyzing,
    /// Analysis passed but `autoPromote` is false: waiting for the promote annotation.
    AwaitingPromotion,
    /// The new revision is scaled to the serving replicas before it takes traffic.
    ScalingUp,
    /// The new revision serves; the old one stays warm and a failed window flips back.
    Watching,
    /// The watch passed; the old revision is scaled down after `scaleDownDelaySeconds`.
    ScalingDown,
    /// Roll back to the previous revision (by annotation, or after a failure or an abort in the
    /// watch while it had no ready pods): it is scaled up before it takes traffic.
    Restoring,
    /// The analysis ran past a limit under `onLimitExceeded: Pause`: waiting for a promote,
    /// abort or retry annotation. The preview keeps its pods; no probe load runs.
    Paused,
}

impl RolloutStep {
    /// The phase `kubectl get infd` shows during this step.
    pub fn phase(self) -> Phase {
        match self {
            RolloutStep::WaitingForPreview | RolloutStep::WarmingUp | RolloutStep::Restoring => Phase::Progressing,
            RolloutStep::Analyzing => Phase::Analyzing,
            RolloutStep::AwaitingPromotion | RolloutStep::Paused => Phase::Paused,
            RolloutStep::ScalingUp | RolloutStep::Watching | RolloutStep::ScalingDown => Phase::Promoting,
        }
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisStatus {
    pub revision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default)]
    pub successful_checks: u32,
    #[serde(default)]
    pub failed_checks: u32,
    /// Inconclusive windows of this analysis in total; bounded by `inconclusiveLimit`.
    #[serde(default)]
    pub inconclusive_checks: u32,
    /// Windows in a row that could not be measured (any measured window resets it); bounded by
    /// `consecutiveErrorLimit`.
    #[serde(default)]
    pub consecutive_errors: u32,
}

/// One analysis window of one revision.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    pub revision: String,
    pub time: Time,
    /// P95 time to first token in milliseconds; absent without data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_p95_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpot_p95_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    pub requests: u64,
    /// P95 TTFT of the active revision under the same probe load, when measured as baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_ttft_p95_ms: Option<f64>,
    pub verdict: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

/// The outcome of one rollout.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRecord {
    pub revision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_revision: Option<String>,
    pub result: RolloutResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub time: Time,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutResult {
    Promoted,
    RolledBack,
    Aborted,
}

impl RolloutResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutResult::Promoted => "Promoted",
            RolloutResult::RolledBack => "RolledBack",
            RolloutResult::Aborted => "Aborted",
        }
    }
}
