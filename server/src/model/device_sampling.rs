//! Sampling on the model's device: temperature, top-k and top-p as tensor ops over a step's
//! logits, driven by one uniform number per row that the request's own (seeded) generator
//! draws on the host. Only the chosen token ids come back.
//!
//! There is no sort. candle has no top-k op, and its CUDA arg-sort keeps a whole row in
//! shared memory (next power of two x 4 bytes: 128 KiB for a 32k vocabulary, 256 KiB for
//! 49k, over the 48 KiB a kernel gets without opting in). So:
//! - the k-th largest logit and the top-p probability threshold are found by bisection on
//!   the value, each probe a compare and a row reduction; values closer to the threshold
//!   than the bisection resolves (range / 2^32) count as ties and are kept;
//! - the token is drawn by inverse CDF over the kept tokens in vocabulary order (the host
//!   sampler walks them by probability instead), with two levels of prefix sums (blocks of
//!   `CDF_BLOCK` tokens, then inside the chosen block) so no vocabulary-sized triangle is built.
//!
//! Same logits and same uniform give the same token on one device, so a seeded request
//! reproduces itself. The host sampler draws from the same distribution, but not token for
//! token: its CDF runs in another order.

use candle_core::{DType, Device, Tensor, D};

use super::StepOutput;
use crate::error::{Error, Result};

/// Tokens per block of the two-level inverse CDF (a CDF_BLOCK x CDF_BLOCK triangle).
const CDF_BLOCK: usize = 256;

/// Bisection rounds for a threshold: 2^-32 of the value range, below f32 resolution for
/// logits of ordinary size.
const BISECTION_ROUNDS: usize = 32;

/// What a step needs of one item's logits row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RowRequest {
    /// The most likely token only.
    Greedy,
    /// A token drawn on the device.
    Sample(SampleDraw),
    /// The whole row on the host (for whatever only the host sampler implements); the
    /// greedy token comes with it.
    Logits,
}

/// The parameters of one draw: the request's knobs and its next uniform number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleDraw {
    /// Above zero (a greedy request is `RowRequest::Greedy`).
    pub temperature: f32,
    /// 0 keeps every token.
    pub top_k: usize,
    /// Within (0, 1]; 1 keeps every token.
    pub top_p: f32,
    /// In [0, 1): where in the kept tokens' CDF the draw lands.
    pub uniform: f32,
}

/// One token per row of `logits` (`rows x vocab`, f32, on its device): the argmax for
/// `Greedy` and `Logits` rows, a draw for `Sample` rows. One copy to the host.
pub fn choose_tokens(logits: &Tensor, requests: &[RowRequest]) -> Result<Vec<u32>> {
    let rows = logits.dim(0)?;
    if requests.len() != rows {
        return Err(Error::Internal(format!("{} row requests for {rows} logits rows", requests.len())));
    }
    let greedy = logits.argmax(D::Minus1)?;
    let sampled: Vec<(u32, SampleDraw)> = requests
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            RowRequest::Sample(draw) => Some((i as u32, *draw)),
            _ => None,
        })
        .collect();
    if sampled.is_empty() {
        return Ok(greedy.to_vec1::<u32>()?);
    }
    let count = sampled.len();
    let index = Tensor::from_vec(sampled.iter().map(|(i, _)| *i).collect(), count, logits.device())?;
    let draws: Vec<SampleDraw> = sampled.iter().map(|(_, d)| *d).collect();
    let drawn = sample_rows(&logits.index_select(&index, 0)?, &draws)?;
    // Greedy ids then drawn ids in one tensor: a single device-to-host copy.
    let both = Tensor::cat(&[&greedy, &drawn], 0)?.to_vec1::<u32>()?;
    let (mut tokens, drawn) = (both[..rows].to_vec(), &both[rows..]);
    for ((row, _), token) in sampled.iter().zip(drawn) {
        tokens[*row as usize] = *token;
    }
    Ok(tokens)
}

