//! 8-bit weights x 8-bit activations matmul for CPUs, with an AVX-512 VNNI kernel.
//!
//! Weights are quantized per block of 32 columns (a scale per block, like GGML's Q8_0) and
//! stored offset by +128 as unsigned bytes, because VNNI multiplies unsigned by signed bytes.
//! Activations are quantized per row and block at each matmul; the +128 offset is cancelled
//! by a per-block correction (-128 x sum of the activation block) that seeds the integer
//! accumulator. Every output element is computed by one thread with one fixed sequence of
//! operations, so results do not depend on the batch it is part of or on the thread split.

use super::pool::ComputePool;

pub const BLOCK: usize = 32;
/// Columns per SIMD step: two blocks fill one 512-bit register.
const PAIR: usize = 64;
const LANES: usize = 16;

fn padded(cols: usize) -> usize {
    cols.div_ceil(PAIR) * PAIR
}

/// Quantizes one block; returns its scale.
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

/// A weight matrix of `rows` outputs by `cols` inputs.
pub struct Q8Matrix {
    rows: usize,
    cols: usize,
    stride: usize,
    /// Quantized weights + 128, `rows x stride` (padding holds 128, i.e. zero).
    qs: Vec<u8>,
    /// One scale per block, `rows x stride/BLOCK`.
    scales: Vec<f32>,
}

impl Q8Matrix {
    pub fn from_f32(data: &[f32], rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "weight size");
        let stride = padded(cols);
        let blocks = stride / BLOCK;
        let mut qs = vec![128u8; rows * stride];
        let mut scales = vec![0f32; rows * blocks];
        let mut block = [0i8; BLOCK];
        let mut src = [0f32; BLOCK];
        for r in 0..rows {
            for b in 0..blocks {
                let start = b * BLOCK;
                if start >= cols {
                    break;
                }
                let end = (start + BLOCK).min(cols);
                src.fill(0.0);
                src[..end - start].copy_from_slice(&data[r * cols + start..r * cols + end]);
                scales[r * blocks + b] = quantize_block(&src, &mut block);
                for (k, q) in block.iter().enumerate() {
                    qs[r * stride + start + k] = (*q as i16 + 128) as u8;
                }
            }
        }
        Self { rows, cols, stride, qs, scales }
    }

    /// Concatenates matrices with the same number of columns along the output dimension.
    pub fn stack(parts: &[Q8Matrix]) -> Self {
        let cols = parts[0].cols;
        assert!(parts.iter().all(|p| p.cols == cols), "stacked matrices need equal columns");
        Self {
            rows: parts.iter().map(|p| p.rows).sum(),
            cols,
            stride: parts[0].stride,
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
        let blocks = self.stride / BLOCK;
        for (k, o) in out.iter_mut().enumerate().take(self.cols) {
            let q = self.qs[row * self.stride + k] as i16 - 128;
            *o = q as f32 * self.scales[row * blocks + k / BLOCK];
        }
    }
}

/// Activations of one matmul, quantized; buffers are reused between calls.
#[derive(Default)]
pub struct Q8Activations {
    rows: usize,
    stride: usize,
    qs: Vec<i8>,
    /// Per row and pair: the scale of each lane's block.
    scale_lanes: Vec<f32>,
    /// Per row and pair: -128 x block sum in the block's first lane, zero elsewhere.
    correction: Vec<i32>,
}

impl Q8Activations {
    pub fn quantize(&mut self, x: &[f32], rows: usize, cols: usize) {
        let stride = padded(cols);
        let pairs = stride / PAIR;
        self.rows = rows;
        self.stride = stride;
        self.qs.clear();
        self.qs.resize(rows * stride, 0);
        self.scale_lanes.clear();
        self.scale_lanes.resize(rows * pairs * LANES, 0.0);
        self.correction.clear();
        self.correction.resize(rows * pairs * LANES, 0);
        let mut src = [0f32; BLOCK];
        for r in 0..rows {
            for b in 0..stride / BLOCK {
                let start = b * BLOCK;
                if start >= cols {
                    break;
                }
                let end = (start + BLOCK).min(cols);
                src.fill(0.0);
                src[..end - start].copy_from_slice(&x[r * cols + start..r * cols + end]);
                let q = &mut self.qs[r * stride + start..r * stride + start + BLOCK];
                let scale = quantize_block(&src, q);
                let sum: i32 = q.iter().map(|v| *v as i32).sum();
                let lane0 = (r * pairs + b / 2) * LANES + (b % 2) * 8;
                self.scale_lanes[lane0..lane0 + 8].fill(scale);
                self.correction[lane0] = -128 * sum;
            }
        }
    }
}

