//! What one analysis window measured for one revision, whatever the metrics source: request
//! count, error count and P95 TTFT, and which HTTP statuses count as errors.

use std::collections::BTreeMap;

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
