//! The engine loop: admit, prefill in chunks, one batched decode step, emit, free.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::queue::IDLE_POLL;
use super::sampling::Sampler;
use super::text_stream::TextStream;
use super::{
    EngineStatus, Event, FinishReason, GenerationRequest, LoadOutcome, ModelHandle, RequestQueue, STATE_FAILED,
    STATE_READY,
};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::model::{self, CausalLm, ForwardItem, LoadOptions, ModelSource, SequenceKv, TextTokenizer};

/// Generated tokens the KV storage of a new sequence has room for before it grows.
const INITIAL_GENERATION_CAPACITY: usize = 256;

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub max_batch_size: usize,
    pub max_wait: Duration,
    pub max_queue_size: usize,
    pub max_prefill_tokens: usize,
    /// KV budget in tokens; 0 means batch size x context.
    pub max_kv_tokens: usize,
    /// Served context length; 0 means the model's.
    pub max_model_len: usize,
}

/// How a sequence left the running batch.
enum Ending {
    Finished(FinishReason),
    Failed(Error),
}

/// One admitted request.
struct Sequence {
    request: GenerationRequest,
    kv: SequenceKv,
    /// Prompt tokens already in the KV cache.
    prefilled: usize,
    /// The sampled token not yet fed back to the model.
    pending: Option<u32>,
    generated: usize,
    sampler: Sampler,
    text: TextStream,
    /// KV tokens reserved against the budget: prompt + max_tokens.
    reserved: usize,
}

struct Scheduler {
    model: Box<dyn CausalLm>,
    tokenizer: Arc<TextTokenizer>,
    config: SchedulerConfig,
    kv_budget: usize,
    kv_reserved: usize,
    running: Vec<Sequence>,
    queue: Arc<RequestQueue>,
    metrics: Arc<Metrics>,
    status: Arc<EngineStatus>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    source: ModelSource,
    options: LoadOptions,
    mut config: SchedulerConfig,
    metrics: Arc<Metrics>,
    queue: Arc<RequestQueue>,
    status: Arc<EngineStatus>,
    handle: Arc<OnceLock<ModelHandle>>,
    loaded: std::sync::mpsc::Sender<LoadOutcome>,
) {
    let loaded_model = match model::load(&source, &options) {
        Ok(m) => m,
        Err(e) => {
            status.state.store(STATE_FAILED, Ordering::Release);
            let _ = loaded.send(Err(e));
            return;
        }
    };
    tracing::info!(device = %crate::device::describe(&loaded_model.device), "model on device");
    if let Some(sampler) = crate::device::memory_sampler(&loaded_model.device) {
        if let Err(e) = metrics.watch_gpu_memory(sampler) {
            tracing::warn!(error = %e, "GPU memory gauges unavailable");
        }
    }
    let mut info = loaded_model.model.info().clone();
    if config.max_model_len > 0 {
        info.context_length = info.context_length.min(config.max_model_len);
    }
    config.max_model_len = info.context_length;
    let kv_budget = if config.max_kv_tokens > 0 {
        config.max_kv_tokens.max(info.context_length)
    } else {
        config.max_batch_size * info.context_length
    };
    let tokenizer = Arc::new(loaded_model.tokenizer);
    let mut scheduler = Scheduler {
        model: loaded_model.model,
        tokenizer: tokenizer.clone(),
        config,
        kv_budget,
        kv_reserved: 0,
        running: Vec::new(),
        queue,
        metrics: metrics.clone(),
        status: status.clone(),
    };
    if let Err(e) = scheduler.warm_up() {
        status.state.store(STATE_FAILED, Ordering::Release);
        let _ = loaded.send(Err(Error::ModelLoad(format!("warm-up forward failed: {e}"))));
        return;
    }
    let _ = handle.set(ModelHandle { info, tokenizer, chat_template: loaded_model.chat_template });
    metrics.model_load_seconds.set(loaded_model.load_seconds);
    status.beat();
    status.state.store(STATE_READY, Ordering::Release);
    let _ = loaded.send(Ok(loaded_model.load_seconds));
    scheduler.serve();
}

