//! The llama decoder on our own CPU kernels: 8-bit weights, fused projections, no per-op
//! tensor dispatch. Built from the candle-loaded model, so every loader feeds it.

use std::cell::RefCell;

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};

use super::attention::{attend_batch, RopeTable};
use super::kernels::pool::ComputePool;
use super::kernels::q8::{matmul, Q8Activations, Q8Matrix, STEP_COLUMNS};
use super::llama::{values, Embedding, Linear, Llama, LlamaConfig};
use super::{check_items, commit_items, CausalLm, ForwardItem, ModelInfo, SequenceKv};
use crate::error::{Error, Result};

struct NativeLayer {
    attn_norm: Vec<f32>,
    /// q, k and v stacked: one matmul per layer for all three.
    qkv: Q8Matrix,
    qkv_bias: Option<Vec<f32>>,
    wo: Q8Matrix,
    ffn_norm: Vec<f32>,
    /// gate and up stacked.
    gate_up: Q8Matrix,
    down: Q8Matrix,
}

/// Buffers reused across steps.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    ffn: Vec<f32>,
    act: Q8Activations,
}

pub struct NativeLlama {
    config: LlamaConfig,
    info: ModelInfo,
    embedding: Q8Matrix,
    /// None when the head is tied to the embedding.
    output: Option<Q8Matrix>,
    layers: Vec<NativeLayer>,
    final_norm: Vec<f32>,
    rope: RopeTable,
    pool: ComputePool,
    scratch: RefCell<Scratch>,
}

fn dense(weight: &QMatMul) -> Result<Tensor> {
    Ok(match weight {
        QMatMul::QTensor(q) => q.dequantize(&Device::Cpu)?,
        QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.to_dtype(DType::F32)?,
    })
}

fn quantized(t: &Tensor, block_steps: usize) -> Result<Q8Matrix> {
    let (rows, cols) = t.dims2()?;
    Ok(Q8Matrix::from_f32(&values(t)?, rows, cols, block_steps))
}

fn stacked(parts: &[&Linear], block_steps: usize) -> Result<Q8Matrix> {
    let parts = parts.iter().map(|l| quantized(&dense(&l.weight)?, block_steps)).collect::<Result<Vec<_>>>()?;
    Ok(Q8Matrix::stack(&parts))
}

fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let n = weight.len();
    for (row, dst) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let mean = row.iter().map(|v| v * v).sum::<f32>() / n as f32;
        let inv = 1.0 / (mean + eps).sqrt();
        for ((d, v), w) in dst.iter_mut().zip(row).zip(weight) {
            *d = v * inv * w;
        }
    }
}

impl NativeLlama {
    /// Repacks a loaded model's weights for the CPU kernels, computing with `threads` threads;
    /// `block_columns` (a multiple of 64) sets the 8-bit scale block.
    pub fn from_llama(model: Llama, threads: usize, block_columns: usize) -> Result<Self> {
        let b = (block_columns / STEP_COLUMNS).max(1);
        let config = model.config.clone();
        let embedding = match &model.embedding {
            Embedding::Quantized(q) => quantized(&q.dequantize(&Device::Cpu)?, b)?,
            Embedding::Dense(t) => quantized(t, b)?,
        };
        let tied = matches!((&model.output.weight, &model.embedding),
            (QMatMul::QTensor(a), Embedding::Quantized(b)) if std::sync::Arc::ptr_eq(a, b));
        let output = if tied { None } else { Some(quantized(&dense(&model.output.weight)?, b)?) };
        let mut layers = Vec::with_capacity(model.layers.len());
        for layer in &model.layers {
            let qkv_bias = match (&layer.wq.bias, &layer.wk.bias, &layer.wv.bias) {
                (Some(q), Some(k), Some(v)) => Some([values(q)?, values(k)?, values(v)?].concat()),
                (None, None, None) => None,
                _ => return Err(Error::ModelLoad("q/k/v biases must all be present or all absent".into())),
            };
            layers.push(NativeLayer {
                attn_norm: values(&layer.attn_norm)?,
                qkv: stacked(&[&layer.wq, &layer.wk, &layer.wv], b)?,
                qkv_bias,
                wo: stacked(&[&layer.wo], b)?,
                ffn_norm: values(&layer.ffn_norm)?,
                gate_up: stacked(&[&layer.w_gate, &layer.w_up], b)?,
                down: stacked(&[&layer.w_down], b)?,
            });
        }
        let final_norm = values(&model.final_norm)?;
        let rope = config.rope_table()?;
        Ok(Self {
            info: model.info.clone(),
            config,
            embedding,
            output,
            layers,
            final_norm,
            rope,
            pool: ComputePool::new(threads),
            scratch: RefCell::new(Scratch::default()),
        })
    }
}

