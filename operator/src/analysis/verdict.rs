//! Judging one window: the candidate's health, the SLO, the sample guard and the baseline.

use crate::crd::{AnalysisSpec, NoDataPolicy, SloSpec, Verdict};

use super::mann_whitney;
use super::probe_window::ProbeWindow;
use super::quantile::sample_quantile;
use super::report::WindowReport;
use super::sample::{Sample, GATE_QUANTILE};

/// A verdict and the sentence that explains it (shown in status and Events).
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub message: String,
    /// The window could not be measured (a scrape or query failed): it counts towards
    /// `consecutiveErrorLimit`, not as a verdict on the revision.
    pub measurement_error: bool,
}

impl Judgement {
    fn new(verdict: Verdict, message: String) -> Judgement {
        Judgement { verdict, message, measurement_error: false }
    }
}

/// Judges one finished window of the gate.
///
/// In order: an unhealthy candidate (restart, pod not ready or gone) fails the window whatever
/// was measured; then the absolute SLO on the candidate's sample; then, with
/// `maxRegressionPercent` set and the SLO met, the comparison with the baseline, which needs
/// enough probe samples of both revisions and is otherwise Inconclusive (never skipped).
pub fn judge_window(report: &WindowReport, slo: &SloSpec, analysis: &AnalysisSpec) -> Judgement {
    if !report.unhealthy.is_empty() {
        return Judgement::new(
            Verdict::Fail,
            format!("revision {} is unhealthy: {}", report.revision, report.unhealthy.join("; ")),
        );
    }
    let mut judgement = judge(&report.candidate, slo, analysis);
    let no_data = !has_enough_requests(&report.candidate, analysis);
    if let Some(problem) = &report.problem {
        if no_data {
            // The source failed, so the missing data says nothing about the revision: a
            // measurement error (consecutiveErrorLimit), not a case for onNoData.
            return Judgement {
                verdict: Verdict::Inconclusive,
                message: format!("could not measure: {problem}; {}", judgement.message),
                measurement_error: true,
            };
        }
        judgement.message = format!("{}; {problem}", judgement.message);
    }
    if no_data || judgement.verdict == Verdict::Fail {
        return judgement;
    }
    if let Some(limit) = analysis.max_regression_percent {
        let comparison = compare(report, limit, analysis);
        judgement.message = format!("{}; {}", judgement.message, comparison.message);
        judgement.verdict = comparison.verdict;
    }
    judgement
}

fn has_enough_requests(sample: &Sample, analysis: &AnalysisSpec) -> bool {
    sample.requests > 0.0 && sample.requests >= f64::from(analysis.min_requests)
}

/// Judges `candidate` against the absolute SLO.
///
/// The error rate is judged whenever enough requests finished, whether or not any produced a
/// first token: a window where every request failed has no TTFT and is a failure, not "no
/// data". The TTFT SLO is judged when the window has a P95.
pub fn judge(candidate: &Sample, slo: &SloSpec, analysis: &AnalysisSpec) -> Judgement {
    if !has_enough_requests(candidate, analysis) {
        let why = format!("no data: {} requests in the window, {} needed", candidate.requests, analysis.min_requests);
        let verdict = match analysis.on_no_data {
            NoDataPolicy::Inconclusive => Verdict::Inconclusive,
            NoDataPolicy::Fail => Verdict::Fail,
            NoDataPolicy::Pass => Verdict::Pass,
        };
        return Judgement::new(verdict, format!("{why} (onNoData {verdict:?})"));
    }
    let error_rate = candidate.error_rate().unwrap_or(0.0);
    let mut failures = Vec::new();
    if error_rate > slo.max_error_rate {
        failures.push(format!(
            "error rate {error_rate:.4} exceeds the SLO of {} ({} of {} requests failed)",
            slo.max_error_rate, candidate.errors, candidate.requests
        ));
    }
    let ttft = match candidate.ttft_p95_seconds {
        Some(p95) => {
            let p95_ms = p95 * 1000.0;
            if p95_ms > f64::from(slo.ttft_p95_ms) {
                failures.push(format!("P95 TTFT {p95_ms:.1} ms exceeds the SLO of {} ms", slo.ttft_p95_ms));
            }
            format!("P95 TTFT {p95_ms:.1} ms")
        }
        None => "no request got a first token (TTFT not judged)".to_string(),
    };
    if failures.is_empty() {
        Judgement::new(Verdict::Pass, format!("{ttft}, error rate {error_rate:.4}, {} requests", candidate.requests))
    } else {
        Judgement::new(Verdict::Fail, failures.join("; "))
    }
}

