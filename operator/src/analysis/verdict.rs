//! Judging one window against the SLO, the sample guard and the baseline.

use crate::crd::{AnalysisSpec, NoDataPolicy, SloSpec, Verdict};

use super::report::WindowReport;
use super::sample::Sample;

/// A verdict and the sentence that explains it (shown in status and Events).
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub message: String,
    /// The window could not be measured (a scrape or query failed): it counts towards
    /// `consecutiveErrorLimit`, not as a verdict on the revision.
    pub measurement_error: bool,
}

/// Judges one finished window of the gate.
pub fn judge_window(report: &WindowReport, slo: &SloSpec, analysis: &AnalysisSpec) -> Judgement {
    let mut judgement = judge(&report.candidate, report.baseline.as_ref(), slo, analysis);
    if let Some(problem) = &report.problem {
        judgement.message = format!("{}; {problem}", judgement.message);
        judgement.measurement_error = judgement.verdict == Verdict::Inconclusive;
    }
    judgement
}

/// Judges `candidate` (and, when the spec asks for the relative check, against `baseline`).
pub fn judge(candidate: &Sample, baseline: Option<&Sample>, slo: &SloSpec, analysis: &AnalysisSpec) -> Judgement {
    let min_requests = f64::from(analysis.min_requests);
    let p95 = match candidate.ttft_p95_seconds {
        Some(p95) if candidate.requests >= min_requests && candidate.requests > 0.0 => p95,
        _ => {
            let why =
                format!("no data: {} requests in the window, {} needed", candidate.requests, analysis.min_requests);
            let verdict = match analysis.on_no_data {
                NoDataPolicy::Inconclusive => Verdict::Inconclusive,
                NoDataPolicy::Fail => Verdict::Fail,
                NoDataPolicy::Pass => Verdict::Pass,
            };
            return Judgement { verdict, message: format!("{why} (onNoData {verdict:?})"), measurement_error: false };
        }
    };
    let p95_ms = p95 * 1000.0;
    let error_rate = candidate.error_rate().unwrap_or(0.0);
    let mut failures = Vec::new();
    if p95_ms > f64::from(slo.ttft_p95_ms) {
        failures.push(format!("P95 TTFT {p95_ms:.1} ms exceeds the SLO of {} ms", slo.ttft_p95_ms));
    }
    if error_rate > slo.max_error_rate {
        failures.push(format!("error rate {error_rate:.4} exceeds the SLO of {}", slo.max_error_rate));
    }
    let mut notes = Vec::new();
    if let Some(limit) = analysis.max_regression_percent {
        match baseline.and_then(|b| b.ttft_p95_seconds.filter(|_| b.requests >= min_requests && b.requests > 0.0)) {
            Some(base) => {
                let allowed = base * (1.0 + limit / 100.0);
                if p95 > allowed {
                    failures.push(format!(
                        "P95 TTFT {p95_ms:.1} ms regresses more than {limit}% over the active revision's {:.1} ms",
                        base * 1000.0
                    ));
                }
            }
            // Without a baseline the absolute SLO still holds; say that the relative one was skipped.
            None => notes.push("no baseline data, regression check skipped".to_string()),
        }
    }
    let summary = format!("P95 TTFT {p95_ms:.1} ms, error rate {error_rate:.4}, {} requests", candidate.requests);
    if failures.is_empty() {
        let mut message = summary;
        for note in notes {
            message.push_str("; ");
            message.push_str(&note);
        }
        Judgement { verdict: Verdict::Pass, message, measurement_error: false }
    } else {
        Judgement { verdict: Verdict::Fail, message: failures.join("; "), measurement_error: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(requests: f64, errors: f64, p95_ms: Option<f64>) -> Sample {
        Sample { requests, errors, ttft_p95_seconds: p95_ms.map(|ms| ms / 1000.0) }
    }

    fn slo() -> SloSpec {
        SloSpec { ttft_p95_ms: 500, max_error_rate: 0.01, tpot_p95_ms: None }
    }

    #[test]
    fn within_slo_passes() {
        let j = judge(&sample(100.0, 1.0, Some(400.0)), None, &slo(), &AnalysisSpec::default());
        assert_eq!(j.verdict, Verdict::Pass, "{}", j.message);
    }

    #[test]
    fn slow_or_erroring_fails() {
        let slow = judge(&sample(100.0, 0.0, Some(501.0)), None, &slo(), &AnalysisSpec::default());
        assert_eq!(slow.verdict, Verdict::Fail);
        assert!(slow.message.contains("P95 TTFT"), "{}", slow.message);
        let erroring = judge(&sample(100.0, 2.0, Some(100.0)), None, &slo(), &AnalysisSpec::default());
        assert_eq!(erroring.verdict, Verdict::Fail);
        assert!(erroring.message.contains("error rate"), "{}", erroring.message);
    }

    #[test]
    fn too_few_requests_follow_the_no_data_policy() {
        for (policy, verdict) in [
            (NoDataPolicy::Inconclusive, Verdict::Inconclusive),
            (NoDataPolicy::Fail, Verdict::Fail),
            (NoDataPolicy::Pass, Verdict::Pass),
        ] {
            let analysis = AnalysisSpec { on_no_data: policy, min_requests: 20, ..AnalysisSpec::default() };
            // Even a terrible window with too few requests is "no data": one slow request is noise.
            assert_eq!(judge(&sample(19.0, 19.0, Some(9000.0)), None, &slo(), &analysis).verdict, verdict);
            assert_eq!(judge(&sample(0.0, 0.0, None), None, &slo(), &analysis).verdict, verdict);
        }
        // min_requests 0 and no traffic is still no data, never a division by zero.
        let analysis = AnalysisSpec { min_requests: 0, ..AnalysisSpec::default() };
        assert_eq!(judge(&sample(0.0, 0.0, None), None, &slo(), &analysis).verdict, Verdict::Inconclusive);
    }

    #[test]
    fn regression_against_the_baseline() {
        let analysis = AnalysisSpec { max_regression_percent: Some(20.0), ..AnalysisSpec::default() };
        let base = sample(100.0, 0.0, Some(100.0));
        assert_eq!(judge(&sample(100.0, 0.0, Some(119.0)), Some(&base), &slo(), &analysis).verdict, Verdict::Pass);
        let j = judge(&sample(100.0, 0.0, Some(121.0)), Some(&base), &slo(), &analysis);
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(j.message.contains("regresses"), "{}", j.message);
        // No baseline data: only the absolute SLO applies.
        let j = judge(&sample(100.0, 0.0, Some(300.0)), Some(&sample(0.0, 0.0, None)), &slo(), &analysis);
        assert_eq!(j.verdict, Verdict::Pass);
        assert!(j.message.contains("skipped"));
    }
}
