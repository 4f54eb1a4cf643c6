//! The Gemma 3 decoder with a batched, mixed-length forward (candle matmuls; attention on the
//! device path or on host f32 slices, as in `llama.rs`).
//!
//! What differs from the llama family, following llama.cpp's `gemma3` graph:
//! - token embeddings are scaled by `sqrt(hidden_size)`;
//! - RMSNorm weights are used as the GGUF stores them (the converter already added Gemma's +1);
//! - queries and keys get a per-head RMSNorm before the (NeoX-layout) rotary embedding;
//! - the attention output and the FFN output each pass a post-norm before the residual add;
//! - the FFN is GELU(tanh)-gated;
//! - most layers attend within a sliding window and rotate with a local base, the others
//!   attend globally with the global base;
//! - the attention scale is `1/sqrt(head_dim)` (`1/sqrt(hidden/heads)` for the 27B model).
//!
//! KV lives where `DeviceKv` says, as for the llama family: by default in the paged cache
//! on the model's device (both rotary tables and the window mask in one `StepPlan`), or in
//! host rows with attention in plain Rust (the reference the paged path is tested against).

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor};

use super::attention::{attend_batch_windowed, AttentionShape, RopeStyle, RopeTable};
use super::device_attention::{attend_rotated, DeviceRope, StepPlan};
use super::device_kv::{DeviceKv, KvMode};
use super::device_model::DeviceModel;
use super::kernels::pool::ComputePool;
use super::llama::{values, Embedding};
use super::{check_items, commit_items, ForwardItem, ModelInfo};
use crate::error::{Error, Result};

/// Hyper-parameters of a Gemma 3 checkpoint.
#[derive(Debug, Clone)]
pub struct Gemma3Config {
    pub hidden_size: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub layers: usize,
    pub rms_eps: f64,
    /// Rotary base of the global-attention layers.
    pub rope_base: f32,
    /// Rotary base of the sliding-window layers.
    pub rope_base_local: f32,
    pub rope_dims: usize,
    /// Keys a sliding-window layer's query sees, itself included.
    pub sliding_window: usize,
    /// Which layers use the sliding window (one flag per layer).
    pub sliding_layers: Vec<bool>,
    /// The factor queries are scaled by before `q·k`.
    pub attention_scale: f32,
    /// `cap * tanh(logits / cap)` on the output when set.
    pub final_logit_softcapping: Option<f32>,
    pub context_length: usize,
    pub vocab_size: usize,
    pub stop_token_ids: Vec<u32>,
}

impl Gemma3Config {
    pub fn attention_shape(&self) -> AttentionShape {
        AttentionShape { heads: self.heads, kv_heads: self.kv_heads, head_dim: self.head_dim }
    }
}

/// llama.cpp's default layer pattern: in every group of `period` layers the last attends
/// globally, the others within the window (`period` 0: all sliding).
pub fn sliding_pattern(layers: usize, period: usize) -> Vec<bool> {
    (0..layers).map(|i| period == 0 || i % period < period - 1).collect()
}

/// A bias-free projection.
pub struct Proj(pub QMatMul);

impl Proj {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.0.forward(x)?)
    }
}

pub struct Gemma3Layer {
    pub attn_norm: Tensor,
    pub wq: Proj,
    pub wk: Proj,
    pub wv: Proj,
    pub q_norm: Tensor,
    pub k_norm: Tensor,
    pub wo: Proj,
    pub post_attn_norm: Tensor,
    pub ffn_norm: Tensor,
    pub w_gate: Proj,
    pub w_up: Proj,
    pub w_down: Proj,
    pub post_ffn_norm: Tensor,
}

pub struct Gemma3 {
    config: Gemma3Config,
    info: ModelInfo,
    embedding: Embedding,
    layers: Vec<Gemma3Layer>,
    final_norm: Tensor,
    output: Proj,
    rope_global: RopeTable,
    rope_local: RopeTable,
    /// Passed to `attend_batch_windowed`, which then rotates nothing (`forward` already did).
    no_rope: RopeTable,
    /// `rope_global` and `rope_local` on the device, in that order (the step plan's tables).
    device_ropes: [DeviceRope; 2],
    device: Device,
    /// Where keys and values live: the paged cache on the device, or host rows per sequence.
    kv: DeviceKv,
    /// Runs attention on the engine thread alone: candle's own pool does the matmuls.
    attention_pool: ComputePool,
}

