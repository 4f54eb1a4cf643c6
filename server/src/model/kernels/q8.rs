//! 8-bit weights x 8-bit activations matmul for CPUs, with an AVX-512 VNNI kernel.
//!
//! Weights and activations are quantized per block of columns (one scale per block; a block
//! is 1 to 4 runs of 64 columns, the largest that divides the width) and weights are stored
//! offset by +128 as unsigned bytes, because VNNI multiplies unsigned by signed bytes. Inside
//! a block the products accumulate in 32-bit integers, seeded with the correction for the
//! offset (-128 x the activation block's sum); only once per block is the sum scaled and
//! added in f32. Every output element is computed by one thread with one fixed sequence of
//! operations, so results do not depend on the batch it is part of or on the thread split.

use super::pool::ComputePool;

/// Columns per SIMD step: one 512-bit register of bytes.
const STEP: usize = 64;
/// Most steps per scale block allowed: larger blocks mean fewer float operations per
/// multiply-add, smaller ones less quantization error (see `--q8-block-columns`).
pub const MAX_BLOCK_STEPS: usize = 4;

fn padded(cols: usize) -> usize {
    cols.div_ceil(STEP) * STEP
}

/// Steps per block for a padded width: the largest count up to `max_steps` dividing it.
fn block_steps(stride: usize, max_steps: usize) -> usize {
    let steps = stride / STEP;
    (1..=max_steps.clamp(1, MAX_BLOCK_STEPS)).rev().find(|b| steps.is_multiple_of(*b)).unwrap_or(1)
}

/// Columns of one SIMD step; scale blocks are 1 to MAX_BLOCK_STEPS of them.
pub const STEP_COLUMNS: usize = STEP;

/// Quantizes one block symmetrically to [-127, 127]; returns its scale.
fn quantize_block(src: &[f32], dst: &mut [i8]) -> f32 {
    let amax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 {
        dst.fill(0);
        return 0.0;
    }
    let scale = amax / 127.0;
    let inv = 1.0 / scale;
    for (d, s) in dst.iter_mut().zip(src) {
        *d = (s * inv).round().clamp(-127.0, 127.0) as i8;
    }
    scale
}

/// Quantizes `rows` rows of `cols` values into blocks of `block` columns over a zero-padded
/// width `stride`; calls `emit(row, block_index, quantized, scale)` for every block.
fn quantize_rows(
    data: &[f32],
    rows: usize,
    cols: usize,
    stride: usize,
    block: usize,
    mut emit: impl FnMut(usize, usize, &[i8], f32),
) {
    let mut src = vec![0f32; block];
    let mut q = vec![0i8; block];
    for r in 0..rows {
        for b in 0..stride / block {
            let start = b * block;
            let end = (start + block).min(cols).max(start);
            src.fill(0.0);
            if start < cols {
                src[..end - start].copy_from_slice(&data[r * cols + start..r * cols + end]);
            }
            let scale = quantize_block(&src, &mut q);
            emit(r, b, &q, scale);
        }
    }
}

/// A weight matrix of `rows` outputs by `cols` inputs.
pub struct Q8Matrix {
    rows: usize,
    cols: usize,
    stride: usize,
    block: usize,
    /// Quantized weights + 128, `rows x stride` (padding holds 128, i.e. zero).
    qs: Vec<u8>,
    /// One scale per block, `rows x stride/block`.
    scales: Vec<f32>,
}

impl Q8Matrix {
    /// Quantizes row-major `rows x cols` weights with scale blocks of at most `max_block_steps`
    /// steps of 64 columns.
    pub fn from_f32(data: &[f32], rows: usize, cols: usize, max_block_steps: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "weight size");
        let stride = padded(cols);
        let block = block_steps(stride, max_block_steps) * STEP;
        let blocks = stride / block;
        let mut qs = vec![128u8; rows * stride];
        let mut scales = vec![0f32; rows * blocks];
        quantize_rows(data, rows, cols, stride, block, |r, b, q, scale| {
            scales[r * blocks + b] = scale;
            for (k, v) in q.iter().enumerate() {
                qs[r * stride + b * block + k] = (*v as i16 + 128) as u8;
            }
        });
        Self { rows, cols, stride, block, qs, scales }
    }

    /// Concatenates matrices with the same number of columns along the output dimension.
    pub fn stack(parts: &[Q8Matrix]) -> Self {
        let cols = parts[0].cols;
        assert!(parts.iter().all(|p| p.cols == cols), "stacked matrices need equal columns");
        Self {
            rows: parts.iter().map(|p| p.rows).sum(),
            cols,
            stride: parts[0].stride,
            block: parts[0].block,
            qs: parts.iter().flat_map(|p| p.qs.iter().copied()).collect(),
            scales: parts.iter().flat_map(|p| p.scales.iter().copied()).collect(),
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The f32 values of one row (embedding lookup).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let blocks = self.stride / self.block;
        for (k, o) in out.iter_mut().enumerate().take(self.cols) {
            let q = self.qs[row * self.stride + k] as i16 - 128;
            *o = q as f32 * self.scales[row * blocks + k / self.block];
        }
    }
}

