//! The metrics contract: what the server exports and the operator's gate reads.
//!
//! Names follow vLLM's (`time_to_first_token_seconds`, `num_requests_waiting`, ...) under the
//! `infergate_` prefix. The server registers [`Series::short`] in a registry with that prefix;
//! readers (exposition parsing, PromQL, dashboards) use [`Series::full`].

/// The namespace every series is registered under.
pub const PREFIX: &str = "infergate";

/// One metric family: its name without and with the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Series {
    pub short: &'static str,
    pub full: &'static str,
}

macro_rules! series {
    ($($(#[$doc:meta])* $id:ident = $name:literal;)*) => {
        $($(#[$doc])* pub const $id: Series = Series { short: $name, full: concat!("infergate_", $name) };)*
        /// Every family the server exports, for tests that check the list against a scrape.
        pub const ALL: &[Series] = &[$($id),*];
    };
}

series! {
    /// Histogram: arrival until the first token leaves for the client.
    TIME_TO_FIRST_TOKEN = "time_to_first_token_seconds";
    /// Histogram: mean time per output token after the first, per request.
    TIME_PER_OUTPUT_TOKEN = "time_per_output_token_seconds";
    /// Histogram: gap between consecutive tokens.
    INTER_TOKEN_LATENCY = "inter_token_latency_seconds";
    /// Histogram: arrival to the last token.
    E2E_REQUEST_LATENCY = "e2e_request_latency_seconds";
    /// Histogram: arrival until the engine admits the request.
    REQUEST_QUEUE_TIME = "request_queue_time_seconds";
    /// Counter by [`STATUS_LABEL`]: finished requests.
    REQUESTS = "requests_total";
    /// Counter: prompt tokens processed.
    PROMPT_TOKENS = "prompt_tokens_total";
    /// Counter: tokens generated.
    GENERATION_TOKENS = "generation_tokens_total";
    /// Gauge: sequences in the running batch.
    REQUESTS_RUNNING = "num_requests_running";
    /// Gauge: requests waiting in the queue.
    REQUESTS_WAITING = "num_requests_waiting";
    /// Gauge: sequences in the last engine step.
    BATCH_SIZE = "batch_size";
    /// Counter by [`REASON_LABEL`]: requests that failed ([`FAILURE_REASONS`]).
    REQUEST_FAILURES = "request_failures_total";
    /// Counter: sequences preempted for KV cache blocks, to be recomputed later (vLLM's name).
    PREEMPTIONS = "num_preemptions_total";
    /// Gauge: used share of the KV cache blocks.
    KV_CACHE_USAGE = "kv_cache_usage_ratio";
    /// Gauge: KV cache blocks the memory budget allows.
    KV_CACHE_BLOCKS_TOTAL = "kv_cache_blocks_total";
    /// Gauge: KV cache blocks held by running sequences.
    KV_CACHE_BLOCKS_USED = "kv_cache_blocks_used";
    /// Gauge: seconds the model took to load.
    MODEL_LOAD_SECONDS = "model_load_seconds";
    /// Gauge: resident memory of the server process.
    RESIDENT_MEMORY = "resident_memory_bytes";
    /// Gauge: device memory in use (GPU servers only).
    GPU_MEMORY_USED = "gpu_memory_used_bytes";
    /// Gauge: device memory in all (GPU servers only).
    GPU_MEMORY_TOTAL = "gpu_memory_total_bytes";
}

/// The suffix of a histogram's bucket series.
pub const BUCKET_SUFFIX: &str = "_bucket";

/// Constant labels of every series: which model and which rollout revision served it.
pub const MODEL_LABEL: &str = "model";
pub const REVISION_LABEL: &str = "revision";
/// The HTTP status of [`REQUESTS`].
pub const STATUS_LABEL: &str = "status";
/// Why a request of [`REQUEST_FAILURES`] failed: one of [`FAILURE_REASONS`].
pub const REASON_LABEL: &str = "reason";
/// The reasons of [`REQUEST_FAILURES`]: past its deadline, the client went away, refused at
/// admission, the engine failed.
pub const FAILURE_REASONS: &[&str] = &[
    FailureReason::Timeout.as_str(),
    FailureReason::Cancelled.as_str(),
    FailureReason::Rejected.as_str(),
    FailureReason::EngineError.as_str(),
];

/// One value of [`REASON_LABEL`]: the server records through this, never a spelled string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// Past its deadline.
    Timeout,
    /// The client went away before the answer.
    Cancelled,
    /// Refused at admission (queue full, overloaded, draining, not ready).
    Rejected,
    /// The engine or the server failed.
    EngineError,
}

impl FailureReason {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureReason::Timeout => "timeout",
            FailureReason::Cancelled => "cancelled",
            FailureReason::Rejected => "rejected",
            FailureReason::EngineError => "engine_error",
        }
    }
}
/// Labels Prometheus' scrape config (the chart's PodMonitor) adds from the pod: the gate's
/// PromQL selects by them.
pub const NAMESPACE_LABEL: &str = "namespace";
pub const NAME_LABEL: &str = "name";

/// TTFT buckets: dense between 10 ms and 2.5 s so a P95 gate interpolates inside narrow buckets.
pub const TTFT_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7,
    0.8, 0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 5.0, 10.0, 20.0, 30.0,
];
/// Per-token latencies (TPOT, inter-token).
pub const TOKEN_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
    0.75, 1.0, 2.5,
];
/// Whole-request latency.
pub const E2E_BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0];
/// Time in the queue.
pub const QUEUE_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// What a finished request's HTTP status means to the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Success,
    /// A failed request.
    Error,
    /// The client went away: the server did nothing wrong and the request did not complete.
    Ignored,
}

