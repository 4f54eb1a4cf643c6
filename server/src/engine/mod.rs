//! The engine: one thread owns the model and KV cache and schedules every step.

pub mod core;
mod driver;
pub mod kv_budget;
mod lifecycle;
mod queue;
pub mod sampling;
pub mod shedding;
pub mod text_stream;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

pub use driver::SchedulerConfig;
pub use queue::{RequestQueue, WorkTicket};
pub use sampling::SamplingParams;

use crate::error::{Error, RequestError, RequestResult, Result};
use crate::metrics::Metrics;
use crate::model::{ChatTemplate, LoadOptions, ModelInfo, ModelSource, TextTokenizer};

/// What a request asks the engine to generate.
#[derive(Debug, Clone)]
pub struct GenerationParams {
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
}

pub struct GenerationRequest {
    pub prompt: Vec<u32>,
    pub params: GenerationParams,
    pub arrival: Instant,
    pub deadline: Instant,
    pub events: mpsc::UnboundedSender<Event>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What the engine tells a request's handler, in order.
#[derive(Debug)]
pub enum Event {
    /// One generated token and the text it completes (may be empty while a character or a
    /// possible stop string is incomplete).
    Token {
        text: String,
    },
    /// Generation ended; `text` is whatever was still held back.
    Finished {
        reason: FinishReason,
        text: String,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Failed(RequestError),
}

/// The model's facts, available once the engine has loaded it.
pub struct ModelHandle {
    pub info: ModelInfo,
    pub tokenizer: Arc<TextTokenizer>,
    pub chat_template: Option<ChatTemplate>,
}

const STATE_LOADING: u8 = 0;
const STATE_READY: u8 = 1;
const STATE_FAILED: u8 = 2;
const STATE_STOPPED: u8 = 3;

/// Liveness shared between the engine thread and the HTTP layer.
#[derive(Default)]
pub struct EngineStatus {
    state: AtomicU8,
    heartbeat_unix_ms: AtomicU64,
    shutdown: AtomicBool,
    /// Engine steps run so far (for `--inject-engine-panic-after-steps`).
    steps: AtomicU64,
    inject_panic_after_steps: Option<u64>,
}

/// The engine is considered hung when it has not looped for this long.
const HEARTBEAT_STALE: Duration = Duration::from_secs(60);

impl EngineStatus {
    fn beat(&self) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        self.heartbeat_unix_ms.store(now, Ordering::Relaxed);
    }
    pub fn is_ready(&self) -> bool {
        self.state.load(Ordering::Acquire) == STATE_READY
    }
    /// The engine loop has ended (a panic, an error or a shutdown): it will never serve again.
    pub fn is_stopped(&self) -> bool {
        self.state.load(Ordering::Acquire) == STATE_STOPPED
    }
    /// Counts one engine step.
    fn count_step(&self) {
        self.steps.fetch_add(1, Ordering::AcqRel);
    }
    /// `--inject-engine-panic-after-steps N`: once N steps ran, the next step's forward panics,
    /// inside the step's guard as a model or device bug would (a failed step ends the engine).
    fn inject_step_panic(&self) {
        let steps = self.steps.load(Ordering::Acquire);
        if self.inject_panic_after_steps.is_some_and(|n| steps >= n) {
            panic!("injected engine panic after {steps} steps (--inject-engine-panic-after-steps)");
        }
    }
    /// Alive: loading or looping with a fresh heartbeat.
    pub fn is_alive(&self) -> bool {
        match self.state.load(Ordering::Acquire) {
            STATE_LOADING => true,
            STATE_READY => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
                now.saturating_sub(self.heartbeat_unix_ms.load(Ordering::Relaxed)) < HEARTBEAT_STALE.as_millis() as u64
            }
            _ => false,
        }
    }
}

/// The HTTP layer's handle on the engine.
pub struct Engine {
    queue: Arc<RequestQueue>,
    status: Arc<EngineStatus>,
    model: Arc<OnceLock<ModelHandle>>,
}

/// The outcome of loading, reported once by the engine thread.
pub type LoadOutcome = Result<f64>;

/// Engine settings outside the scheduler's: admission and fault injection.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineOptions {
    /// `--shed-factor`: see `shedding`; 0 disables deadline-aware admission.
    pub shed_factor: f64,
    /// `--inject-engine-panic-after-steps`.
    pub inject_panic_after_steps: Option<u64>,
}

/// What the scheduler reports after every step: the rate for admission and the step count for
/// fault injection.
fn step_done(status: &EngineStatus, queue: &RequestQueue, step: shedding::StepSample) {
    queue.record_step(step);
    status.count_step();
}

impl Engine {
    /// Starts the engine thread, which loads the model, warms it up and then serves.
    pub fn spawn(
        source: ModelSource,
        options: LoadOptions,
        config: SchedulerConfig,
        engine_options: EngineOptions,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, mpsc::UnboundedReceiver<LoadOutcome>)> {
        let policy = shedding::Policy { factor: engine_options.shed_factor, max_batch_size: config.max_batch_size };
        let queue = Arc::new(RequestQueue::new(config.max_queue_size, policy));
        let status = Arc::new(EngineStatus {
            inject_panic_after_steps: engine_options.inject_panic_after_steps,
            ..EngineStatus::default()
        });
        let model = Arc::new(OnceLock::new());
        // An async channel: the server awaits the load without a blocking thread, so a SIGTERM
        // during a long load ends the process at once (a blocked thread would hold the runtime).
        let (loaded_tx, loaded_rx) = mpsc::unbounded_channel();
        let thread_queue = queue.clone();
        let thread_status = status.clone();
        let thread_model = model.clone();
        std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || {
                let (status, queue) = (thread_status.clone(), thread_queue.clone());
                lifecycle::run_engine(&status, &queue, move || {
                    driver::run(source, options, config, metrics, thread_queue, thread_status, thread_model, loaded_tx)
                });
            })
            .map_err(|e| Error::Internal(format!("cannot start the engine thread: {e}")))?;
        Ok((Self { queue, status, model }, loaded_rx))
    }

    pub fn model(&self) -> Option<&ModelHandle> {
        self.model.get()
    }

    pub fn status(&self) -> &EngineStatus {
        &self.status
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Queues a request; refuses at once when the engine has stopped, the queue is full or
    /// the request cannot finish before its deadline. The ticket counts the request's work
    /// for admission until it is dropped.
    pub fn submit(&self, request: GenerationRequest) -> RequestResult<WorkTicket> {
        if self.status.is_stopped() {
            return Err(RequestError::EngineStopped);
        }
        if !self.status.is_ready() {
            return Err(RequestError::NotReady);
        }
        self.queue.push(request)
    }

    /// The cheap admission check done before a request is parsed and tokenized: 429 when the
    /// work already accepted would run past `deadline` on its own (see `RequestQueue::refuse_early`).
    pub fn refuse_early(&self, deadline: Instant) -> RequestResult<()> {
        self.queue.refuse_early(deadline.saturating_duration_since(Instant::now()))
    }

    /// Asks the engine thread to stop after its current step.
    pub fn shutdown(&self) {
        self.status.shutdown.store(true, Ordering::Release);
        self.queue.wake();
    }
}
