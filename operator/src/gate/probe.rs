//! Bounded synthetic load: streaming completions sent to a revision's pods.
//!
//! Before cutover the preview gets no user traffic, so without this the gate would have nothing
//! to measure. The load is bounded three ways: at most `concurrency` requests in flight, nothing
//! is sent after the deadline (in-flight requests are dropped there), and at most
//! [`MAX_REQUESTS`] requests per run. Dropping the future (the runner aborts the task when the
//! rollout ends) closes every connection, so a cancelled probe costs the server nothing more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tokio::time::Instant;

use super::pods::Target;
use crate::crd::ProbeSpec;

/// Hard cap on requests of one probe run, whatever the spec says.
pub const MAX_REQUESTS: u64 = 20_000;
/// Hard cap on concurrency (the schema allows up to 256; a probe must not be a load test).
pub const MAX_CONCURRENCY: u32 = 64;

/// Used when `probe.prompts` is empty.
const BUILTIN_PROMPTS: [&str; 4] = [
    "Explain in one paragraph why the sky is blue.",
    "Write a short haiku about autumn rain.",
    "List three uses of a binary search tree.",
    "Summarize the plot of a detective story in two sentences.",
];

/// What one probe run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProbeStats {
    pub sent: u64,
    pub completed: u64,
    pub failed: u64,
}

/// Sends streaming completions to `targets` round-robin until `duration` passed or the request
/// cap is reached.
pub async fn run(
    http: &reqwest::Client,
    targets: &[Target],
    probe: &ProbeSpec,
    model: Option<&str>,
    duration: Duration,
) -> ProbeStats {
    if targets.is_empty() {
        return ProbeStats::default();
    }
    let deadline = Instant::now() + duration;
    let next = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let prompts: Vec<String> = if probe.prompts.is_empty() {
        BUILTIN_PROMPTS.iter().map(|p| p.to_string()).collect()
    } else {
        probe.prompts.clone()
    };
    let workers = probe.concurrency.clamp(1, MAX_CONCURRENCY);
    let tasks = (0..workers).map(|_| {
        let (next, completed, failed) = (next.clone(), completed.clone(), failed.clone());
        let prompts = &prompts;
        async move {
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= MAX_REQUESTS {
                    break;
                }
                let target = &targets[(n % targets.len() as u64) as usize];
                let prompt = &prompts[(n % prompts.len() as u64) as usize];
                let mut body = json!({
                    "prompt": prompt,
                    "max_tokens": probe.max_tokens,
                    "stream": true,
                    "ignore_eos": true,
                });
                if let Some(model) = model {
                    body["model"] = json!(model);
                }
                match tokio::time::timeout_at(deadline, stream_one(http, target, &body)).await {
                    Ok(true) => completed.fetch_add(1, Ordering::Relaxed),
                    Ok(false) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        // A failing server answers at once; do not spin on it.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        0
                    }
                    // The deadline cut the request: the server records a client disconnect.
                    Err(_) => break,
                };
            }
        }
    });
    futures::future::join_all(tasks).await;
    let sent = next.load(Ordering::Relaxed).min(MAX_REQUESTS);
    ProbeStats { sent, completed: completed.load(Ordering::Relaxed), failed: failed.load(Ordering::Relaxed) }
}

/// One streaming completion read to its end; true when it ended with `data: [DONE]` and no error
/// event. The server's own metrics are what the gate judges; this only keeps the load honest.
async fn stream_one(http: &reqwest::Client, target: &Target, body: &serde_json::Value) -> bool {
    let url = format!("{}/v1/completions", target.base_url);
    let Ok(response) = http.post(&url).json(body).send().await else {
        return false;
    };
    if !response.status().is_success() {
        return false;
    }
    let mut stream = response.bytes_stream();
    let mut tail = Vec::new();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return false;
        };
        tail.extend_from_slice(&chunk);
        // Only the last event matters; keep a bounded tail.
        if tail.len() > 4096 {
            tail.drain(..tail.len() - 4096);
        }
    }
    let text = String::from_utf8_lossy(&tail);
    let events: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim).collect();
    match events.as_slice() {
        [.., last_payload, "[DONE]"] => !is_error_event(last_payload),
        [.., "[DONE]"] => true,
        _ => false,
    }
}

fn is_error_event(payload: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(payload).is_ok_and(|v| v.get("error").is_some())
}
