//! `histogram_quantile` over classic (le-bucketed) histograms, computed as Prometheus does.
//!
//! The gate must agree with the dashboard the user looks at, so this follows Prometheus'
//! `BucketQuantile` step by step: sort by upper bound, merge equal bounds, repair counts that are
//! not monotonic (precision noise and real decreases alike), then interpolate linearly inside the
//! bucket that holds the rank. Property tests compare it with a plain reference implementation.

/// One cumulative bucket: the count of observations `<= upper_bound`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    pub upper_bound: f64,
    pub count: f64,
}

/// Relative difference below which two bucket counts are the same number (Prometheus' value).
const SMALL_DELTA_TOLERANCE: f64 = 1e-12;

/// The `q` quantile of the cumulative `buckets`; NaN when it is undefined (no `+Inf` bucket,
/// fewer than two buckets, no observations, or a NaN `q`).
pub fn histogram_quantile(q: f64, buckets: &[Bucket]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let mut buckets = buckets.to_vec();
    buckets.sort_by(|a, b| a.upper_bound.total_cmp(&b.upper_bound));
    match buckets.last() {
        Some(last) if last.upper_bound == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    let mut buckets = coalesce(buckets);
    ensure_monotonic(&mut buckets);
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let observations = buckets[buckets.len() - 1].count;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    // The first bucket (the +Inf one excluded) whose count reaches the rank.
    let finite = buckets.len() - 1;
    let b = buckets[..finite].partition_point(|bucket| bucket.count < rank);
    if b == finite {
        // The rank lies in the +Inf bucket: the largest finite bound is the best answer.
        return buckets[finite - 1].upper_bound;
    }
    if b == 0 && buckets[0].upper_bound <= 0.0 {
        return buckets[0].upper_bound;
    }
    let bucket_end = buckets[b].upper_bound;
    let mut count = buckets[b].count;
    let mut bucket_start = 0.0;
    if b > 0 {
        bucket_start = buckets[b - 1].upper_bound;
        count -= buckets[b - 1].count;
        rank -= buckets[b - 1].count;
    }
    bucket_start + (bucket_end - bucket_start) * (rank / count)
}

/// Buckets with the same upper bound (e.g. from series that differ only in other labels) add up.
fn coalesce(sorted: Vec<Bucket>) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::with_capacity(sorted.len());
    for bucket in sorted {
        match out.last_mut() {
            Some(last) if last.upper_bound == bucket.upper_bound => last.count += bucket.count,
            _ => out.push(bucket),
        }
    }
    out
}

/// Cumulative counts never decrease; scrape skew and float error can make them, so a count below
/// its predecessor is raised to it, and a count within float noise of it is set equal to it.
fn ensure_monotonic(buckets: &mut [Bucket]) {
    let Some(first) = buckets.first() else {
        return;
    };
    let mut prev = first.count;
    for bucket in buckets.iter_mut().skip(1) {
        let curr = bucket.count;
        if curr == prev {
            continue;
        }
        if almost_equal(prev, curr, SMALL_DELTA_TOLERANCE) || curr < prev {
            // `prev` stays: the smaller or noisy value is ignored.
            bucket.count = prev;
            continue;
        }
        prev = curr;
    }
}

fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < epsilon * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

