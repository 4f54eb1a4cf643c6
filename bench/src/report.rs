//! Per-request records and the run summary computed from them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stats::{mean, percentile, sorted};

/// Everything measured about one request. Times are seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestRecord {
    /// Error description; `None` for a success.
    pub error: Option<String>,
    /// Send -> first chunk carrying text.
    pub ttft: Option<f64>,
    /// Send -> last chunk carrying text.
    pub last_token: Option<f64>,
    /// Gaps between consecutive text-carrying chunks.
    pub itl: Vec<f64>,
    /// Number of chunks that carried text.
    pub text_chunks: u64,
    /// `usage.completion_tokens` when the server sent it.
    pub usage_completion_tokens: Option<u64>,
    /// `usage.prompt_tokens` when the server sent it.
    pub usage_prompt_tokens: Option<u64>,
    /// Send -> end of the response (or the error).
    pub latency: f64,
}

impl RequestRecord {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// Completion tokens: from the final `usage` if present, else the number of text chunks.
    pub fn completion_tokens(&self) -> u64 {
        self.usage_completion_tokens.unwrap_or(self.text_chunks)
    }

    /// Time per output token after the first: (last - first) / (tokens - 1).
    pub fn tpot(&self) -> Option<f64> {
        let tokens = self.completion_tokens();
        match (self.ttft, self.last_token) {
            (Some(first), Some(last)) if tokens > 1 => Some((last - first) / (tokens - 1) as f64),
            _ => None,
        }
    }
}

/// Percentiles of one metric in milliseconds (`null` when there were no samples).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Dist {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub mean: Option<f64>,
    pub samples: usize,
}

impl Dist {
    fn from_seconds(values: Vec<f64>) -> Self {
        let ms = sorted(values.into_iter().map(|s| s * 1000.0).collect());
        Dist {
            p50: percentile(&ms, 50.0),
            p95: percentile(&ms, 95.0),
            p99: percentile(&ms, 99.0),
            mean: mean(&ms),
            samples: ms.len(),
        }
    }
}

/// The aggregate of a run. Latency metrics cover successful requests only; the token
/// throughput counts the completion tokens of successful requests. Part of the JSON report
/// (`run_report`); a field without `default` is one every report has had.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub count: usize,
    #[serde(default)]
    pub successes: usize,
    pub errors: usize,
    #[serde(default)]
    pub error_rate: f64,
    #[serde(default)]
    pub wall_time_s: f64,
    #[serde(default)]
    pub total_completion_tokens: u64,
    pub output_tokens_per_s: f64,
    #[serde(default)]
    pub requests_per_s: f64,
    #[serde(default)]
    pub ttft_ms: Dist,
    #[serde(default)]
    pub tpot_ms: Dist,
    #[serde(default)]
    pub itl_ms: Dist,
    #[serde(default)]
    pub e2e_latency_ms: Dist,
    /// Mean of the servers' `usage.prompt_tokens` (how long the prompts really were).
    #[serde(default)]
    pub prompt_tokens_mean: Option<f64>,
    /// Requests whose completion token count came from the server's `usage`.
    #[serde(default)]
    pub usage_reported: usize,
    /// Distinct error messages (truncated) with their counts.
    #[serde(default)]
    pub error_kinds: BTreeMap<String, usize>,
}

impl Summary {
    pub fn new(records: &[RequestRecord], wall_time_s: f64) -> Self {
        let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.ok()).collect();
        let count = records.len();
        let errors = count - ok.len();
        let total_completion_tokens: u64 = ok.iter().map(|r| r.completion_tokens()).sum();
        let per_s = |x: f64| if wall_time_s > 0.0 { x / wall_time_s } else { 0.0 };
        let mut error_kinds = BTreeMap::new();
        for r in records {
            if let Some(e) = &r.error {
                let key: String = e.chars().take(120).collect();
                *error_kinds.entry(key).or_insert(0) += 1;
            }
        }
        let prompt: Vec<f64> = ok.iter().filter_map(|r| r.usage_prompt_tokens).map(|t| t as f64).collect();
        Summary {
            count,
            successes: ok.len(),
            errors,
            error_rate: if count > 0 { errors as f64 / count as f64 } else { 0.0 },
            wall_time_s,
            total_completion_tokens,
            output_tokens_per_s: per_s(total_completion_tokens as f64),
            requests_per_s: per_s(ok.len() as f64),
            ttft_ms: Dist::from_seconds(ok.iter().filter_map(|r| r.ttft).collect()),
            tpot_ms: Dist::from_seconds(ok.iter().filter_map(|r| r.tpot()).collect()),
            itl_ms: Dist::from_seconds(ok.iter().flat_map(|r| r.itl.iter().copied()).collect()),
            e2e_latency_ms: Dist::from_seconds(ok.iter().map(|r| r.latency).collect()),
            prompt_tokens_mean: mean(&prompt),
            usage_reported: ok.iter().filter(|r| r.usage_completion_tokens.is_some()).count(),
            error_kinds,
        }
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"))
}

