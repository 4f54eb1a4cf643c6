//! The `CausalLm` side of a candle model whose steps run on its device over a `DeviceKv`:
//! configuring the cache, per-sequence storage, and the token choice on the device are the
//! same for every such architecture, so they are written once here.

use candle_core::Tensor;

use super::device_kv::{DeviceKv, KvMode};
use super::device_sampling::{step_outputs, RowRequest};
use super::{CausalLm, ForwardItem, KvLayout, ModelInfo, SequenceKv, StepOutput};
use crate::error::Result;

/// An architecture on the candle path: its facts, its KV storage, and one step.
pub trait DeviceModel: Send {
    fn model_info(&self) -> &ModelInfo;
    fn device_kv(&self) -> &DeviceKv;
    fn device_kv_mut(&mut self) -> &mut DeviceKv;
    /// Runs the step; returns the logits (`wanted x vocab`, f32, on the device) of the items
    /// that asked, or None when none did.
    fn step_logits(&self, items: &mut [ForwardItem<'_>]) -> Result<Option<Tensor>>;
}

impl<M: DeviceModel> CausalLm for M {
    fn info(&self) -> &ModelInfo {
        self.model_info()
    }

    fn configure_kv(&mut self, layout: KvLayout) -> Result<()> {
        self.device_kv_mut().configure(layout)
    }

    fn new_kv(&self, tokens: usize) -> SequenceKv {
        self.device_kv().new_sequence(tokens)
    }

    fn forward(&self, items: &mut [ForwardItem<'_>]) -> Result<Vec<Vec<f32>>> {
        match self.step_logits(items)? {
            Some(logits) => Ok(logits.to_vec2::<f32>()?),
            None => Ok(Vec::new()),
        }
    }

    fn samples_on_device(&self) -> bool {
        self.device_kv().mode() == KvMode::Paged
    }

    fn forward_step(&self, items: &mut [ForwardItem<'_>], rows: &[RowRequest]) -> Result<Vec<StepOutput>> {
        match self.step_logits(items)? {
            Some(logits) => step_outputs(&logits, rows),
            None => Ok(Vec::new()),
        }
    }

    fn kv_blocks(&self) -> Option<(usize, usize)> {
        self.device_kv().blocks()
    }
}
