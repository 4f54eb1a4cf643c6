//! What one analysis window measured for one revision: deltas of the pods' counters between the
//! window's start and end scrapes, reduced to request count, error count and P95 TTFT.

use std::collections::BTreeMap;

use super::exposition::Counters;
use super::quantile::{histogram_quantile, Bucket};

/// The quantile the gate judges.
pub const GATE_QUANTILE: f64 = 0.95;

/// One revision's measurement over one window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// Requests that finished in the window (client disconnects, 499, excluded).
    pub requests: f64,
    /// Of those, the failed ones (5xx and 429).
    pub errors: f64,
    /// P95 TTFT in seconds; `None` when the histogram has no observations (Prometheus' NaN).
    pub ttft_p95_seconds: Option<f64>,
}

impl Sample {
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0.0).then(|| self.errors / self.requests)
    }

    /// A sample from a windowed TTFT histogram and request counts by status.
    pub fn from_window(ttft: &[Bucket], requests_by_status: &BTreeMap<String, f64>) -> Sample {
        let mut requests = 0.0;
        let mut errors = 0.0;
        for (status, count) in requests_by_status {
            match classify(status) {
                Outcome::Ignored => {}
                Outcome::Success => requests += count,
                Outcome::Error => {
                    requests += count;
                    errors += count;
                }
            }
        }
        let p95 = histogram_quantile(GATE_QUANTILE, ttft);
        Sample { requests, errors, ttft_p95_seconds: p95.is_finite().then_some(p95) }
    }
}

enum Outcome {
    Success,
    Error,
    Ignored,
}

fn classify(status: &str) -> Outcome {
    match status {
        // The client went away (our own probe cancelling at the window's end included): the
        // server did nothing wrong, and the request did not complete, so it is not counted.
        "499" => Outcome::Ignored,
        // 429 means the queue was full. For a user that is a failed request, and a revision that
        // sheds load where the old one did not is worse, so the gate counts it as an error.
        "429" => Outcome::Error,
        s if s.starts_with('5') => Outcome::Error,
        _ => Outcome::Success,
    }
}

/// The increase of every pod's counters between two scrapes, summed over pods.
///
/// Pods are matched by name; a pod missing from either scrape is left out (it started or went
/// away inside the window, so its increase is unknown). A counter that went down means the
/// server restarted: as Prometheus' `increase` does, the end value is taken as the increase.
pub fn window_delta(start: &BTreeMap<String, Counters>, end: &BTreeMap<String, Counters>) -> Sample {
    let mut ttft: Vec<Bucket> = Vec::new();
    let mut requests: BTreeMap<String, f64> = BTreeMap::new();
    for (pod, after) in end {
        let Some(before) = start.get(pod) else {
            continue;
        };
        let restarted = after.ttft_count() < before.ttft_count()
            || before
                .requests_by_status
                .iter()
                .any(|(s, c)| after.requests_by_status.get(s).copied().unwrap_or(0.0) < *c);
        for bucket in &after.ttft_buckets {
            let earlier = if restarted {
                0.0
            } else {
                before.ttft_buckets.iter().find(|b| b.upper_bound == bucket.upper_bound).map_or(0.0, |b| b.count)
            };
            ttft.push(Bucket { upper_bound: bucket.upper_bound, count: bucket.count - earlier });
        }
        for (status, count) in &after.requests_by_status {
            let earlier = if restarted { 0.0 } else { before.requests_by_status.get(status).copied().unwrap_or(0.0) };
            *requests.entry(status.clone()).or_default() += count - earlier;
        }
    }
    Sample::from_window(&ttft, &requests)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(buckets: &[(f64, f64)], statuses: &[(&str, f64)]) -> Counters {
        Counters {
            ttft_buckets: buckets.iter().map(|&(upper_bound, count)| Bucket { upper_bound, count }).collect(),
            requests_by_status: statuses.iter().map(|(s, c)| (s.to_string(), *c)).collect(),
        }
    }

    const INF: f64 = f64::INFINITY;

    #[test]
    fn deltas_over_pods_give_the_window_p95_and_error_rate() {
        let start = BTreeMap::from([
            ("p1".to_string(), counters(&[(0.1, 100.0), (0.2, 100.0), (INF, 100.0)], &[("200", 100.0)])),
            ("p2".to_string(), counters(&[(0.1, 0.0), (0.2, 0.0), (INF, 0.0)], &[])),
        ]);
        let end = BTreeMap::from([
            // p1: 10 new requests, all in (0.1, 0.2].
            ("p1".to_string(), counters(&[(0.1, 100.0), (0.2, 110.0), (INF, 110.0)], &[("200", 110.0)])),
            // p2: 10 requests <= 0.1, one 500 and one 499 and one 429.
            (
                "p2".to_string(),
                counters(
                    &[(0.1, 10.0), (0.2, 10.0), (INF, 10.0)],
                    &[("200", 8.0), ("500", 1.0), ("499", 1.0), ("429", 1.0)],
                ),
            ),
            // p3 appeared inside the window: left out.
            ("p3".to_string(), counters(&[(0.1, 0.0), (0.2, 0.0), (INF, 999.0)], &[("500", 999.0)])),
        ]);
        let s = window_delta(&start, &end);
        assert_eq!(s.requests, 20.0);
        assert_eq!(s.errors, 2.0);
        assert_eq!(s.error_rate(), Some(0.1));
        // 20 observations: 10 <= 0.1, 10 in (0.1, 0.2]; rank 19 -> 0.1 + 0.1 * 9/10.
        let p95 = s.ttft_p95_seconds.unwrap();
        assert!((p95 - 0.19).abs() < 1e-12, "{p95}");
    }

    #[test]
    fn a_restarted_pod_counts_its_end_values() {
        let start = BTreeMap::from([("p".to_string(), counters(&[(0.1, 50.0), (INF, 50.0)], &[("200", 50.0)]))]);
        let end = BTreeMap::from([("p".to_string(), counters(&[(0.1, 5.0), (INF, 5.0)], &[("200", 5.0)]))]);
        let s = window_delta(&start, &end);
        assert_eq!(s.requests, 5.0);
        assert!(s.ttft_p95_seconds.is_some());
    }

    #[test]
    fn no_traffic_is_no_p95() {
        let same = BTreeMap::from([("p".to_string(), counters(&[(0.1, 5.0), (INF, 5.0)], &[("200", 5.0)]))]);
        let s = window_delta(&same, &same);
        assert_eq!((s.requests, s.ttft_p95_seconds, s.error_rate()), (0.0, None, None));
        assert_eq!(window_delta(&BTreeMap::new(), &BTreeMap::new()), Sample::default());
    }
}