impl Gemma3 {
    pub fn new(
        config: Gemma3Config,
        embedding: Embedding,
        layers: Vec<Gemma3Layer>,
        final_norm: Tensor,
        output: Proj,
        device: Device,
    ) -> Result<Self> {
        if config.heads == 0 || config.kv_heads == 0 || !config.heads.is_multiple_of(config.kv_heads) {
            return Err(Error::ModelLoad(format!(
                "unsupported head counts: {} query heads, {} kv heads",
                config.heads, config.kv_heads
            )));
        }
        if config.rope_dims > config.head_dim || !config.rope_dims.is_multiple_of(2) {
            return Err(Error::ModelLoad(format!(
                "rotary dimensions {} do not fit head size {}",
                config.rope_dims, config.head_dim
            )));
        }
        if config.sliding_layers.len() != config.layers || layers.len() != config.layers {
            return Err(Error::ModelLoad("gemma3: layer count and sliding-window pattern disagree".into()));
        }
        // llama.cpp's gemma3 uses the NeoX rotary layout (pairs are the two halves of a head).
        let rope_global = RopeTable::new(RopeStyle::Halves, config.rope_dims, config.rope_base, config.context_length);
        let rope_local =
            RopeTable::new(RopeStyle::Halves, config.rope_dims, config.rope_base_local, config.context_length);
        let device_ropes = [DeviceRope::new(&rope_global, &device)?, DeviceRope::new(&rope_local, &device)?];
        let kv = DeviceKv::new(config.layers, config.attention_shape().kv_width(), config.context_length, &device);
        let info = ModelInfo {
            architecture: super::gemma3_load::ARCHITECTURE,
            context_length: config.context_length,
            vocab_size: config.vocab_size,
            stop_token_ids: config.stop_token_ids.clone(),
            kv_bytes_per_token: kv.bytes_per_token(),
        };
        Ok(Self {
            config,
            info,
            embedding,
            layers,
            final_norm,
            output,
            rope_global,
            rope_local,
            no_rope: RopeTable::new(RopeStyle::Halves, 0, 1.0, 0),
            device_ropes,
            device,
            kv,
            attention_pool: ComputePool::new(1),
        })
    }

    pub fn config(&self) -> &Gemma3Config {
        &self.config
    }

    /// Keeps KV as host rows per sequence with attention on the host (the reference path).
    pub fn with_host_kv(mut self) -> Self {
        self.kv.use_host();
        self.info.kv_bytes_per_token = self.kv.bytes_per_token();
        self
    }

    /// Stores the paged cache as `dtype` (f32, f16 or bf16); drops a cache already allocated.
    pub fn with_kv_dtype(mut self, dtype: DType) -> Result<Self> {
        self.kv.set_dtype(dtype)?;
        self.info.kv_bytes_per_token = self.kv.bytes_per_token();
        Ok(self)
    }

    pub fn kv_mode(&self) -> KvMode {
        self.kv.mode()
    }

    /// RMSNorm of each `width`-wide head of `x` (`rows x heads*width`) with one shared weight.
    fn head_norm(&self, x: &Tensor, weight: &Tensor, heads: usize) -> Result<Tensor> {
        let rows = x.dim(0)?;
        let width = self.config.head_dim;
        let normed = candle_nn::ops::rms_norm(&x.reshape((rows * heads, width))?, weight, self.config.rms_eps as f32)?;
        Ok(normed.reshape((rows, heads * width))?)
    }
}

/// What one layer's attention needs besides its weights.
struct LayerAttention<'a> {
    index: usize,
    sliding: bool,
    /// The factor queries get on top of the kernels' `1/sqrt(head_dim)`.
    q_scale: f32,
    shape: AttentionShape,
    /// Present on the paged path.
    paged: Option<(&'a StepPlan, &'a super::paged_kv::PagedKvCache)>,
}