impl NativeLlama {
    /// The rotary table this model rotates queries and keys with.
    pub fn rope(&self) -> &RopeTable {
        &self.rope
    }
}

impl CausalLm for NativeLlama {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn new_kv(&self, tokens: usize) -> SequenceKv {
        self.config.new_kv(tokens)
    }

    fn forward(&self, items: &mut [ForwardItem<'_>]) -> Result<Vec<Vec<f32>>> {
        let shape = self.config.attention_shape();
        let (q_width, kv_width) = (shape.q_width(), shape.kv_width());
        let hidden = self.config.hidden_size;
        let eps = self.config.rms_eps as f32;
        let total = check_items(items, self.config.context_length, self.embedding.rows())?;
        let mut guard = self.scratch.borrow_mut();
        let s = &mut *guard;
        s.x.resize(total * hidden, 0.0);
        s.h.resize(total * hidden, 0.0);
        let mut row = 0;
        for item in items.iter() {
            for &token in item.tokens {
                self.embedding.dequantize_row(token as usize, &mut s.x[row * hidden..(row + 1) * hidden]);
                row += 1;
            }
        }
        let qkv_width = q_width + 2 * kv_width;
        for (layer_index, layer) in self.layers.iter().enumerate() {
            rms_norm(&s.x, &layer.attn_norm, eps, &mut s.h);
            s.act.quantize_for(&layer.qkv, &s.h, total);
            s.qkv.resize(total * qkv_width, 0.0);
            matmul(&self.pool, &layer.qkv, &s.act, &mut s.qkv);
            s.q.resize(total * q_width, 0.0);
            s.k.resize(total * kv_width, 0.0);
            s.v.resize(total * kv_width, 0.0);
            for t in 0..total {
                let src = &mut s.qkv[t * qkv_width..(t + 1) * qkv_width];
                if let Some(bias) = &layer.qkv_bias {
                    src.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                }
                s.q[t * q_width..(t + 1) * q_width].copy_from_slice(&src[..q_width]);
                s.k[t * kv_width..(t + 1) * kv_width].copy_from_slice(&src[q_width..q_width + kv_width]);
                s.v[t * kv_width..(t + 1) * kv_width].copy_from_slice(&src[q_width + kv_width..]);
            }
            s.attn.resize(total * q_width, 0.0);
            attend_batch(shape, &self.rope, items, layer_index, &mut s.q, &mut s.k, &s.v, &mut s.attn, &self.pool);
            s.act.quantize_for(&layer.wo, &s.attn, total);
            s.proj.resize(total * hidden, 0.0);
            matmul(&self.pool, &layer.wo, &s.act, &mut s.proj);
            s.x.iter_mut().zip(&s.proj).for_each(|(x, p)| *x += p);

            rms_norm(&s.x, &layer.ffn_norm, eps, &mut s.h);
            s.act.quantize_for(&layer.gate_up, &s.h, total);
            let ffn = layer.down.cols();
            s.ffn.resize(total * 2 * ffn, 0.0);
            matmul(&self.pool, &layer.gate_up, &s.act, &mut s.ffn);
            // silu(gate) * up, packed into the first `ffn` columns of each row.
            for t in 0..total {
                let row = &mut s.ffn[t * 2 * ffn..(t + 1) * 2 * ffn];
                let (gate, up) = row.split_at_mut(ffn);
                for (g, u) in gate.iter_mut().zip(up.iter()) {
                    *g = *g / (1.0 + (-*g).exp()) * u;
                }
            }
            for t in 0..total {
                s.ffn.copy_within(t * 2 * ffn..t * 2 * ffn + ffn, t * ffn);
            }
            s.act.quantize_for(&layer.down, &s.ffn[..total * ffn], total);
            matmul(&self.pool, &layer.down, &s.act, &mut s.proj);
            s.x.iter_mut().zip(&s.proj).for_each(|(x, p)| *x += p);
        }
        let mut last = Vec::new();
        for row in commit_items(items) {
            last.extend_from_slice(&s.x[row * hidden..(row + 1) * hidden]);
        }
        let count = last.len() / hidden;
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut normed = vec![0f32; last.len()];
        rms_norm(&last, &self.final_norm, eps, &mut normed);
        let head = self.output.as_ref().unwrap_or(&self.embedding);
        s.act.quantize_for(head, &normed, count);
        let vocab = head.rows();
        let mut logits = vec![0f32; count * vocab];
        matmul(&self.pool, head, &s.act, &mut logits);
        Ok(logits.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }
}
