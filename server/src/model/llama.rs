//! The llama-family decoder (Llama, SmolLM2, Mistral, Qwen2) with a batched, mixed-length forward.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use super::attention::{attend_batch, AttentionShape, RopeStyle, RopeTable};
use super::device_attention::{attend_layer, DeviceRope, StepPlan};
use super::device_kv::DeviceKv;
pub use super::device_kv::KvMode;
use super::device_model::DeviceModel;
use super::kernels::pool::ComputePool;
use super::rope_scaling::RopeScaling;
use super::{check_items, commit_items, Architecture, ForwardItem, KvLayout, ModelInfo, SequenceKv};
use crate::error::{Error, Result};

/// Hyper-parameters read from GGUF metadata or config.json.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    pub architecture: Architecture,
    pub hidden_size: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub layers: usize,
    pub rms_eps: f64,
    pub rope_base: f32,
    pub rope_dims: usize,
    pub rope_style: RopeStyle,
    pub rope_scaling: RopeScaling,
    pub context_length: usize,
    pub vocab_size: usize,
    pub stop_token_ids: Vec<u32>,
}

impl LlamaConfig {
    pub fn attention_shape(&self) -> AttentionShape {
        AttentionShape { heads: self.heads, kv_heads: self.kv_heads, head_dim: self.head_dim }
    }

    /// The rotary table both backends use: scaled frequencies for every position.
    pub fn rope_table(&self) -> Result<RopeTable> {
        RopeTable::with_scaling(
            self.rope_style,
            self.rope_dims,
            self.rope_base,
            self.context_length,
            &self.rope_scaling,
        )
    }

    /// Empty KV storage for one sequence, sized for `tokens` tokens.
    pub fn new_kv(&self, tokens: usize) -> SequenceKv {
        SequenceKv::with_capacity(self.layers, self.attention_shape().kv_width(), tokens)
    }
}

/// The f32 values of a tensor, row-major.
pub(super) fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// A projection: quantized or dense weight, optional bias (qwen2 has q/k/v biases).
pub struct Linear {
    pub weight: QMatMul,
    pub bias: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // A half-precision dense weight (`--dtype bf16|f16`) multiplies the activations in its
        // own type; the result goes back to f32, the type the rest of the layer computes in.
        let y = match &self.weight {
            QMatMul::Tensor(w) if w.dtype() != x.dtype() => {
                self.weight.forward(&x.to_dtype(w.dtype())?)?.to_dtype(DType::F32)?
            }
            _ => self.weight.forward(x)?,
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// Token embeddings, kept quantized when the file stores them so.
pub enum Embedding {
    Quantized(Arc<QTensor>),
    Dense(Tensor),
}

impl Embedding {
    pub(super) fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Embedding::Quantized(q) => q.embedding(ids)?,
            Embedding::Dense(t) => t.embedding(ids)?.to_dtype(DType::F32)?,
        })
    }
}

pub struct Layer {
    pub attn_norm: Tensor,
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    pub wo: Linear,
    pub ffn_norm: Tensor,
    pub w_gate: Linear,
    pub w_up: Linear,
    pub w_down: Linear,
}

pub struct Llama {
    pub(super) config: LlamaConfig,
    pub(super) info: ModelInfo,
    pub(super) embedding: Embedding,
    pub(super) layers: Vec<Layer>,
    pub(super) final_norm: Tensor,
    pub(super) output: Linear,
    rope: RopeTable,
    device: Device,
    /// Where keys and values live: the paged cache on the device, or host rows per sequence.
    kv: DeviceKv,
    /// The rotary table on the device (paged mode).
    device_rope: DeviceRope,
    /// Runs host attention on the engine thread alone: candle's own pool does the matmuls.
    attention_pool: ComputePool,
}

impl Llama {
    pub fn new(
        config: LlamaConfig,
        embedding: Embedding,
        layers: Vec<Layer>,
        final_norm: Tensor,
        output: Linear,
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
        let rope = config.rope_table()?;
        let device_rope = DeviceRope::new(&rope, &device)?;
        let kv = DeviceKv::new(config.layers, config.attention_shape().kv_width(), config.context_length, &device);
        let info = ModelInfo {
            architecture: config.architecture,
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
            rope,
            device,
            kv,
            device_rope,
            attention_pool: ComputePool::new(1),
        })
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