/// `out[r * w.rows() + i] = sum_k x[r, k] * w[i, k]`, split over the pool by weight rows.
pub fn matmul(pool: &ComputePool, w: &Q8Matrix, x: &Q8Activations, out: &mut [f32]) {
    assert_eq!(x.stride, w.stride, "activation and weight widths differ");
    assert!(out.len() >= x.rows * w.rows, "output too small");
    let rows_per_task = 32.max(w.rows / (pool.threads() * 8)).min(w.rows.max(1));
    let tasks = w.rows.div_ceil(rows_per_task);
    let out_ptr = out.as_mut_ptr() as usize;
    let vnni = has_vnni();
    pool.run(tasks, &|t| {
        let first = t * rows_per_task;
        let last = (first + rows_per_task).min(w.rows);
        // SAFETY: tasks write disjoint output rows (columns i of every activation row r).
        let out = unsafe { std::slice::from_raw_parts_mut(out_ptr as *mut f32, x.rows * w.rows) };
        #[cfg(target_arch = "x86_64")]
        if vnni {
            unsafe { vnni::rows(w, x, first, last, out) };
            return;
        }
        let _ = vnni;
        portable_rows(w, x, first, last, out);
    });
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

/// Whether the fast kernel runs on this CPU (reported at start).
pub fn kernel_name() -> &'static str {
    if has_vnni() {
        "avx512-vnni"
    } else {
        "portable"
    }
}

