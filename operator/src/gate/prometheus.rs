//! The `Prometheus` source: the queries of [`super::promql`] over the HTTP API, evaluated at the
//! window's end.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::promql;
use crate::analysis::Sample;
use crate::error::{Error, Result};

const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn measure(
    http: &reqwest::Client,
    base_url: &str,
    namespace: &str,
    revision: &str,
    window_seconds: u32,
    at: Timestamp,
) -> Result<Sample> {
    let requests = query(http, base_url, &promql::requests(namespace, revision, window_seconds), at).await?;
    let errors = query(http, base_url, &promql::errors(namespace, revision, window_seconds), at).await?;
    let p95 = query(http, base_url, &promql::ttft_p95(namespace, revision, window_seconds), at).await?;
    Ok(Sample { requests: requests.unwrap_or(0.0), errors: errors.unwrap_or(0.0), ttft_p95_seconds: p95 })
}

async fn query(http: &reqwest::Client, base_url: &str, promql: &str, at: Timestamp) -> Result<Option<f64>> {
    let url = format!("{}/api/v1/query", base_url.trim_end_matches('/'));
    let time = format!("{:.3}", at.as_millisecond() as f64 / 1000.0);
    let response =
        http.get(&url).query(&[("query", promql), ("time", time.as_str())]).timeout(QUERY_TIMEOUT).send().await?;
    let answer: serde_json::Value = response.json().await?;
    promql::scalar_of(&answer).map_err(Error::Gate)
}
