//! The two generation endpoints: validate, queue, then answer as JSON or as an SSE stream.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::{self, Stream, StreamExt};
use infergate_protocol::openai::stream::{ChatCompletionChunk, CompletionChunk};
use rand::Rng;
use serde::Serialize;
use tokio::sync::mpsc;

use super::faults::Fault;
use super::types::{ChatCompletion, ChunkHeader, Completion, PartialOutput, Usage};
use super::validation::{self, Endpoint, ValidRequest};
use super::{AppState, InFlight};
use crate::engine::{Event, GenerationRequest, WorkTicket};
use crate::error::{RequestError, RequestResult};

pub async fn completions(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    handle(state, headers, body, Endpoint::Completions).await
}

pub async fn chat_completions(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    handle(state, headers, body, Endpoint::Chat).await
}

async fn handle(state: Arc<AppState>, headers: HeaderMap, body: Body, endpoint: Endpoint) -> Response {
    let arrival = Instant::now();
    let mut in_flight = InFlight::start(&state);
    match run(&state, &headers, body, endpoint, arrival).await {
        Ok(Answer::Whole(answer)) => {
            in_flight.finish(200);
            Json(answer).into_response()
        }
        // The guard travels with the stream: the request is in flight until the stream ends.
        Ok(Answer::Stream(parts)) => {
            Sse::new(sse_stream(*parts, in_flight)).keep_alive(KeepAlive::default()).into_response()
        }
        Ok(Answer::CutByDeadline { error, partial }) => {
            in_flight.fail(&error);
            let status = StatusCode::from_u16(error.status_code()).unwrap_or(StatusCode::GATEWAY_TIMEOUT);
            let mut body = error.body();
            body.error.partial = Some(partial);
            (status, Json(body)).into_response()
        }
        Err(e) => {
            in_flight.fail(&e);
            if matches!(e, RequestError::Timeout { .. }) {
                // Timed out before any token: the client waited this long for its first one,
                // so the TTFT histogram the gate reads sees it too.
                state.metrics.time_to_first_token.observe(arrival.elapsed().as_secs_f64());
            }
            if e.status_code() >= 500 && !matches!(e, RequestError::Draining | RequestError::NotReady) {
                tracing::warn!(error = %e, kind = e.metric_label(), "request failed");
            }
            e.into_response()
        }
    }
}

type SseStream = std::pin::Pin<Box<dyn Stream<Item = std::result::Result<SseEvent, Infallible>> + Send>>;

enum Answer {
    Whole(WholeAnswer),
    Stream(Box<StreamParts>),
    /// A non-streaming request cut by its deadline after some tokens: 504 with the text
    /// generated so far in `error.partial`, never silently lost.
    CutByDeadline {
        error: RequestError,
        partial: PartialOutput,
    },
}

/// A non-streamed answer of either endpoint.
#[derive(Serialize)]
#[serde(untagged)]
enum WholeAnswer {
    Completion(Completion),
    Chat(ChatCompletion),
}

/// One `data:` event of either endpoint's stream.
#[derive(Serialize)]
#[serde(untagged)]
enum Chunk {
    Completion(CompletionChunk),
    Chat(ChatCompletionChunk),
}

/// A started generation whose tokens will leave as SSE events.
struct StreamParts {
    frame: Frame,
    valid: ValidRequest,
    first: Event,
    events: EngineEvents,
    timing: Timing,
}

/// How long an oversized body is read and discarded before the 413, so the client finishes
/// sending and sees the answer instead of a reset connection (64 MiB on loopback takes well
/// under a second); a client slower than that gets the 413 and the connection closes.
const OVERSIZED_DRAIN_TIME: Duration = Duration::from_secs(10);

