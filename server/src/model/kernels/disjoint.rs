//! One output buffer written by many pool tasks at once, each to elements no other task
//! writes. Several `&mut` slices over one buffer would be undefined behaviour even with
//! disjoint writes, so the tasks share this raw view instead, and each write states which
//! elements its caller owns.

use std::marker::PhantomData;

/// A shared, write-only view of `&'a mut [f32]` for tasks that own disjoint elements of it.
#[derive(Clone, Copy)]
pub struct DisjointOut<'a> {
    ptr: *mut f32,
    len: usize,
    /// The exclusive borrow the view stands for: the buffer outlives every task's write.
    _buffer: PhantomData<&'a mut [f32]>,
}

// SAFETY: the view only ever writes elements that one task owns (the `write` contracts), and
// it holds the buffer's exclusive borrow for 'a, so nothing else reads or writes the buffer
// while tasks on other threads use it.
unsafe impl Send for DisjointOut<'_> {}
// SAFETY: as for Send: shared use only ever writes elements owned by one task each.
unsafe impl Sync for DisjointOut<'_> {}

impl<'a> DisjointOut<'a> {
    pub fn new(out: &'a mut [f32]) -> Self {
        Self { ptr: out.as_mut_ptr(), len: out.len(), _buffer: PhantomData }
    }

    /// Writes `out[index]`.
    ///
    /// # Safety
    /// Element `index` must belong to the calling task: no other thread accesses it while the
    /// view lives.
    #[inline(always)]
    pub unsafe fn write(&self, index: usize, value: f32) {
        assert!(index < self.len, "output index {index} out of bounds ({})", self.len);
        // SAFETY: `index` is inside the buffer (checked above) and, by the caller's contract,
        // written by this task alone.
        unsafe { self.ptr.add(index).write(value) }
    }

    /// Copies `values` to `out[index..index + values.len()]`.
    ///
    /// # Safety
    /// Those elements must belong to the calling task: no other thread accesses them while the
    /// view lives.
    #[inline]
    pub unsafe fn write_slice(&self, index: usize, values: &[f32]) {
        assert!(
            index.checked_add(values.len()).is_some_and(|end| end <= self.len),
            "output range {index}+{} out of bounds ({})",
            values.len(),
            self.len
        );
        // SAFETY: the range is inside the buffer (checked above), `values` cannot be the
        // output (the view holds its exclusive borrow), and by the caller's contract no one
        // else touches the range.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), self.ptr.add(index), values.len()) }
    }
}

#[cfg(test)]
mod tests {
    use super::super::pool::ComputePool;
    use super::*;

    #[test]
    fn tasks_fill_their_own_elements_of_one_buffer() {
        let pool = ComputePool::new(4);
        let mut buffer = vec![0.0f32; 64];
        let out = DisjointOut::new(&mut buffer);
        pool.run(8, &|task| {
            let values: Vec<f32> = (0..8).map(|i| (task * 8 + i) as f32).collect();
            // SAFETY: task `t` owns elements 8t..8t+8, which no other task writes.
            unsafe { out.write_slice(task * 8, &values) }
        });
        assert_eq!(buffer, (0..64).map(|i| i as f32).collect::<Vec<_>>());
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn a_write_past_the_end_panics_instead_of_corrupting_memory() {
        let mut buffer = vec![0.0f32; 4];
        let out = DisjointOut::new(&mut buffer);
        // SAFETY: one thread; the write is refused by the bounds check.
        unsafe { out.write(4, 1.0) }
    }
}
