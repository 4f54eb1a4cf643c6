//! The AVX-512 VNNI kernel (x86_64 with avx512f, avx512bw and avx512vnni; chosen at run time).

//!
//! Every function here is `unsafe`: it may run only on a CPU with those features (checked by
//! `dispatch::has_vnni` before any call), with `w` and `x` of the same stride and block (checked
//! by `dispatch::matmul`), and the caller must own output columns `first..last`. Under those
//! conditions every load below stays inside its buffer: row `i + k < w.rows` (`last <= w.rows`)
//! and row `r + j < x.rows`, offsets `< stride`, scale indices `< rows x blocks`.

use std::arch::x86_64::*;

use super::dispatch::OutColumns;
use super::format::{Q8Activations, Q8Matrix, STEP};

/// Output columns `first..last` for every activation row, in tiles of two weight rows by
/// four activation rows that share every load; edge tiles are smaller. Each element gets
/// the same operation sequence whatever its tile, so results are batch-invariant.
///
/// # Safety
/// See the module doc: VNNI present, matching operands, `first <= last <= w.rows`, and columns
/// `first..last` of `out` owned by the caller.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn rows(w: &Q8Matrix, x: &Q8Activations, first: usize, last: usize, out: &OutColumns) {
    let mut i = first;
    // Pairs of weight rows pay off once a weight load is shared by several activation rows.
    if x.rows >= 4 {
        while i + 2 <= last {
            // SAFETY: rows `i..i + 2` are inside `first..last`, the caller's.
            activation_tiles::<2>(w, x, i, out);
            i += 2;
        }
    }
    while i < last {
        // SAFETY: row `i` is inside `first..last`, the caller's.
        activation_tiles::<1>(w, x, i, out);
        i += 1;
    }
}

/// Weight rows `i..i + WR` against every activation row.
///
/// # Safety
/// As `rows`, for weight rows `i..i + WR` (all `< w.rows`, owned by the caller).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn activation_tiles<const WR: usize>(w: &Q8Matrix, x: &Q8Activations, i: usize, out: &OutColumns) {
    let mut r = 0;
    while r + 4 <= x.rows {
        // SAFETY: activation rows `r..r + 4` exist (loop bound); weight rows as the caller's.
        tile::<WR, 4>(w, x, i, r, out);
        r += 4;
    }
    while r < x.rows {
        // SAFETY: activation row `r` exists (loop bound); weight rows as the caller's.
        tile::<WR, 1>(w, x, i, r, out);
        r += 1;
    }
}

/// Weight rows `i..i+WR` against activation rows `r..r+XR`.
///
/// # Safety
/// As `activation_tiles`, with activation rows `r..r + XR` all `< x.rows`.
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
                // SAFETY: `r + j < x.rows` (the caller's rows) and `b < blocks`.
                *d = seed(x, r + j, b, blocks);
            }
        }
        for s in 0..steps {
            let offset = (b * steps + s) * STEP;
            let mut wv = [_mm512_setzero_si512(); WR];
            for (k, v) in wv.iter_mut().enumerate() {
                // SAFETY: row `i + k < w.rows` and `offset + STEP <= stride`: 64 bytes inside `qs`.
                *v = _mm512_loadu_si512(w.qs.as_ptr().add((i + k) * w.stride + offset) as *const _);
            }
            for j in 0..XR {
                // SAFETY: `r + j < x.rows` and `offset + STEP <= stride` (the step loop's bound).
                let xv = load_x(x, r + j, offset);
                for k in 0..WR {
                    dots[k][j] = _mm512_dpbusd_epi32(dots[k][j], wv[k], xv);
                }
            }
        }
        for k in 0..WR {
            let w_scale = *w.scales.get_unchecked((i + k) * blocks + b);
            for j in 0..XR {
                // SAFETY: `r + j < x.rows` and `b < blocks`.
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
///
/// # Safety
/// `r < x.rows` and `b < blocks`: the index is inside `correction`.
#[inline(always)]
unsafe fn seed(x: &Q8Activations, r: usize, b: usize, blocks: usize) -> __m512i {
    _mm512_castsi128_si512(_mm_cvtsi32_si128(*x.correction.get_unchecked(r * blocks + b)))
}

/// 64 activation bytes of row `r` from `offset`.
///
/// # Safety
/// `r < x.rows` and `offset + STEP <= x.stride`: the load stays inside `qs`.
#[inline(always)]
unsafe fn load_x(x: &Q8Activations, r: usize, offset: usize) -> __m512i {
    _mm512_loadu_si512(x.qs.as_ptr().add(r * x.stride + offset) as *const _)
}

/// `acc + dot x (w_scale x the activation block's scale)`, in f32.
///
/// # Safety
/// `r < x.rows` and `b < blocks`: the index is inside `scales`.
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