/// Reads the body, enforcing the limit as the bytes arrive (a declared or streamed size over
/// it is discarded, never buffered, and answered 413).
pub(super) async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> RequestResult<Bytes> {
    let limit = state.config.max_body_bytes;
    let declared = validation::declared_length(headers);
    let mut oversized = declared.is_some_and(|n| n > limit);
    let mut buffer = Vec::with_capacity(if oversized { 0 } else { declared.unwrap_or(0) });
    let mut chunks = body.into_data_stream();
    let drain_until = tokio::time::Instant::now() + OVERSIZED_DRAIN_TIME;
    loop {
        let next = if oversized {
            match tokio::time::timeout_at(drain_until, chunks.next()).await {
                Ok(next) => next,
                Err(_) => break,
            }
        } else {
            chunks.next().await
        };
        match next {
            None => break,
            Some(Err(e)) if oversized => {
                tracing::debug!(error = %e, "oversized body ended early");
                break;
            }
            Some(Err(e)) => return Err(RequestError::invalid(format!("cannot read the request body: {e}"), None)),
            Some(Ok(chunk)) if !oversized => {
                if buffer.len() + chunk.len() > limit {
                    oversized = true;
                    buffer = Vec::new();
                } else {
                    buffer.extend_from_slice(&chunk);
                }
            }
            Some(Ok(_)) => {}
        }
    }
    if oversized {
        return Err(RequestError::BodyTooLarge { limit });
    }
    Ok(Bytes::from(buffer))
}

/// Beyond the request deadline the HTTP side stops waiting on its own: a backstop for an
/// engine that hangs without ending (the engine times requests out itself at the deadline).
const BACKSTOP_MARGIN: Duration = Duration::from_secs(5);

/// A request's events from the engine, with its work ticket (returned to admission when this
/// is dropped) and the HTTP-side deadline.
struct EngineEvents {
    events: mpsc::UnboundedReceiver<Event>,
    ticket: WorkTicket,
    backstop: tokio::time::Instant,
    timeout_seconds: u64,
}

impl EngineEvents {
    /// The next event; the engine's end reads as `EngineStopped`, the backstop as a timeout.
    async fn recv(&mut self) -> RequestResult<Event> {
        match tokio::time::timeout_at(self.backstop, self.events.recv()).await {
            Ok(Some(event)) => {
                match &event {
                    Event::Token { .. } => self.ticket.token(),
                    Event::Finished { .. } => self.ticket.finished(),
                    Event::Failed(_) => {}
                }
                Ok(event)
            }
            Ok(None) => Err(RequestError::EngineStopped),
            Err(_) => {
                tracing::error!(timeout_s = self.timeout_seconds, "the engine did not answer by the deadline");
                Err(RequestError::Timeout { seconds: self.timeout_seconds })
            }
        }
    }
}

