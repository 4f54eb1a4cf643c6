//! Bounded synthetic load: streaming completions sent to a revision's pods, each request's
//! outcome and client-side TTFT recorded.
//!
//! Before cutover the preview gets no user traffic, so without this the gate would have nothing
//! to measure. The load is bounded: at most `concurrency` requests in flight, nothing is sent
//! after `stop_sending`, every request is given up `probe.requestTimeoutSeconds` after it was
//! sent (counted as timed out: a hang is a failure), requests still open at `cut_off` are
//! dropped, and at most [`MAX_REQUESTS`] requests per run. Dropping the future (the runner
//! aborts the task when the rollout ends) closes every connection, so a cancelled probe costs
//! the server nothing more.

use std::time::Duration;

use infergate_protocol::client::{self, RequestFailure};
use infergate_protocol::openai::request::CompletionBody;
use infergate_protocol::sse::{SseItem, StreamEnd};
use tokio::time::Instant;

use super::pods::Target;
use crate::analysis::{ProbeOutcome, ProbeWindow};
use crate::crd::ProbeSpec;

/// Hard cap on requests of one probe run, whatever the spec says.
pub const MAX_REQUESTS: u64 = 20_000;
/// Hard cap on concurrency (the schema allows up to 256; a probe must not be a load test).
pub const MAX_CONCURRENCY: u32 = 64;
/// Pause of a worker after a failed request: a failing server answers at once, do not spin.
const BACKOFF: Duration = Duration::from_millis(50);

/// Used when `probe.prompts` is empty.
const BUILTIN_PROMPTS: [&str; 4] = [
    "Explain in one paragraph why the sky is blue.",
    "Write a short haiku about autumn rain.",
    "List three uses of a binary search tree.",
    "Summarize the plot of a detective story in two sentences.",
];

/// One probe run.
#[derive(Clone, Copy, Debug)]
pub struct ProbeRun<'a> {
    /// Round-robin over these.
    pub targets: &'a [Target],
    pub probe: &'a ProbeSpec,
    /// `model` of the requests; the server's default when unset.
    pub model: Option<&'a str>,
    /// No request is sent after this.
    pub stop_sending: Instant,
    /// Requests still open here are dropped: timed out when they were open longer than the
    /// request timeout, unfinished otherwise. At or after `stop_sending`.
    pub cut_off: Instant,
}

impl<'a> ProbeRun<'a> {
    /// Load for `duration` from now; whatever is open at its end is cut (warm-up).
    pub fn for_duration(
        targets: &'a [Target],
        probe: &'a ProbeSpec,
        model: Option<&'a str>,
        duration: Duration,
    ) -> Self {
        let end = Instant::now() + duration;
        ProbeRun { targets, probe, model, stop_sending: end, cut_off: end }
    }
}

/// Sends streaming completions until `stop_sending` or the request cap, and waits for the
/// requests in flight until `cut_off` at the latest.
pub async fn run(http: &reqwest::Client, plan: &ProbeRun<'_>) -> ProbeWindow {
    if plan.targets.is_empty() {
        return ProbeWindow::default();
    }
    let prompts: Vec<String> = if plan.probe.prompts.is_empty() {
        BUILTIN_PROMPTS.iter().map(|p| p.to_string()).collect()
    } else {
        plan.probe.prompts.clone()
    };
    let workers = u64::from(plan.probe.concurrency.clamp(1, MAX_CONCURRENCY));
    let timeout = Duration::from_secs(plan.probe.request_timeout_seconds.max(1).into());
    // Worker w sends requests w, w + workers, w + 2 * workers, ...: round-robin over the
    // targets and prompts without shared state, and the cap holds exactly.
    let tasks = (0..workers).map(|worker| {
        let prompts = &prompts;
        async move {
            let mut window = ProbeWindow::default();
            let mut n = worker;
            while n < MAX_REQUESTS && Instant::now() < plan.stop_sending {
                let target = &plan.targets[(n % plan.targets.len() as u64) as usize];
                let body = request_body(plan, &prompts[(n % prompts.len() as u64) as usize]);
                window.sent += 1;
                n += workers;
                let sent = Instant::now();
                let deadline = sent + timeout;
                let mut ttft = None;
                let outcome = match tokio::time::timeout_at(
                    deadline.min(plan.cut_off),
                    stream_one(http, target, &body, &mut ttft),
                )
                .await
                {
                    Ok(outcome) => outcome,
                    Err(_) if deadline <= plan.cut_off => ProbeOutcome::TimedOut,
                    Err(_) => {
                        // Cut by the window's end before its own deadline: no verdict on it
                        // (the server records a client disconnect, 499, which is ignored).
                        window.unfinished += 1;
                        break;
                    }
                };
                window.record(outcome, ttft.map(|at: Instant| (at - sent).as_secs_f64()));
                if outcome != ProbeOutcome::Ok {
                    tokio::time::sleep_until((Instant::now() + BACKOFF).min(plan.stop_sending)).await;
                }
            }
            window
        }
    });
    let mut total = ProbeWindow::default();
    for window in futures::future::join_all(tasks).await {
        total.merge(window);
    }
    total
}

/// A streamed completion of exactly `probe.maxTokens` tokens, so every probe costs the same.
fn request_body(plan: &ProbeRun<'_>, prompt: &str) -> CompletionBody {
    CompletionBody::streamed_fixed_length(prompt, plan.probe.max_tokens, plan.model)
}

/// One streaming completion read to its end. `first_token` is set when the first token
/// arrives, so it survives the future being dropped at a timeout.
async fn stream_one(
    http: &reqwest::Client,
    target: &Target,
    body: &CompletionBody,
    first_token: &mut Option<Instant>,
) -> ProbeOutcome {
    let url = format!("{}/v1/completions", target.base_url);
    let streamed = client::stream(http, &url, body, |event| {
        let carries_text = matches!(&event.item, SseItem::Chunk { text, .. } if !text.is_empty());
        if carries_text && first_token.is_none() {
            *first_token = Some(Instant::now());
        }
    })
    .await;
    match streamed {
        // Refused, reset, or closed before the headers.
        Err(RequestFailure::Transport(_)) => ProbeOutcome::Transport,
        Err(RequestFailure::Status { status, .. }) => ProbeOutcome::HttpStatus(status),
        Ok(state) => match state.end() {
            StreamEnd::Done => ProbeOutcome::Ok,
            StreamEnd::Error(_) => ProbeOutcome::StreamError,
            // Ended, or the connection broke, before `[DONE]`.
            StreamEnd::Cut => ProbeOutcome::CutStream,
        },
    }
}
