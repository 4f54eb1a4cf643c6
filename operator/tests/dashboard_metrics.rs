//! The chart's Grafana dashboards query only series the code exports: metric names come from the
//! real registries of infergate-server and of the operator, not from a list kept by hand.

mod promql;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use infergate_operator::crd::Phase;
use infergate_protocol::metrics;
use serde_json::{json, Value};

/// Labels Prometheus adds at scrape time; `name` comes from the chart's serving PodMonitor, which
/// copies the pod label infergate.dev/name (the operator's own series carry it themselves).
const TARGET_LABELS: &[&str] = &["job", "instance", "namespace", "pod", "container", "service", "endpoint", "name"];

/// Series names (histograms expanded to _bucket/_sum/_count) and label names of an exposition.
#[derive(Default)]
struct Exported {
    series: BTreeSet<String>,
    labels: BTreeSet<String>,
    /// Label names per series name, for the DESIGN.md contract below.
    labels_of: BTreeMap<String, BTreeSet<String>>,
}

impl Exported {
    fn add(&mut self, text: &str) {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                    panic!("malformed TYPE line {line:?}");
                };
                match kind {
                    "histogram" | "summary" => {
                        for suffix in ["_bucket", "_sum", "_count"] {
                            if kind == "histogram" || suffix != "_bucket" {
                                self.series.insert(format!("{name}{suffix}"));
                            }
                        }
                        if kind == "summary" {
                            self.series.insert(name.to_string());
                        }
                    }
                    _ => {
                        self.series.insert(name.to_string());
                    }
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                let (name, labels) = match line.split_once('{') {
                    Some((name, rest)) => (name, rest.split_once('}').map_or("", |(labels, _)| labels)),
                    None => (line.split_whitespace().next().unwrap_or_default(), ""),
                };
                // Label values are quoted and never contain `="` in these registries' output.
                let names: BTreeSet<String> = labels
                    .split("\",")
                    .filter_map(|pair| pair.split_once("=\"").map(|(k, _)| k.trim().to_string()))
                    .collect();
                self.labels.extend(names.iter().cloned());
                self.labels_of.entry(name.to_string()).or_default().extend(names);
            }
        }
    }
}

/// What the server and the operator export. Labelled families appear in an exposition only once
/// a child exists, so every one of them gets a sample first.
fn exported() -> Exported {
    let server = infergate_server::metrics::Metrics::new("model", "rev").expect("server registry");
    server.record_status(200);
    // GPU servers register the VRAM gauges once the model is on a device; a fixed reading here.
    let vram = infergate_server::device::DeviceMemory { used: 1 << 30, total: 80 << 30 };
    server.watch_gpu_memory(Box::new(move || Some(vram))).expect("GPU memory gauges");
    let operator = infergate_operator::metrics::Metrics::new().expect("operator registry");
    operator.set_phase("ns", "chat", Some(Phase::Healthy));
    operator.reconcile_errors.with_label_values(&["kube"]).inc();
    let measurement = serde_json::from_value(json!({
        "revision": "rev", "time": "2026-01-01T00:00:00Z", "ttftP95Ms": 250.0, "errorRate": 0.01,
        "requests": 100, "verdict": "Pass",
    }))
    .expect("measurement");
    operator.record_measurement("ns", "chat", &measurement);
    operator.record_autoscale("ns", "chat", "queueDepthPerReplica", 2, Some(1.5));

    let mut exported = Exported::default();
    exported.add(&server.render());
    exported.add(&operator.render().expect("operator exposition"));
    exported
}

fn dashboards() -> Vec<(PathBuf, Value)> {
    let dir = package_dir().join("../charts/infergate/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("dashboard");
            let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, value)
        })
        .collect()
}

/// Every PromQL text of a dashboard, with where it sits: panel and annotation `expr`s, and the
/// selectors of `label_values` variables.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let here = format!("{at}.{key}");
                    match (key.as_str(), child) {
                        ("expr", Value::String(expr)) => out.push((here, expr.clone())),
                        _ => walk(child, &here, out),
                    }
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, &format!("{at}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], "panels", &mut out);
    walk(&dashboard["annotations"], "annotations", &mut out);
    for (i, variable) in dashboard["templating"]["list"].as_array().into_iter().flatten().enumerate() {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"].as_str().or(variable["query"].as_str()).unwrap_or_default();
        let (selector, label) = promql::label_values(query).unwrap_or_else(|e| panic!("templating[{i}]: {e}"));
        out.push((format!("templating[{i}]"), selector.to_string()));
        // The variable's label as a bare matcher, so its name is checked like any other label.
        out.push((format!("templating[{i}] label"), format!("{{{label}=\"\"}}")));
    }
    out
}

