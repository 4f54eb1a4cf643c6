//! The Direct source's window: the increase of the pods' counters between the window's start
//! and end scrapes, reduced to a [`Sample`].

use std::collections::BTreeMap;

use super::exposition::Counters;
use crate::analysis::quantile::Bucket;
use crate::analysis::sample::Sample;

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
            ..Counters::default()
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
