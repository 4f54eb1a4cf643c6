//! The Prometheus source's queries name series infergate-server exports, and select them by
//! labels that exist once Prometheus scraped a pod: the server's own, plus `namespace` (service
//! discovery) and `name` (the serving PodMonitor's relabelling of infergate.dev/name).

// Shared with the dashboard test, which uses more of it.
#[allow(dead_code)]
mod promql;

use std::collections::BTreeSet;

use infergate_operator::gate::promql::{errors, requests, ttft_p95, Series};

/// Series and label names of the server's exposition (histograms as _bucket/_sum/_count).
fn server_exports() -> (BTreeSet<String>, BTreeSet<String>) {
    let server = infergate_server::metrics::Metrics::new("model", "rev").expect("server registry");
    server.record_status(200);
    let text = server.render();
    let mut series = BTreeSet::new();
    let mut labels = BTreeSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (name, rest) = line.split_once('{').unwrap_or((line.split_whitespace().next().unwrap_or_default(), ""));
        series.insert(name.to_string());
        let inside = rest.split_once('}').map_or("", |(inside, _)| inside);
        labels.extend(inside.split("\",").filter_map(|pair| pair.split_once("=\"").map(|(k, _)| k.trim().to_string())));
    }
    (series, labels)
}

#[test]
fn the_gate_queries_select_exported_series_by_scraped_labels() {
    let (series, mut labels) = server_exports();
    labels.extend(["namespace".to_string(), "name".to_string()]);
    let chat = Series { namespace: "ml", name: "chat", revision: "abc" };
    for query in [ttft_p95(&chat, 60), requests(&chat, 60), errors(&chat, 60)] {
        let names = promql::names(&query).unwrap_or_else(|e| panic!("{e} in {query}"));
        assert!(!names.metrics.is_empty(), "{query}");
        for metric in &names.metrics {
            assert!(series.contains(metric), "{metric} is not exported: {query}");
        }
        for label in ["namespace", "name", "revision"] {
            assert!(names.labels.contains(label), "{query} does not select {label}");
        }
        for label in &names.labels {
            assert!(labels.contains(label), "label {label} is neither exported nor added at scrape time: {query}");
        }
    }
}