    /// The element type of the dense matrices (None when they are all quantized).
    pub fn dense_weight_dtype(&self) -> Option<DType> {
        self.layers.iter().find_map(|layer| match &layer.wq.weight {
            QMatMul::Tensor(t) | QMatMul::TensorF16(t) => Some(t.dtype()),
            QMatMul::QTensor(_) => None,
        })
    }

    /// The element type of the paged KV cache.
    pub fn kv_dtype(&self) -> DType {
        self.kv.dtype()
    }

    pub fn kv_mode(&self) -> KvMode {
        self.kv.mode()
    }

    pub fn kv_layout(&self) -> KvLayout {
        self.kv.layout()
    }

    /// The hidden state after the last layer, `rows x hidden`, of every new token: KV in
    /// host rows, attention in plain Rust.
    fn hidden_host(&self, items: &mut [ForwardItem<'_>], mut x: Tensor) -> Result<Tensor> {
        let shape = self.config.attention_shape();
        let total = x.dim(0)?;
        let eps = self.config.rms_eps as f32;
        self.kv.check_host_items(items)?;
        for (layer_index, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
            let mut q = values(&layer.wq.forward(&h)?)?;
            let mut k = values(&layer.wk.forward(&h)?)?;
            let v = values(&layer.wv.forward(&h)?)?;
            let mut attn = vec![0f32; total * shape.q_width()];
            attend_batch(shape, &self.rope, items, layer_index, &mut q, &mut k, &v, &mut attn, &self.attention_pool);
            let attn = Tensor::from_vec(attn, (total, shape.q_width()), &self.device)?;
            x = self.finish_layer(layer, x, &attn)?;
        }
        Ok(x)
    }

    /// `hidden_host` with KV in the paged cache and every op on the model's device.
    fn hidden_paged(&self, items: &mut [ForwardItem<'_>], mut x: Tensor) -> Result<Tensor> {
        let shape = self.config.attention_shape();
        let eps = self.config.rms_eps as f32;
        let cache = self.kv.reserve(items)?;
        let plan = StepPlan::new(&StepPlan::items(items)?, shape, &[&self.device_rope], None, &self.device)?;
        for (layer_index, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
            let q = layer.wq.forward(&h)?.to_dtype(DType::F32)?;
            let k = layer.wk.forward(&h)?.to_dtype(DType::F32)?;
            let v = layer.wv.forward(&h)?.to_dtype(DType::F32)?;
            let attn = attend_layer(&plan, &cache, layer_index, &q, &k, &v)?;
            x = self.finish_layer(layer, x, &attn)?;
        }
        Ok(x)
    }

    /// The output projection, residual and feed-forward block after a layer's attention.
    fn finish_layer(&self, layer: &Layer, x: Tensor, attn: &Tensor) -> Result<Tensor> {
        let eps = self.config.rms_eps as f32;
        let x = (x + layer.wo.forward(attn)?)?;
        let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
        let gate = candle_nn::ops::silu(&layer.w_gate.forward(&h)?)?;
        let up = layer.w_up.forward(&h)?;
        Ok((&x + layer.w_down.forward(&(gate * up)?)?)?)
    }

    /// Runs the step and returns the logits (`wanted x vocab`, on the device) of the items
    /// that asked, or None when none did.
    fn logits(&self, items: &mut [ForwardItem<'_>]) -> Result<Option<Tensor>> {
        check_items(items, self.config.context_length, self.config.vocab_size)?;
        let ids: Vec<u32> = items.iter().flat_map(|i| i.tokens.iter().copied()).collect();
        let total = ids.len();
        let ids = Tensor::from_vec(ids, total, &self.device)?;
        let x = self.embedding.forward(&ids)?;
        let x = match self.kv.mode() {
            KvMode::Paged => self.hidden_paged(items, x)?,
            KvMode::Host => self.hidden_host(items, x)?,
        };
        // Only the last position of items that asked for logits goes through the (large) head.
        let last_rows: Vec<u32> = commit_items(items).into_iter().map(|r| r as u32).collect();
        if last_rows.is_empty() {
            return Ok(None);
        }
        let count = last_rows.len();
        let index = Tensor::from_vec(last_rows, count, &self.device)?;
        let last = x.index_select(&index, 0)?;
        let last = candle_nn::ops::rms_norm(&last, &self.final_norm, self.config.rms_eps as f32)?;
        Ok(Some(self.output.forward(&last)?.to_dtype(DType::F32)?))
    }
}

impl Llama {
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The rotary table this model rotates queries and keys with.
    pub fn rope(&self) -> &RopeTable {
        &self.rope
    }
}

impl DeviceModel for Llama {
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
