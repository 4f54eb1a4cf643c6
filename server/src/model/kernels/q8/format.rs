//! The 8-bit format: weights and activations quantized per block of columns, padded to whole
//! SIMD steps, weights offset by +128 (see the module doc of `q8`).

/// Columns per SIMD step: one 512-bit register of bytes.
pub(super) const STEP: usize = 64;
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
    pub(super) rows: usize,
    pub(super) cols: usize,
    /// Columns padded to a whole number of steps.
    pub(super) stride: usize,
    /// Columns per scale block.
    pub(super) block: usize,
    /// Quantized weights + 128, `rows x stride` (padding holds 128, i.e. zero).
    pub(super) qs: Vec<u8>,
    /// One scale per block, `rows x stride/block`.
    pub(super) scales: Vec<f32>,
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
    pub(super) rows: usize,
    pub(super) stride: usize,
    pub(super) block: usize,
    pub(super) qs: Vec<i8>,
    pub(super) scales: Vec<f32>,
    /// -128 x the sum of each block's quantized values: cancels the weights' +128 offset.
    pub(super) correction: Vec<i32>,
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
