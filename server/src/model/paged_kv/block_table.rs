//! The blocks one sequence holds, in token order; dropping the table frees them.

use super::allocator::SharedAllocator;

/// Block `i` of the table holds the sequence's tokens `i * block_tokens ..`.
#[derive(Debug)]
pub struct BlockTable {
    blocks: Vec<u32>,
    block_tokens: usize,
    allocator: SharedAllocator,
}

/// There are no free KV blocks left for a sequence to grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfBlocks {
    pub total: usize,
}

impl BlockTable {
    pub fn new(allocator: SharedAllocator, block_tokens: usize) -> Self {
        Self { blocks: Vec::new(), block_tokens, allocator }
    }

    pub fn blocks(&self) -> &[u32] {
        &self.blocks
    }

    pub fn block_tokens(&self) -> usize {
        self.block_tokens
    }

    pub fn allocator(&self) -> &SharedAllocator {
        &self.allocator
    }

    /// Tokens the table's blocks can hold.
    pub fn capacity(&self) -> usize {
        self.blocks.len() * self.block_tokens
    }

    /// Grows the table to hold `tokens` tokens. On failure the blocks already taken stay in
    /// the table (freed with it), so a retry needs fewer.
    pub fn reserve(&mut self, tokens: usize) -> Result<(), OutOfBlocks> {
        let needed = tokens.div_ceil(self.block_tokens);
        if needed <= self.blocks.len() {
            return Ok(());
        }
        let mut allocator = self.allocator.lock();
        while self.blocks.len() < needed {
            match allocator.allocate() {
                Some(block) => self.blocks.push(block),
                None => return Err(OutOfBlocks { total: allocator.total() }),
            }
        }
        Ok(())
    }

    /// The cache slot of the sequence's token at `position` (which `reserve` covered).
    pub fn slot(&self, position: usize) -> u32 {
        let block = self.blocks[position / self.block_tokens] as usize;
        (block * self.block_tokens + position % self.block_tokens) as u32
    }
}

impl Drop for BlockTable {
    fn drop(&mut self) {
        self.allocator.lock().release(self.blocks.drain(..));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_blocks_in_token_order() {
        let allocator = SharedAllocator::new(4);
        let other = BlockTable::new(allocator.clone(), 2);
        drop(other);
        let mut a = BlockTable::new(allocator.clone(), 2);
        let mut b = BlockTable::new(allocator.clone(), 2);
        a.reserve(1).unwrap();
        b.reserve(2).unwrap();
        a.reserve(3).unwrap();
        // a holds blocks 0 and 2, b block 1: a's token 2 is the first slot of block 2.
        assert_eq!(a.blocks(), &[0, 2]);
        assert_eq!((a.slot(0), a.slot(1), a.slot(2)), (0, 1, 4));
        assert_eq!(b.slot(1), 3);
    }

    #[test]
    fn dropping_a_table_returns_its_blocks() {
        let allocator = SharedAllocator::new(3);
        let mut a = BlockTable::new(allocator.clone(), 4);
        a.reserve(9).unwrap();
        assert_eq!(allocator.lock().used(), 3);
        let mut b = BlockTable::new(allocator.clone(), 4);
        assert_eq!(b.reserve(1), Err(OutOfBlocks { total: 3 }));
        drop(a);
        assert_eq!(allocator.lock().used(), 0);
        b.reserve(5).unwrap();
        assert_eq!(allocator.lock().used(), 2);
    }
}
