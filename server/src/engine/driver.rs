//! The engine thread: loads the model, sizes the KV cache from memory, then drives the
//! scheduler core. Each loop takes requests from the queue, asks the core for a plan, runs
//! the model forward, samples, folds the tokens back into the core and sends the events.
//! Every policy decision is the core's; this file only moves data and records metrics.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::core::{CoreConfig, NewSequence, SampledToken, SchedulerCore, SeqId, StepPlan, TokenUpdate};
use super::kv_budget::{self, KvBudgetInputs};
use super::queue::IDLE_POLL;
use super::sampling::Sampler;
use super::shedding::StepSample;
use super::text_stream::TextStream;
use super::{
    EngineStatus, Event, FinishReason, GenerationRequest, LoadOutcome, ModelHandle, RequestQueue, STATE_FAILED,
    STATE_READY, STATE_STOPPED,
};
use crate::error::{Error, RequestError};
use crate::metrics::Metrics;
use crate::model::{
    self, CausalLm, ForwardItem, KvLayout, LoadOptions, ModelInfo, ModelSource, SequenceKv, TextTokenizer,
    KV_BLOCK_TOKENS,
};

/// Generated tokens the KV storage of a new sequence has room for before it grows.
const INITIAL_GENERATION_CAPACITY: usize = 256;

/// The prompt the warm-up prefills to measure a prompt token's cost: a short chat prompt's size.
const WARM_UP_PROMPT_TOKENS: usize = 32;

/// How long the loop pauses when the core holds sequences but has nothing to run this step
/// (only possible while a sequence waits for its deadline), so it does not spin.
const NOTHING_TO_RUN_PAUSE: Duration = Duration::from_millis(1);

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub max_batch_size: usize,
    pub max_wait: Duration,
    pub max_queue_size: usize,
    pub max_prefill_tokens: usize,
    /// KV budget in tokens (rounded up to blocks); 0 derives it from memory.
    pub max_kv_tokens: usize,
    /// Host KV budget in GiB on the CPU; 0: half the available memory.
    pub kv_cache_memory_gib: f64,
    /// Share of the GPU's memory the weights and the KV cache may use.
    pub gpu_memory_utilization: f64,
    /// Served context length; 0 means the model's.
    pub max_model_len: usize,
}

/// What the driver keeps of a sequence the core holds: what the core must not see.
struct Active {
    request: GenerationRequest,
    /// None while waiting (new or preempted): built when the core plans its first chunk.
    kv: Option<SequenceKv>,
    sampler: Sampler,
    text: TextStream,
    generated: usize,
}