/// What a device-resident step gives back for its logits (`rows x vocab`, f32, on the device):
/// the chosen token of every row, and the whole row only where `rows` asks for `Logits`.
pub fn step_outputs(logits: &Tensor, rows: &[RowRequest]) -> Result<Vec<StepOutput>> {
    let tokens = choose_tokens(logits, rows)?;
    let wanted: Vec<u32> = (0..rows.len() as u32).filter(|i| rows[*i as usize] == RowRequest::Logits).collect();
    let mut copied = if wanted.is_empty() {
        Vec::new()
    } else {
        let count = wanted.len();
        logits.index_select(&Tensor::from_vec(wanted, count, logits.device())?, 0)?.to_vec2::<f32>()?
    }
    .into_iter();
    Ok(tokens
        .into_iter()
        .zip(rows)
        .map(|(token, request)| StepOutput {
            token,
            logits: if *request == RowRequest::Logits { copied.next() } else { None },
        })
        .collect())
}

/// Draws one token per row of `logits` (`rows x vocab`, f32) with that row's `draws` entry;
/// the result (`rows`, u32) stays on the device.
pub fn sample_rows(logits: &Tensor, draws: &[SampleDraw]) -> Result<Tensor> {
    let device = logits.device();
    let (rows, vocab) = logits.dims2()?;
    if draws.len() != rows || rows == 0 {
        return Err(Error::Internal(format!("{} draws for {rows} logits rows", draws.len())));
    }
    let column = |values: Vec<f32>| Tensor::from_vec(values, (rows, 1), device);
    let temperature = column(draws.iter().map(|d| d.temperature.max(f32::MIN_POSITIVE)).collect())?;
    let scaled = logits.broadcast_div(&temperature)?;
    let scaled = if draws.iter().any(|d| d.top_k > 0 && d.top_k < vocab) {
        let k = column(draws.iter().map(|d| if d.top_k == 0 { vocab } else { d.top_k.min(vocab) } as f32).collect())?;
        let kth = kth_largest(&scaled, &k)?;
        keep_at_least(&scaled, &kth, f32::NEG_INFINITY)?
    } else {
        scaled
    };
    let max = scaled.max_keepdim(D::Minus1)?;
    let weights = scaled.broadcast_sub(&max)?.exp()?;
    let weights = if draws.iter().any(|d| d.top_p < 1.0) {
        let total = weights.sum_keepdim(D::Minus1)?;
        let probs = weights.broadcast_div(&total)?;
        let top_p = draws.iter().map(|d| d.top_p.min(1.0)).collect::<Vec<f32>>();
        let threshold = nucleus_threshold(&probs, &top_p)?;
        keep_at_least(&probs, &threshold, 0.0)?
    } else {
        weights
    };
    let uniform = column(draws.iter().map(|d| d.uniform.clamp(0.0, 1.0)).collect())?;
    inverse_cdf(&weights, &uniform, vocab, device)
}

/// `values` where they are at least the row's `threshold` (`rows x 1`), `fill` elsewhere.
fn keep_at_least(values: &Tensor, threshold: &Tensor, fill: f32) -> Result<Tensor> {
    let keep = values.broadcast_ge(threshold)?;
    let fill = Tensor::full(fill, values.shape(), values.device())?;
    Ok(keep.where_cond(values, &fill)?)
}

/// The `k`-th largest value of each row (`k`: `rows x 1`, f32, 1..=vocab): the largest `t`
/// with at least `k` values >= `t`, by bisection between the row's minimum and maximum + 1.
fn kth_largest(values: &Tensor, k: &Tensor) -> Result<Tensor> {
    let mut lo = values.min_keepdim(D::Minus1)?;
    let mut hi = (values.max_keepdim(D::Minus1)? + 1.0)?;
    for _ in 0..BISECTION_ROUNDS {
        let mid = ((&lo + &hi)? * 0.5)?;
        let count = values.broadcast_ge(&mid)?.to_dtype(DType::F32)?.sum_keepdim(D::Minus1)?;
        let enough = count.ge(k)?;
        lo = enough.where_cond(&mid, &lo)?;
        hi = enough.where_cond(&hi, &mid)?;
    }
    Ok(lo)
}

