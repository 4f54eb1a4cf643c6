//! Rotary embeddings and causal attention over per-sequence KV rows, in plain Rust.
//!
//! Every sequence in a batch has its own length and position, so attention runs per
//! sequence on f32 slices (split over the compute pool by sequence and head); the big projections stay batched matmuls in candle. Working on
//! slices avoids per-op dispatch for hundreds of tiny tensors per step.

pub use super::kernels::attention::AttentionShape;
use super::kernels::attention::{self as kernel, SequenceSpan};
use super::kernels::pool::ComputePool;
use super::rope_scaling::RopeScaling;
use crate::error::Result;

/// How a rotary pair is laid out inside a head: GGUF llama weights are permuted for
/// interleaved pairs, HF checkpoints and qwen2 use the two halves of the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    Interleaved,
    Halves,
}

/// Precomputed cos/sin for every position up to the context length.
pub struct RopeTable {
    style: RopeStyle,
    rotary_dims: usize,
    inv_freqs: Vec<f64>,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// An unscaled table.
    pub fn new(style: RopeStyle, rotary_dims: usize, freq_base: f32, max_positions: usize) -> Self {
        Self::with_scaling(style, rotary_dims, freq_base, max_positions, &RopeScaling::None)
            .expect("unscaled rotary frequencies always exist")
    }

    /// A table whose frequencies are scaled as `scaling` says (fails only when per-pair
    /// factors do not match the rotary dimensions).
    pub fn with_scaling(
        style: RopeStyle,
        rotary_dims: usize,
        freq_base: f32,
        max_positions: usize,
        scaling: &RopeScaling,
    ) -> Result<Self> {
        let inv_freqs = scaling.inverse_frequencies(rotary_dims, freq_base)?;
        let half = inv_freqs.len();
        let mut cos = Vec::with_capacity(max_positions * half);
        let mut sin = Vec::with_capacity(max_positions * half);
        for pos in 0..max_positions {
            for inv_freq in &inv_freqs {
                let angle = pos as f64 * inv_freq;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Ok(Self { style, rotary_dims, inv_freqs, cos, sin })
    }

    /// The inverse frequency (radians per position) of each rotary pair.
    pub fn inverse_frequencies(&self) -> &[f64] {
        &self.inv_freqs
    }

    pub fn style(&self) -> RopeStyle {
        self.style
    }

    /// Dimensions of a head that rotate (the first ones; the rest pass through).
    pub fn rotary_dims(&self) -> usize {
        self.rotary_dims
    }

    /// cos and sin of every (position, pair), `max_positions x rotary_dims / 2`, row-major.
    pub fn tables(&self) -> (&[f32], &[f32]) {
        (&self.cos, &self.sin)
    }

    pub fn max_positions(&self) -> usize {
        self.cos.len() / (self.rotary_dims / 2).max(1)
    }

    /// Rotates every head of one token row (`heads * head_dim` values) in place.
    pub fn apply(&self, row: &mut [f32], head_dim: usize, position: usize) {
        let half = self.rotary_dims / 2;
        let cos = &self.cos[position * half..(position + 1) * half];
        let sin = &self.sin[position * half..(position + 1) * half];
        for head in row.chunks_exact_mut(head_dim) {
            for i in 0..half {
                let (a, b) = match self.style {
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                    RopeStyle::Halves => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos[i] - x1 * sin[i];
                head[b] = x0 * sin[i] + x1 * cos[i];
            }
        }
    }
}

/// Keys and values of one layer for one sequence: `len` rows of `kv_heads * head_dim`.
#[derive(Default)]
pub struct LayerKv {
    pub keys: Vec<f32>,
    pub values: Vec<f32>,
}

/// Causal attention of `n` new query rows whose keys/values are already the last `n` rows
/// of `kv`. `queries` is `n * q_width`; the result is written to `out` (same size).
pub fn causal_attention(shape: AttentionShape, queries: &[f32], kv: &LayerKv, out: &mut [f32]) {
    kernel::causal_attention(shape, queries, &kv.keys, &kv.values, out, None);
}

/// The attention of one layer for a batch: rotates each item's new queries and keys at
/// its own positions, appends keys/values to its cache, then attends causally, one pool
/// task per (item, head). `q`, `k`, `v` and `out` hold the items' token rows back to back.
#[allow(clippy::too_many_arguments)]
pub fn attend_batch(
    shape: AttentionShape,
    rope: &RopeTable,
    items: &mut [super::ForwardItem<'_>],
    layer: usize,
    q: &mut [f32],
    k: &mut [f32],
    v: &[f32],
    out: &mut [f32],
    pool: &ComputePool,
) {
    attend_batch_windowed(shape, rope, items, layer, q, k, v, out, pool, None)
}

/// `attend_batch` with an optional sliding window (see `kernels::attention`); every item's
/// queries are masked at their own positions, so a window never depends on the batch.
#[allow(clippy::too_many_arguments)]
pub fn attend_batch_windowed(
    shape: AttentionShape,
    rope: &RopeTable,
    items: &mut [super::ForwardItem<'_>],
    layer: usize,
    q: &mut [f32],
    k: &mut [f32],
    v: &[f32],
    out: &mut [f32],
    pool: &ComputePool,
    window: Option<usize>,
) {
    let (q_width, kv_width, head_dim) = (shape.q_width(), shape.kv_width(), shape.head_dim);
    let mut spans = Vec::with_capacity(items.len());
    let mut row = 0;
    for item in items.iter_mut() {
        let n = item.tokens.len();
        let start = item.kv.len;
        for t in 0..n {
            let r = row + t;
            rope.apply(&mut q[r * q_width..(r + 1) * q_width], head_dim, start + t);
            rope.apply(&mut k[r * kv_width..(r + 1) * kv_width], head_dim, start + t);
        }
        let cache = &mut item.kv.layers[layer];
        cache.keys.extend_from_slice(&k[row * kv_width..(row + n) * kv_width]);
        cache.values.extend_from_slice(&v[row * kv_width..(row + n) * kv_width]);
        spans.push((row, n));
        row += n;
    }
    let spans: Vec<SequenceSpan<'_>> = items
        .iter()
        .zip(spans)
        .map(|(item, (row, rows))| {
            let cache = &item.kv.layers[layer];
            SequenceSpan { row, rows, keys: &cache.keys, values: &cache.values }
        })
        .collect();
    kernel::attend_spans(shape, q, &spans, &mut out[..row * q_width], pool, window);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_at_position_zero_is_identity() {
        let table = RopeTable::new(RopeStyle::Interleaved, 4, 10000.0, 8);
        let mut row = vec![1.0, 2.0, 3.0, 4.0];
        table.apply(&mut row, 4, 0);
        assert_eq!(row, vec![1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn rope_styles_rotate_different_pairs() {
        let inter = RopeTable::new(RopeStyle::Interleaved, 4, 1.0, 4);
        let halves = RopeTable::new(RopeStyle::Halves, 4, 1.0, 4);
        // With base 1 every frequency is 1, so position 1 rotates each pair by 1 radian.
        let mut a = vec![1.0, 0.0, 0.0, 0.0];
        inter.apply(&mut a, 4, 1);
        assert!((a[0] - 1f32.cos()).abs() < 1e-6 && (a[1] - 1f32.sin()).abs() < 1e-6);
        let mut b = vec![1.0, 0.0, 0.0, 0.0];
        halves.apply(&mut b, 4, 1);
        assert!((b[0] - 1f32.cos()).abs() < 1e-6 && (b[2] - 1f32.sin()).abs() < 1e-6 && b[1] == 0.0);
    }
}
