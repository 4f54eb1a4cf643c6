//! What the core knows of one request: its tokens and how many of them the KV cache holds.

use std::time::Instant;

use super::SeqId;

/// A request as the core receives it.
#[derive(Debug, Clone)]
pub struct NewSequence {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub ignore_eos: bool,
    /// Queue time plus generation must end by then.
    pub deadline: Instant,
}

/// One sequence, waiting or running.
#[derive(Debug)]
pub(super) struct CoreSequence {
    pub id: SeqId,
    /// Prompt then generated tokens: what the KV cache must hold, rebuilt from here after a
    /// preemption.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    /// Leading tokens whose keys and values are in the KV cache.
    pub computed: usize,
    pub max_tokens: usize,
    pub ignore_eos: bool,
    pub deadline: Instant,
    /// Whether it has been admitted before (a preempted sequence coming back is not new).
    pub admitted_once: bool,
}

impl CoreSequence {
    pub fn new(id: SeqId, request: NewSequence) -> Self {
        let prompt_len = request.prompt.len();
        Self {
            id,
            tokens: request.prompt,
            prompt_len,
            computed: 0,
            max_tokens: request.max_tokens,
            ignore_eos: request.ignore_eos,
            deadline: request.deadline,
            admitted_once: false,
        }
    }

    pub fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// Tokens not yet in the KV cache (1 while decoding).
    pub fn uncomputed(&self) -> usize {
        self.tokens.len() - self.computed
    }

    /// A decode step: one sampled token to feed back onto an existing cache.
    pub fn is_decoding(&self) -> bool {
        self.computed > 0 && self.uncomputed() == 1
    }
}
