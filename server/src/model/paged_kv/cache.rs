//! The block tensors: for every layer one key and one value tensor of
//! `blocks * block_tokens` slots by `kv_heads * head_dim`, on the model's device.

use candle_core::{DType, Device, Tensor};

use super::allocator::SharedAllocator;
use super::block_table::BlockTable;
use crate::error::Result;
use crate::model::KvLayout;

pub struct PagedKvCache {
    pub keys: Vec<Tensor>,
    pub values: Vec<Tensor>,
    layout: KvLayout,
    kv_width: usize,
    allocator: SharedAllocator,
}

impl PagedKvCache {
    /// Allocates (zeroed) block tensors for `layers` layers.
    pub fn new(layers: usize, kv_width: usize, layout: KvLayout, dtype: DType, device: &Device) -> Result<Self> {
        let slots = layout.blocks * layout.block_tokens;
        let mut keys = Vec::with_capacity(layers);
        let mut values = Vec::with_capacity(layers);
        for _ in 0..layers {
            keys.push(Tensor::zeros((slots, kv_width), dtype, device)?);
            values.push(Tensor::zeros((slots, kv_width), dtype, device)?);
        }
        Ok(Self { keys, values, layout, kv_width, allocator: SharedAllocator::new(layout.blocks) })
    }

    pub fn layout(&self) -> KvLayout {
        self.layout
    }

    pub fn kv_width(&self) -> usize {
        self.kv_width
    }

    pub fn dtype(&self) -> DType {
        self.keys.first().map_or(DType::F32, Tensor::dtype)
    }

    /// An empty table drawing blocks from this cache.
    pub fn new_table(&self) -> BlockTable {
        BlockTable::new(self.allocator.clone(), self.layout.block_tokens)
    }

    pub fn allocator(&self) -> &SharedAllocator {
        &self.allocator
    }

    /// (blocks in use, blocks in all), for gauges and tests.
    pub fn usage(&self) -> (usize, usize) {
        let allocator = self.allocator.lock();
        (allocator.used(), allocator.total())
    }

    /// Writes `keys`/`values` (`rows x kv_width`, any float dtype) of layer `layer` into the
    /// slots `slot_index` names: one in-place scatter per tensor, on the device.
    pub fn write(&self, layer: usize, slot_index: &Tensor, keys: &Tensor, values: &Tensor) -> Result<()> {
        let dtype = self.dtype();
        self.keys[layer].scatter_set(slot_index, &keys.to_dtype(dtype)?.contiguous()?, 0)?;
        self.values[layer].scatter_set(slot_index, &values.to_dtype(dtype)?.contiguous()?, 0)?;
        Ok(())
    }
}
