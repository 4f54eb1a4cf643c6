//! Reads the counters the gate needs from one Prometheus text exposition (a pod's `/metrics`).
//!
//! Only the families the gate and the autoscaler use are kept, and only the series of the requested revision;
//! label order is not fixed by the format, so labels are parsed, never matched as text.

use std::collections::BTreeMap;

use infergate_protocol::metrics::{self, BUCKET_SUFFIX, REVISION_LABEL, STATUS_LABEL};

use crate::analysis::quantile::Bucket;

/// The TTFT histogram's bucket series.
fn ttft_bucket() -> String {
    format!("{}{BUCKET_SUFFIX}", metrics::TIME_TO_FIRST_TOKEN.full)
}

/// The gate's counters of one revision in one scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    /// Cumulative TTFT buckets, summed over series with the same `le` (e.g. several models).
    pub ttft_buckets: Vec<Bucket>,
    /// `requests_total` by HTTP status.
    pub requests_by_status: BTreeMap<String, f64>,
    /// The queue gauge (`num_requests_waiting`) now, summed over series; the autoscaler's signal.
    pub requests_waiting: f64,
    /// The running-batch gauge (`num_requests_running`) now, summed over series.
    pub requests_running: f64,
}

impl Counters {
    /// Parses `text`, keeping series whose `revision` label is `revision`.
    pub fn parse(text: &str, revision: &str) -> Counters {
        let mut counters = Counters::default();
        let ttft_bucket = ttft_bucket();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some(sample) = Sample::parse(line) else {
                continue;
            };
            let gauge = sample.name == metrics::REQUESTS_WAITING.full || sample.name == metrics::REQUESTS_RUNNING.full;
            if sample.name != ttft_bucket && sample.name != metrics::REQUESTS.full && !gauge {
                continue;
            }
            if sample.label(REVISION_LABEL) != Some(revision) {
                continue;
            }
            if sample.name == metrics::REQUESTS_WAITING.full {
                counters.requests_waiting += sample.value;
            } else if sample.name == metrics::REQUESTS_RUNNING.full {
                counters.requests_running += sample.value;
            } else if sample.name == ttft_bucket {
                let Some(upper_bound) = sample.label("le").and_then(parse_value) else {
                    continue;
                };
                match counters.ttft_buckets.iter_mut().find(|b| b.upper_bound == upper_bound) {
                    Some(bucket) => bucket.count += sample.value,
                    None => counters.ttft_buckets.push(Bucket { upper_bound, count: sample.value }),
                }
            } else if let Some(status) = sample.label(STATUS_LABEL) {
                *counters.requests_by_status.entry(status.to_string()).or_default() += sample.value;
            }
        }
        counters.ttft_buckets.sort_by(|a, b| a.upper_bound.total_cmp(&b.upper_bound));
        counters
    }

    /// Observations in the TTFT histogram (its `+Inf` bucket).
    pub fn ttft_count(&self) -> f64 {
        self.ttft_buckets.iter().find(|b| b.upper_bound == f64::INFINITY).map_or(0.0, |b| b.count)
    }
}

/// One sample line: `name{label="value",...} value [timestamp]`.
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

impl<'a> Sample<'a> {
    fn parse(line: &'a str) -> Option<Sample<'a>> {
        let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
        let name = &line[..name_end];
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if rest.starts_with('{') {
            let (parsed, after) = parse_labels(&rest[1..])?;
            labels = parsed;
            rest = after;
        }
        let value = parse_value(rest.split_whitespace().next()?)?;
        Some(Sample { name, labels, value })
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str())
    }
}

/// Parses `k="v",...}` and returns the labels and the text after the closing brace.
fn parse_labels(mut s: &str) -> Option<(Vec<(&str, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim();
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                other => value.push(other),
            }
        };
        labels.push((key, value));
        s = &s[end + 1..];
    }
}

/// Exposition values: floats plus `+Inf`, `-Inf` and `NaN`.
fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        other => other.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scrape of two revisions; `$NAME` stands for a series' full name (see [`text`]).
    const TEMPLATE: &str = r#"# HELP $TTFT Time to first token
# TYPE $TTFT histogram
$TTFT_bucket{le="0.05",model="m",revision="bbb"} 3
$TTFT_bucket{revision="bbb",model="m",le="0.1"} 7
$TTFT_bucket{model="m",revision="bbb",le="+Inf"} 9
$TTFT_bucket{model="m",revision="aaa",le="+Inf"} 100
$TTFT_sum{model="m",revision="bbb"} 0.6
$TTFT_count{model="m",revision="bbb"} 9
$REQUESTS{status="200",model="m",revision="bbb"} 8
$REQUESTS{model="m",revision="bbb",status="500"} 1
$REQUESTS{model="m, \"quoted\"",revision="bbb",status="200"} 2 1700000000000
$TPOT_bucket{le="+Inf",model="m",revision="bbb"} 50
$WAITING{model="m",revision="bbb"} 3
$RUNNING{model="m",revision="bbb"} 2
$WAITING{model="m",revision="aaa"} 40
"#;

    /// [`TEMPLATE`] with the names the server exports.
    fn text() -> String {
        [
            ("$TTFT", metrics::TIME_TO_FIRST_TOKEN),
            ("$TPOT", metrics::TIME_PER_OUTPUT_TOKEN),
            ("$REQUESTS", metrics::REQUESTS),
            ("$WAITING", metrics::REQUESTS_WAITING),
            ("$RUNNING", metrics::REQUESTS_RUNNING),
        ]
        .into_iter()
        .fold(TEMPLATE.to_string(), |text, (placeholder, series)| text.replace(placeholder, series.full))
    }

    #[test]
    fn keeps_the_revision_and_ignores_label_order() {
        let text = text();
        let c = Counters::parse(&text, "bbb");
        let bounds: Vec<(f64, f64)> = c.ttft_buckets.iter().map(|b| (b.upper_bound, b.count)).collect();
        assert_eq!(bounds, vec![(0.05, 3.0), (0.1, 7.0), (f64::INFINITY, 9.0)]);
        assert_eq!(c.ttft_count(), 9.0);
        assert_eq!(c.requests_by_status.get("200"), Some(&10.0));
        assert_eq!(c.requests_by_status.get("500"), Some(&1.0));
        assert_eq!((c.requests_waiting, c.requests_running), (3.0, 2.0));
        assert_eq!(Counters::parse(&text, "aaa").ttft_count(), 100.0);
        assert_eq!(Counters::parse(&text, "aaa").requests_waiting, 40.0);
        assert_eq!(Counters::parse(&text, "zzz"), Counters::default());
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let broken = format!("{}{{status=\"200\",revision=\"r\"\nnonsense\n", metrics::REQUESTS.full);
        let c = Counters::parse(&broken, "r");
        assert_eq!(c, Counters::default());
    }
}