impl Scheduler {
    /// One short forward so the first request does not pay for lazy initialisation.
    fn warm_up(&mut self) -> crate::error::Result<()> {
        let tokens = self.tokenizer.encode("Hello")?;
        let tokens = if tokens.is_empty() { vec![0] } else { tokens };
        let mut kv = self.model.new_kv(tokens.len());
        let started = Instant::now();
        self.model.forward(&mut [ForwardItem { tokens: &tokens, kv: &mut kv, want_logits: true }])?;
        // Admission's first measure of the rate (one sequence, lazy start-up included: slow side).
        self.queue.record_warm_up(started.elapsed());
        Ok(())
    }

    fn serve(&mut self) {
        loop {
            self.status.beat();
            if self.status.shutdown.load(Ordering::Acquire) {
                for seq in self.running.drain(..) {
                    let _ = seq.request.events.send(Event::Failed(Error::EngineStopped));
                }
                return;
            }
            self.drop_expired();
            self.publish_gauges(0);
            if self.running.is_empty() {
                // Idle: block on the queue; MAX_WAIT_TIME holds the first batch to let it fill.
                if !self.queue.wait_for(1, Instant::now() + IDLE_POLL) {
                    continue;
                }
                if !self.config.max_wait.is_zero() {
                    self.queue.wait_for(self.config.max_batch_size, Instant::now() + self.config.max_wait);
                }
            }
            self.admit();
            if !self.running.is_empty() {
                self.step();
            }
        }
    }

    fn drop_expired(&mut self) {
        let now = Instant::now();
        for request in self.queue.take_expired(now) {
            let _ = request.events.send(Event::Failed(self.timeout_error(&request)));
        }
        let mut i = 0;
        while i < self.running.len() {
            let seq = &self.running[i];
            if seq.request.events.is_closed() || seq.request.deadline <= now {
                let seq = self.running.swap_remove(i);
                if !seq.request.events.is_closed() {
                    let _ = seq.request.events.send(Event::Failed(self.timeout_error(&seq.request)));
                }
                self.kv_reserved -= seq.reserved;
            } else {
                i += 1;
            }
        }
    }

    fn timeout_error(&self, request: &GenerationRequest) -> Error {
        Error::Timeout { seconds: request.deadline.saturating_duration_since(request.arrival).as_secs() }
    }

    fn admit(&mut self) {
        while self.running.len() < self.config.max_batch_size {
            let free = self.kv_budget - self.kv_reserved;
            let Some(request) = self.queue.pop_if(|r| r.prompt.len() + r.params.max_tokens <= free) else {
                break;
            };
            let reserved = request.prompt.len() + request.params.max_tokens;
            self.metrics.request_queue_time.observe(request.arrival.elapsed().as_secs_f64());
            self.kv_reserved += reserved;
            // Reservation is logical (admission control); memory grows with what is generated.
            let kv =
                self.model.new_kv(request.prompt.len() + request.params.max_tokens.min(INITIAL_GENERATION_CAPACITY));
            let sampler = Sampler::new(request.params.sampling.clone());
            let text = TextStream::new(request.params.stop.clone());
            self.running.push(Sequence {
                request,
                kv,
                prefilled: 0,
                pending: None,
                generated: 0,
                sampler,
                text,
                reserved,
            });
        }
    }

    fn publish_gauges(&self, batch: usize) {
        self.metrics.requests_waiting.set(self.queue.len() as i64);
        self.metrics.requests_running.set(self.running.len() as i64);
        if batch > 0 {
            self.metrics.batch_size.set(batch as i64);
        }
        self.metrics.kv_cache_usage.set(self.kv_reserved as f64 / self.kv_budget.max(1) as f64);
    }

