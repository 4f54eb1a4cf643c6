//! What `schedule()` decides for one step and what `update_from_output()` reports back.

use super::SeqId;
use crate::engine::FinishReason;

/// One sequence's share of a step: feed `tokens` after the `start` tokens its KV holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedItem {
    pub id: SeqId,
    /// Tokens already in its KV cache; 0 means the cache must be (re)built from nothing.
    pub start: usize,
    pub tokens: Vec<u32>,
    /// Whether the step samples a token after this item (its last prompt chunk or a decode).
    pub sample: bool,
    /// Prompt tokens in `tokens` (for the prompt-token counter; a recompute counts again).
    pub prompt_tokens: usize,
}

/// One step's decisions.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StepPlan {
    pub items: Vec<PlannedItem>,
    /// Admitted from the waiting queue for the first time (their queue time ends now).
    pub admitted: Vec<SeqId>,
    /// Taken off the batch to free blocks: their KV is dropped and recomputed when they return.
    pub preempted: Vec<SeqId>,
    /// Passed their deadline, waiting or running; removed and freed.
    pub timed_out: Vec<SeqId>,
}

impl StepPlan {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// A token the driver sampled for a planned item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampledToken {
    pub id: SeqId,
    pub token: u32,
}

/// A token appended to a sequence; `finished` when it ended there (the sequence is freed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenUpdate {
    pub id: SeqId,
    pub token: u32,
    pub finished: Option<FinishReason>,
    /// Whether `token` is a stop token (the driver emits no text for it).
    pub is_stop_token: bool,
}

/// Why a request is refused before it is queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error(
        "the prompt has {prompt_tokens} tokens; with one generated token it needs {blocks_needed} KV cache blocks of \
         {block_tokens} tokens and the cache has {blocks_total}"
    )]
    ExceedsKvCache { prompt_tokens: usize, blocks_needed: usize, block_tokens: usize, blocks_total: usize },
    #[error("This model's maximum context length is {context} tokens; the prompt has {prompt_tokens} tokens")]
    ExceedsContext { prompt_tokens: usize, context: usize },
    #[error("the prompt is empty")]
    EmptyPrompt,
}
