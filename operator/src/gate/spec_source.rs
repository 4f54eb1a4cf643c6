//! The metrics source a spec chooses (`spec.metrics.source`), built in one place for both
//! readers: the gate's windows and the autoscaler's signal.

use std::collections::BTreeMap;

use super::direct::Direct;
use super::exposition::Counters;
use super::pods::Target;
use super::prometheus::Prometheus;
use super::promql::query_range_seconds;
use super::source::{LoadReading, MetricsSource, Reading, SourceFailure};
use crate::crd::{MetricsSource as SourceKind, MetricsSpec};

/// Direct or Prometheus, as the spec says; callers never ask which.
pub enum SpecSource {
    Direct(Direct),
    Prometheus(Prometheus),
}

/// What [`SpecSource`] remembers between readings: the Direct source's counters (Prometheus
/// keeps the history itself).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpecMark(Option<BTreeMap<String, Counters>>);

impl SpecSource {
    /// The source of `metrics` for resource `namespace/name`, reading windows of
    /// `window_seconds` (0 for the autoscaler's "now": Prometheus then uses its shortest range).
    pub fn for_spec(
        http: &reqwest::Client,
        metrics: &MetricsSpec,
        namespace: &str,
        name: &str,
        window_seconds: u32,
    ) -> SpecSource {
        match metrics.source {
            SourceKind::Direct => SpecSource::Direct(Direct { http: http.clone() }),
            SourceKind::Prometheus => SpecSource::Prometheus(Prometheus {
                http: http.clone(),
                base_url: metrics.prometheus_url.clone().unwrap_or_default(),
                namespace: namespace.to_string(),
                name: name.to_string(),
                range_seconds: query_range_seconds(window_seconds, metrics.scrape_interval_seconds),
            }),
        }
    }
}

impl MetricsSource for SpecSource {
    type Mark = SpecMark;

    async fn start(&self, revision: &str, targets: &[Target]) -> (SpecMark, Vec<SourceFailure>) {
        match self {
            SpecSource::Direct(direct) => {
                let (mark, failures) = direct.start(revision, targets).await;
                (SpecMark(Some(mark)), failures)
            }
            SpecSource::Prometheus(prometheus) => {
                let ((), failures) = prometheus.start(revision, targets).await;
                (SpecMark(None), failures)
            }
        }
    }

    async fn finish(&self, revision: &str, targets: &[Target], mark: SpecMark) -> Reading {
        match self {
            SpecSource::Direct(direct) => direct.finish(revision, targets, mark.0.unwrap_or_default()).await,
            SpecSource::Prometheus(prometheus) => prometheus.finish(revision, targets, ()).await,
        }
    }

    async fn load(&self, revision: &str, targets: &[Target], since: Option<SpecMark>) -> (LoadReading, SpecMark) {
        match self {
            SpecSource::Direct(direct) => {
                let (reading, mark) = direct.load(revision, targets, since.and_then(|m| m.0)).await;
                (reading, SpecMark(Some(mark)))
            }
            SpecSource::Prometheus(prometheus) => {
                let (reading, ()) = prometheus.load(revision, targets, None).await;
                (reading, SpecMark(None))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MetricsSpec;

    #[test]
    fn the_spec_chooses_the_source_and_the_prometheus_range() {
        let http = reqwest::Client::new();
        assert!(matches!(
            SpecSource::for_spec(&http, &MetricsSpec::default(), "ns", "chat", 30),
            SpecSource::Direct(_)
        ));
        let metrics = MetricsSpec {
            source: SourceKind::Prometheus,
            prometheus_url: Some("http://prometheus:9090".into()),
            scrape_interval_seconds: 15,
        };
        let SpecSource::Prometheus(p) = SpecSource::for_spec(&http, &metrics, "ns", "chat", 30) else {
            panic!("expected the Prometheus source");
        };
        assert_eq!(
            (p.base_url.as_str(), p.namespace.as_str(), p.name.as_str(), p.range_seconds),
            ("http://prometheus:9090", "ns", "chat", query_range_seconds(30, 15))
        );
    }
}