/// The status the server records when the client disconnected before the end (nginx's 499).
pub const CLIENT_GONE_STATUS: &str = "499";

/// The PromQL regex of the statuses [`classify_status`] calls errors: 5xx and 429.
pub const ERROR_STATUS_REGEX: &str = "5..|429";

/// Which statuses count as errors, for the direct source and (through [`ERROR_STATUS_REGEX`])
/// for Prometheus alike.
pub fn classify_status(status: &str) -> StatusClass {
    match status {
        // Our own probe cancelling at the window's end included.
        CLIENT_GONE_STATUS => StatusClass::Ignored,
        // 429 means the queue was full. For a user that is a failed request, and a revision that
        // sheds load where the old one did not is worse, so the gate counts it as an error.
        "429" => StatusClass::Error,
        s if s.len() == 3 && s.starts_with('5') => StatusClass::Error,
        _ => StatusClass::Success,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `status` matches the fully anchored PromQL regex `regex`, for the two shapes
    /// it uses: alternatives of digits and `.`.
    fn promql_matches(regex: &str, status: &str) -> bool {
        regex
            .split('|')
            .any(|alt| alt.len() == status.len() && alt.chars().zip(status.chars()).all(|(r, s)| r == '.' || r == s))
    }

    #[test]
    fn the_promql_regex_and_the_classification_agree_on_every_status() {
        for code in 100..600 {
            let status = code.to_string();
            let is_error = classify_status(&status) == StatusClass::Error;
            assert_eq!(promql_matches(ERROR_STATUS_REGEX, &status), is_error, "{status}");
        }
        assert_eq!(classify_status(CLIENT_GONE_STATUS), StatusClass::Ignored);
        assert_eq!(classify_status("200"), StatusClass::Success);
        assert_eq!(classify_status("400"), StatusClass::Success);
    }

    #[test]
    fn names_are_prefixed_and_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for s in ALL {
            assert_eq!(s.full, format!("{PREFIX}_{}", s.short));
            assert!(seen.insert(s.short), "{} twice", s.short);
        }
    }

    #[test]
    fn buckets_increase() {
        for buckets in [TTFT_BUCKETS, TOKEN_BUCKETS, E2E_BUCKETS, QUEUE_BUCKETS] {
            assert!(buckets.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
