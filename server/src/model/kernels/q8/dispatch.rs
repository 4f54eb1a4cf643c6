//! Picks the kernel for this CPU and splits a matmul over the compute pool; the output is
//! shared with the tasks through a `DisjointOut` view, each task owning its columns.

use super::super::disjoint::DisjointOut;
use super::super::pool::ComputePool;
#[cfg(target_arch = "x86_64")]
use super::avx512;
use super::format::{Q8Activations, Q8Matrix};
use super::portable;

/// `out[r * w.rows() + i] = sum_k x[r, k] * w[i, k]`, split over the pool by weight rows.
pub fn matmul(pool: &ComputePool, w: &Q8Matrix, x: &Q8Activations, out: &mut [f32]) {
    assert!(x.stride == w.stride && x.block == w.block, "activations were quantized for another matrix");
    assert!(out.len() >= x.rows * w.rows, "output too small");
    let rows_per_task = 32.max(w.rows / (pool.threads() * 8)).min(w.rows.max(1));
    let tasks = w.rows.div_ceil(rows_per_task);
    let out = OutColumns::new(out, w.rows);
    let vnni = has_vnni();
    pool.run(tasks, &|t| {
        let first = t * rows_per_task;
        let last = (first + rows_per_task).min(w.rows);
        #[cfg(target_arch = "x86_64")]
        if vnni {
            // SAFETY: the CPU has the features `rows` is compiled for (has_vnni), the operands
            // were checked to share stride and block above, and this task owns output columns
            // `first..last` (tasks cover disjoint row ranges).
            unsafe { avx512::rows(w, x, first, last, &out) };
            return;
        }
        let _ = vnni;
        // SAFETY: this task owns output columns `first..last` (tasks cover disjoint row ranges).
        unsafe { portable::rows(w, x, first, last, &out) };
    });
}

/// The matmul output shared by the pool's tasks: each task writes only its own columns
/// (weight rows) of every activation row.
#[derive(Clone, Copy)]
pub(super) struct OutColumns<'a> {
    out: DisjointOut<'a>,
    /// Output values per activation row (the weight matrix's rows).
    row_len: usize,
}

impl<'a> OutColumns<'a> {
    pub(super) fn new(out: &'a mut [f32], row_len: usize) -> Self {
        Self { out: DisjointOut::new(out), row_len }
    }

    /// Writes `out[r * row_len + i]`.
    ///
    /// # Safety
    /// Column `i` must belong to the calling task and no other thread may access that element
    /// while `matmul` runs.
    #[inline(always)]
    pub(super) unsafe fn write(&self, r: usize, i: usize, value: f32) {
        assert!(i < self.row_len, "output column {i} out of bounds ({})", self.row_len);
        // SAFETY: column `i` of row `r` belongs to this task (the caller's contract); the
        // view checks the index against the buffer.
        unsafe { self.out.write(r * self.row_len + i, value) }
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