    /// One model step over every running sequence: prompt chunks within the prefill budget,
    /// and one token for each sequence that is decoding.
    fn step(&mut self) {
        let mut prefill_budget = self.config.max_prefill_tokens;
        let mut members = Vec::with_capacity(self.running.len());
        let mut items = Vec::with_capacity(self.running.len());
        let mut pending_tokens = Vec::with_capacity(self.running.len());
        for (index, seq) in self.running.iter_mut().enumerate() {
            if let Some(token) = seq.pending {
                pending_tokens.push((index, [token]));
            }
        }
        let mut pending_iter = pending_tokens.iter();
        let mut next_pending = pending_iter.next();
        let mut prompt_tokens = 0;
        for (index, seq) in self.running.iter_mut().enumerate() {
            if let Some((pending_index, token)) = next_pending {
                if *pending_index == index {
                    next_pending = pending_iter.next();
                    items.push(ForwardItem { tokens: token, kv: &mut seq.kv, want_logits: true });
                    members.push(index);
                    continue;
                }
            }
            let remaining = seq.request.prompt.len() - seq.prefilled;
            if remaining == 0 || prefill_budget == 0 {
                continue;
            }
            let n = remaining.min(prefill_budget);
            prefill_budget -= n;
            prompt_tokens += n;
            let chunk = &seq.request.prompt[seq.prefilled..seq.prefilled + n];
            seq.prefilled += n;
            items.push(ForwardItem {
                tokens: chunk,
                kv: &mut seq.kv,
                want_logits: seq.prefilled == seq.request.prompt.len(),
            });
            members.push(index);
        }
        if items.is_empty() {
            return;
        }
        let batch = items.len();
        let want: Vec<bool> = items.iter().map(|i| i.want_logits).collect();
        let model = &self.model;
        let step_started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| model.forward(&mut items)));
        drop(items);
        super::step_done(&self.status, &self.queue, want.iter().filter(|w| **w).count(), step_started.elapsed());
        self.metrics.prompt_tokens.inc_by(prompt_tokens as u64);
        self.publish_gauges(batch);
        let logits = match outcome {
            Ok(Ok(logits)) => logits,
            Ok(Err(e)) => return self.fail_members(&members, e),
            Err(_) => return self.fail_members(&members, Error::Internal("the model panicked during a step".into())),
        };
        let mut rows = logits.into_iter();
        let mut finished = Vec::new();
        for (&index, &wants) in members.iter().zip(want.iter()) {
            if !wants {
                continue;
            }
            let Some(row) = rows.next() else { break };
            if let Some(ending) = self.emit_token(index, &row) {
                finished.push((index, ending));
            }
        }
        // Remove from the back so earlier indices stay valid.
        finished.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (index, ending) in finished {
            let mut seq = self.running.swap_remove(index);
            self.kv_reserved -= seq.reserved;
            let event = match ending {
                Ending::Finished(reason) => Event::Finished {
                    reason,
                    text: seq.text.finish(),
                    prompt_tokens: seq.request.prompt.len(),
                    completion_tokens: seq.generated,
                },
                Ending::Failed(error) => Event::Failed(error),
            };
            let _ = seq.request.events.send(event);
        }
    }

    /// Samples the next token of sequence `index`; returns how it ended, if it did.
    fn emit_token(&mut self, index: usize, logits: &[f32]) -> Option<Ending> {
        let context = self.config.max_model_len;
        let seq = &mut self.running[index];
        let token = seq.sampler.sample(logits);
        seq.generated += 1;
        self.metrics.generation_tokens.inc();
        let is_stop_token = !seq.request.params.ignore_eos && self.model.info().stop_token_ids.contains(&token);
        if is_stop_token {
            let _ = seq.request.events.send(Event::Token { text: String::new() });
            return Some(Ending::Finished(FinishReason::Stop));
        }
        let delta = match seq.text.push(token, &self.tokenizer) {
            Ok(d) => d,
            Err(e) => return Some(Ending::Failed(e)),
        };
        let _ = seq.request.events.send(Event::Token { text: delta.text });
        if delta.stopped {
            return Some(Ending::Finished(FinishReason::Stop));
        }
        seq.pending = Some(token);
        let total = seq.request.prompt.len() + seq.generated;
        if seq.generated >= seq.request.params.max_tokens || total >= context {
            return Some(Ending::Finished(FinishReason::Length));
        }
        None
    }

    fn fail_members(&mut self, members: &[usize], error: Error) {
        tracing::error!(error = %error, kind = error.metric_label(), "engine step failed");
        let mut members = members.to_vec();
        members.sort_unstable_by(|a, b| b.cmp(a));
        for index in members {
            let seq = self.running.swap_remove(index);
            self.kv_reserved -= seq.reserved;
            let _ = seq.request.events.send(Event::Failed(Error::Internal(format!("model step failed: {error}"))));
        }
    }
}
