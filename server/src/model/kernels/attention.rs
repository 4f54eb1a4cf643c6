//! Causal attention over per-sequence f32 key/value rows, split over the compute pool by
//! (sequence, head).
//!
//! Each pool task computes one head of one sequence and writes that head's columns of that
//! sequence's rows through a `DisjointOut` view of the shared output: no task ever holds a
//! `&mut` over memory another task writes. Plain `std` only, so Miri runs it alone
//! (server/miri).

use std::cell::RefCell;

use super::disjoint::DisjointOut;
use super::pool::ComputePool;

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

/// One sequence of a batch: its `rows` new query rows start at query row `row` of the batch,
/// and its keys and values (`kv_width` per position) already end with those rows' own.
#[derive(Debug, Clone, Copy)]
pub struct SequenceSpan<'a> {
    pub row: usize,
    pub rows: usize,
    pub keys: &'a [f32],
    pub values: &'a [f32],
}

/// Per-thread scratch of one head's computation: the softmax scores and one output row.
#[derive(Default)]
pub struct Scratch {
    scores: Vec<f32>,
    row: Vec<f32>,
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

/// Causal attention of one sequence's `n` new query rows (`queries` is `n * q_width`) whose
/// keys/values are the last `n` of `keys`/`values`; writes all of `out` (same size as `queries`).
pub fn causal_attention(
    shape: AttentionShape,
    queries: &[f32],
    keys: &[f32],
    values: &[f32],
    out: &mut [f32],
    window: Option<usize>,
) {
    let (q_width, head_dim) = (shape.q_width(), shape.head_dim);
    assert_eq!(out.len(), queries.len(), "one output row per query row");
    let mut scratch = Scratch::default();
    for h in 0..shape.heads {
        attention_head(shape, h, queries, keys, values, &mut scratch, window, |t, row| {
            out[t * q_width + h * head_dim..t * q_width + (h + 1) * head_dim].copy_from_slice(row)
        });
    }
}

/// Causal attention of a batch of sequences, one pool task per (sequence, head). `queries`
/// and `out` hold the sequences' rows back to back (`spans` says where each one's are); every
/// value of `out` inside the spans' rows is written, nothing else is touched.
pub fn attend_spans(
    shape: AttentionShape,
    queries: &[f32],
    spans: &[SequenceSpan<'_>],
    out: &mut [f32],
    pool: &ComputePool,
    window: Option<usize>,
) {
    let (q_width, head_dim, heads) = (shape.q_width(), shape.head_dim, shape.heads);
    for span in spans {
        let end = (span.row + span.rows) * q_width;
        assert!(end <= queries.len() && end <= out.len(), "a span's rows lie outside the batch");
    }
    for pair in spans.windows(2) {
        assert!(pair[0].row + pair[0].rows <= pair[1].row, "spans must come in row order and share no rows");
    }
    // Every task writes through this view only; `out` itself is not touched until `run` returns.
    let out = DisjointOut::new(out);
    pool.run(spans.len() * heads, &|task| {
        let (span, h) = (spans[task / heads], task % heads);
        let queries = &queries[span.row * q_width..(span.row + span.rows) * q_width];
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            attention_head(shape, h, queries, span.keys, span.values, &mut scratch, window, |t, row| {
                let index = (span.row + t) * q_width + h * head_dim;
                // SAFETY: this task is the only one for head `h` of this span, spans cover
                // disjoint rows (checked above: in order, none overlapping the next), so `index..index + head_dim` (head `h`'s columns
                // of one of this span's rows) is written by this task alone, once.
                unsafe { out.write_slice(index, row) }
            })
        });
    });
}

