//! The one owner of KV block accounting: which sequence holds how many blocks.

use std::collections::HashMap;

use super::SeqId;

/// Counts blocks of `block_tokens` tokens out of a fixed total. A sequence holds
/// ceil(tokens / block_tokens) blocks; nothing else in the engine adds or subtracts blocks.
#[derive(Debug)]
pub struct BlockLedger {
    block_tokens: usize,
    total: usize,
    used: usize,
    held: HashMap<SeqId, usize>,
}

impl BlockLedger {
    pub fn new(block_tokens: usize, total: usize) -> Self {
        Self { block_tokens: block_tokens.max(1), total, used: 0, held: HashMap::new() }
    }

    /// Blocks that `tokens` tokens occupy.
    pub fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_tokens)
    }

    pub fn block_tokens(&self) -> usize {
        self.block_tokens
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn used(&self) -> usize {
        self.used
    }

    pub fn free(&self) -> usize {
        self.total - self.used
    }

    pub fn held(&self, id: SeqId) -> usize {
        self.held.get(&id).copied().unwrap_or(0)
    }

    /// Grows `id`'s holding to cover `tokens` tokens; all or nothing. False when the free
    /// blocks do not suffice (nothing changes then). Never shrinks a holding.
    pub fn cover(&mut self, id: SeqId, tokens: usize) -> bool {
        let want = self.blocks_for(tokens);
        let have = self.held(id);
        if want <= have {
            return true;
        }
        let more = want - have;
        if more > self.free() {
            return false;
        }
        self.used += more;
        self.held.insert(id, want);
        true
    }

    /// Returns every block `id` holds to the free pool; how many that was.
    pub fn release(&mut self, id: SeqId) -> usize {
        let blocks = self.held.remove(&id).unwrap_or(0);
        self.used -= blocks;
        blocks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequence_holds_ceil_tokens_over_block_tokens() {
        let mut ledger = BlockLedger::new(16, 10);
        assert!(ledger.cover(1, 1));
        assert_eq!(ledger.held(1), 1);
        assert!(ledger.cover(1, 16));
        assert_eq!(ledger.held(1), 1, "16 tokens still fit one block");
        assert!(ledger.cover(1, 17));
        assert_eq!((ledger.held(1), ledger.used(), ledger.free()), (2, 2, 8));
        assert!(ledger.cover(1, 5), "covering fewer tokens keeps the holding");
        assert_eq!(ledger.held(1), 2);
    }

    #[test]
    fn cover_is_all_or_nothing_and_release_returns_everything() {
        let mut ledger = BlockLedger::new(16, 4);
        assert!(ledger.cover(1, 48));
        assert!(!ledger.cover(2, 32), "two blocks asked, one free");
        assert_eq!((ledger.held(2), ledger.used()), (0, 3));
        assert_eq!(ledger.release(1), 3);
        assert_eq!((ledger.used(), ledger.free()), (0, 4));
        assert_eq!(ledger.release(1), 0, "releasing twice frees nothing more");
        assert!(ledger.cover(2, 64));
        assert_eq!(ledger.free(), 0);
    }
}