fn portable_rows(w: &Q8Matrix, x: &Q8Activations, first: usize, last: usize, out: &mut [f32]) {
    let pairs = w.stride / PAIR;
    let blocks = w.stride / BLOCK;
    for i in first..last {
        let wq = &w.qs[i * w.stride..(i + 1) * w.stride];
        let ws = &w.scales[i * blocks..(i + 1) * blocks];
        for r in 0..x.rows {
            let xq = &x.qs[r * x.stride..(r + 1) * x.stride];
            let mut acc = 0f32;
            for p in 0..pairs {
                let lanes = (r * pairs + p) * LANES;
                for half in 0..2 {
                    let b = 2 * p + half;
                    let mut dot = x.correction[lanes + half * 8];
                    for k in b * BLOCK..(b + 1) * BLOCK {
                        dot += wq[k] as i32 * xq[k] as i32;
                    }
                    acc += dot as f32 * ws[b] * x.scale_lanes[lanes + half * 8];
                }
            }
            out[r * w.rows + i] = acc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{Q8Activations, Q8Matrix, BLOCK, LANES, PAIR};

    /// Rows `first..last` of the output for every activation row, four activation rows at a
    /// time sharing each weight load; the per-element operation sequence is the same for the
    /// tail rows, so a row's result does not depend on its neighbours.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn rows(w: &Q8Matrix, x: &Q8Activations, first: usize, last: usize, out: &mut [f32]) {
        let pairs = w.stride / PAIR;
        let blocks = w.stride / BLOCK;
        let expand = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
        for i in first..last {
            let wq = w.qs.as_ptr().add(i * w.stride);
            let ws = w.scales.as_ptr().add(i * blocks);
            let mut r = 0;
            while r + 4 <= x.rows {
                let mut acc = [_mm512_setzero_ps(); 4];
                for p in 0..pairs {
                    let wv = _mm512_loadu_si512(wq.add(p * PAIR) as *const _);
                    let sw = _mm512_permutexvar_ps(
                        expand,
                        _mm512_castps128_ps512(_mm_castsi128_ps(_mm_loadl_epi64(ws.add(2 * p) as *const _))),
                    );
                    for (j, a) in acc.iter_mut().enumerate() {
                        *a = step(*a, wv, sw, x, r + j, p, pairs);
                    }
                }
                for (j, a) in acc.iter().enumerate() {
                    out[(r + j) * w.rows + i] = _mm512_reduce_add_ps(*a);
                }
                r += 4;
            }
            while r < x.rows {
                let mut acc = _mm512_setzero_ps();
                for p in 0..pairs {
                    let wv = _mm512_loadu_si512(wq.add(p * PAIR) as *const _);
                    let sw = _mm512_permutexvar_ps(
                        expand,
                        _mm512_castps128_ps512(_mm_castsi128_ps(_mm_loadl_epi64(ws.add(2 * p) as *const _))),
                    );
                    acc = step(acc, wv, sw, x, r, p, pairs);
                }
                out[r * w.rows + i] = _mm512_reduce_add_ps(acc);
                r += 1;
            }
        }
    }

    #[inline(always)]
    unsafe fn step(
        acc: __m512,
        wv: __m512i,
        sw: __m512,
        x: &Q8Activations,
        r: usize,
        p: usize,
        pairs: usize,
    ) -> __m512 {
        let lanes = (r * pairs + p) * LANES;
        let xv = _mm512_loadu_si512(x.qs.as_ptr().add(r * x.stride + p * PAIR) as *const _);
        let corr = _mm512_loadu_si512(x.correction.as_ptr().add(lanes) as *const _);
        let dot = _mm512_dpbusd_epi32(corr, wv, xv);
        let scale = _mm512_mul_ps(sw, _mm512_loadu_ps(x.scale_lanes.as_ptr().add(lanes)));
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
        for (rows, cols, n) in [(67, 96, 5), (130, 576, 1), (33, 40, 9)] {
            let w = pseudo_random(rows * cols, 1);
            let x = pseudo_random(n * cols, 2);
            let qw = Q8Matrix::from_f32(&w, rows, cols);
            let mut qx = Q8Activations::default();
            qx.quantize(&x, n, cols);
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
        let w = Q8Matrix::from_f32(&pseudo_random(rows * cols, 3), rows, cols);
        let x = pseudo_random(7 * cols, 4);
        let mut all = Q8Activations::default();
        all.quantize(&x, 7, cols);
        let mut batched = vec![0f32; 7 * rows];
        matmul(&pool, &w, &all, &mut batched);
        for r in 0..7 {
            let mut one = Q8Activations::default();
            one.quantize(&x[r * cols..(r + 1) * cols], 1, cols);
            let mut alone = vec![0f32; rows];
            matmul(&pool, &w, &one, &mut alone);
            assert_eq!(alone, batched[r * rows..(r + 1) * rows], "row {r}");
        }
    }

    #[test]
    fn portable_and_dispatch_paths_agree_closely() {
        let (rows, cols, n) = (40, 192, 6);
        let w = Q8Matrix::from_f32(&pseudo_random(rows * cols, 5), rows, cols);
        let mut x = Q8Activations::default();
        x.quantize(&pseudo_random(n * cols, 6), n, cols);
        let mut portable = vec![0f32; n * rows];
        portable_rows(&w, &x, 0, rows, &mut portable);
        let mut fast = vec![0f32; n * rows];
        matmul(&ComputePool::new(1), &w, &x, &mut fast);
        for (a, b) in portable.iter().zip(&fast) {
            assert!((a - b).abs() <= 1e-3 * a.abs().max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn dequantized_rows_round_trip() {
        let data = pseudo_random(3 * 50, 7);
        let m = Q8Matrix::from_f32(&data, 3, 50);
        let mut row = vec![0f32; 50];
        m.dequantize_row(1, &mut row);
        for (a, b) in row.iter().zip(&data[50..100]) {
            assert!((a - b).abs() < 1.0 / 127.0 + 1e-6);
        }
    }
}
