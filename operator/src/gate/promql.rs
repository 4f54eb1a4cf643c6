//! The queries of the `Prometheus` source (DESIGN.md, "Gate sources") and reading their answers.
//!
//! The window `[W]` is the analysis interval; it must span at least two scrapes of the pods for
//! `rate` to see anything, otherwise the answer is empty and `onNoData` decides.

use serde_json::Value;

use crate::analysis::sample::GATE_QUANTILE;

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

fn selector(namespace: &str, revision: &str, extra: &str) -> String {
    format!("{{namespace={},revision={}{extra}}}", quote(namespace), quote(revision))
}

/// P95 TTFT of `revision` over the last `window_seconds`.
pub fn ttft_p95(namespace: &str, revision: &str, window_seconds: u32) -> String {
    format!(
        "histogram_quantile({GATE_QUANTILE}, sum by (le) (rate(infergate_time_to_first_token_seconds_bucket{}[{window_seconds}s])))",
        selector(namespace, revision, "")
    )
}

/// Requests that completed (client disconnects, 499, excluded, as in the direct source).
pub fn requests(namespace: &str, revision: &str, window_seconds: u32) -> String {
    format!(
        "sum(increase(infergate_requests_total{}[{window_seconds}s]))",
        selector(namespace, revision, ",status!=\"499\"")
    )
}

/// Failed requests: 5xx and 429 (overload counts as an error for the gate).
pub fn errors(namespace: &str, revision: &str, window_seconds: u32) -> String {
    format!(
        "sum(increase(infergate_requests_total{}[{window_seconds}s]))",
        selector(namespace, revision, ",status=~\"5..|429\"")
    )
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

    #[test]
    fn queries_follow_the_design() {
        assert_eq!(
            ttft_p95("ml", "abc", 60),
            r#"histogram_quantile(0.95, sum by (le) (rate(infergate_time_to_first_token_seconds_bucket{namespace="ml",revision="abc"}[60s])))"#
        );
        assert_eq!(
            errors("ml", "abc", 30),
            r#"sum(increase(infergate_requests_total{namespace="ml",revision="abc",status=~"5..|429"}[30s]))"#
        );
        assert!(requests("ml", "abc", 30).contains(r#"status!="499""#));
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
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