struct Driver {
    model: Box<dyn CausalLm>,
    tokenizer: Arc<TextTokenizer>,
    config: SchedulerConfig,
    core: SchedulerCore,
    active: HashMap<SeqId, Active>,
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
    loaded: mpsc::UnboundedSender<LoadOutcome>,
) {
    let fail = |e: Error| {
        status.state.store(STATE_FAILED, Ordering::Release);
        let _ = loaded.send(Err(e));
    };
    let mut loaded_model = match model::load(&source, &options) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    tracing::info!(device = %crate::device::describe(&loaded_model.device), "model on device");
    let gpu_memory = crate::device::memory_sampler(&loaded_model.device);
    let mut info = loaded_model.model.info().clone();
    if config.max_model_len > 0 {
        info.context_length = info.context_length.min(config.max_model_len);
    }
    config.max_model_len = info.context_length;
    let inputs = KvBudgetInputs {
        kv_bytes_per_token: info.kv_bytes_per_token,
        block_tokens: KV_BLOCK_TOKENS,
        context_length: info.context_length,
        max_batch_size: config.max_batch_size,
        max_kv_tokens: config.max_kv_tokens,
        kv_cache_memory_gib: config.kv_cache_memory_gib,
        gpu_memory_utilization: config.gpu_memory_utilization,
        // Read once the weights are in place: what is left is what the KV cache may take.
        gpu: gpu_memory.as_ref().and_then(|sample| sample()),
        host_available_bytes: kv_budget::host_available_bytes(),
    };
    let budget = match kv_budget::derive(&inputs) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    log_budget(&budget, &inputs);
    let layout = KvLayout { block_tokens: KV_BLOCK_TOKENS, blocks: budget.blocks };
    if let Err(e) = loaded_model.model.configure_kv(layout) {
        return fail(Error::ModelLoad(format!("cannot size the KV cache ({} blocks): {e}", budget.blocks)));
    }
    if let Err(e) = check_cache_layout(layout, loaded_model.model.kv_blocks()) {
        return fail(e);
    }
    if let Some(sampler) = gpu_memory {
        if let Err(e) = metrics.watch_gpu_memory(sampler) {
            tracing::warn!(error = %e, "GPU memory gauges unavailable");
        }
    }
    metrics.kv_cache_blocks_total.set(budget.blocks as i64);
    let tokenizer = Arc::new(loaded_model.tokenizer);
    let core = SchedulerCore::new(core_config(&config, &info, layout));
    let mut driver = Driver {
        model: loaded_model.model,
        tokenizer: tokenizer.clone(),
        config,
        core,
        active: HashMap::new(),
        queue,
        metrics: metrics.clone(),
        status: status.clone(),
    };
    if let Err(e) = driver.warm_up() {
        return fail(Error::ModelLoad(format!("warm-up forward failed: {e}")));
    }
    let _ = handle.set(ModelHandle { info, tokenizer, chat_template: loaded_model.chat_template });
    metrics.model_load_seconds.set(loaded_model.load_seconds);
    status.beat();
    status.state.store(STATE_READY, Ordering::Release);
    let _ = loaded.send(Ok(loaded_model.load_seconds));
    if let Err(failure) = driver.serve() {
        driver.stop_on(failure);
    }
}

/// The core's block ledger counts the blocks of the layout the model's cache was given, so
/// on every backend admission and the cache agree on block size and count.
fn core_config(config: &SchedulerConfig, info: &ModelInfo, layout: KvLayout) -> CoreConfig {
    CoreConfig {
        max_batch_size: config.max_batch_size,
        max_prefill_tokens: config.max_prefill_tokens,
        context_length: info.context_length,
        block_tokens: layout.block_tokens,
        total_blocks: layout.blocks,
        stop_token_ids: info.stop_token_ids.clone(),
    }
}

/// A paged cache (`device`: its blocks in use and in all) must hold exactly the layout's
/// blocks, none in use yet: the ledger admits against that count, and a cache with fewer
/// blocks would fail steps the ledger allowed. Host-KV backends (None) follow the ledger alone.
fn check_cache_layout(layout: KvLayout, device: Option<(usize, usize)>) -> crate::error::Result<()> {
    match device {
        Some((used, total)) if total != layout.blocks || used != 0 => Err(Error::ModelLoad(format!(
            "the KV cache has {total} blocks ({used} in use) where the budget gave it {} free ones",
            layout.blocks
        ))),
        _ => Ok(()),
    }
}

/// Whether the device cache holds no more blocks than the ledger counts: the ledger covers
/// a sequence's whole prompt at admission while the cache fills chunk by chunk, so it may
/// hold fewer, never more.
fn ledger_covers_cache(ledger_used: usize, device: Option<(usize, usize)>) -> bool {
    device.is_none_or(|(used, _)| used <= ledger_used)
}