thread_local! {
    /// Scratch of the thread running an attention task.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Head `h` of the attention of one sequence: hands each query row's output for that head
/// (`head_dim` values) to `write(row, values)`. With a `window` of `w`, a query at position `p`
/// sees only the keys at positions `p - w + 1 ..= p` (sliding-window layers, llama.cpp's
/// standard SWA mask).
#[allow(clippy::too_many_arguments)]
fn attention_head(
    shape: AttentionShape,
    h: usize,
    queries: &[f32],
    keys: &[f32],
    values: &[f32],
    scratch: &mut Scratch,
    window: Option<usize>,
    mut write: impl FnMut(usize, &[f32]),
) {
    let AttentionShape { heads, kv_heads, head_dim } = shape;
    let q_width = shape.q_width();
    let kv_width = shape.kv_width();
    let n = queries.len() / q_width;
    let total = keys.len() / kv_width;
    let first_position = total - n;
    let g = h / (heads / kv_heads);
    let scale = 1.0 / (head_dim as f32).sqrt();
    let Scratch { scores, row } = scratch;
    for t in 0..n {
        let visible = first_position + t + 1;
        let first = window.map_or(0, |w| visible.saturating_sub(w));
        scores.resize(visible - first, 0.0);
        let q = &queries[t * q_width + h * head_dim..t * q_width + (h + 1) * head_dim];
        let mut max = f32::NEG_INFINITY;
        for (j, s) in (first..).zip(scores.iter_mut()) {
            let k = &keys[j * kv_width + g * head_dim..j * kv_width + (g + 1) * head_dim];
            *s = dot(q, k) * scale;
            max = max.max(*s);
        }
        let mut denom = 0.0;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            denom += *s;
        }
        row.clear();
        row.resize(head_dim, 0.0);
        for (j, s) in (first..).zip(scores.iter()) {
            let w = s / denom;
            let v = &values[j * kv_width + g * head_dim..j * kv_width + (g + 1) * head_dim];
            for d in 0..head_dim {
                row[d] += w * v[d];
            }
        }
        write(t, row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1) (no RNG crate in the Miri build).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn single_key_attention_returns_its_value() {
        let shape = AttentionShape { heads: 2, kv_heads: 1, head_dim: 2 };
        let mut out = vec![0.0; 4];
        causal_attention(shape, &[0.5, 0.5, -2.0, 1.0], &[1.0, 0.0], &[3.0, -1.0], &mut out, None);
        assert_eq!(out, vec![3.0, -1.0, 3.0, -1.0]);
    }

    #[test]
    fn a_sliding_window_hides_keys_that_far_back() {
        let shape = AttentionShape { heads: 1, kv_heads: 1, head_dim: 1 };
        let mut out = vec![0.0; 3];
        // Window 2: position 2 sees positions 1 and 2 only; 0 and 1 see what causality allows.
        causal_attention(shape, &[1.0, 1.0, 1.0], &[0.0; 3], &[2.0, 4.0, 6.0], &mut out, Some(2));
        assert_eq!(out, vec![2.0, 3.0, 5.0]);
    }

    #[test]
    fn attention_is_causal_and_weights_sum_to_one() {
        let shape = AttentionShape { heads: 1, kv_heads: 1, head_dim: 1 };
        let mut out = vec![0.0; 2];
        causal_attention(shape, &[1.0, 1.0], &[0.0, 0.0], &[2.0, 4.0], &mut out, None);
        // First query sees only the first value; the second averages both (equal scores).
        assert_eq!(out, vec![2.0, 3.0]);
    }

    /// Sequences of mixed lengths (a prefill, decodes with history) and several heads per
    /// kv head, on a pool of three threads: every (sequence, head) task writes its own columns
    /// of the shared output, and the result is the sequences' attention computed one by one.
    fn pool_matches_one_by_one(window: Option<usize>) {
        let shape = AttentionShape { heads: 4, kv_heads: 2, head_dim: 3 };
        let (q_width, kv_width) = (shape.q_width(), shape.kv_width());
        // (new rows, positions already cached)
        let sequences = [(3usize, 0usize), (1, 4), (2, 1), (1, 0)];
        let caches: Vec<(Vec<f32>, Vec<f32>)> = sequences
            .iter()
            .enumerate()
            .map(|(i, &(n, cached))| {
                let total = (n + cached) * kv_width;
                (values(total, 10 + i as u32), values(total, 20 + i as u32))
            })
            .collect();
        let rows: usize = sequences.iter().map(|s| s.0).sum();
        let queries = values(rows * q_width, 7);
        let mut spans = Vec::new();
        let mut row = 0;
        for (&(n, _), (keys, vals)) in sequences.iter().zip(&caches) {
            spans.push(SequenceSpan { row, rows: n, keys, values: vals });
            row += n;
        }
        // One extra row past the batch, which must stay untouched.
        let mut out = vec![f32::NAN; (rows + 1) * q_width];
        let pool = ComputePool::new(3);
        attend_spans(shape, &queries, &spans, &mut out, &pool, window);
        for span in &spans {
            let range = span.row * q_width..(span.row + span.rows) * q_width;
            let mut want = vec![0.0; range.len()];
            causal_attention(shape, &queries[range.clone()], span.keys, span.values, &mut want, window);
            // Close, not equal: Miri perturbs `exp` by a few ulps on each call, as a libm may.
            for (i, (got, want)) in out[range].iter().zip(&want).enumerate() {
                assert!((got - want).abs() < 1e-5, "span at row {}, value {i}: {got} vs {want}", span.row);
            }
        }
        assert!(out[rows * q_width..].iter().all(|v| v.is_nan()), "a row outside the spans was written");
    }

    #[test]
    fn the_pool_gives_each_sequence_its_own_attention() {
        pool_matches_one_by_one(None);
    }

    #[test]
    fn the_pool_gives_each_sequence_its_own_windowed_attention() {
        pool_matches_one_by_one(Some(2));
    }

    #[test]
    #[should_panic(expected = "share no rows")]
    fn overlapping_spans_are_refused() {
        let shape = AttentionShape { heads: 1, kv_heads: 1, head_dim: 1 };
        let kv = [0.0, 0.0];
        let spans = [
            SequenceSpan { row: 0, rows: 2, keys: &kv, values: &kv },
            SequenceSpan { row: 1, rows: 1, keys: &kv, values: &kv },
        ];
        attend_spans(shape, &[1.0, 1.0], &spans, &mut [0.0; 2], &ComputePool::new(2), None);
    }
}
