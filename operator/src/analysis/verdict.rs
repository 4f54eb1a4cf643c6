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
    let no_data = !has_enough_requests(&report.candidate, analysis)
        && decisive_failures(&report.candidate, slo, analysis).is_none();
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

/// Why a window with fewer than `minRequests` requests fails anyway, if it does: its failures
/// alone exceed `maxErrorRate` x `minRequests`. Even if every missing request up to
/// `minRequests` had succeeded, the error rate would be over the SLO, so more requests cannot
/// change the verdict. This is what catches a revision that hangs: with the default spec
/// (interval 30 s, request timeout 10 s, 4 probe workers) it yields about 8 timed-out requests
/// per window, fewer than the 20 `minRequests`, and without this rule `onNoData` would decide.
fn decisive_failures(candidate: &Sample, slo: &SloSpec, analysis: &AnalysisSpec) -> Option<String> {
    let needed = f64::from(analysis.min_requests);
    let decisive = candidate.errors > 0.0 && candidate.errors > slo.max_error_rate * needed;
    decisive.then(|| {
        format!(
            "{} of {} requests failed, too few requests ({} needed) but the failures alone exceed the SLO: \
             even if the missing ones had succeeded the error rate would be {:.4}, over the SLO of {}",
            candidate.errors,
            candidate.requests,
            analysis.min_requests,
            candidate.errors / needed.max(candidate.requests),
            slo.max_error_rate
        )
    })
}