async fn run(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
    endpoint: Endpoint,
    arrival: Instant,
) -> RequestResult<Answer> {
    if state.draining.load(Ordering::Acquire) {
        return Err(RequestError::Draining);
    }
    if state.engine.status().is_stopped() {
        return Err(RequestError::EngineStopped);
    }
    if state.engine.model().is_none() {
        return Err(RequestError::NotReady);
    }
    let deadline = arrival + state.config.request_timeout();
    let timeout_seconds = state.config.request_timeout_seconds;
    // The deadline covers the body too: a client that never finishes sending gets a 408.
    let body = tokio::time::timeout_at(deadline.into(), read_body(state, headers, body))
        .await
        .map_err(|_| RequestError::BodyTimeout { seconds: timeout_seconds })??;
    state.engine.refuse_early(deadline)?;
    let limits = validation::Limits { default_max_tokens: state.config.default_max_tokens };
    let validating = state.clone();
    // Tokenizing and template rendering take milliseconds per 10 KB: off the async workers.
    let validated = state.front_door.run(move || {
        let state = validating;
        let model = state.engine.model().ok_or(RequestError::NotReady)?;
        validation::validate(endpoint, &body, &state.served_model_name, model, limits)
    });
    // And the wait for a front-door worker (and its work): past the deadline it is a timeout.
    let valid = tokio::time::timeout_at(deadline.into(), validated)
        .await
        .map_err(|_| RequestError::Timeout { seconds: timeout_seconds })??;
    let config = &state.config;
    match state.faults.admit() {
        Fault::None => {}
        Fault::Error => return Err(RequestError::InjectedFault),
        Fault::Delay(delay) => tokio::time::sleep(delay).await,
        Fault::Crash => state.faults.crash(),
        Fault::Hang => {
            // Never answered: the engine never sees it, and the client's disconnect drops this
            // future (recorded as 499). Only a drain lets it go, so a SIGTERM still stops the
            // server promptly instead of waiting out the drain timeout.
            state.wait_draining().await;
            return Err(RequestError::Draining);
        }
    }
    let (events_tx, events) = mpsc::unbounded_channel();
    let ticket = state.engine.submit(GenerationRequest {
        prompt: valid.prompt.clone(),
        params: valid.params.clone(),
        arrival,
        deadline,
        events: events_tx,
    })?;
    let mut events = EngineEvents {
        events,
        ticket,
        backstop: tokio::time::Instant::from_std(deadline + BACKSTOP_MARGIN),
        timeout_seconds: config.request_timeout_seconds,
    };
    // Wait for the first event so failures before any token keep their HTTP status.
    let first = events.recv().await?;
    if let Event::Failed(e) = first {
        return Err(e);
    }
    let timing = Timing::new(state.clone(), arrival);
    let id = format!("{}-{}", if endpoint == Endpoint::Chat { "chatcmpl" } else { "cmpl" }, random_id());
    let created = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let frame = Frame { endpoint, header: ChunkHeader { id, created, model: state.served_model_name.clone() } };
    if valid.stream {
        Ok(Answer::Stream(Box::new(StreamParts { frame, valid, first, events, timing })))
    } else {
        collect(frame, valid, first, events, timing).await
    }
}

fn random_id() -> String {
    let mut rng = rand::rng();
    (0..24).map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)])).collect()
}

/// Token timing for the TTFT/TPOT/ITL histograms, observed as tokens leave for the client.
struct Timing {
    state: Arc<AppState>,
    arrival: Instant,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Timing {
    fn new(state: Arc<AppState>, arrival: Instant) -> Self {
        Self { state, arrival, first: None, last: None }
    }

    fn token(&mut self) {
        let now = Instant::now();
        let m = &self.state.metrics;
        match self.last {
            None => {
                m.time_to_first_token.observe((now - self.arrival).as_secs_f64());
                self.first = Some(now);
            }
            Some(last) => m.inter_token_latency.observe((now - last).as_secs_f64()),
        }
        self.last = Some(now);
    }

    fn finished(&self, completion_tokens: usize) {
        let m = &self.state.metrics;
        let now = Instant::now();
        m.e2e_request_latency.observe((now - self.arrival).as_secs_f64());
        if let (Some(first), true) = (self.first, completion_tokens > 1) {
            m.time_per_output_token.observe((now - first).as_secs_f64() / (completion_tokens - 1) as f64);
        }
    }
}

/// Identity of one response, repeated in every chunk, and which endpoint's shapes it takes.
struct Frame {
    endpoint: Endpoint,
    header: ChunkHeader,
}

impl Frame {
    fn chunk(&self, text: Option<&str>, role: bool, finish_reason: Option<&str>) -> Chunk {
        match self.endpoint {
            Endpoint::Completions => Chunk::Completion(self.header.completion(text.unwrap_or(""), finish_reason)),
            Endpoint::Chat => Chunk::Chat(self.header.chat(text, role, finish_reason)),
        }
    }

    fn usage_chunk(&self, usage: Usage) -> Chunk {
        match self.endpoint {
            Endpoint::Completions => Chunk::Completion(self.header.completion_usage(usage)),
            Endpoint::Chat => Chunk::Chat(self.header.chat_usage(usage)),
        }
    }

