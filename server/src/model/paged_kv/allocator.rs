//! Hands out KV blocks by index; freed blocks are reused first (most recently freed first).

use std::sync::{Arc, Mutex, MutexGuard};

/// The free list of one cache's blocks.
#[derive(Debug)]
pub struct BlockAllocator {
    /// Free block indices; the last one is handed out next.
    free: Vec<u32>,
    total: usize,
}

impl BlockAllocator {
    pub fn new(total: usize) -> Self {
        // Reversed so that a fresh cache hands out block 0 first (easier to read in tests).
        Self { free: (0..total as u32).rev().collect(), total }
    }

    /// One free block, or None when all are in use.
    pub fn allocate(&mut self) -> Option<u32> {
        self.free.pop()
    }

    pub fn release(&mut self, blocks: impl IntoIterator<Item = u32>) {
        self.free.extend(blocks);
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn used(&self) -> usize {
        self.total - self.free.len()
    }
}

/// The allocator shared by a cache and every block table drawn from it.
#[derive(Debug, Clone)]
pub struct SharedAllocator(Arc<Mutex<BlockAllocator>>);

impl SharedAllocator {
    pub fn new(total: usize) -> Self {
        Self(Arc::new(Mutex::new(BlockAllocator::new(total))))
    }

    /// The allocator; a panic while it was held cannot leave the free list half-written
    /// (every method is one Vec operation), so a poisoned lock is still usable.
    pub fn lock(&self) -> MutexGuard<'_, BlockAllocator> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether two handles share one free list (a table belongs to this cache).
    pub fn same(&self, other: &SharedAllocator) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_every_block_once_then_none() {
        let mut a = BlockAllocator::new(3);
        let got: Vec<u32> = (0..3).filter_map(|_| a.allocate()).collect();
        assert_eq!(got, vec![0, 1, 2]);
        assert_eq!(a.allocate(), None);
        assert_eq!(a.used(), 3);
    }

    #[test]
    fn released_blocks_are_reused() {
        let mut a = BlockAllocator::new(2);
        let first = a.allocate().unwrap();
        let _second = a.allocate().unwrap();
        a.release([first]);
        assert_eq!(a.used(), 1);
        assert_eq!(a.allocate(), Some(first));
    }
}
