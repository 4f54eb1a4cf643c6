//! The engine: one thread owns the model and KV cache and schedules every step.

pub mod core;
mod driver;
pub mod kv_budget;
mod queue;
pub mod sampling;
pub mod text_stream;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

pub use driver::SchedulerConfig;
pub use queue::RequestQueue;
pub use sampling::SamplingParams;

use crate::error::{Error, Result};
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
    Failed(Error),
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

impl Engine {
    /// Starts the engine thread, which loads the model, warms it up and then serves.
    pub fn spawn(
        source: ModelSource,
        options: LoadOptions,
        config: SchedulerConfig,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, std::sync::mpsc::Receiver<LoadOutcome>)> {
        let queue = Arc::new(RequestQueue::new(config.max_queue_size));
        let status = Arc::new(EngineStatus::default());
        let model = Arc::new(OnceLock::new());
        let (loaded_tx, loaded_rx) = std::sync::mpsc::channel();
        let thread_queue = queue.clone();
        let thread_status = status.clone();
        let thread_model = model.clone();
        std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || {
                driver::run(
                    source,
                    options,
                    config,
                    metrics,
                    thread_queue,
                    thread_status.clone(),
                    thread_model,
                    loaded_tx,
                );
                thread_status.state.store(STATE_STOPPED, Ordering::Release);
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

    /// Queues a request; refuses at once when the queue is full.
    pub fn submit(&self, request: GenerationRequest) -> Result<()> {
        if !self.status.is_ready() {
            return Err(Error::NotReady);
        }
        self.queue.push(request)
    }

    /// Asks the engine thread to stop after its current step.
    pub fn shutdown(&self) {
        self.status.shutdown.store(true, Ordering::Release);
        self.queue.wake();
    }
}