#[test]
fn every_dashboard_query_names_exported_series_and_labels() {
    let exported = exported();
    let known_labels: BTreeSet<String> =
        exported.labels.iter().cloned().chain(TARGET_LABELS.iter().map(|l| l.to_string())).collect();
    for (path, dashboard) in dashboards() {
        let queries = queries(&dashboard);
        assert!(queries.len() >= 10, "{}: only {} queries found", path.display(), queries.len());
        let mut problems = Vec::new();
        for (at, expr) in &queries {
            let names = match promql::names(expr) {
                Ok(names) => names,
                Err(e) => {
                    problems.push(format!("{at}: {e} in {expr}"));
                    continue;
                }
            };
            for metric in names.metrics.difference(&exported.series) {
                problems.push(format!("{at}: {metric} is not exported"));
            }
            for label in names.labels.difference(&known_labels) {
                problems.push(format!("{at}: label {label} is neither exported nor added at scrape time"));
            }
        }
        assert!(problems.is_empty(), "{}:\n{}", path.display(), problems.join("\n"));
    }
}

#[test]
fn the_dashboard_covers_serving_and_rollouts() {
    let (path, dashboard) = dashboards().into_iter().find(|(p, _)| p.ends_with("infergate.json")).expect("dashboard");
    let used: BTreeSet<String> = queries(&dashboard)
        .iter()
        .flat_map(|(_, expr)| promql::names(expr).map(|n| n.metrics).unwrap_or_default())
        .collect();
    // The server's series, named by the protocol crate the server registers them from.
    let ttft_buckets = format!("{}_bucket", metrics::TIME_TO_FIRST_TOKEN.full);
    let tpot_buckets = format!("{}_bucket", metrics::TIME_PER_OUTPUT_TOKEN.full);
    for needed in [
        ttft_buckets.as_str(),
        tpot_buckets.as_str(),
        metrics::GENERATION_TOKENS.full,
        metrics::REQUESTS.full,
        metrics::REQUESTS_WAITING.full,
        metrics::BATCH_SIZE.full,
        metrics::RESIDENT_MEMORY.full,
        metrics::GPU_MEMORY_USED.full,
        metrics::GPU_MEMORY_TOTAL.full,
        "infergate_rollout_phase",
        "infergate_gate_ttft_p95_seconds",
        "infergate_gate_error_rate",
        "infergate_rollouts_total",
        "infergate_autoscale_desired_replicas",
        "infergate_autoscale_signal",
    ] {
        assert!(used.contains(needed), "{}: no query uses {needed}", path.display());
    }
    // Promotions and rollbacks are marked on the graphs, from increases of infergate_rollouts_total.
    let annotations: Vec<&str> =
        dashboard["annotations"]["list"].as_array().into_iter().flatten().filter_map(|a| a["expr"].as_str()).collect();
    for result in ["Promoted", "RolledBack"] {
        assert!(
            annotations.iter().any(|e| e.contains("increase(infergate_rollouts_total")
                && e.contains(&format!("result=\"{result}\""))),
            "{}: no annotation marks {result}: {annotations:?}",
            path.display()
        );
    }
}

/// DESIGN.md, "Operator metrics (cluster-wide)": the names and labels the README documents.
#[test]
fn the_operator_exports_the_design_names() {
    let exported = exported();
    let expected: [(&str, &[&str]); 8] = [
        ("infergate_rollouts_total", &["result"]),
        ("infergate_rollout_phase", &["namespace", "name", "phase"]),
        ("infergate_gate_ttft_p95_seconds", &["namespace", "name", "revision"]),
        ("infergate_gate_error_rate", &["namespace", "name", "revision"]),
        ("infergate_reconcile_duration_seconds_bucket", &["le"]),
        ("infergate_reconcile_errors_total", &["error"]),
        ("infergate_autoscale_desired_replicas", &["namespace", "name"]),
        ("infergate_autoscale_signal", &["namespace", "name", "signal"]),
    ];
    for (name, labels) in expected {
        let got = exported.labels_of.get(name).unwrap_or_else(|| panic!("{name} is not exported"));
        let want: BTreeSet<String> = labels.iter().map(|l| l.to_string()).collect();
        assert_eq!(got, &want, "labels of {name}");
    }
}

/// The package's folder: cargo sets CARGO_MANIFEST_DIR when it runs the binary; the build-time
/// value is only a fallback, since a build cache shared between checkouts can hand this binary
/// to another checkout than the one it was compiled in.
fn package_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