    fn complete(self, text: String, finish_reason: &str, usage: Usage) -> WholeAnswer {
        let ChunkHeader { id, created, model } = self.header;
        match self.endpoint {
            Endpoint::Completions => {
                WholeAnswer::Completion(Completion::single(id, created, model, text, finish_reason, usage))
            }
            Endpoint::Chat => WholeAnswer::Chat(ChatCompletion::single(id, created, model, text, finish_reason, usage)),
        }
    }
}

async fn collect(
    frame: Frame,
    valid: ValidRequest,
    first: Event,
    mut events: EngineEvents,
    mut timing: Timing,
) -> RequestResult<Answer> {
    let prompt_tokens = valid.prompt.len();
    let mut text = valid.echo.unwrap_or_default();
    let mut generated = 0;
    let mut next = Some(first);
    loop {
        let event = match next.take() {
            Some(e) => e,
            None => match events.recv().await {
                Ok(e) => e,
                Err(e) => Event::Failed(e),
            },
        };
        match event {
            Event::Token { text: piece } => {
                timing.token();
                generated += 1;
                text.push_str(&piece);
            }
            Event::Finished { reason, text: rest, prompt_tokens, completion_tokens } => {
                text.push_str(&rest);
                timing.finished(completion_tokens);
                let usage = Usage::new(prompt_tokens, completion_tokens);
                return Ok(Answer::Whole(frame.complete(text, reason.as_str(), usage)));
            }
            Event::Failed(error @ RequestError::Timeout { .. }) => {
                let partial = PartialOutput { text, usage: Usage::new(prompt_tokens, generated) };
                return Ok(Answer::CutByDeadline { error, partial });
            }
            Event::Failed(e) => return Err(e),
        }
    }
}

/// One `data:` event. These types always serialize; `null` stands in should one ever not.
fn data(value: &impl Serialize) -> std::result::Result<SseEvent, Infallible> {
    Ok(SseEvent::default().data(serde_json::to_string(value).unwrap_or_else(|_| "null".into())))
}

fn sse_stream(parts: StreamParts, in_flight: InFlight) -> SseStream {
    struct StreamState {
        frame: Frame,
        events: EngineEvents,
        first: Option<Event>,
        timing: Timing,
        include_usage: bool,
        opening: Option<Chunk>,
        /// Dropped with the stream; a client that leaves early is recorded as 499.
        in_flight: Option<InFlight>,
    }
    let StreamParts { frame, valid, first, events, timing } = parts;
    let opening = match frame.endpoint {
        Endpoint::Chat => Some(frame.chunk(Some(""), true, None)),
        Endpoint::Completions => valid.echo.as_deref().map(|t| frame.chunk(Some(t), false, None)),
    };
    let initial = StreamState {
        frame,
        events,
        first: Some(first),
        timing,
        include_usage: valid.include_usage,
        opening,
        in_flight: Some(in_flight),
    };
    let stream = stream::unfold(initial, |mut s| async move {
        let mut in_flight = s.in_flight.take()?;
        let mut out = Vec::new();
        if let Some(opening) = s.opening.take() {
            out.push(data(&opening));
        }
        let event = match s.first.take() {
            Some(e) => e,
            None => s.events.recv().await.unwrap_or_else(Event::Failed),
        };
        match event {
            Event::Token { text } => {
                s.timing.token();
                if !text.is_empty() {
                    out.push(data(&s.frame.chunk(Some(&text), false, None)));
                }
                s.in_flight = Some(in_flight);
            }
            Event::Finished { reason, text, prompt_tokens, completion_tokens } => {
                if !text.is_empty() {
                    out.push(data(&s.frame.chunk(Some(&text), false, None)));
                }
                let text_field = if s.frame.endpoint == Endpoint::Chat { None } else { Some("") };
                out.push(data(&s.frame.chunk(text_field, false, Some(reason.as_str()))));
                if s.include_usage {
                    out.push(data(&s.frame.usage_chunk(Usage::new(prompt_tokens, completion_tokens))));
                }
                out.push(Ok(SseEvent::default().data("[DONE]")));
                s.timing.finished(completion_tokens);
                in_flight.finish(200);
            }
            Event::Failed(e) => {
                // Headers are gone already: the error is the stream's last event.
                out.push(data(&e.body()));
                in_flight.fail(&e);
            }
        }
        Some((stream::iter(out), s))
    });
    Box::pin(stream.flatten())
}
