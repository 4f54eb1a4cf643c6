//! The `Prometheus` source: the queries of [`super::promql`] over the HTTP API, evaluated at the
//! window's end over [`promql::query_range_seconds`].

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::pods::Target;
use super::promql::{self, Series};
use super::source::{MetricsSource, Reading, SourceFailure};
use crate::analysis::Sample;
use crate::error::{Error, Result};

const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Prometheus {
    pub http: reqwest::Client,
    pub base_url: String,
    pub namespace: String,
    /// The InferenceDeployment's name (the series' `name` label).
    pub name: String,
    /// The queries' range: see [`promql::query_range_seconds`].
    pub range_seconds: u32,
}

impl MetricsSource for Prometheus {
    /// Prometheus keeps the history itself: nothing to remember at the start.
    type Mark = ();

    async fn start(&self, _revision: &str, _targets: &[Target]) -> ((), Vec<SourceFailure>) {
        ((), Vec::new())
    }

    async fn finish(&self, revision: &str, _targets: &[Target], (): ()) -> Reading {
        let series = Series { namespace: &self.namespace, name: &self.name, revision };
        match self.measure(&series, Timestamp::now()).await {
            Ok(sample) => Reading { sample, failures: Vec::new() },
            Err(error) => Reading {
                sample: Sample::default(),
                failures: vec![SourceFailure { pod: None, message: format!("prometheus: {error}") }],
            },
        }
    }
}

impl Prometheus {
    async fn measure(&self, series: &Series<'_>, at: Timestamp) -> Result<Sample> {
        let range = self.range_seconds;
        let requests = self.query(&promql::requests(series, range), at).await?;
        let errors = self.query(&promql::errors(series, range), at).await?;
        let p95 = self.query(&promql::ttft_p95(series, range), at).await?;
        Ok(Sample { requests: requests.unwrap_or(0.0), errors: errors.unwrap_or(0.0), ttft_p95_seconds: p95 })
    }

    async fn query(&self, promql: &str, at: Timestamp) -> Result<Option<f64>> {
        let url = format!("{}/api/v1/query", self.base_url.trim_end_matches('/'));
        let time = format!("{:.3}", at.as_millisecond() as f64 / 1000.0);
        let response = self
            .http
            .get(&url)
            .query(&[("query", promql), ("time", time.as_str())])
            .timeout(QUERY_TIMEOUT)
            .send()
            .await?;
        let answer: serde_json::Value = response.json().await?;
        promql::scalar_of(&answer).map_err(Error::Gate)
    }
}
