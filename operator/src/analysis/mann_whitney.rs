//! The one-sided Mann-Whitney U test (Wilcoxon rank-sum), as Kayenta uses it to compare a canary
//! with its baseline: is the candidate's TTFT stochastically greater than the baseline's?
//!
//! Normal approximation with tie correction and continuity correction, the same statistic and
//! p-value as `scipy.stats.mannwhitneyu(x, y, alternative="greater", use_continuity=True,
//! method="asymptotic")`. The exact distribution is not needed: the gate only runs the test with
//! at least `minRequests` samples per side (20 by default), where the approximation is good.

/// The result of testing `x` greater than `y`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MannWhitney {
    /// U of the first sample: the number of (x, y) pairs with x > y, ties counting one half.
    pub u: f64,
    /// Standardised U (continuity-corrected); NaN when every value is tied.
    pub z: f64,
    /// One-sided p-value of "x is stochastically greater than y"; 1 when every value is tied
    /// (no evidence either way).
    pub p_greater: f64,
}

/// Tests whether `x` is stochastically greater than `y`; `None` when either is empty.
/// NaN values are not ranked (a TTFT is never NaN; this only keeps the ranks sound).
pub fn greater(x: &[f64], y: &[f64]) -> Option<MannWhitney> {
    let x: Vec<f64> = x.iter().copied().filter(|v| !v.is_nan()).collect();
    let y: Vec<f64> = y.iter().copied().filter(|v| !v.is_nan()).collect();
    if x.is_empty() || y.is_empty() {
        return None;
    }
    let (n1, n2) = (x.len() as f64, y.len() as f64);
    let n = n1 + n2;
    // Pool both samples, remembering which is which, and rank them (1-based, ties averaged).
    let mut pooled: Vec<(f64, bool)> = x.iter().map(|&v| (v, true)).chain(y.iter().map(|&v| (v, false))).collect();
    pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum_x = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < pooled.len() {
        let mut j = i;
        while j + 1 < pooled.len() && pooled[j + 1].0 == pooled[i].0 {
            j += 1;
        }
        // Positions i..=j share the average of ranks i+1..=j+1.
        let tied = (j - i + 1) as f64;
        let rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_x += rank * pooled[i..=j].iter().filter(|(_, from_x)| *from_x).count() as f64;
        tie_term += tied * tied * tied - tied;
        i = j + 1;
    }
    let u = rank_sum_x - n1 * (n1 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let variance = n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if variance <= 0.0 || !variance.is_finite() {
        return Some(MannWhitney { u, z: f64::NAN, p_greater: 1.0 });
    }
    // Continuity correction: U moves in steps of 1/2, the normal is continuous.
    let z = (u - mean - 0.5) / variance.sqrt();
    Some(MannWhitney { u, z, p_greater: normal_survival(z) })
}

/// P(Z > z) for a standard normal Z.
fn normal_survival(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function, with a relative error below 1.2e-7 everywhere (Numerical
/// Recipes' Chebyshev fit `erfcc`): far finer than any confidence level the spec can ask for.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let ans = t * poly.exp();
    if x >= 0.0 {
        ans
    } else {
        2.0 - ans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, relative: f64) -> bool {
        (got - want).abs() <= relative * want.abs().max(1e-300)
    }

    /// Reference values from scipy 1.17.1 (Python 3), computed when this was written:
    /// `mannwhitneyu(x, y, alternative="greater", use_continuity=True, method="asymptotic")`,
    /// printed with `repr(float(r.statistic)), repr(float(r.pvalue))`.
    #[test]
    fn agrees_with_scipy() {
        // (name, x, y, U of x, p-value)
        type Case<'a> = (&'a str, &'a [f64], &'a [f64], f64, f64);
        let cases: [Case; 4] = [
            (
                "distinct",
                &[0.31, 0.42, 0.55, 0.47, 0.60, 0.52, 0.49, 0.58],
                &[0.30, 0.35, 0.41, 0.33, 0.38, 0.45, 0.29],
                50.0,
                0.006420631168609774,
            ),
            (
                "ties",
                &[1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 5.0],
                &[1.0, 1.0, 2.0, 2.0, 3.0, 3.0],
                34.0,
                0.10115335028958206,
            ),
            ("equal", &[1.0, 2.0, 3.0, 4.0, 5.0], &[1.0, 2.0, 3.0, 4.0, 5.0], 12.5, 0.5422350133116141),
            ("reversed", &[0.1, 0.2, 0.3], &[0.4, 0.5, 0.6, 0.7], 0.0, 0.9892218666199918),
        ];
        for (name, x, y, u, p) in cases {
            let got = greater(x, y).unwrap();
            assert_eq!(got.u, u, "{name}");
            assert!(close(got.p_greater, p, 1e-6), "{name}: p {} want {p}", got.p_greater);
        }
    }

    /// Reference values from Python's `math.erfc`.
    #[test]
    fn erfc_matches_the_reference() {
        for (x, want) in [
            (0.0, 1.0),
            (0.5, 0.4795001221869535),
            (1.0, 0.15729920705028513),
            (1.5, 0.033894853524689274),
            (2.0, 0.004677734981047265),
            (3.0, 2.2090496998585438e-05),
            (-1.0, 1.842700792949715),
            (5.0, 1.5374597944280351e-12),
        ] {
            assert!(close(erfc(x), want, 2e-7), "erfc({x}) = {} want {want}", erfc(x));
        }
    }

    #[test]
    fn empty_or_all_tied_samples_carry_no_evidence() {
        assert_eq!(greater(&[], &[1.0]), None);
        assert_eq!(greater(&[1.0], &[f64::NAN]), None);
        let tied = greater(&[2.0, 2.0, 2.0], &[2.0, 2.0]).unwrap();
        assert_eq!((tied.u, tied.p_greater), (3.0, 1.0));
        assert!(tied.z.is_nan());
    }

    #[test]
    fn a_shift_is_significant_in_one_direction_only() {
        let base: Vec<f64> = (0..40).map(|i| 0.100 + f64::from(i % 10) * 0.001).collect();
        let slow: Vec<f64> = base.iter().map(|v| v + 0.005).collect();
        assert!(greater(&slow, &base).unwrap().p_greater < 0.001);
        assert!(greater(&base, &slow).unwrap().p_greater > 0.999);
    }
}
