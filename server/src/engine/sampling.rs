//! Token sampling: greedy, temperature, top-k and top-p, reproducible with a seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::model::{RowRequest, SampleDraw};

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_p: f32,
    /// 0 disables top-k.
    pub top_k: usize,
    pub seed: Option<u64>,
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    scratch: Vec<(u32, f32)>,
}

/// Below this temperature sampling is greedy (OpenAI's temperature 0).
const GREEDY_TEMPERATURE: f32 = 1e-5;

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_rng(&mut rand::rng()),
        };
        Self { params, rng, scratch: Vec::new() }
    }

    /// Whether every token is the argmax (temperature 0 or top_k 1).
    pub fn is_greedy(&self) -> bool {
        self.params.temperature < GREEDY_TEMPERATURE || self.params.top_k == 1
    }

    /// What the next step needs of this sequence's logits row. A backend that samples on its
    /// device gets the draw (with the next number of this request's generator, as `sample`
    /// would take it); any other gets asked for the row, which `sample` then takes.
    pub fn row_request(&mut self, device_samples: bool) -> RowRequest {
        if self.is_greedy() {
            RowRequest::Greedy
        } else if device_samples {
            RowRequest::Sample(SampleDraw {
                temperature: self.params.temperature,
                top_k: self.params.top_k,
                top_p: self.params.top_p,
                uniform: self.rng.random::<f32>(),
            })
        } else {
            RowRequest::Logits
        }
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.is_greedy() {
            return argmax(logits);
        }
        let inv_t = 1.0 / self.params.temperature;
        let candidates = &mut self.scratch;
        candidates.clear();
        candidates
            .extend(logits.iter().enumerate().filter(|(_, l)| l.is_finite()).map(|(i, &l)| (i as u32, l * inv_t)));
        if candidates.is_empty() {
            return argmax(logits);
        }
        let by_logit_desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if self.params.top_k > 0 && self.params.top_k < candidates.len() {
            candidates.select_nth_unstable_by(self.params.top_k - 1, by_logit_desc);
            candidates.truncate(self.params.top_k);
        }
        candidates.sort_unstable_by(by_logit_desc);
        let max = candidates[0].1;
        let mut total = 0.0f32;
        for c in candidates.iter_mut() {
            c.1 = (c.1 - max).exp();
            total += c.1;
        }
        // Keep the smallest prefix whose probability mass reaches top_p.
        if self.params.top_p < 1.0 {
            let mut mass = 0.0;
            let mut keep = candidates.len();
            for (i, c) in candidates.iter().enumerate() {
                mass += c.1 / total;
                if mass >= self.params.top_p {
                    keep = i + 1;
                    break;
                }
            }
            candidates.truncate(keep);
            total = candidates.iter().map(|c| c.1).sum();
        }
        let mut target = self.rng.random::<f32>() * total;
        for c in candidates.iter() {
            target -= c.1;
            if target <= 0.0 {
                return c.0;
            }
        }
        candidates[candidates.len() - 1].0
    }
}

/// Index of the largest logit; the lowest index wins ties.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_p: f32, top_k: usize, seed: Option<u64>) -> SamplingParams {
        SamplingParams { temperature, top_p, top_k, seed }
    }

    #[test]
    fn temperature_zero_is_greedy() {
        let mut s = Sampler::new(params(0.0, 1.0, 0, None));
        assert_eq!(s.sample(&[0.1, 3.0, 2.9]), 1);
    }

    #[test]
    fn same_seed_gives_same_tokens() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let draw = |seed| {
            let mut s = Sampler::new(params(1.0, 1.0, 0, Some(seed)));
            (0..50).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_k_and_top_p_restrict_the_candidates() {
        let logits = [5.0, 4.9, 0.0, -1.0];
        let mut k = Sampler::new(params(1.0, 1.0, 2, Some(1)));
        let mut p = Sampler::new(params(1.0, 0.5, 0, Some(1)));
        for _ in 0..200 {
            assert!(k.sample(&logits) < 2);
            // The top token alone holds over half of the mass.
            assert_eq!(p.sample(&logits), 0);
        }
    }
}
