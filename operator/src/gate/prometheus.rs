//! The `Prometheus` source: the queries of [`super::promql`] over the HTTP API, evaluated at the
//! window's end over [`promql::query_range_seconds`].

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::pods::Target;
use super::promql::{self, Series};
use super::source::{LoadReading, MetricsSource, Reading, SourceFailure};
use crate::analysis::Sample;
use crate::error::{Error, Result};
use infergate_protocol::metrics;

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
        let at = Timestamp::now();
        match self.measure(&series, at).await {
            // The gauges only inform the watch's comparison: without them it is not refused.
            Ok(sample) => Reading {
                sample,
                in_flight_per_pod: self.in_flight_per_pod(&series, at).await.ok().flatten(),
                failures: Vec::new(),
            },
            Err(error) => Reading {
                sample: Sample::default(),
                in_flight_per_pod: None,
                failures: vec![SourceFailure { pod: None, message: format!("prometheus: {error}") }],
            },
        }
    }

    async fn load(&self, revision: &str, _targets: &[Target], _since: Option<()>) -> (LoadReading, ()) {
        let series = Series { namespace: &self.namespace, name: &self.name, revision };
        let reading = match self.load_now(&series, Timestamp::now()).await {
            Ok(reading) => reading,
            Err(error) => LoadReading {
                failures: vec![SourceFailure { pod: None, message: format!("prometheus: {error}") }],
                ..LoadReading::default()
            },
        };
        (reading, ())
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

    /// Requests in flight per reporting pod at `at`.
    async fn in_flight_per_pod(&self, series: &Series<'_>, at: Timestamp) -> Result<Option<f64>> {
        let pods = self.query(&promql::reporting_pods(series), at).await?.unwrap_or(0.0);
        if pods <= 0.0 {
            return Ok(None);
        }
        let waiting = self.query(&promql::gauge_sum(series, metrics::REQUESTS_WAITING), at).await?;
        let running = self.query(&promql::gauge_sum(series, metrics::REQUESTS_RUNNING), at).await?;
        Ok(Some((waiting.unwrap_or(0.0) + running.unwrap_or(0.0)) / pods))
    }

    async fn load_now(&self, series: &Series<'_>, at: Timestamp) -> Result<LoadReading> {
        let pods = self.query(&promql::reporting_pods(series), at).await?.unwrap_or(0.0);
        let waiting = self.query(&promql::gauge_sum(series, metrics::REQUESTS_WAITING), at).await?;
        let running = self.query(&promql::gauge_sum(series, metrics::REQUESTS_RUNNING), at).await?;
        Ok(LoadReading {
            // A count of series: a small non-negative integer.
            pods: pods.max(0.0) as u32,
            waiting: waiting.unwrap_or(0.0),
            running: running.unwrap_or(0.0),
            recent: Some(self.measure(series, at).await?),
            failures: Vec::new(),
        })
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