fn log_budget(budget: &kv_budget::KvBudget, inputs: &KvBudgetInputs) {
    let kv_tokens = budget.blocks * KV_BLOCK_TOKENS;
    tracing::info!(
        blocks = budget.blocks,
        block_tokens = KV_BLOCK_TOKENS,
        kv_tokens,
        bytes_per_block = budget.bytes_per_block,
        budget_bytes = budget.budget_bytes,
        kv_bytes_per_token = inputs.kv_bytes_per_token,
        source = budget.source.as_str(),
        capped_at_full_batch = budget.capped,
        "KV cache budget"
    );
    if kv_tokens < inputs.context_length {
        tracing::warn!(
            kv_tokens,
            context_length = inputs.context_length,
            "the KV cache holds less than one full context: longer prompts get a 400, sequences end at the cache size"
        );
    }
}

impl Driver {
    /// One short forward so the first request does not pay for lazy initialisation.
    fn warm_up(&mut self) -> crate::error::Result<()> {
        let tokens = self.tokenizer.encode("Hello")?;
        let tokens = if tokens.is_empty() { vec![0] } else { tokens };
        let mut kv = self.model.new_kv(tokens.len());
        let started = Instant::now();
        self.model.forward(&mut [ForwardItem { tokens: &tokens, kv: &mut kv, want_logits: true }])?;
        let step = started.elapsed();
        // Each warm-up sequence gives its KV blocks back before the next one runs.
        drop(kv);
        // And a short prefill, so admission knows what a prompt token costs before the first
        // request (otherwise it prices each as a whole step and refuses long prompts).
        let prompt: Vec<u32> = tokens.iter().copied().cycle().take(WARM_UP_PROMPT_TOKENS).collect();
        let mut kv = self.model.new_kv(prompt.len());
        let started = Instant::now();
        self.model.forward(&mut [ForwardItem { tokens: &prompt, kv: &mut kv, want_logits: true }])?;
        let prefill = started.elapsed();
        drop(kv);
        // And a decode-shaped step of a full batch (one token for each of up to
        // --max-batch-size sequences, one KV block each), so admission knows from the start
        // how the step grows with the batch: a burst after single requests is priced at the
        // batch it will run in, not at one sequence's rate times the batch.
        let sequences = match self.model.kv_blocks() {
            Some((used, blocks)) => self.config.max_batch_size.min(blocks.saturating_sub(used)),
            None => self.config.max_batch_size,
        };
        let batch = if sequences > 1 {
            let mut kvs: Vec<_> = (0..sequences).map(|_| self.model.new_kv(1)).collect();
            let mut items: Vec<ForwardItem> =
                kvs.iter_mut().map(|kv| ForwardItem { tokens: &tokens[..1], kv, want_logits: true }).collect();
            let started = Instant::now();
            self.model.forward(&mut items)?;
            Some((sequences, started.elapsed()))
        } else {
            None
        };
        // Admission's first measure of the rate (lazy start-up included: on the slow side).
        self.queue.record_warm_up(step, batch, prompt.len(), prefill);
        Ok(())
    }

    /// Serves until a shutdown is requested (Ok) or a step fails (Err: the engine's end).
    fn serve(&mut self) -> Result<(), StepFailure> {
        // Admission's rate is measured over the whole cycle (scheduling, forward, sampling,
        // detokenizing, sending), in wall time: the forward alone leaves out the host work per
        // token and the CPU the HTTP side takes, and overstates what the engine delivers.
        let mut cycle_started = Instant::now();
        loop {
            self.status.beat();
            if self.status.shutdown.load(Ordering::Acquire) {
                for (_, active) in self.active.drain() {
                    let _ = active.request.events.send(Event::Failed(RequestError::EngineStopped));
                }
                return Ok(());
            }
            self.drop_expired_in_queue();
            self.drop_cancelled();
            self.publish_gauges(0);
            if self.core.is_idle() {
                // Idle: block on the queue; MAX_WAIT_TIME holds the first batch to let it fill.
                if !self.queue.wait_for(1, Instant::now() + IDLE_POLL) {
                    continue;
                }
                if !self.config.max_wait.is_zero() {
                    self.queue.wait_for(self.config.max_batch_size, Instant::now() + self.config.max_wait);
                }
                // Idle waiting is not service time.
                cycle_started = Instant::now();
            }
            self.take_requests();
            let plan = self.core.schedule(Instant::now());
            self.apply_plan_decisions(&plan);
            if plan.is_empty() {
                if !self.core.is_idle() {
                    std::thread::sleep(NOTHING_TO_RUN_PAUSE);
                }
                continue;
            }
            if let Some((prompt_tokens, generated)) = self.step(plan)? {
                let sample = StepSample { prompt_tokens, generated, took: cycle_started.elapsed() };
                super::step_done(&self.status, &self.queue, sample);
                cycle_started = Instant::now();
            }
        }
    }

