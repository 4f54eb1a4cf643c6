//! 8-bit weights x 8-bit activations matmul for CPUs, with an AVX-512 VNNI kernel.
//!
//! Weights and activations are quantized per block of columns (one scale per block; a block
//! is 1 to 4 runs of 64 columns, the largest that divides the width) and weights are stored
//! offset by +128 as unsigned bytes, because VNNI multiplies unsigned by signed bytes. Inside
//! a block the products accumulate in 32-bit integers, seeded with the correction for the
//! offset (-128 x the activation block's sum); only once per block is the sum scaled and
//! added in f32. Every output element is computed by one thread with one fixed sequence of
//! operations, so results do not depend on the batch it is part of or on the thread split.
//!
//! Split as candle splits its quantized kernels: `format` (the layout and quantization),
//! `dispatch` (kernel choice, the pool split, the shared output), `portable` (plain Rust) and
//! `avx512` (the VNNI kernel).

#[cfg(target_arch = "x86_64")]
mod avx512;
mod dispatch;
mod format;
mod portable;

pub use dispatch::{kernel_name, matmul};
pub use format::{Q8Activations, Q8Matrix, MAX_BLOCK_STEPS, STEP_COLUMNS};

#[cfg(test)]
mod tests {
    use super::super::pool::ComputePool;
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
        // Miri interprets every multiply-add: there, the two shapes that still cover several
        // tasks, several blocks and a padded width.
        let shapes: &[(usize, usize, usize)] = if cfg!(miri) {
            &[(67, 96, 5), (33, 40, 9)]
        } else {
            &[(67, 96, 5), (130, 576, 1), (33, 40, 9), (20, 1536, 6)]
        };
        for &(rows, cols, n) in shapes {
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
        let out = dispatch::OutColumns::new(&mut portable, rows);
        // SAFETY: one caller owns every column of `portable`, which outlives the call.
        unsafe { portable::rows(&w, &x, 0, rows, &out) };
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
