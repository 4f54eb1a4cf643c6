//! The HTTP side: one streamed request measured into a [`RequestRecord`], and the closed and
//! open load loops.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use infergate_protocol::client;
use infergate_protocol::openai::request::{CompletionBody, StreamOptions};
use infergate_protocol::sse::{SseItem, StreamEnd};
use tokio::time::Instant;

use crate::report::RequestRecord;

/// Where and how requests are sent.
#[derive(Clone)]
pub struct Target {
    pub client: reqwest::Client,
    pub endpoint: String,
    pub max_tokens: usize,
    pub model: Option<String>,
    pub timeout: Duration,
    pub deadline: Instant,
}

/// Error of requests cut off (or never sent) at the run deadline.
pub const CANCELLED: &str = "cancelled: max duration reached";

impl Target {
    /// The body of a request: greedy, exactly `max_tokens` tokens, usage in the last chunk.
    pub fn body(&self, prompt: &str) -> CompletionBody {
        let max_tokens = u32::try_from(self.max_tokens).unwrap_or(u32::MAX);
        let mut body = CompletionBody::streamed_fixed_length(prompt, max_tokens, self.model.as_deref());
        body.common.temperature = Some(0.0);
        body.common.stream_options = Some(StreamOptions { include_usage: true });
        body
    }

    /// Sends one request and measures it; never panics, errors are recorded.
    pub async fn run(&self, prompt: &str) -> RequestRecord {
        let start = Instant::now();
        let mut rec = RequestRecord::default();
        if start >= self.deadline {
            rec.error = Some(CANCELLED.into());
            return rec;
        }
        let by_timeout = start + self.timeout;
        let limit = by_timeout.min(self.deadline);
        let outcome = tokio::time::timeout_at(limit, self.drive(prompt, start, &mut rec)).await;
        rec.latency = start.elapsed().as_secs_f64();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => rec.error = Some(e),
            Err(_) if limit < by_timeout => rec.error = Some(CANCELLED.into()),
            Err(_) => rec.error = Some(format!("timeout after {:.0} s", self.timeout.as_secs_f64())),
        }
        rec
    }

    async fn drive(&self, prompt: &str, start: Instant, rec: &mut RequestRecord) -> Result<(), String> {
        let state = client::stream(&self.client, &self.endpoint, &self.body(prompt), |event| {
            if matches!(&event.item, SseItem::Chunk { text, .. } if !text.is_empty()) {
                let now = start.elapsed().as_secs_f64();
                match rec.last_token {
                    None => rec.ttft = Some(now),
                    Some(last) => rec.itl.push(now - last),
                }
                rec.last_token = Some(now);
            }
        })
        .await
        .map_err(|failure| failure.to_string())?;
        rec.text_chunks = state.text_chunks as u64;
        rec.usage_completion_tokens = state.completion_tokens;
        rec.usage_prompt_tokens = state.prompt_tokens;
        match (state.end(), &state.broken) {
            (StreamEnd::Done, _) => Ok(()),
            (StreamEnd::Error(e), _) => Err(format!("SSE error: {e}")),
            (StreamEnd::Cut, Some(broken)) => Err(format!("transport: {broken}")),
            (StreamEnd::Cut, None) => Err("stream ended without [DONE]".into()),
        }
    }
}

/// Closed loop: `concurrency` workers send the prompts one after another.
pub async fn closed_loop(target: &Target, prompts: Arc<Vec<String>>, concurrency: usize) -> Vec<RequestRecord> {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (target, prompts, next) = (target.clone(), prompts.clone(), next.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= prompts.len() {
                        return out;
                    }
                    out.push(target.run(&prompts[i]).await);
                }
            })
        })
        .collect();
    let mut records = Vec::with_capacity(prompts.len());
    for w in workers {
        records.extend(w.await.expect("worker panicked"));
    }
    records
}

/// Open loop: request `i` is sent at `start + offsets[i]` seconds, each in its own task.
pub async fn open_loop(
    target: &Target,
    prompts: Arc<Vec<String>>,
    offsets: Vec<f64>,
    start: Instant,
) -> Vec<RequestRecord> {
    let tasks: Vec<_> = offsets
        .into_iter()
        .enumerate()
        .map(|(i, at)| {
            let (target, prompts) = (target.clone(), prompts.clone());
            let when = start + Duration::from_secs_f64(at);
            tokio::spawn(async move {
                if when >= target.deadline {
                    return RequestRecord { error: Some(CANCELLED.into()), ..Default::default() };
                }
                tokio::time::sleep_until(when).await;
                target.run(&prompts[i]).await
            })
        })
        .collect();
    let mut records = Vec::with_capacity(tasks.len());
    for t in tasks {
        records.push(t.await.expect("request task panicked"));
    }
    records
}