/// The `q` quantile of raw observations (the probe's TTFTs), interpolated linearly between the
/// closest ranks: numpy's and R's default (type 7). `None` without observations.
pub fn sample_quantile(q: f64, values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() || q.is_nan() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let position = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (below, above) = (position.floor() as usize, position.ceil() as usize);
    Some(sorted[below] + (sorted[above] - sorted[below]) * (position - below as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server's TTFT bucket bounds (DESIGN.md: dense between 10 ms and 2.5 s).
    pub const TTFT_BOUNDS: [f64; 33] = [
        0.01,
        0.02,
        0.03,
        0.04,
        0.05,
        0.06,
        0.08,
        0.1,
        0.125,
        0.15,
        0.175,
        0.2,
        0.25,
        0.3,
        0.35,
        0.4,
        0.45,
        0.5,
        0.6,
        0.7,
        0.8,
        0.9,
        1.0,
        1.25,
        1.5,
        1.75,
        2.0,
        2.5,
        5.0,
        10.0,
        20.0,
        30.0,
        f64::INFINITY,
    ];

    fn buckets(pairs: &[(f64, f64)]) -> Vec<Bucket> {
        pairs.iter().map(|&(upper_bound, count)| Bucket { upper_bound, count }).collect()
    }

    /// An independent, deliberately plain statement of the documented semantics, for
    /// already-monotonic, distinct-bound input: walk the buckets in order until the cumulative
    /// count reaches q * total, then interpolate inside that bucket.
    fn reference(q: f64, pairs: &[(f64, f64)]) -> f64 {
        let total = pairs.last().map(|p| p.1).unwrap_or(0.0);
        if pairs.len() < 2 || total == 0.0 || pairs.last().map(|p| p.0) != Some(f64::INFINITY) {
            return f64::NAN;
        }
        let rank = q * total;
        let mut lower = 0.0;
        let mut below = 0.0;
        for (i, &(le, cumulative)) in pairs.iter().enumerate() {
            if cumulative >= rank {
                if le == f64::INFINITY {
                    return pairs[i - 1].0;
                }
                if i == 0 && le <= 0.0 {
                    return le;
                }
                return lower + (le - lower) * ((rank - below) / (cumulative - below));
            }
            lower = le;
            below = cumulative;
        }
        // The +Inf bucket holds the total, so the loop always returns.
        f64::NAN
    }

    /// SplitMix64: a small deterministic generator so failures reproduce from the printed seed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn property_matches_the_reference_on_the_server_buckets() {
        for seed in 0..5000u64 {
            let mut rng = Rng(seed);
            // Per-bucket counts, often zero, as real TTFT deltas are sparse.
            let mut cumulative = 0.0;
            let pairs: Vec<(f64, f64)> = TTFT_BOUNDS
                .iter()
                .map(|&le| {
                    if rng.below(3) == 0 {
                        cumulative += rng.below(50) as f64;
                    }
                    (le, cumulative)
                })
                .collect();
            for q in [0.5, 0.9, 0.95, 0.99, 0.0, 1.0, rng.unit()] {
                let ours = histogram_quantile(q, &buckets(&pairs));
                let expected = reference(q, &pairs);
                assert!(close(ours, expected), "seed {seed} q {q}: ours {ours}, reference {expected}, {pairs:?}");
            }
        }
    }

    #[test]
    fn property_order_and_split_series_do_not_matter() {
        for seed in 0..2000u64 {
            let mut rng = Rng(seed ^ 0xdead_beef);
            let n = 2 + rng.below(12) as usize;
            let mut bounds: Vec<f64> = (0..n - 1).map(|_| (rng.below(1000) as f64 + 1.0) / 100.0).collect();
            bounds.sort_by(f64::total_cmp);
            bounds.dedup();
            bounds.push(f64::INFINITY);
            let mut cumulative = 0.0;
            let pairs: Vec<(f64, f64)> = bounds
                .iter()
                .map(|&le| {
                    cumulative += rng.below(20) as f64;
                    (le, cumulative)
                })
                .collect();
            let expected = reference(0.95, &pairs);
            // The same histogram split over two series (two pods) and shuffled.
            let mut split = Vec::new();
            for &(le, count) in &pairs {
                let part = (count * rng.unit()).floor();
                split.push(Bucket { upper_bound: le, count: part });
                split.push(Bucket { upper_bound: le, count: count - part });
            }
            for i in (1..split.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                split.swap(i, j);
            }
            // Two series summed bucket-wise can each be non-monotonic only if the parts are; the
            // sum is the original, which is monotonic, so the answer must not change.
            let ours = histogram_quantile(0.95, &split);
            assert!(close(ours, expected), "seed {seed}: ours {ours}, reference {expected}");
        }
    }

    #[test]
    fn documented_edge_cases() {
        let inf = f64::INFINITY;
        // No +Inf bucket, one bucket, zero observations: undefined.
        assert!(histogram_quantile(0.95, &buckets(&[(0.1, 1.0), (0.2, 2.0)])).is_nan());
        assert!(histogram_quantile(0.95, &buckets(&[(inf, 5.0)])).is_nan());
        assert!(histogram_quantile(0.95, &buckets(&[(0.1, 0.0), (inf, 0.0)])).is_nan());
        assert!(histogram_quantile(f64::NAN, &buckets(&[(0.1, 1.0), (inf, 1.0)])).is_nan());
        // Out-of-range q.
        assert_eq!(histogram_quantile(-0.1, &buckets(&[(0.1, 1.0), (inf, 1.0)])), f64::NEG_INFINITY);
        assert_eq!(histogram_quantile(1.1, &buckets(&[(0.1, 1.0), (inf, 1.0)])), inf);
        // Rank in the +Inf bucket: the largest finite bound.
        assert_eq!(histogram_quantile(0.95, &buckets(&[(0.1, 1.0), (0.5, 2.0), (inf, 100.0)])), 0.5);
        // First bucket interpolates from 0.
        assert!(close(histogram_quantile(0.5, &buckets(&[(0.1, 10.0), (inf, 10.0)])), 0.05));
        // A first bucket with a non-positive bound is returned as is.
        assert_eq!(histogram_quantile(0.5, &buckets(&[(0.0, 10.0), (1.0, 10.0), (inf, 10.0)])), 0.0);
        // 100 requests, 90 under 100 ms, 10 between 100 and 125 ms: P95 half way in that bucket.
        let p95 = histogram_quantile(0.95, &buckets(&[(0.1, 90.0), (0.125, 100.0), (inf, 100.0)]));
        assert!(close(p95, 0.1125), "{p95}");
    }

    #[test]
    fn non_monotonic_counts_are_repaired_as_prometheus_does() {
        let inf = f64::INFINITY;
        // A bucket below its predecessor is raised to it.
        let skewed = buckets(&[(0.1, 10.0), (0.2, 8.0), (0.3, 12.0), (inf, 12.0)]);
        let repaired = buckets(&[(0.1, 10.0), (0.2, 10.0), (0.3, 12.0), (inf, 12.0)]);
        assert_eq!(histogram_quantile(0.9, &skewed), histogram_quantile(0.9, &repaired));
        // Float noise is ignored in either direction.
        let noisy = buckets(&[(0.1, 10.0), (0.2, 10.000_000_000_000_002), (inf, 20.0)]);
        assert_eq!(histogram_quantile(0.5, &noisy), 0.1);
    }

    /// Reference: `numpy.quantile([...], q)` (linear method) gives these.
    #[test]
    fn sample_quantile_interpolates_between_ranks() {
        let values = [0.4, 0.1, 0.3, 0.2, 0.5];
        assert_eq!(sample_quantile(0.5, &values), Some(0.3));
        let p95 = sample_quantile(0.95, &values).unwrap();
        assert!((p95 - 0.48).abs() < 1e-12, "{p95}");
        assert_eq!(sample_quantile(0.95, &[0.7]), Some(0.7));
        assert_eq!(sample_quantile(0.95, &[]), None);
    }
}