    /// Requests whose client left or whose deadline passed while still in the request queue.
    fn drop_expired_in_queue(&mut self) {
        for request in self.queue.take_expired(Instant::now()) {
            let _ = request.events.send(Event::Failed(timeout_error(&request)));
        }
    }

    /// Sequences the core holds whose client went away.
    fn drop_cancelled(&mut self) {
        let gone: Vec<SeqId> =
            self.active.iter().filter(|(_, a)| a.request.events.is_closed()).map(|(id, _)| *id).collect();
        for id in gone {
            self.core.remove(id);
            self.active.remove(&id);
        }
    }

    /// Hands the core as many requests as it wants (a batch); the rest wait in the queue.
    fn take_requests(&mut self) {
        while self.core.wants_more() {
            let Some(request) = self.queue.pop_if(|_| true) else { break };
            let new = NewSequence {
                prompt: request.prompt.clone(),
                max_tokens: request.params.max_tokens,
                ignore_eos: request.params.ignore_eos,
                deadline: request.deadline,
            };
            match self.core.add(new) {
                Ok(id) => {
                    let sampler = Sampler::new(request.params.sampling.clone());
                    let text = TextStream::new(request.params.stop.clone());
                    self.active.insert(id, Active { request, kv: None, sampler, text, generated: 0 });
                }
                Err(rejection) => {
                    let _ = request.events.send(Event::Failed(RequestError::invalid(rejection.to_string(), None)));
                }
            }
        }
    }

    /// Timeouts, preemptions and first admissions of a plan, before its forward runs.
    fn apply_plan_decisions(&mut self, plan: &StepPlan) {
        self.publish_kv_gauges();
        for id in &plan.timed_out {
            if let Some(active) = self.active.remove(id) {
                let _ = active.request.events.send(Event::Failed(timeout_error(&active.request)));
            }
        }
        for id in &plan.preempted {
            // Dropping the KV returns its memory (or its pool blocks); it is rebuilt on return.
            if let Some(active) = self.active.get_mut(id) {
                active.kv = None;
            }
        }
        for id in &plan.admitted {
            if let Some(active) = self.active.get(id) {
                self.metrics.request_queue_time.observe(active.request.arrival.elapsed().as_secs_f64());
            }
        }
        if !plan.preempted.is_empty() {
            self.metrics.preemptions.inc_by(plan.preempted.len() as u64);
            tracing::debug!(preempted = ?plan.preempted, blocks_used = self.core.blocks_used(), "KV cache full: preempted");
        }
    }

    fn publish_gauges(&self, batch: usize) {
        self.metrics.requests_waiting.set((self.queue.len() + self.core.num_waiting()) as i64);
        self.metrics.requests_running.set(self.core.num_running() as i64);
        if batch > 0 {
            self.metrics.batch_size.set(batch as i64);
        }
        self.publish_kv_gauges();
    }

    fn publish_kv_gauges(&self) {
        let (used, total) = (self.core.blocks_used(), self.core.blocks_total());
        self.metrics.kv_cache_blocks_used.set(used as i64);
        self.metrics.kv_cache_usage.set(used as f64 / total.max(1) as f64);
    }