/// The top-p cut of each row of `probs` (`rows x vocab`, rows summing to 1): the largest `t`
/// whose tokens with probability >= `t` hold at least `top_p` of the mass, i.e. the smallest
/// most-likely set reaching `top_p`. Rows with `top_p` 1 keep everything (threshold 0, so
/// rounding in the sum never drops a token).
fn nucleus_threshold(probs: &Tensor, top_p: &[f32]) -> Result<Tensor> {
    let device = probs.device();
    let rows = top_p.len();
    let target = Tensor::from_vec(top_p.to_vec(), (rows, 1), device)?;
    let mut lo = Tensor::zeros((rows, 1), DType::F32, device)?;
    // No probability reaches 2: the mass at or above it is 0, below any top_p.
    let mut hi = Tensor::full(2f32, (rows, 1), device)?;
    for _ in 0..BISECTION_ROUNDS {
        let mid = ((&lo + &hi)? * 0.5)?;
        let kept = probs.broadcast_ge(&mid)?.to_dtype(DType::F32)?;
        let mass = (probs * kept)?.sum_keepdim(D::Minus1)?;
        let enough = mass.ge(&target)?;
        lo = enough.where_cond(&mid, &lo)?;
        hi = enough.where_cond(&hi, &mid)?;
    }
    let everything = target.ge(1f64)?;
    Ok(everything.where_cond(&Tensor::zeros((rows, 1), DType::F32, device)?, &lo)?)
}

/// The first token whose cumulative weight exceeds `uniform` x the row's total (`weights`:
/// `rows x vocab`, >= 0, some positive in every row). A `uniform` near 1 can round past the
/// last positive weight, so the pick is clamped to it.
fn inverse_cdf(weights: &Tensor, uniform: &Tensor, vocab: usize, device: &Device) -> Result<Tensor> {
    let rows = weights.dim(0)?;
    let blocks = vocab.div_ceil(CDF_BLOCK);
    let padded = if blocks * CDF_BLOCK > vocab {
        let pad = Tensor::zeros((rows, blocks * CDF_BLOCK - vocab), DType::F32, device)?;
        Tensor::cat(&[weights, &pad], 1)?
    } else {
        weights.clone()
    };
    let by_block = padded.reshape((rows, blocks, CDF_BLOCK))?;
    let block_sums = by_block.sum(2)?;
    let block_cdf = block_sums.matmul(&Tensor::triu2(blocks, DType::F32, device)?)?;
    let total = block_cdf.narrow(1, blocks - 1, 1)?;
    let target = (uniform * total)?;
    let block = first_above(&block_cdf, &target, &block_sums)?;
    // Where the chosen block starts in the CDF, and the rest of the target inside it.
    let before = (block_cdf.gather(&block, 1)? - block_sums.gather(&block, 1)?)?;
    let rest = (target - before)?.relu()?;
    let index = block.unsqueeze(2)?.broadcast_as((rows, 1, CDF_BLOCK))?.contiguous()?;
    let inside = by_block.gather(&index, 1)?.squeeze(1)?;
    let inside_cdf = inside.matmul(&Tensor::triu2(CDF_BLOCK, DType::F32, device)?)?;
    let offset = first_above(&inside_cdf, &rest, &inside)?;
    let token = ((block.to_dtype(DType::F32)? * CDF_BLOCK as f64)? + offset.to_dtype(DType::F32)?)?;
    Ok(token.squeeze(1)?.to_dtype(DType::U32)?)
}

