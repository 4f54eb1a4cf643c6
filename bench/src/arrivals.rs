//! Poisson arrival process for the open loop: exponential inter-arrival gaps.

use rand::Rng;

/// One exponential gap (seconds) for a Poisson process of `rate` events per second,
/// by inversion: `-ln(U) / rate` with `U` uniform in (0, 1].
pub fn exponential_gap<R: Rng + ?Sized>(rng: &mut R, rate: f64) -> f64 {
    assert!(rate > 0.0, "rate must be positive");
    // random::<f64>() is in [0, 1); 1 - u is in (0, 1], so ln never sees 0.
    let u: f64 = 1.0 - rng.random::<f64>();
    -u.ln() / rate
}

/// Absolute arrival offsets (seconds from the start) of `n` requests at `rate` per second.
/// The first request arrives after one gap, like every other.
pub fn arrival_offsets<R: Rng + ?Sized>(rng: &mut R, rate: f64, n: usize) -> Vec<f64> {
    let mut t = 0.0;
    (0..n)
        .map(|_| {
            t += exponential_gap(rng, rate);
            t
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn mean_gap_is_one_over_rate() {
        let mut rng = StdRng::seed_from_u64(42);
        for rate in [0.5, 1.0, 8.0] {
            let n = 200_000;
            let sum: f64 = (0..n).map(|_| exponential_gap(&mut rng, rate)).sum();
            let mean = sum / n as f64;
            let expected = 1.0 / rate;
            assert!((mean - expected).abs() < 0.02 * expected, "rate {rate}: mean {mean}");
        }
    }

    #[test]
    fn gaps_are_positive_and_offsets_increase() {
        let mut rng = StdRng::seed_from_u64(7);
        let offs = arrival_offsets(&mut rng, 3.0, 1000);
        assert_eq!(offs.len(), 1000);
        assert!(offs[0] > 0.0);
        assert!(offs.windows(2).all(|w| w[1] > w[0]));
        // 1000 arrivals at 3/s take about 333 s.
        let last = offs[999];
        assert!((last - 333.3).abs() < 40.0, "last arrival at {last}");
    }

    #[test]
    fn exponential_variance_matches() {
        // For an exponential distribution the standard deviation equals the mean.
        let mut rng = StdRng::seed_from_u64(3);
        let gaps: Vec<f64> = (0..100_000).map(|_| exponential_gap(&mut rng, 2.0)).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        assert!((var.sqrt() - 0.5).abs() < 0.02, "sd {}", var.sqrt());
    }
}