    /// Runs the plan's items in one forward, samples, and folds the tokens back into the core.
    /// A forward that fails or panics is the engine's end (see `StepFailure`). Returns the
    /// prompt tokens it prefilled and the tokens it generated, or None when no planned
    /// sequence was left to run.
    fn step(&mut self, plan: StepPlan) -> Result<Option<(usize, usize)>, StepFailure> {
        // The KV of each planned sequence is taken out for the forward and put back after it.
        let mut members = Vec::with_capacity(plan.items.len());
        let mut caches = Vec::with_capacity(plan.items.len());
        for item in &plan.items {
            let Some(active) = self.active.get_mut(&item.id) else {
                self.core.remove(item.id);
                continue;
            };
            let kv = match active.kv.take() {
                Some(kv) if item.start > 0 => kv,
                // A first chunk (new, or recomputing after a preemption) starts an empty cache.
                _ => self.model.new_kv(
                    active.request.prompt.len() + active.request.params.max_tokens.min(INITIAL_GENERATION_CAPACITY),
                ),
            };
            members.push(item);
            caches.push(kv);
        }
        if members.is_empty() {
            return Ok(None);
        }
        // One request per row the step produces: on a device-sampling backend only token ids
        // come back; a row comes to the host only when the host samples it.
        let device_samples = self.model.samples_on_device();
        let mut rows = Vec::new();
        let mut row_ids = Vec::new();
        for item in members.iter().filter(|item| item.sample) {
            if let Some(active) = self.active.get_mut(&item.id) {
                rows.push(active.sampler.row_request(device_samples));
                row_ids.push(item.id);
            }
        }
        let mut items: Vec<ForwardItem<'_>> = members
            .iter()
            .zip(caches.iter_mut())
            .map(|(item, kv)| ForwardItem { tokens: &item.tokens, kv, want_logits: item.sample })
            .collect();
        let batch = items.len();
        let model = &self.model;
        let status = &self.status;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            // Inside the step's guard, where a model or device bug would panic.
            status.inject_step_panic();
            model.forward_step(&mut items, &rows)
        }));
        drop(items);
        let produced = row_ids.len();
        let ids: Vec<SeqId> = members.iter().map(|item| item.id).collect();
        let prompt_tokens: usize = members.iter().map(|item| item.prompt_tokens).sum();
        self.metrics.prompt_tokens.inc_by(prompt_tokens as u64);
        for (id, kv) in ids.iter().zip(caches) {
            if let Some(active) = self.active.get_mut(id) {
                active.kv = Some(kv);
            }
        }
        let outputs = match outcome {
            Ok(Ok(outputs)) => outputs,
            Ok(Err(e)) => return Err(StepFailure::Error(e)),
            Err(panic) => return Err(StepFailure::Panic(super::lifecycle::panic_message(panic.as_ref()))),
        };
        if outputs.len() != row_ids.len() {
            let message = format!("the step gave {} tokens for {} sequences", outputs.len(), row_ids.len());
            return Err(StepFailure::Error(Error::Internal(message)));
        }
        let mut sampled = Vec::with_capacity(outputs.len());
        for (id, output) in row_ids.into_iter().zip(outputs) {
            let Some(active) = self.active.get_mut(&id) else { continue };
            let token = match output.logits {
                Some(row) => active.sampler.sample(&row),
                None => output.token,
            };
            sampled.push(SampledToken { id, token });
        }
        let updates = self.core.update_from_output(&plan, &sampled);
        // Before the events: a client that has its last token sees its blocks freed.
        self.publish_gauges(batch);
        for update in updates {
            self.emit(update);
        }
        // After the emits: a finished sequence's blocks leave the ledger in update_from_output
        // and the cache when emit drops its KV.
        let device = self.model.kv_blocks();
        if !ledger_covers_cache(self.core.blocks_used(), device) {
            tracing::warn!(ledger_used = self.core.blocks_used(), device = ?device, "KV cache holds more blocks than the ledger counts");
        }
        Ok(Some((prompt_tokens, produced)))
    }

    /// Sends one appended token to its client and ends the sequence when it finished.
    fn emit(&mut self, update: TokenUpdate) {
        let Some(active) = self.active.get_mut(&update.id) else { return };
        active.generated += 1;
        self.metrics.generation_tokens.inc();
        let ending = if update.is_stop_token {
            let _ = active.request.events.send(Event::Token { text: String::new() });
            Some(Ok(FinishReason::Stop))
        } else {
            match active.text.push(update.token, &self.tokenizer) {
                Err(e) => Some(Err(e)),
                Ok(delta) => {
                    let _ = active.request.events.send(Event::Token { text: delta.text });
                    if delta.stopped {
                        Some(Ok(FinishReason::Stop))
                    } else {
                        update.finished.map(Ok)
                    }
                }
            }
        };
        let Some(ending) = ending else { return };
        // A stop string or a failure ends it here; a finish the core decided has freed it already.
        if self.core.remove(update.id) {
            self.publish_kv_gauges();
        }
        let Some(mut active) = self.active.remove(&update.id) else { return };
        let event = match ending {
            Ok(reason) => Event::Finished {
                reason,
                text: active.text.finish(),
                prompt_tokens: active.request.prompt.len(),
                completion_tokens: active.generated,
            },
            Err(error) => Event::Failed(error.into()),
        };
        let _ = active.request.events.send(event);
    }

    /// The engine's end after a failed step: not ready from now on, and every running or
    /// waiting sequence is answered (503, or a final SSE error event). The lifecycle wrapper
    /// then closes the queue, which answers the requests still in it.
    fn stop_on(&mut self, failure: StepFailure) {
        self.status.state.store(STATE_STOPPED, Ordering::Release);
        tracing::error!(error = %failure, running = self.active.len(), "engine step failed; the engine stops");
        for (id, active) in self.active.drain() {
            self.core.remove(id);
            let _ = active.request.events.send(Event::Failed(RequestError::EngineStopped));
        }
        self.metrics.requests_running.set(0);
        self.metrics.requests_waiting.set(self.queue.len() as i64);
    }
}