impl Gemma3 {
    /// One layer's attention output (`rows x q_width`, f32) on the path the KV mode says.
    /// Both paths round the rotated queries, keys and values to f16, as llama.cpp's default
    /// f16 KV cache (and its f16 flash-attention dot products) hold them: greedy near-ties
    /// then break alike.
    fn attention(
        &self,
        at: &LayerAttention<'_>,
        items: &mut [ForwardItem<'_>],
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<Tensor> {
        let shape = at.shape;
        if let Some((plan, cache)) = at.paged {
            let rope = usize::from(at.sliding);
            let q = plan.rotate(rope, &q.to_dtype(DType::F32)?, shape.heads)?;
            let q = if at.q_scale != 1.0 { (q * at.q_scale as f64)? } else { q };
            let k = plan.rotate(rope, &k.to_dtype(DType::F32)?, shape.kv_heads)?;
            let f16_rounded = |t: &Tensor| -> Result<Tensor> { Ok(t.to_dtype(DType::F16)?.to_dtype(DType::F32)?) };
            return attend_rotated(
                plan,
                cache,
                at.index,
                at.sliding,
                &f16_rounded(&q)?,
                &f16_rounded(&k)?,
                &f16_rounded(v)?,
            );
        }
        let (q_width, kv_width) = (shape.q_width(), shape.kv_width());
        let mut q = values(q)?;
        if at.q_scale != 1.0 {
            q.iter_mut().for_each(|v| *v *= at.q_scale);
        }
        let mut k = values(k)?;
        let mut v = values(v)?;
        let (rope, window) =
            if at.sliding { (&self.rope_local, Some(self.config.sliding_window)) } else { (&self.rope_global, None) };
        // Rotated here rather than in attend_batch so that the rows can be rounded after it.
        let mut row = 0;
        for item in items.iter() {
            for t in 0..item.tokens.len() {
                let (r, position) = (row + t, item.kv.len + t);
                rope.apply(&mut q[r * q_width..(r + 1) * q_width], shape.head_dim, position);
                rope.apply(&mut k[r * kv_width..(r + 1) * kv_width], shape.head_dim, position);
            }
            row += item.tokens.len();
        }
        for x in q.iter_mut().chain(k.iter_mut()).chain(v.iter_mut()) {
            *x = half::f16::from_f32(*x).to_f32();
        }
        let mut attn = vec![0f32; row * q_width];
        attend_batch_windowed(
            shape,
            &self.no_rope,
            items,
            at.index,
            &mut q,
            &mut k,
            &v,
            &mut attn,
            &self.attention_pool,
            window,
        );
        Ok(Tensor::from_vec(attn, (row, q_width), &self.device)?)
    }

    /// Runs the step and returns the logits (`wanted x vocab`, f32, on the device) of the
    /// items that asked, or None when none did.
    fn logits(&self, items: &mut [ForwardItem<'_>]) -> Result<Option<Tensor>> {
        let config = &self.config;
        let shape = config.attention_shape();
        check_items(items, config.context_length, config.vocab_size)?;
        let ids: Vec<u32> = items.iter().flat_map(|i| i.tokens.iter().copied()).collect();
        let total = ids.len();
        let ids = Tensor::from_vec(ids, total, &self.device)?;
        let mut x = (self.embedding.forward(&ids)? * (config.hidden_size as f64).sqrt())?;
        let eps = config.rms_eps as f32;
        let paged = match self.kv.mode() {
            KvMode::Paged => {
                let cache = self.kv.reserve(items)?;
                let ropes = [&self.device_ropes[0], &self.device_ropes[1]];
                let window = config.sliding_layers.iter().any(|s| *s).then_some(config.sliding_window);
                let plan = StepPlan::new(&StepPlan::items(items)?, shape, &ropes, window, &self.device)?;
                Some((plan, cache))
            }
            KvMode::Host => {
                self.kv.check_host_items(items)?;
                None
            }
        };
        // The kernels scale by 1/sqrt(head_dim); any other scale goes onto the queries.
        let q_scale = config.attention_scale * (config.head_dim as f32).sqrt();
        for (layer_index, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
            let q = self.head_norm(&layer.wq.forward(&h)?, &layer.q_norm, config.heads)?;
            let k = self.head_norm(&layer.wk.forward(&h)?, &layer.k_norm, config.kv_heads)?;
            let v = layer.wv.forward(&h)?;
            let at = LayerAttention {
                index: layer_index,
                sliding: config.sliding_layers[layer_index],
                q_scale,
                shape,
                paged: paged.as_ref().map(|(plan, cache)| (plan, cache.as_ref())),
            };
            let attn = self.attention(&at, items, &q, &k, &v)?;
            let attn = candle_nn::ops::rms_norm(&layer.wo.forward(&attn)?, &layer.post_attn_norm, eps)?;
            x = (x + attn)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
            let gate = layer.w_gate.forward(&h)?.gelu()?;
            let up = layer.w_up.forward(&h)?;
            let ffn = candle_nn::ops::rms_norm(&layer.w_down.forward(&(gate * up)?)?, &layer.post_ffn_norm, eps)?;
            x = (x + ffn)?;
        }
        // Only the last position of items that asked for logits goes through the (large) head.
        let last_rows: Vec<u32> = commit_items(items).into_iter().map(|r| r as u32).collect();
        if last_rows.is_empty() {
            return Ok(None);
        }
        let count = last_rows.len();
        let index = Tensor::from_vec(last_rows, count, &self.device)?;
        let last = x.index_select(&index, 0)?;
        let last = candle_nn::ops::rms_norm(&last, &self.final_norm, eps)?;
        let mut logits = self.output.forward(&last)?.to_dtype(DType::F32)?;
        if let Some(cap) = config.final_logit_softcapping {
            logits = ((logits / cap as f64)?.tanh()? * cap as f64)?;
        }
        Ok(Some(logits))
    }
}

impl DeviceModel for Gemma3 {
    fn model_info(&self) -> &ModelInfo {
        &self.info
    }

    fn device_kv(&self) -> &DeviceKv {
        &self.kv
    }

    fn device_kv_mut(&mut self) -> &mut DeviceKv {
        &mut self.kv
    }

    fn step_logits(&self, items: &mut [ForwardItem<'_>]) -> Result<Option<Tensor>> {
        self.logits(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sixth_layer_is_global() {
        let pattern = sliding_pattern(18, 6);
        let global: Vec<usize> = (0..18).filter(|i| !pattern[*i]).collect();
        assert_eq!(global, vec![5, 11, 17]);
        assert!(sliding_pattern(3, 0).iter().all(|s| *s));
    }
}
