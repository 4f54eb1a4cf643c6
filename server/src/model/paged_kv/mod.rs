//! A paged KV cache that lives on the model's device: per-layer key and value tensors cut
//! into blocks of `block_tokens` slots, a shared allocator of those blocks, and per-sequence
//! block tables that give their blocks back when dropped.

pub mod allocator;
pub mod block_table;
pub mod cache;

pub use allocator::{BlockAllocator, SharedAllocator};
pub use block_table::BlockTable;
pub use cache::PagedKvCache;