/// Human-readable summary.
pub fn render(label: &str, s: &Summary, peak_rss_kib: Option<u64>, hwm_kib: Option<u64>) -> String {
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    line(format!("== {label} =="));
    line(format!(
        "requests: {} ok, {} errors ({:.1} %), wall {:.2} s",
        s.successes,
        s.errors,
        s.error_rate * 100.0,
        s.wall_time_s
    ));
    line(format!(
        "throughput: {:.1} output tok/s, {:.2} req/s, {} completion tokens ({} of {} from usage)",
        s.output_tokens_per_s, s.requests_per_s, s.total_completion_tokens, s.usage_reported, s.successes
    ));
    line(format!(
        "TTFT ms: p50 {} p95 {} p99 {} | TPOT ms: p50 {} p95 {} | ITL ms: p50 {} p95 {}",
        ms(s.ttft_ms.p50),
        ms(s.ttft_ms.p95),
        ms(s.ttft_ms.p99),
        ms(s.tpot_ms.p50),
        ms(s.tpot_ms.p95),
        ms(s.itl_ms.p50),
        ms(s.itl_ms.p95)
    ));
    line(format!(
        "E2E ms: p50 {} p95 {} | prompt tokens (server usage) mean {}",
        ms(s.e2e_latency_ms.p50),
        ms(s.e2e_latency_ms.p95),
        ms(s.prompt_tokens_mean)
    ));
    if peak_rss_kib.is_some() || hwm_kib.is_some() {
        let mib = |v: Option<u64>| v.map_or_else(|| "-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        line(format!("server RSS: peak sampled {} | VmHWM {}", mib(peak_rss_kib), mib(hwm_kib)));
    }
    for (kind, n) in &s.error_kinds {
        line(format!("error x{n}: {kind}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ttft: f64, last: f64, chunks: u64, usage: Option<u64>) -> RequestRecord {
        RequestRecord {
            ttft: Some(ttft),
            last_token: Some(last),
            itl: vec![(last - ttft) / (chunks.max(2) - 1) as f64; chunks.saturating_sub(1) as usize],
            text_chunks: chunks,
            usage_completion_tokens: usage,
            latency: last + 0.001,
            ..Default::default()
        }
    }

    #[test]
    fn tpot_uses_usage_tokens() {
        let r = ok(0.1, 1.1, 5, Some(11));
        assert!((r.tpot().unwrap() - 0.1).abs() < 1e-12);
        let r = ok(0.1, 1.1, 11, None);
        assert_eq!(r.completion_tokens(), 11);
        assert!((r.tpot().unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(ok(0.1, 0.1, 1, None).tpot(), None);
    }

    #[test]
    fn summary_counts_and_rates() {
        let mut records = vec![ok(0.1, 1.1, 11, Some(11)), ok(0.3, 1.3, 11, Some(11))];
        records.push(RequestRecord { error: Some("HTTP 503".into()), latency: 0.01, ..Default::default() });
        let s = Summary::new(&records, 2.0);
        assert_eq!(s.count, 3);
        assert_eq!(s.successes, 2);
        assert_eq!(s.errors, 1);
        assert!((s.error_rate - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.total_completion_tokens, 22);
        assert!((s.output_tokens_per_s - 11.0).abs() < 1e-12);
        assert!((s.requests_per_s - 1.0).abs() < 1e-12);
        assert!((s.ttft_ms.p50.unwrap() - 100.0).abs() < 1e-9);
        assert!((s.ttft_ms.p95.unwrap() - 300.0).abs() < 1e-9);
        assert_eq!(s.itl_ms.samples, 20);
        assert_eq!(s.error_kinds.get("HTTP 503"), Some(&1));
        let text = render("t", &s, Some(2048), None);
        assert!(text.contains("2.0 MiB"), "{text}");
    }

    #[test]
    fn empty_run() {
        let s = Summary::new(&[], 0.0);
        assert_eq!(s.count, 0);
        assert_eq!(s.error_rate, 0.0);
        assert_eq!(s.ttft_ms.p50, None);
    }
}