/// The relative check: the candidate's probe TTFTs against the baseline's, both under the same
/// probe load per pod. A regression needs both a P95 over the limit (the size of the effect)
/// and a significant one-sided Mann-Whitney U test (that it is not noise), as Kayenta judges.
fn compare(report: &WindowReport, limit_percent: f64, analysis: &AnalysisSpec) -> Judgement {
    let needed = analysis.min_requests.max(1) as usize;
    let candidate = &report.candidate_probe.ttfts_seconds;
    let empty = ProbeWindow::default();
    let baseline = &report.baseline_probe.as_ref().unwrap_or(&empty).ttfts_seconds;
    let (candidate_p95, baseline_p95, test) = match (
        sample_quantile(GATE_QUANTILE, candidate),
        sample_quantile(GATE_QUANTILE, baseline),
        mann_whitney::greater(candidate, baseline),
    ) {
        (Some(c), Some(b), Some(test)) if candidate.len() >= needed && baseline.len() >= needed => (c, b, test),
        _ => {
            return Judgement::new(
                Verdict::Inconclusive,
                format!(
                    "regression check not possible: it needs {needed} probe TTFTs of each revision, \
                     the candidate has {} and the baseline {}",
                    candidate.len(),
                    baseline.len()
                ),
            );
        }
    };
    let alpha = 1.0 - analysis.regression_confidence;
    let allowed = baseline_p95 * (1.0 + limit_percent / 100.0);
    let (c_ms, b_ms) = (candidate_p95 * 1000.0, baseline_p95 * 1000.0);
    let mut basis = format!(
        "probe P95 TTFT {c_ms:.1} ms vs the active revision's {b_ms:.1} ms, Mann-Whitney p = {:.4} on {} vs {} \
         probe requests at equal probe load per pod",
        test.p_greater,
        candidate.len(),
        baseline.len()
    );
    if report.candidate_serves_users {
        basis.push_str(
            "; the candidate also serves user traffic (post-promotion watch), the baseline only the probe, \
             so only the probe's own requests are compared",
        );
    }
    if candidate_p95 > allowed && test.p_greater < alpha {
        Judgement::new(
            Verdict::Fail,
            format!(
                "regression: P95 TTFT more than {limit_percent}% over the active revision's, significant at \
                 confidence {} ({basis})",
                analysis.regression_confidence
            ),
        )
    } else {
        Judgement::new(Verdict::Pass, format!("no regression ({basis})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn sample(requests: f64, errors: f64, p95_ms: Option<f64>) -> Sample {
        Sample { requests, errors, ttft_p95_seconds: p95_ms.map(|ms| ms / 1000.0) }
    }

    fn slo() -> SloSpec {
        SloSpec { ttft_p95_ms: 500, max_error_rate: 0.01, tpot_p95_ms: None }
    }

    fn report(candidate: Sample) -> WindowReport {
        WindowReport::of("new", Time(Timestamp::UNIX_EPOCH), candidate)
    }

    /// `n` TTFTs spread evenly from `from_ms` over 10 ms.
    fn probe(n: usize, from_ms: f64) -> ProbeWindow {
        let ttfts_seconds = (0..n).map(|i| (from_ms + (i % 10) as f64) / 1000.0).collect();
        ProbeWindow { ttfts_seconds, sent: n as u64, ok: n as u64, ..ProbeWindow::default() }
    }

    fn with_probes(candidate: ProbeWindow, baseline: Option<ProbeWindow>) -> WindowReport {
        WindowReport { candidate_probe: candidate, baseline_probe: baseline, ..report(sample(100.0, 0.0, Some(100.0))) }
    }

    fn regression_spec() -> AnalysisSpec {
        AnalysisSpec { max_regression_percent: Some(20.0), ..AnalysisSpec::default() }
    }

    #[test]
    fn within_slo_passes() {
        let j = judge(&sample(100.0, 1.0, Some(400.0)), &slo(), &AnalysisSpec::default());
        assert_eq!(j.verdict, Verdict::Pass, "{}", j.message);
    }

    #[test]
    fn slow_or_erroring_fails() {
        let slow = judge(&sample(100.0, 0.0, Some(501.0)), &slo(), &AnalysisSpec::default());
        assert_eq!(slow.verdict, Verdict::Fail);
        assert!(slow.message.contains("P95 TTFT"), "{}", slow.message);
        let erroring = judge(&sample(100.0, 2.0, Some(100.0)), &slo(), &AnalysisSpec::default());
        assert_eq!(erroring.verdict, Verdict::Fail);
        assert!(erroring.message.contains("error rate"), "{}", erroring.message);
    }

    #[test]
    fn every_request_failing_is_a_failure_not_no_data() {
        for policy in [NoDataPolicy::Inconclusive, NoDataPolicy::Pass] {
            let analysis = AnalysisSpec { on_no_data: policy, ..AnalysisSpec::default() };
            let j = judge_window(&report(sample(40.0, 40.0, None)), &slo(), &analysis);
            assert_eq!(j.verdict, Verdict::Fail, "{}", j.message);
            assert!(j.message.contains("40 of 40 requests failed"), "{}", j.message);
        }
        // Errors within the SLO and no TTFT: the error rate is all there is to judge.
        let lenient = SloSpec { max_error_rate: 1.0, ..slo() };
        let j = judge(&sample(40.0, 40.0, None), &lenient, &AnalysisSpec::default());
        assert_eq!(j.verdict, Verdict::Pass);
        assert!(j.message.contains("TTFT not judged"), "{}", j.message);
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
            assert_eq!(judge(&sample(19.0, 19.0, Some(9000.0)), &slo(), &analysis).verdict, verdict);
            assert_eq!(judge(&sample(0.0, 0.0, None), &slo(), &analysis).verdict, verdict);
        }
        // min_requests 0 and no traffic is still no data, never a division by zero.
        let analysis = AnalysisSpec { min_requests: 0, ..AnalysisSpec::default() };
        assert_eq!(judge(&sample(0.0, 0.0, None), &slo(), &analysis).verdict, Verdict::Inconclusive);
    }

    #[test]
    fn an_unhealthy_candidate_fails_whatever_was_measured() {
        let healthy_numbers = report(sample(100.0, 0.0, Some(100.0)));
        let unhealthy = WindowReport { unhealthy: vec!["pod chat-new-1 restarted".into()], ..healthy_numbers };
        let j = judge_window(&unhealthy, &slo(), &AnalysisSpec::default());
        assert_eq!((j.verdict, j.measurement_error), (Verdict::Fail, false));
        assert!(j.message.contains("restarted"), "{}", j.message);
        // Even with nothing measured.
        let nothing = WindowReport { unhealthy: vec!["no ready pod".into()], ..report(Sample::default()) };
        assert_eq!(judge_window(&nothing, &slo(), &AnalysisSpec::default()).verdict, Verdict::Fail);
    }

    #[test]
    fn a_failed_source_without_data_is_a_measurement_error() {
        for policy in [NoDataPolicy::Inconclusive, NoDataPolicy::Fail, NoDataPolicy::Pass] {
            let analysis = AnalysisSpec { on_no_data: policy, ..AnalysisSpec::default() };
            let down =
                WindowReport { problem: Some("prometheus: connection refused".into()), ..report(Sample::default()) };
            let j = judge_window(&down, &slo(), &analysis);
            assert_eq!((j.verdict, j.measurement_error), (Verdict::Inconclusive, true), "{}", j.message);
            assert!(j.message.contains("connection refused"), "{}", j.message);
        }
        // The probe's own failures still fail the window when the source is down.
        let failing = WindowReport {
            problem: Some("prometheus: connection refused".into()),
            ..report(Sample::default().with_client_failures(30))
        };
        let j = judge_window(&failing, &slo(), &AnalysisSpec::default());
        assert_eq!((j.verdict, j.measurement_error), (Verdict::Fail, false), "{}", j.message);
    }

    #[test]
    fn a_regression_needs_the_ratio_and_significance() {
        let analysis = regression_spec();
        // 30% slower, clearly separated: regression.
        let j = judge_window(&with_probes(probe(40, 130.0), Some(probe(40, 100.0))), &slo(), &analysis);
        assert_eq!(j.verdict, Verdict::Fail, "{}", j.message);
        assert!(j.message.contains("regression") && j.message.contains("Mann-Whitney"), "{}", j.message);
        // The same distribution: neither the ratio nor the test.
        let j = judge_window(&with_probes(probe(40, 100.0), Some(probe(40, 100.0))), &slo(), &analysis);
        assert_eq!(j.verdict, Verdict::Pass, "{}", j.message);
        // 5% slower, significant, but within the 20% allowed: no regression.
        let j = judge_window(&with_probes(probe(40, 105.0), Some(probe(40, 100.0))), &slo(), &analysis);
        assert_eq!(j.verdict, Verdict::Pass, "{}", j.message);
        // P95 over the limit from a single outlier, the bulk no slower: not significant.
        let mut outlier = probe(40, 100.0);
        outlier.ttfts_seconds[0] = 0.1;
        outlier.ttfts_seconds.iter_mut().skip(37).for_each(|t| *t = 0.4);
        let j = judge_window(&with_probes(outlier, Some(probe(40, 100.0))), &slo(), &analysis);
        assert_eq!(j.verdict, Verdict::Pass, "{}", j.message);
    }

    #[test]
    fn the_watch_says_what_it_compares() {
        let watch =
            WindowReport { candidate_serves_users: true, ..with_probes(probe(40, 130.0), Some(probe(40, 100.0))) };
        let j = judge_window(&watch, &slo(), &regression_spec());
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(j.message.contains("also serves user traffic"), "{}", j.message);
    }

    #[test]
    fn missing_baseline_samples_make_the_window_inconclusive() {
        let analysis = regression_spec();
        for baseline in [None, Some(ProbeWindow::default()), Some(probe(19, 100.0))] {
            let j = judge_window(&with_probes(probe(40, 100.0), baseline), &slo(), &analysis);
            assert_eq!((j.verdict, j.measurement_error), (Verdict::Inconclusive, false), "{}", j.message);
            assert!(j.message.contains("the candidate has 40 and the baseline"), "{}", j.message);
        }
        // The absolute SLO still fails a bad candidate without a baseline.
        let bad = WindowReport { candidate: sample(100.0, 50.0, Some(100.0)), ..with_probes(probe(40, 100.0), None) };
        assert_eq!(judge_window(&bad, &slo(), &analysis).verdict, Verdict::Fail);
    }
}