/// Activations of one matmul, quantized with the block size of the weights they meet;
/// buffers are reused between calls.
#[derive(Default)]
pub struct Q8Activations {
    rows: usize,
    stride: usize,
    block: usize,
    qs: Vec<i8>,
    scales: Vec<f32>,
    /// -128 x the sum of each block's quantized values: cancels the weights' +128 offset.
    correction: Vec<i32>,
}

impl Q8Activations {
    /// Quantizes `rows x cols` values for a matmul with `w`.
    pub fn quantize_for(&mut self, w: &Q8Matrix, x: &[f32], rows: usize) {
        let (cols, stride, block) = (w.cols, w.stride, w.block);
        let blocks = stride / block;
        self.rows = rows;
        self.stride = stride;
        self.block = block;
        self.qs.clear();
        self.qs.resize(rows * stride, 0);
        self.scales.clear();
        self.scales.resize(rows * blocks, 0.0);
        self.correction.clear();
        self.correction.resize(rows * blocks, 0);
        let (qs, scales, correction) = (&mut self.qs, &mut self.scales, &mut self.correction);
        quantize_rows(x, rows, cols, stride, block, |r, b, q, scale| {
            qs[r * stride + b * block..r * stride + (b + 1) * block].copy_from_slice(q);
            scales[r * blocks + b] = scale;
            correction[r * blocks + b] = -128 * q.iter().map(|v| *v as i32).sum::<i32>();
        });
    }
}

/// `out[r * w.rows() + i] = sum_k x[r, k] * w[i, k]`, split over the pool by weight rows.
pub fn matmul(pool: &ComputePool, w: &Q8Matrix, x: &Q8Activations, out: &mut [f32]) {
    assert!(x.stride == w.stride && x.block == w.block, "activations were quantized for another matrix");
    assert!(out.len() >= x.rows * w.rows, "output too small");
    let rows_per_task = 32.max(w.rows / (pool.threads() * 8)).min(w.rows.max(1));
    let tasks = w.rows.div_ceil(rows_per_task);
    let out = OutColumns { ptr: out.as_mut_ptr(), len: out.len(), row_len: w.rows };
    let vnni = has_vnni();
    pool.run(tasks, &|t| {
        let first = t * rows_per_task;
        let last = (first + rows_per_task).min(w.rows);
        #[cfg(target_arch = "x86_64")]
        if vnni {
            // SAFETY: the CPU has the features `rows` is compiled for (has_vnni), and this task
            // owns output columns `first..last`.
            unsafe { vnni::rows(w, x, first, last, &out) };
            return;
        }
        let _ = vnni;
        // SAFETY: this task owns output columns `first..last`.
        unsafe { portable_rows(w, x, first, last, &out) };
    });
}

/// The matmul output shared by the pool's tasks. Each task writes only its own columns (weight
/// rows) of every activation row, through this raw pointer: no task ever holds a `&mut` to the
/// whole buffer, so the tasks' writes never alias a live mutable reference.
#[derive(Clone, Copy)]
struct OutColumns {
    ptr: *mut f32,
    len: usize,
    /// Output values per activation row (the weight matrix's rows).
    row_len: usize,
}

// SAFETY: tasks write disjoint elements (each its own columns) while `matmul` holds the
// exclusive borrow of the buffer and waits for every task (the pool returns only then).
unsafe impl Send for OutColumns {}
unsafe impl Sync for OutColumns {}

impl OutColumns {
    /// Writes `out[r * row_len + i]`.
    ///
    /// # Safety
    /// Column `i` must belong to the calling task and no other thread may access that element
    /// while `matmul` runs.
    #[inline(always)]
    unsafe fn write(&self, r: usize, i: usize, value: f32) {
        let index = r * self.row_len + i;
        assert!(i < self.row_len && index < self.len, "output index {index} out of bounds");
        // SAFETY: `index` is inside the buffer (checked above) and, by the caller's contract,
        // written by this task alone.
        unsafe { self.ptr.add(index).write(value) }
    }
}

fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Which kernel runs on this CPU (reported at start).
pub fn kernel_name() -> &'static str {
    if has_vnni() {
        "avx512-vnni"
    } else {
        "portable"
    }
}

/// Output columns `first..last` for every activation row, in plain Rust.
///
/// # Safety
/// Columns `first..last` of `out` must belong to the caller (see `OutColumns::write`).
unsafe fn portable_rows(w: &Q8Matrix, x: &Q8Activations, first: usize, last: usize, out: &OutColumns) {
    let blocks = w.stride / w.block;
    for i in first..last {
        let wq = &w.qs[i * w.stride..(i + 1) * w.stride];
        for r in 0..x.rows {
            let xq = &x.qs[r * x.stride..(r + 1) * x.stride];
            let mut acc = 0f32;
            for b in 0..blocks {
                let mut dot = x.correction[r * blocks + b];
                for k in b * w.block..(b + 1) * w.block {
                    dot += wq[k] as i32 * xq[k] as i32;
                }
                acc += dot as f32 * (w.scales[i * blocks + b] * x.scales[r * blocks + b]);
            }
            // SAFETY: column `i` is in `first..last`, the caller's.
            unsafe { out.write(r, i, acc) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{OutColumns, Q8Activations, Q8Matrix, STEP};

    /// Output columns `first..last` for every activation row, in tiles of two weight rows by
    /// four activation rows that share every load; edge tiles are smaller. Each element gets
    /// the same operation sequence whatever its tile, so results are batch-invariant.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn rows(w: &Q8Matrix, x: &Q8Activations, first: usize, last: usize, out: &OutColumns) {
        let mut i = first;
        // Pairs of weight rows pay off once a weight load is shared by several activation rows.
        if x.rows >= 4 {
            while i + 2 <= last {
                activation_tiles::<2>(w, x, i, out);
                i += 2;
            }
        }
        while i < last {
            activation_tiles::<1>(w, x, i, out);
            i += 1;
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn activation_tiles<const WR: usize>(w: &Q8Matrix, x: &Q8Activations, i: usize, out: &OutColumns) {
        let mut r = 0;
        while r + 4 <= x.rows {
            tile::<WR, 4>(w, x, i, r, out);
            r += 4;
        }
        while r < x.rows {
            tile::<WR, 1>(w, x, i, r, out);
            r += 1;
        }
    }

    /// Weight rows `i..i+WR` against activation rows `r..r+XR`.
    // Index loops address two register arrays at once; iterators would hide the tile shape.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn tile<const WR: usize, const XR: usize>(
        w: &Q8Matrix,
        x: &Q8Activations,
        i: usize,
        r: usize,
        out: &OutColumns,
    ) {
        let blocks = w.stride / w.block;
        let steps = w.block / STEP;
        let mut acc = [[_mm512_setzero_ps(); XR]; WR];
        for b in 0..blocks {
            let mut dots = [[_mm512_setzero_si512(); XR]; WR];
            for row in dots.iter_mut() {
                for (j, d) in row.iter_mut().enumerate() {
                    *d = seed(x, r + j, b, blocks);
                }
            }
            for s in 0..steps {
                let offset = (b * steps + s) * STEP;
                let mut wv = [_mm512_setzero_si512(); WR];
                for (k, v) in wv.iter_mut().enumerate() {
                    *v = _mm512_loadu_si512(w.qs.as_ptr().add((i + k) * w.stride + offset) as *const _);
                }
                for j in 0..XR {
                    let xv = load_x(x, r + j, offset);
                    for k in 0..WR {
                        dots[k][j] = _mm512_dpbusd_epi32(dots[k][j], wv[k], xv);
                    }
                }
            }
            for k in 0..WR {
                let w_scale = *w.scales.get_unchecked((i + k) * blocks + b);
                for j in 0..XR {
                    acc[k][j] = scale_add(acc[k][j], dots[k][j], w_scale, x, r + j, b, blocks);
                }
            }
        }
        for k in 0..WR {
            for j in 0..XR {
                // SAFETY: the caller owns weight rows (output columns) `i..i + WR`.
                out.write(r + j, i + k, _mm512_reduce_add_ps(acc[k][j]));
            }
        }
    }

    /// The block's integer accumulator, seeded with the offset correction in lane 0.
    #[inline(always)]
    unsafe fn seed(x: &Q8Activations, r: usize, b: usize, blocks: usize) -> __m512i {
        _mm512_castsi128_si512(_mm_cvtsi32_si128(*x.correction.get_unchecked(r * blocks + b)))
    }

    #[inline(always)]
    unsafe fn load_x(x: &Q8Activations, r: usize, offset: usize) -> __m512i {
        _mm512_loadu_si512(x.qs.as_ptr().add(r * x.stride + offset) as *const _)
    }

    #[inline(always)]
    unsafe fn scale_add(
        acc: __m512,
        dot: __m512i,
        w_scale: f32,
        x: &Q8Activations,
        r: usize,
        b: usize,
        blocks: usize,
    ) -> __m512 {
        let scale = _mm512_set1_ps(w_scale * *x.scales.get_unchecked(r * blocks + b));
        _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(w: &[f32], x: &[f32], rows: usize, cols: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; n * rows];
        for r in 0..n {
            for i in 0..rows {
                out[r * rows + i] = (0..cols).map(|k| w[i * cols + k] * x[r * cols + k]).sum();
            }
        }
        out
    }

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matmul_matches_f32_within_quantization_error() {
        let pool = ComputePool::new(2);
        for (rows, cols, n) in [(67, 96, 5), (130, 576, 1), (33, 40, 9), (20, 1536, 6)] {
            let w = pseudo_random(rows * cols, 1);
            let x = pseudo_random(n * cols, 2);
            let qw = Q8Matrix::from_f32(&w, rows, cols, 2);
            let mut qx = Q8Activations::default();
            qx.quantize_for(&qw, &x, n);
            let mut out = vec![0f32; n * rows];
            matmul(&pool, &qw, &qx, &mut out);
            let expected = reference(&w, &x, rows, cols, n);
            for (a, b) in out.iter().zip(&expected) {
                assert!((a - b).abs() < 0.02 * (cols as f32).sqrt(), "{a} vs {b} ({rows}x{cols}, n={n})");
            }
        }
    }

    #[test]
    fn a_rows_result_does_not_depend_on_the_batch() {
        let pool = ComputePool::new(2);
        let (rows, cols) = (70, 128);
        let w = Q8Matrix::from_f32(&pseudo_random(rows * cols, 3), rows, cols, 4);
        let x = pseudo_random(7 * cols, 4);
        let mut all = Q8Activations::default();
        all.quantize_for(&w, &x, 7);
        let mut batched = vec![0f32; 7 * rows];
        matmul(&pool, &w, &all, &mut batched);
        for r in 0..7 {
            let mut one = Q8Activations::default();
            one.quantize_for(&w, &x[r * cols..(r + 1) * cols], 1);
            let mut alone = vec![0f32; rows];
            matmul(&pool, &w, &one, &mut alone);
            assert_eq!(alone, batched[r * rows..(r + 1) * rows], "row {r}");
        }
    }

    #[test]
    fn portable_and_dispatch_paths_agree_closely() {
        let (rows, cols, n) = (40, 192, 6);
        let w = Q8Matrix::from_f32(&pseudo_random(rows * cols, 5), rows, cols, 3);
        let mut x = Q8Activations::default();
        x.quantize_for(&w, &pseudo_random(n * cols, 6), n);
        let mut portable = vec![0f32; n * rows];
        let out = OutColumns { ptr: portable.as_mut_ptr(), len: portable.len(), row_len: rows };
        // SAFETY: one caller owns every column of `portable`, which outlives the call.
        unsafe { portable_rows(&w, &x, 0, rows, &out) };
        let mut fast = vec![0f32; n * rows];
        matmul(&ComputePool::new(1), &w, &x, &mut fast);
        for (a, b) in portable.iter().zip(&fast) {
            assert!((a - b).abs() <= 1e-3 * a.abs().max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn dequantized_rows_round_trip() {
        let data = pseudo_random(3 * 50, 7);
        let m = Q8Matrix::from_f32(&data, 3, 50, 1);
        let mut row = vec![0f32; 50];
        m.dequantize_row(1, &mut row);
        for (a, b) in row.iter().zip(&data[50..100]) {
            assert!((a - b).abs() < 1.0 / 127.0 + 1e-6, "{a} vs {b}");
        }
    }
}