/// Per row (`cdf`: `rows x n`, non-decreasing), the first column whose value exceeds
/// `target` (`rows x 1`, >= 0), never past the last column of positive `weights`; `rows x 1`, u32.
fn first_above(cdf: &Tensor, target: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let n = cdf.dim(1)?;
    let at_or_below = cdf.broadcast_le(target)?.to_dtype(DType::F32)?.sum_keepdim(1)?;
    let columns = Tensor::arange(0f32, n as f32, cdf.device())?.unsqueeze(0)?;
    let positive = weights.gt(0f64)?.to_dtype(DType::F32)?;
    let last_positive = positive.broadcast_mul(&columns)?.max_keepdim(1)?;
    Ok(at_or_below.minimum(&last_positive)?.to_dtype(DType::U32)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(temperature: f32, top_k: usize, top_p: f32, uniform: f32) -> SampleDraw {
        SampleDraw { temperature, top_k, top_p, uniform }
    }

    fn sample_one(logits: &[f32], d: SampleDraw) -> u32 {
        let t = Tensor::from_slice(logits, (1, logits.len()), &Device::Cpu).unwrap();
        sample_rows(&t, &[d]).unwrap().to_vec1::<u32>().unwrap()[0]
    }

    #[test]
    fn the_uniform_walks_the_cdf_in_vocabulary_order() {
        // Weights 1, 0, 3 (after exp): token 0 below 1/4, token 2 above; token 1 never.
        let logits = [0.0, f32::NEG_INFINITY, 3f32.ln()];
        assert_eq!(sample_one(&logits, draw(1.0, 0, 1.0, 0.0)), 0);
        assert_eq!(sample_one(&logits, draw(1.0, 0, 1.0, 0.2)), 0);
        assert_eq!(sample_one(&logits, draw(1.0, 0, 1.0, 0.3)), 2);
        assert_eq!(sample_one(&logits, draw(1.0, 0, 1.0, 0.999_999_9)), 2);
    }

    #[test]
    fn the_cdf_crosses_block_boundaries_of_a_padded_vocabulary() {
        // 600 tokens (3 blocks, the last padded); equal weights only at 10, 300 and 599.
        let mut logits = vec![f32::NEG_INFINITY; 600];
        for i in [10, 300, 599] {
            logits[i] = 1.0;
        }
        let picks: Vec<u32> =
            [0.1, 0.4, 0.7, 0.99].iter().map(|u| sample_one(&logits, draw(1.0, 0, 1.0, *u))).collect();
        assert_eq!(picks, vec![10, 300, 599, 599]);
    }

    #[test]
    fn top_k_and_top_p_cut_before_the_draw() {
        let logits = [1.0, 5.0, 4.0, 0.5, 3.0];
        for u in [0.0, 0.3, 0.6, 0.9, 0.999] {
            assert!([1, 2].contains(&sample_one(&logits, draw(1.0, 2, 1.0, u))), "top_k 2 at {u}");
            // Token 1 alone holds over 60% of the mass.
            assert_eq!(sample_one(&logits, draw(1.0, 0, 0.6, u)), 1, "top_p 0.6 at {u}");
            assert_eq!(sample_one(&logits, draw(1.0, 1, 1.0, u)), 1, "top_k 1 at {u}");
        }
    }

    #[test]
    fn greedy_and_logits_rows_get_the_argmax_and_sample_rows_a_draw() {
        let logits = Tensor::new(&[[0.0f32, 2.0, 1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 9.0]], &Device::Cpu).unwrap();
        let requests = [RowRequest::Greedy, RowRequest::Sample(draw(1.0, 0, 1.0, 0.0)), RowRequest::Logits];
        // Row 1 at uniform 0 takes the first token with weight: token 0.
        assert_eq!(choose_tokens(&logits, &requests).unwrap(), vec![1, 0, 2]);
        assert!(choose_tokens(&logits, &requests[..2]).is_err(), "a request per row");
    }
}
