//! The `--json-out` document of one run: the binary writes it, `infergate-bench report` reads
//! it back (through `benchmarks::results`), both through [`RunReport`]. Fields added after a
//! report was written read as their default, so older results folders still render.

use serde::{Deserialize, Serialize};

use crate::report::Summary;

/// One run: its label, what it was asked to do, what the server's process used, and the
/// summary of its requests (at the top level of the JSON object).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// `scenario/kind/rN` in bench.sh's runs.
    pub label: String,
    #[serde(default)]
    pub timestamp_unix: u64,
    #[serde(default)]
    pub percentile_method: String,
    #[serde(default)]
    pub params: RunParams,
    #[serde(default)]
    pub server_peak_rss_kib: Option<u64>,
    #[serde(default)]
    pub server_vmhwm_kib: Option<u64>,
    #[serde(default)]
    pub rss_samples: usize,
    #[serde(default)]
    pub cpu: CpuUsage,
    #[serde(flatten)]
    pub summary: Summary,
}

/// How the percentiles of a report are taken (see `stats`).
pub const PERCENTILE_METHOD: &str = "nearest-rank";

/// Closed loop (`--concurrency`) or open loop (`--rate`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadMode {
    #[default]
    Closed,
    Open,
}

/// The command line of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunParams {
    pub url: String,
    pub mode: LoadMode,
    pub concurrency: Option<usize>,
    pub rate: Option<f64>,
    pub requests: usize,
    pub prompt_tokens: usize,
    pub prompt_tokens_max: Option<usize>,
    pub prompt_words: usize,
    pub words_per_token: f64,
    pub max_tokens: usize,
    pub seed: u64,
    pub max_duration_seconds: f64,
    pub request_timeout_seconds: f64,
    pub model: Option<String>,
    pub server_pid: Option<u32>,
}

/// CPU seconds used during the run by the server, the bench, the whole machine, stolen by the
/// hypervisor and by everything else; shares are % of all the machine's cores. `None` where
/// /proc could not be read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuUsage {
    pub server_cpu_s: Option<f64>,
    pub bench_cpu_s: Option<f64>,
    pub machine_busy_cpu_s: Option<f64>,
    pub steal_cpu_s: Option<f64>,
    pub other_cpu_s: Option<f64>,
    pub other_cpu_pct_of_machine: Option<f64>,
    pub server_cpu_pct_of_machine: Option<f64>,
    pub ncpu: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::RequestRecord;

    fn records() -> Vec<RequestRecord> {
        let ok = RequestRecord {
            ttft: Some(0.05),
            last_token: Some(0.25),
            itl: vec![0.1, 0.1],
            text_chunks: 3,
            usage_completion_tokens: Some(3),
            usage_prompt_tokens: Some(12),
            latency: 0.3,
            ..Default::default()
        };
        let failed = RequestRecord { error: Some("HTTP 503: busy".into()), latency: 0.01, ..Default::default() };
        vec![ok.clone(), ok, failed]
    }

    #[test]
    fn a_written_report_reads_back_as_the_same_report() {
        let report = RunReport {
            label: "seed/infergate/r1".into(),
            timestamp_unix: 1_764_633_600,
            percentile_method: PERCENTILE_METHOD.into(),
            params: RunParams {
                url: "http://127.0.0.1:8000".into(),
                mode: LoadMode::Open,
                rate: Some(2.5),
                requests: 3,
                prompt_tokens: 64,
                prompt_words: 58,
                words_per_token: 0.9,
                max_tokens: 3,
                seed: 7,
                max_duration_seconds: 60.0,
                request_timeout_seconds: 30.0,
                server_pid: Some(42),
                ..Default::default()
            },
            server_peak_rss_kib: Some(300_000),
            server_vmhwm_kib: None,
            rss_samples: 12,
            cpu: CpuUsage { server_cpu_s: Some(1.5), ncpu: 2.0, ..Default::default() },
            summary: Summary::new(&records(), 1.5),
        };
        let text = serde_json::to_string_pretty(&report).unwrap();
        let back: RunReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, report);
        // The summary's fields sit at the top level, where older readers and scripts find them.
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["errors"], 1);
        assert_eq!(value["params"]["mode"], "open");
        assert_eq!(value["error_kinds"]["HTTP 503: busy"], 1);
    }

    #[test]
    fn a_report_with_only_the_documents_fields_still_reads() {
        let text = r#"{"label":"seed/llama/r2","count":5,"errors":0,"output_tokens_per_s":20.0,
                       "ttft_ms":{"p50":1.0,"p95":2.0},"extra":1}"#;
        let report: RunReport = serde_json::from_str(text).unwrap();
        assert_eq!((report.summary.count, report.summary.ttft_ms.p95), (5, Some(2.0)));
        assert_eq!(report.params, RunParams::default());
        assert!(serde_json::from_str::<RunReport>(r#"{"count":5}"#).is_err(), "a report needs its label");
    }
}