/// Judges `candidate` against the absolute SLO.
///
/// The error rate is judged whenever enough requests finished, whether or not any produced a
/// first token: a window where every request failed has no TTFT and is a failure, not "no
/// data". Below `minRequests` the failures are still judged ([`decisive_failures`]); only a
/// window with too few requests and no decisive failures follows `onNoData`. The TTFT SLO is
/// judged when the window has a P95 of enough requests (one slow request is noise).
pub fn judge(candidate: &Sample, slo: &SloSpec, analysis: &AnalysisSpec) -> Judgement {
    if !has_enough_requests(candidate, analysis) {
        if let Some(why) = decisive_failures(candidate, slo, analysis) {
            return Judgement::new(Verdict::Fail, why);
        }
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

/// How much more load per pod than the baseline's the candidate may carry in the watch for the
/// comparison to stand: half the probe's own share per pod, and at least one request.
fn user_load_margin(report: &WindowReport) -> f64 {
    (report.probe_in_flight_per_pod * 0.5).max(1.0)
}

/// In the watch, why the comparison would not compare like with like, if it would not: the
/// candidate carries user traffic on top of the probe's share, the baseline only the probe's.
/// Both get the same probe rate per pod and only the probe's own TTFTs are compared, but TTFT
/// grows with a server's load, so a candidate holding clearly more requests in flight per pod
/// than the baseline would look slower for the traffic alone.
fn unequal_load(report: &WindowReport) -> Option<String> {
    if !report.candidate_serves_users {
        return None;
    }
    let (candidate, baseline) = (report.candidate_in_flight?, report.baseline_in_flight?);
    let margin = user_load_margin(report);
    (candidate - baseline > margin).then(|| {
        format!(
            "regression check not possible in the watch: the candidate holds {candidate:.1} requests in flight per \
             pod (user traffic and the probe) against the baseline's {baseline:.1} (the probe only), more than \
             {margin:.1} over, so its TTFTs are not comparable; the absolute SLO is still judged"
        )
    })
}

/// The relative check: the candidate's probe TTFTs against the baseline's, both under the same
/// probe load per pod. A regression needs both a P95 over the limit (the size of the effect)
/// and a significant one-sided Mann-Whitney U test (that it is not noise), as Kayenta judges.
/// In the watch the candidate also serves users: the comparison is Inconclusive when its load
/// per pod is well above the baseline's ([`unequal_load`]).
fn compare(report: &WindowReport, limit_percent: f64, analysis: &AnalysisSpec) -> Judgement {
    if let Some(why) = unequal_load(report) {
        return Judgement::new(Verdict::Inconclusive, why);
    }
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
        match (report.candidate_in_flight, report.baseline_in_flight) {
            (Some(c), Some(b)) => basis.push_str(&format!(
                "; in the watch, with {c:.1} vs {b:.1} requests in flight per pod (user traffic within the margin)"
            )),
            _ => basis.push_str("; in the watch, user load per pod unknown (the source read no gauges)"),
        }
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
    use crate::crd::ProbeSpec;
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
            // A slow window with too few requests and no failures is "no data": one slow
            // request is noise.
            assert_eq!(judge(&sample(19.0, 0.0, Some(9000.0)), &slo(), &analysis).verdict, verdict);
            assert_eq!(judge(&sample(0.0, 0.0, None), &slo(), &analysis).verdict, verdict);
            // Failures that more requests could still dilute under the SLO are no data too.
            let lenient = SloSpec { max_error_rate: 0.25, ..slo() };
            assert_eq!(judge(&sample(10.0, 5.0, Some(100.0)), &lenient, &analysis).verdict, verdict);
        }
        // min_requests 0 and no traffic is still no data, never a division by zero.
        let analysis = AnalysisSpec { min_requests: 0, ..AnalysisSpec::default() };
        assert_eq!(judge(&sample(0.0, 0.0, None), &slo(), &analysis).verdict, Verdict::Inconclusive);
    }

    #[test]
    fn failures_below_min_requests_fail_when_they_alone_exceed_the_slo() {
        for policy in [NoDataPolicy::Inconclusive, NoDataPolicy::Pass, NoDataPolicy::Fail] {
            let analysis = AnalysisSpec { on_no_data: policy, min_requests: 20, ..AnalysisSpec::default() };
            let lenient = SloSpec { max_error_rate: 0.25, ..slo() };
            // 6 failures > 0.25 x 20: whatever the 14 missing requests did, the rate is over 0.25.
            let j = judge(&sample(10.0, 6.0, Some(100.0)), &lenient, &analysis);
            assert_eq!(j.verdict, Verdict::Fail, "{}", j.message);
            assert!(j.message.contains("6 of 10 requests failed") && j.message.contains("0.3000"), "{}", j.message);
            // Exactly at the bound (5 of 20 = 0.25) is not over it: no data, for onNoData.
            let j = judge(&sample(10.0, 5.0, Some(100.0)), &lenient, &analysis);
            assert!(j.message.starts_with("no data"), "{}", j.message);
        }
    }

    /// A revision that hangs every request, measured with the default spec: a 30 s window of 4
    /// probe workers with a 10 s request timeout gives about 8 timed-out requests, fewer than
    /// `minRequests` (20), and the server saw none of them (499s are ignored).
    #[test]
    fn a_revision_that_hangs_every_request_fails_with_the_default_spec() {
        let spec = AnalysisSpec::default();
        let probe = ProbeSpec::default();
        let per_worker = u64::from(spec.interval_seconds / probe.request_timeout_seconds) - 1;
        let timed_out = u64::from(probe.concurrency) * per_worker;
        assert!(timed_out < u64::from(spec.min_requests), "the case this test is about: {timed_out} timeouts");
        let mut candidate_probe = ProbeWindow { sent: timed_out + 4, unfinished: 4, ..ProbeWindow::default() };
        candidate_probe.failed.timed_out = timed_out;
        let hung = WindowReport {
            candidate: Sample::default().with_client_failures(candidate_probe.failed.unseen_by_server()),
            candidate_probe,
            ..report(Sample::default())
        };
        for policy in [NoDataPolicy::Inconclusive, NoDataPolicy::Pass] {
            let analysis = AnalysisSpec { on_no_data: policy, ..spec.clone() };
            let j = judge_window(&hung, &SloSpec::default(), &analysis);
            assert_eq!((j.verdict, j.measurement_error), (Verdict::Fail, false), "{}", j.message);
            // With the source down too (the hung pods do not answer scrapes either).
            let down = WindowReport { problem: Some("scrape timed out".into()), ..hung.clone() };
            let j = judge_window(&down, &SloSpec::default(), &analysis);
            assert_eq!((j.verdict, j.measurement_error), (Verdict::Fail, false), "{}", j.message);
        }
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

    fn in_the_watch(candidate_in_flight: Option<f64>, baseline_in_flight: Option<f64>, slower: f64) -> WindowReport {
        WindowReport {
            candidate_serves_users: true,
            candidate_in_flight,
            baseline_in_flight,
            probe_in_flight_per_pod: 4.0,
            ..with_probes(probe(40, 100.0 + slower), Some(probe(40, 100.0)))
        }
    }

    #[test]
    fn the_watch_compares_only_at_comparable_load() {
        let analysis = regression_spec();
        // User traffic adds 1.5 requests per pod, within the margin (half the probe's 4): judged.
        let j = judge_window(&in_the_watch(Some(5.5), Some(4.0), 30.0), &slo(), &analysis);
        assert_eq!(j.verdict, Verdict::Fail, "{}", j.message);
        assert!(j.message.contains("5.5 vs 4.0 requests in flight per pod"), "{}", j.message);
        // Unknown gauges: compared, and said so.
        let j = judge_window(&in_the_watch(None, Some(4.0), 30.0), &slo(), &analysis);
        assert_eq!(j.verdict, Verdict::Fail, "{}", j.message);
        assert!(j.message.contains("user load per pod unknown"), "{}", j.message);
        // Well above: not a regression verdict either way, Inconclusive with the reason.
        for slower in [0.0, 30.0] {
            let j = judge_window(&in_the_watch(Some(9.0), Some(4.0), slower), &slo(), &analysis);
            assert_eq!((j.verdict, j.measurement_error), (Verdict::Inconclusive, false), "{}", j.message);
            assert!(
                j.message.contains("9.0 requests in flight per pod") && j.message.contains("2.0 over"),
                "{}",
                j.message
            );
        }
        // The same load gap before promotion is no reason: the preview serves no users.
        let analyzing = WindowReport { candidate_serves_users: false, ..in_the_watch(Some(9.0), Some(4.0), 30.0) };
        assert_eq!(judge_window(&analyzing, &slo(), &analysis).verdict, Verdict::Fail);
        // The absolute SLO still fails a loaded candidate in the watch.
        let slow =
            WindowReport { candidate: sample(100.0, 0.0, Some(900.0)), ..in_the_watch(Some(9.0), Some(4.0), 0.0) };
        let j = judge_window(&slow, &slo(), &analysis);
        assert_eq!(j.verdict, Verdict::Fail, "{}", j.message);
        // A small probe share still leaves a margin of one request.
        let light = WindowReport { probe_in_flight_per_pod: 1.0, ..in_the_watch(Some(1.8), Some(1.0), 30.0) };
        assert_eq!(judge_window(&light, &slo(), &analysis).verdict, Verdict::Fail);
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
