//! What one analysis window measured for one revision, whatever the metrics source: request
//! count, error count and P95 TTFT, and which HTTP statuses count as errors.

use std::collections::BTreeMap;

use infergate_protocol::metrics::{classify_status, StatusClass};

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

    /// This sample with `failures` more requests that failed where the server could not count
    /// them (the probe's transport errors, cut streams and timeouts).
    pub fn with_client_failures(&self, failures: u64) -> Sample {
        let failures = failures as f64;
        Sample { requests: self.requests + failures, errors: self.errors + failures, ..self.clone() }
    }

    /// A sample from a windowed TTFT histogram and request counts by status.
    pub fn from_window(ttft: &[Bucket], requests_by_status: &BTreeMap<String, f64>) -> Sample {
        let mut requests = 0.0;
        let mut errors = 0.0;
        for (status, count) in requests_by_status {
            // The shared classification, which the Prometheus source's queries follow too.
            match classify_status(status) {
                StatusClass::Ignored => {}
                StatusClass::Success => requests += count,
                StatusClass::Error => {
                    requests += count;
                    errors += count;
                }
            }
        }
        let p95 = histogram_quantile(GATE_QUANTILE, ttft);
        Sample { requests, errors, ttft_p95_seconds: p95.is_finite().then_some(p95) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_failures_add_to_requests_and_errors() {
        let s = Sample { requests: 10.0, errors: 1.0, ttft_p95_seconds: Some(0.2) };
        assert_eq!(s.with_client_failures(10), Sample { requests: 20.0, errors: 11.0, ttft_p95_seconds: Some(0.2) });
        assert_eq!(Sample::default().with_client_failures(4).error_rate(), Some(1.0));
    }
}
