//! Numbers over rounds: the metrics the document shows, their median and spread over the
//! rounds of a run, and ratios between two server configurations.

use super::results::Run;
use crate::run_report::RunReport;

/// A per-run number shown in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    TokS,
    TtftP50,
    TtftP95,
    TpotP50,
    Errors,
    PeakRssMib,
    ServerCpuPct,
    OtherCpuPct,
}

impl Metric {
    /// The columns of the comparison tables.
    pub const TABLE: [Metric; 6] =
        [Metric::TokS, Metric::TtftP50, Metric::TtftP95, Metric::TpotP50, Metric::Errors, Metric::PeakRssMib];

    pub fn of(self, r: &RunReport) -> Option<f64> {
        let s = &r.summary;
        match self {
            Metric::TokS => Some(s.output_tokens_per_s),
            Metric::TtftP50 => s.ttft_ms.p50,
            Metric::TtftP95 => s.ttft_ms.p95,
            Metric::TpotP50 => s.tpot_ms.p50,
            Metric::Errors => Some(s.errors as f64),
            Metric::PeakRssMib => r.server_peak_rss_kib.map(|k| k as f64 / 1024.0),
            Metric::ServerCpuPct => r.cpu.server_cpu_pct_of_machine,
            Metric::OtherCpuPct => r.cpu.other_cpu_pct_of_machine,
        }
    }

    pub fn header(self) -> &'static str {
        match self {
            Metric::TokS => "tok/s",
            Metric::TtftP50 => "TTFT P50 ms",
            Metric::TtftP95 => "TTFT P95 ms",
            Metric::TpotP50 => "TPOT P50 ms",
            Metric::Errors => "errors",
            Metric::PeakRssMib => "peak RSS MiB",
            Metric::ServerCpuPct => "server CPU %",
            Metric::OtherCpuPct => "other CPU %",
        }
    }

    /// The name used by the template's `{{value}}` placeholder.
    pub fn key(self) -> &'static str {
        match self {
            Metric::TokS => "tok_s",
            Metric::TtftP50 => "ttft_p50",
            Metric::TtftP95 => "ttft_p95",
            Metric::TpotP50 => "tpot_p50",
            Metric::Errors => "errors",
            Metric::PeakRssMib => "rss",
            Metric::ServerCpuPct => "server_cpu",
            Metric::OtherCpuPct => "other_cpu",
        }
    }

    pub fn from_key(key: &str) -> Option<Metric> {
        use Metric::*;
        [TokS, TtftP50, TtftP95, TpotP50, Errors, PeakRssMib, ServerCpuPct, OtherCpuPct]
            .into_iter()
            .find(|m| m.key() == key)
    }
}

/// Median of the values (mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// One metric over the rounds of a run: median, range and how many rounds had a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agg {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Agg {
    pub fn of(values: &[f64]) -> Option<Agg> {
        let median = median(values)?;
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Agg { median, min, max, n: values.len() })
    }
}

/// `metric` over `runs` (rounds without a value are left out).
pub fn agg(runs: &[&Run], metric: Metric) -> Option<Agg> {
    let values: Vec<f64> = runs.iter().filter_map(|r| metric.of(&r.result)).collect();
    Agg::of(&values)
}

/// candidate / base of the medians; `None` when either is missing or the base is 0.
pub fn ratio(candidate: Option<Agg>, base: Option<Agg>) -> Option<f64> {
    match (candidate, base) {
        (Some(c), Some(b)) if b.median != 0.0 => Some(c.median / b.median),
        _ => None,
    }
}

/// candidate / base per round, for the rounds both measured (rounds pair the two servers: they
/// ran next to each other).
pub fn round_ratios(candidate: &[&Run], base: &[&Run], metric: Metric) -> Vec<f64> {
    candidate
        .iter()
        .filter_map(|c| {
            let b = base.iter().find(|b| b.round == c.round)?;
            let (cv, bv) = (metric.of(&c.result)?, metric.of(&b.result)?);
            (bv != 0.0).then(|| cv / bv)
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A run with the given tok/s, TTFT P95, errors and other-CPU share.
    pub(crate) fn run(scenario: &str, kind: &str, round: u32, tok_s: f64, ttft_p95: f64, errors: usize) -> Run {
        let mut result = RunReport { label: format!("{scenario}/{kind}/r{round}"), ..Default::default() };
        result.summary.count = 50;
        result.summary.errors = errors;
        result.summary.output_tokens_per_s = tok_s;
        result.summary.ttft_ms.p50 = Some(ttft_p95 / 2.0);
        result.summary.ttft_ms.p95 = Some(ttft_p95);
        result.summary.tpot_ms.p50 = Some(1000.0 / tok_s);
        result.server_peak_rss_kib = Some(300 * 1024);
        result.cpu.other_cpu_pct_of_machine = Some(0.5);
        result.params.concurrency = Some(10);
        result.params.requests = 50;
        Run { scenario: scenario.into(), kind: kind.into(), round, result }
    }

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn agg_spread() {
        let a = Agg::of(&[210.0, 190.0, 205.0]).unwrap();
        assert_eq!(a, Agg { median: 205.0, min: 190.0, max: 210.0, n: 3 });
        assert_eq!(Agg::of(&[]), None);
    }

    #[test]
    fn metrics_read_runs() {
        let r = run("seed", "infergate", 1, 200.0, 1600.0, 2);
        assert_eq!(Metric::TokS.of(&r.result), Some(200.0));
        assert_eq!(Metric::TtftP95.of(&r.result), Some(1600.0));
        assert_eq!(Metric::TtftP50.of(&r.result), Some(800.0));
        assert_eq!(Metric::TpotP50.of(&r.result), Some(5.0));
        assert_eq!(Metric::Errors.of(&r.result), Some(2.0));
        assert_eq!(Metric::PeakRssMib.of(&r.result), Some(300.0));
        assert_eq!(Metric::ServerCpuPct.of(&r.result), None);
        for m in Metric::TABLE {
            assert_eq!(Metric::from_key(m.key()), Some(m));
        }
        assert_eq!(Metric::from_key("vram"), None);
    }

    #[test]
    fn ratios_of_medians_and_per_round() {
        let ig = [
            run("seed", "ig", 1, 200.0, 1.0, 0),
            run("seed", "ig", 2, 180.0, 1.0, 0),
            run("seed", "ig", 3, 240.0, 1.0, 0),
        ];
        let ll = [run("seed", "ll", 1, 100.0, 1.0, 0), run("seed", "ll", 2, 120.0, 1.0, 0)];
        let (ig, ll): (Vec<&Run>, Vec<&Run>) = (ig.iter().collect(), ll.iter().collect());
        let r = ratio(agg(&ig, Metric::TokS), agg(&ll, Metric::TokS)).unwrap();
        assert!((r - 200.0 / 110.0).abs() < 1e-12);
        // Round 3 has no peer run: left out.
        assert_eq!(round_ratios(&ig, &ll, Metric::TokS), vec![2.0, 1.5]);
        let zero = Agg { median: 0.0, min: 0.0, max: 0.0, n: 1 };
        assert_eq!(ratio(agg(&ig, Metric::TokS), Some(zero)), None);
        assert_eq!(ratio(None, agg(&ll, Metric::TokS)), None);
    }
}
