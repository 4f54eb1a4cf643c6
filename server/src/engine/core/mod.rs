//! The scheduler's pure core, vLLM-style: `schedule()` decides a step (which sequences run,
//! which prompt chunks, who is admitted, who is preempted), `update_from_output()` folds the
//! sampled tokens back in (appends, finishes, frees). Plain data only: no model, tokenizer,
//! channels or metrics, and time comes in as a value, so every policy is unit-tested.
//!
//! Policies:
//! - Admission is FIFO: the oldest waiting sequence is admitted when blocks for all its tokens
//!   are free; nothing younger passes it (no head-of-line bypass), so nobody starves.
//! - A request whose prompt plus one generated token can never fit the whole cache or the
//!   context is rejected by `add` (the API answers 400).
//! - Running out of blocks while running: the youngest running sequence is preempted (its
//!   blocks freed, the sequence put back at the front of the waiting queue) and later
//!   recomputed from its prompt and generated tokens. No step admits while it preempts.
//! - A sequence that reaches the context or the whole cache ends with `length`.

mod ledger;
mod plan;
mod schedule;
mod sequence;
#[cfg(test)]
mod tests;
mod update;

use std::collections::VecDeque;

pub use ledger::BlockLedger;
pub use plan::{PlannedItem, Rejection, SampledToken, StepPlan, TokenUpdate};
use sequence::CoreSequence;
pub use sequence::NewSequence;

/// Identifies a sequence; assigned in arrival order, so a smaller id is older.
pub type SeqId = u64;

#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub max_batch_size: usize,
    /// Prompt (and recompute) tokens per step over all sequences; decodes do not count.
    pub max_prefill_tokens: usize,
    pub context_length: usize,
    pub block_tokens: usize,
    pub total_blocks: usize,
    /// Tokens that end generation unless a request ignores EOS.
    pub stop_token_ids: Vec<u32>,
}

pub struct SchedulerCore {
    config: CoreConfig,
    ledger: BlockLedger,
    /// Oldest first; preempted sequences go back to the front.
    waiting: VecDeque<CoreSequence>,
    /// Ordered by id (arrival): the last one is the youngest, the first to be preempted.
    running: Vec<CoreSequence>,
    next_id: SeqId,
}

impl SchedulerCore {
    pub fn new(config: CoreConfig) -> Self {
        let ledger = BlockLedger::new(config.block_tokens, config.total_blocks);
        Self { config, ledger, waiting: VecDeque::new(), running: Vec::new(), next_id: 0 }
    }

    /// Longest a sequence may grow: the context or the whole cache, whichever is smaller.
    pub fn max_sequence_tokens(&self) -> usize {
        self.config.context_length.min(self.ledger.total() * self.ledger.block_tokens())
    }

    /// Queues a request behind every waiting one, or refuses one that can never run.
    pub fn add(&mut self, request: NewSequence) -> Result<SeqId, Rejection> {
        let prompt_tokens = request.prompt.len();
        if prompt_tokens == 0 {
            return Err(Rejection::EmptyPrompt);
        }
        if prompt_tokens + 1 > self.config.context_length {
            return Err(Rejection::ExceedsContext { prompt_tokens, context: self.config.context_length });
        }
        let blocks_needed = self.ledger.blocks_for(prompt_tokens + 1);
        if blocks_needed > self.ledger.total() {
            return Err(Rejection::ExceedsKvCache {
                prompt_tokens,
                blocks_needed,
                block_tokens: self.ledger.block_tokens(),
                blocks_total: self.ledger.total(),
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.waiting.push_back(CoreSequence::new(id, request));
        Ok(id)
    }

    /// Takes a sequence out wherever it is and frees its blocks: the client went away, a stop
    /// string ended it, or its step failed. False if it was not there.
    pub fn remove(&mut self, id: SeqId) -> bool {
        if let Some(index) = self.running.iter().position(|s| s.id == id) {
            self.running.remove(index);
        } else if let Some(index) = self.waiting.iter().position(|s| s.id == id) {
            self.waiting.remove(index);
        } else {
            return false;
        }
        self.ledger.release(id);
        true
    }

    /// Whether the driver should hand over another request: the core holds fewer than a batch,
    /// so requests beyond that stay in the bounded request queue (and its 429).
    pub fn wants_more(&self) -> bool {
        self.running.len() + self.waiting.len() < self.config.max_batch_size
    }

    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn blocks_total(&self) -> usize {
        self.ledger.total()
    }

    pub fn blocks_used(&self) -> usize {
        self.ledger.used()
    }

    /// Every sequence id the core holds, running then waiting.
    pub fn ids(&self) -> impl Iterator<Item = SeqId> + '_ {
        self.running.iter().chain(self.waiting.iter()).map(|s| s.id)
    }
}