/// Why a step ended the engine. A forward runs with every planned sequence's KV taken out and
/// written layer by layer, and on a device also with the paged cache and the device's own
/// state: after an error or a panic in the middle of it, none of that can be trusted for the
/// other sequences either, so no failure of a forward is one request's alone. (A failure
/// after the forward, in one sequence's own text decoding, stays that request's: it touches
/// no shared state.)
#[derive(Debug)]
enum StepFailure {
    Error(Error),
    Panic(String),
}

impl std::fmt::Display for StepFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepFailure::Error(e) => write!(f, "the forward failed: {e}"),
            StepFailure::Panic(message) => write!(f, "the model panicked during a step: {message}"),
        }
    }
}

fn timeout_error(request: &GenerationRequest) -> RequestError {
    RequestError::Timeout { seconds: request.deadline.saturating_duration_since(request.arrival).as_secs() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paged_cache_must_have_the_ledgers_blocks() {
        let layout = KvLayout { block_tokens: KV_BLOCK_TOKENS, blocks: 40 };
        assert!(check_cache_layout(layout, Some((0, 40))).is_ok());
        assert!(check_cache_layout(layout, None).is_ok(), "host KV follows the ledger");
        let fewer = check_cache_layout(layout, Some((0, 39))).unwrap_err().to_string();
        assert!(fewer.contains("39 blocks") && fewer.contains("40"), "{fewer}");
        assert!(check_cache_layout(layout, Some((1, 40))).is_err(), "a block already in use");
    }

    #[test]
    fn the_ledger_may_count_more_blocks_than_the_cache_holds_never_fewer() {
        assert!(ledger_covers_cache(3, Some((2, 10))));
        assert!(ledger_covers_cache(3, Some((3, 10))));
        assert!(!ledger_covers_cache(2, Some((3, 10))));
        assert!(ledger_covers_cache(0, None));
    }
}
