//! Where a candle-backed model keeps keys and values, and the paged cache's life cycle: one
//! owner of the mode, the element type, the layout and the (lazily allocated) block tensors,
//! shared by every architecture that runs on the device path (llama family, Gemma 3).

use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{DType, Device};

use super::paged_kv::PagedKvCache;
use super::{ForwardItem, KvLayout, SequenceKv, KV_BLOCK_TOKENS};
use crate::error::{Error, Result};

/// Where a model keeps keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvMode {
    /// Block tensors on the model's device; RoPE, the KV write and attention run there.
    Paged,
    /// f32 rows per sequence on the host, attention in plain Rust (the former path, kept as
    /// the reference the paged one is tested against).
    Host,
}

/// Sequences of up to 4096 tokens the cache holds until the engine sizes it from memory
/// (configure_kv): 65536 tokens, 8 GiB for a Mistral-7B-shaped model in bf16. On the CPU
/// device the zeroed block tensors are mapped lazily, so untouched blocks cost no memory.
const DEFAULT_KV_SEQUENCES: usize = 16;
const DEFAULT_KV_SEQUENCE_TOKENS: usize = 4096;

/// The layout a model uses before `configure_kv`.
pub fn default_kv_layout(context_length: usize) -> KvLayout {
    let tokens = DEFAULT_KV_SEQUENCES * context_length.clamp(1, DEFAULT_KV_SEQUENCE_TOKENS);
    KvLayout { block_tokens: KV_BLOCK_TOKENS, blocks: tokens.div_ceil(KV_BLOCK_TOKENS) }
}

/// A model's KV storage: the mode, and in paged mode the cache on the model's device.
pub struct DeviceKv {
    mode: KvMode,
    /// Element type of the paged cache: f32 on the CPU device, bf16 on a GPU by default.
    dtype: DType,
    /// The layout `configure` set, or a default until it is called.
    layout: KvLayout,
    layers: usize,
    /// `kv_heads * head_dim`: one token's keys (or values) in one layer.
    kv_width: usize,
    device: Device,
    /// The paged cache, allocated by `configure` or at first use.
    cache: Mutex<Option<Arc<PagedKvCache>>>,
}

impl DeviceKv {
    /// Paged storage on `device` with the default layout for `context_length`.
    pub fn new(layers: usize, kv_width: usize, context_length: usize, device: &Device) -> Self {
        Self {
            mode: KvMode::Paged,
            dtype: if device.is_cpu() { DType::F32 } else { DType::BF16 },
            layout: default_kv_layout(context_length),
            layers,
            kv_width,
            device: device.clone(),
            cache: Mutex::new(None),
        }
    }

    pub fn mode(&self) -> KvMode {
        self.mode
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn layout(&self) -> KvLayout {
        self.layout
    }

    /// Switches to host rows per sequence (the reference path); drops a cache already allocated.
    pub fn use_host(&mut self) {
        self.mode = KvMode::Host;
        *self.slot() = None;
    }

    /// Stores the paged cache as `dtype` (f32, f16 or bf16); drops a cache already allocated.
    pub fn set_dtype(&mut self, dtype: DType) -> Result<()> {
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(Error::Config(format!("KV cache dtype {dtype:?} is not one of f32, f16, bf16")));
        }
        self.dtype = dtype;
        *self.slot() = None;
        Ok(())
    }

    /// Bytes one token takes in all layers, keys and values (host rows are f32).
    pub fn bytes_per_token(&self) -> usize {
        let element = match self.mode {
            KvMode::Paged => self.dtype.size_in_bytes(),
            KvMode::Host => DType::F32.size_in_bytes(),
        };
        self.layers * 2 * self.kv_width * element
    }

    /// Sizes the cache; in paged mode allocates it now, so a cache that does not fit fails at
    /// start-up, not at the first request.
    pub fn configure(&mut self, layout: KvLayout) -> Result<()> {
        if layout.block_tokens == 0 || layout.blocks == 0 {
            return Err(Error::Config(format!("KV layout without room: {layout:?}")));
        }
        self.layout = layout;
        *self.slot() = None;
        if self.mode == KvMode::Paged {
            self.cache()?;
        }
        Ok(())
    }

