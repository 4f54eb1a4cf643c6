//! The plain-Rust kernel: any CPU, and the reference the SIMD kernel is tested against (the
//! one Miri runs, see DEVELOPERS.md).

use super::dispatch::OutColumns;
use super::format::{Q8Activations, Q8Matrix};

/// Output columns `first..last` for every activation row, in plain Rust.
///
/// # Safety
/// Columns `first..last` of `out` must belong to the caller (see `OutColumns::write`).
pub(super) unsafe fn rows(w: &Q8Matrix, x: &Q8Activations, first: usize, last: usize, out: &OutColumns) {
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
