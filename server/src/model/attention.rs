//! Rotary embeddings and causal attention over per-sequence KV rows, in plain Rust.
//!
//! Every sequence in a batch has its own length and position, so attention runs per
//! sequence on f32 slices (split over the compute pool by sequence and head); the big projections stay batched matmuls in candle. Working on
//! slices avoids per-op dispatch for hundreds of tiny tensors per step.

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

/// Shapes of the attention of one model.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    pub fn q_width(&self) -> usize {
        self.heads * self.head_dim
    }
    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler keep this in SIMD registers.
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        let (x, y) = (&a[c * 8..c * 8 + 8], &b[c * 8..c * 8 + 8]);
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut sum = acc.iter().sum::<f32>();
    for i in chunks * 8..a.len() {
        sum += a[i] * b[i];
    }
    sum
}

/// Causal attention of `n` new query rows whose keys/values are already the last `n` rows
/// of `kv`. `queries` is `n * q_width`; the result is written to `out` (same size).
pub fn causal_attention(shape: AttentionShape, queries: &[f32], kv: &LayerKv, out: &mut [f32], scores: &mut Vec<f32>) {
    out.fill(0.0);
    for h in 0..shape.heads {
        attention_head(shape, h, queries, kv, out, scores, None);
    }
}

/// Head `h` of `causal_attention`; writes only that head's columns of `out`, which the
/// caller has zeroed. With a `window` of `w`, a query at position `p` sees only the keys at
/// positions `p - w + 1 ..= p` (sliding-window layers, llama.cpp's standard SWA mask).
fn attention_head(
    shape: AttentionShape,
    h: usize,
    queries: &[f32],
    kv: &LayerKv,
    out: &mut [f32],
    scores: &mut Vec<f32>,
    window: Option<usize>,
) {
    let AttentionShape { heads, kv_heads, head_dim } = shape;
    let q_width = shape.q_width();
    let kv_width = shape.kv_width();
    let n = queries.len() / q_width;
    let total = kv.keys.len() / kv_width;
    let first_position = total - n;
    let g = h / (heads / kv_heads);
    let scale = 1.0 / (head_dim as f32).sqrt();
    for t in 0..n {
        let visible = first_position + t + 1;
        let first = window.map_or(0, |w| visible.saturating_sub(w));
        scores.resize(visible - first, 0.0);
        let q = &queries[t * q_width + h * head_dim..t * q_width + (h + 1) * head_dim];
        let mut max = f32::NEG_INFINITY;
        for (j, s) in (first..).zip(scores.iter_mut()) {
            let k = &kv.keys[j * kv_width + g * head_dim..j * kv_width + (g + 1) * head_dim];
            *s = dot(q, k) * scale;
            max = max.max(*s);
        }
        let mut denom = 0.0;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            denom += *s;
        }
        let o = &mut out[t * q_width + h * head_dim..t * q_width + (h + 1) * head_dim];
        for (j, s) in (first..).zip(scores.iter()) {
            let w = s / denom;
            let v = &kv.values[j * kv_width + g * head_dim..j * kv_width + (g + 1) * head_dim];
            for d in 0..head_dim {
                o[d] += w * v[d];
            }
        }
    }
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

/// `attend_batch` with an optional sliding window (see `attention_head`); every item's
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
    out[..row * q_width].fill(0.0);
    let caches: Vec<&LayerKv> = items.iter().map(|item| &item.kv.layers[layer]).collect();
    let q: &[f32] = q;
    let out_ptr = out.as_mut_ptr() as usize;
    let out_len = out.len();
    pool.run(spans.len() * shape.heads, &|task| {
        let (item, head) = (task / shape.heads, task % shape.heads);
        let (row, n) = spans[item];
        // SAFETY: each task writes only its own head's columns of its own item's rows.
        let out = unsafe { std::slice::from_raw_parts_mut(out_ptr as *mut f32, out_len) };
        SCORES.with(|scores| {
            attention_head(
                shape,
                head,
                &q[row * q_width..(row + n) * q_width],
                caches[item],
                &mut out[row * q_width..(row + n) * q_width],
                &mut scores.borrow_mut(),
                window,
            )
        });
    });
}

thread_local! {
    /// Softmax scratch of the thread running an attention task.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
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

    #[test]
    fn single_key_attention_returns_its_value() {
        let shape = AttentionShape { heads: 2, kv_heads: 1, head_dim: 2 };
        let kv = LayerKv { keys: vec![1.0, 0.0], values: vec![3.0, -1.0] };
        let mut out = vec![0.0; 4];
        causal_attention(shape, &[0.5, 0.5, -2.0, 1.0], &kv, &mut out, &mut Vec::new());
        assert_eq!(out, vec![3.0, -1.0, 3.0, -1.0]);
    }

    #[test]
    fn a_sliding_window_hides_keys_that_far_back() {
        let shape = AttentionShape { heads: 1, kv_heads: 1, head_dim: 1 };
        let kv = LayerKv { keys: vec![0.0; 3], values: vec![2.0, 4.0, 6.0] };
        let mut out = vec![0.0; 3];
        // Window 2: position 2 sees positions 1 and 2 only; 0 and 1 see what causality allows.
        attention_head(shape, 0, &[1.0, 1.0, 1.0], &kv, &mut out, &mut Vec::new(), Some(2));
        assert_eq!(out, vec![2.0, 3.0, 5.0]);
    }

    #[test]
    fn attention_is_causal_and_weights_sum_to_one() {
        let shape = AttentionShape { heads: 1, kv_heads: 1, head_dim: 1 };
        let kv = LayerKv { keys: vec![0.0, 0.0], values: vec![2.0, 4.0] };
        let mut out = vec![0.0; 2];
        causal_attention(shape, &[1.0, 1.0], &kv, &mut out, &mut Vec::new());
        // First query sees only the first value; the second averages both (equal scores).
        assert_eq!(out, vec![2.0, 3.0]);
    }
}