    /// A panic while the slot was held cannot leave it half-written (one Option store).
    fn slot(&self) -> MutexGuard<'_, Option<Arc<PagedKvCache>>> {
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The paged cache, allocated with the current layout on first use.
    pub fn cache(&self) -> Result<Arc<PagedKvCache>> {
        let mut slot = self.slot();
        if let Some(cache) = slot.as_ref() {
            return Ok(cache.clone());
        }
        let cache = Arc::new(PagedKvCache::new(self.layers, self.kv_width, self.layout, self.dtype, &self.device)?);
        *slot = Some(cache.clone());
        Ok(cache)
    }

    /// Empty storage for one sequence: host rows sized for `tokens`, or a block table.
    pub fn new_sequence(&self, tokens: usize) -> SequenceKv {
        match self.mode {
            KvMode::Host => SequenceKv::with_capacity(self.layers, self.kv_width, tokens),
            KvMode::Paged => match self.cache() {
                Ok(cache) => SequenceKv::paged(cache.new_table()),
                Err(e) => {
                    tracing::error!(error = %e, "the paged KV cache could not be allocated");
                    SequenceKv::unavailable()
                }
            },
        }
    }

    /// Checks that every item's storage fits this mode before a step touches it.
    pub fn check_host_items(&self, items: &[ForwardItem<'_>]) -> Result<()> {
        if items.iter().any(|item| item.kv.layers.len() != self.layers) {
            return Err(Error::Internal(
                "this model keeps host KV; the sequence has none (not made by its new_kv)".into(),
            ));
        }
        Ok(())
    }

    /// Grows every item's block table to hold its new tokens, and returns the cache they
    /// write into. Blocks already taken stay with their tables when one runs out.
    pub fn reserve(&self, items: &mut [ForwardItem<'_>]) -> Result<Arc<PagedKvCache>> {
        let cache = self.cache()?;
        for item in items.iter_mut() {
            let Some(table) = item.kv.paged.as_mut() else {
                return Err(Error::Internal(
                    "this model keeps KV in its paged cache; the sequence has no block table".into(),
                ));
            };
            if !table.allocator().same(cache.allocator()) {
                return Err(Error::Internal("the sequence's block table belongs to a replaced KV cache".into()));
            }
            table
                .reserve(item.kv.len + item.tokens.len())
                .map_err(|e| Error::Internal(format!("out of KV cache blocks: all {} are in use", e.total)))?;
        }
        Ok(cache)
    }

    /// KV blocks (in use, in all) in paged mode; None with host rows.
    pub fn blocks(&self) -> Option<(usize, usize)> {
        if self.mode == KvMode::Host {
            return None;
        }
        Some(match self.slot().as_ref() {
            Some(cache) => cache.usage(),
            None => (0, self.layout.blocks),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rows_are_counted_as_f32_and_paged_ones_in_their_dtype() {
        let mut kv = DeviceKv::new(2, 8, 128, &Device::Cpu);
        kv.set_dtype(DType::BF16).unwrap();
        assert_eq!(kv.bytes_per_token(), 2 * 2 * 8 * 2);
        kv.use_host();
        assert_eq!(kv.bytes_per_token(), 2 * 2 * 8 * 4);
        assert_eq!(kv.blocks(), None);
        assert!(kv.set_dtype(DType::U8).is_err());
    }

    #[test]
    fn configure_allocates_the_paged_cache_and_reports_its_blocks() {
        let mut kv = DeviceKv::new(1, 4, 64, &Device::Cpu);
        assert!(kv.configure(KvLayout { block_tokens: 16, blocks: 0 }).is_err());
        kv.configure(KvLayout { block_tokens: 4, blocks: 3 }).unwrap();
        assert_eq!(kv.blocks(), Some((0, 3)));
        let mut sequence = kv.new_sequence(10);
        let tokens = [1u32; 9];
        kv.reserve(&mut [ForwardItem { tokens: &tokens, kv: &mut sequence, want_logits: true }]).unwrap();
        assert_eq!(kv.blocks(), Some((3, 3)));
        drop(sequence);
        assert_eq!(kv.blocks(), Some((0, 3)));
    }
}
