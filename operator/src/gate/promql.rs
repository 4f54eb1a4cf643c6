//! The queries of the `Prometheus` source (DESIGN.md, "Gate sources") and reading their answers.
//!
//! Every query selects one revision of one InferenceDeployment: `namespace` (from service
//! discovery), `name` (the pod label `infergate.dev/name`, relabelled to `name` by the chart's
//! serving PodMonitor and by the end-to-end harness' scrape config) and `revision` (exported by
//! the server itself). Without `name`, two resources with the same pod template in one
//! namespace (same revision hash) would mix their series.

use infergate_protocol::metrics::{
    self, BUCKET_SUFFIX, CLIENT_GONE_STATUS, ERROR_STATUS_REGEX, NAMESPACE_LABEL, NAME_LABEL, REVISION_LABEL,
    STATUS_LABEL,
};
use serde_json::Value;

use crate::analysis::sample::GATE_QUANTILE;

/// The series of one revision of one resource.
#[derive(Clone, Copy, Debug)]
pub struct Series<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub revision: &'a str,
}

/// The queries' range `[W]`: the analysis interval, but at least four scrape intervals.
///
/// `rate` and `increase` need at least two samples inside the range, and a range of exactly two
/// scrape intervals loses one whenever a scrape is late or missed; four intervals is the rule of
/// thumb of Prometheus' and Grafana's documentation (Grafana's `$__rate_interval`). A shorter
/// range returns nothing and every window would be "no data".
pub fn query_range_seconds(interval_seconds: u32, scrape_interval_seconds: u32) -> u32 {
    interval_seconds.max(scrape_interval_seconds.saturating_mul(4))
}

/// Label values are quoted PromQL strings.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
    out.push('"');
    out
}

fn selector(series: &Series<'_>, extra: &str) -> String {
    format!(
        "{{{NAMESPACE_LABEL}={},{NAME_LABEL}={},{REVISION_LABEL}={}{extra}}}",
        quote(series.namespace),
        quote(series.name),
        quote(series.revision)
    )
}

/// P95 TTFT of the series over the last `range_seconds`.
pub fn ttft_p95(series: &Series<'_>, range_seconds: u32) -> String {
    format!(
        "histogram_quantile({GATE_QUANTILE}, sum by (le) (rate({}{BUCKET_SUFFIX}{}[{range_seconds}s])))",
        metrics::TIME_TO_FIRST_TOKEN.full,
        selector(series, "")
    )
}

/// Requests that completed (client disconnects, 499, excluded, as in the direct source).
pub fn requests(series: &Series<'_>, range_seconds: u32) -> String {
    let completed = format!(",{STATUS_LABEL}!=\"{CLIENT_GONE_STATUS}\"");
    format!("sum(increase({}{}[{range_seconds}s]))", metrics::REQUESTS.full, selector(series, &completed))
}

/// Failed requests: the statuses `classify_status` calls errors (5xx and 429: overload counts
/// as an error for the gate).
pub fn errors(series: &Series<'_>, range_seconds: u32) -> String {
    let failed = format!(",{STATUS_LABEL}=~\"{ERROR_STATUS_REGEX}\"");
    format!("sum(increase({}{}[{range_seconds}s]))", metrics::REQUESTS.full, selector(series, &failed))
}

/// A gauge of the series now, summed over its pods (the autoscaler's queue and running counts).
pub fn gauge_sum(series: &Series<'_>, gauge: metrics::Series) -> String {
    format!("sum({}{})", gauge.full, selector(series, ""))
}

/// Pods of the series that reported the queue gauge: the autoscaler's per-replica divisor.
pub fn reporting_pods(series: &Series<'_>) -> String {
    format!("count({}{})", metrics::REQUESTS_WAITING.full, selector(series, ""))
}

/// The single value of an instant-vector answer of `/api/v1/query`; `None` for an empty result
/// or NaN (Argo Rollouts crashes here; for us it is "no data").
pub fn scalar_of(answer: &Value) -> Result<Option<f64>, String> {
    if answer["status"] != "success" {
        return Err(format!("prometheus answered {}: {}", answer["status"], answer["error"]));
    }
    let result = &answer["data"]["result"];
    let Some(first) = result.as_array().and_then(|r| r.first()) else {
        return Ok(None);
    };
    let text = first["value"][1].as_str().ok_or_else(|| format!("unexpected result {first}"))?;
    let value = match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse::<f64>().map_err(|e| format!("value {other:?}: {e}"))?,
    };
    Ok(value.is_finite().then_some(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CHAT: Series<'static> = Series { namespace: "ml", name: "chat", revision: "abc" };
    /// [`CHAT`]'s label matchers, as every query selects them.
    const CHAT_SELECTOR: &str = r#"namespace="ml",name="chat",revision="abc""#;

    #[test]
    fn queries_follow_the_design() {
        let (ttft, requests_total, waiting) =
            (metrics::TIME_TO_FIRST_TOKEN.full, metrics::REQUESTS.full, metrics::REQUESTS_WAITING.full);
        assert_eq!(
            ttft_p95(&CHAT, 60),
            format!(r#"histogram_quantile(0.95, sum by (le) (rate({ttft}_bucket{{{CHAT_SELECTOR}}}[60s])))"#)
        );
        assert_eq!(
            errors(&CHAT, 30),
            format!(r#"sum(increase({requests_total}{{{CHAT_SELECTOR},status=~"5..|429"}}[30s]))"#)
        );
        assert!(requests(&CHAT, 30).contains(r#"status!="499""#));
        assert_eq!(gauge_sum(&CHAT, metrics::REQUESTS_WAITING), format!("sum({waiting}{{{CHAT_SELECTOR}}})"));
        assert_eq!(reporting_pods(&CHAT), format!("count({waiting}{{{CHAT_SELECTOR}}})"));
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn the_range_spans_at_least_four_scrapes() {
        assert_eq!(query_range_seconds(30, 15), 60);
        assert_eq!(query_range_seconds(120, 15), 120);
        assert_eq!(query_range_seconds(5, 1), 5);
        assert_eq!(query_range_seconds(30, u32::MAX), u32::MAX);
    }

    #[test]
    fn empty_and_nan_answers_are_no_data() {
        let empty = json!({"status": "success", "data": {"resultType": "vector", "result": []}});
        assert_eq!(scalar_of(&empty), Ok(None));
        let nan = json!({"status": "success", "data": {"result": [{"metric": {}, "value": [1.0, "NaN"]}]}});
        assert_eq!(scalar_of(&nan), Ok(None));
        let value = json!({"status": "success", "data": {"result": [{"metric": {}, "value": [1.0, "0.25"]}]}});
        assert_eq!(scalar_of(&value), Ok(Some(0.25)));
        let error = json!({"status": "error", "error": "parse error"});
        assert!(scalar_of(&error).is_err());
    }
}
