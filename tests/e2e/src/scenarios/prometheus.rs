//! The Prometheus gate source against a real Prometheus (Debian's) scraping the pods: a good
//! revision is promoted and a slow one rolled back, both judged from PromQL over the scraped
//! histograms.
//!
//! Debian builds Prometheus without Kubernetes service discovery, so the harness does what
//! `kubernetes_sd_configs` (role: pod) would: it lists the pods that carry the
//! prometheus.io/scrape annotation and hands them to Prometheus through `file_sd_configs`,
//! with the same relabelled target labels (namespace, pod, and `name` from the pod label
//! infergate.dev/name, as the chart's serving PodMonitor relabels it: the gate's PromQL selects it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use infergate_protocol::metrics;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

use super::rollouts::{promote_under_client_load, roll_back};
use super::support::{summary, SLOW_TTFT_DELAY_MS, SLO_TTFT_MS};
use super::Suite;
use crate::bail;
use crate::error::{Error, Result};
use crate::ports::free_port;
use crate::{process, wait};

const NAMESPACE: &str = "e2e-prometheus";
const NAME: &str = "chat";

/// The servers' own `model` and `revision` labels are kept (honor_labels); `namespace` comes
/// from discovery (the gate's PromQL filters on it).
fn config(targets: &Path) -> String {
    format!(
        r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
- job_name: infergate-pods
  honor_labels: true
  file_sd_configs:
  - files: [{targets}]
    refresh_interval: 1s
"#,
        targets = targets.display()
    )
}

/// The file_sd targets of every pod that asks to be scraped and has an IP: address from the
/// pod IP and the prometheus.io/port annotation, path from prometheus.io/path.
fn scrape_targets(pods: &[Pod]) -> Value {
    let targets: Vec<Value> = pods
        .iter()
        .filter_map(|pod| {
            let annotations = pod.metadata.annotations.as_ref()?;
            if annotations.get("prometheus.io/scrape").map(String::as_str) != Some("true") {
                return None;
            }
            let ip = pod.status.as_ref()?.pod_ip.as_deref()?;
            let port = annotations.get("prometheus.io/port")?;
            let path = annotations.get("prometheus.io/path").map_or("/metrics", String::as_str);
            let mut labels = json!({"namespace": pod.namespace(), "pod": pod.name_any(), "__metrics_path__": path});
            if let Some(name) = pod.labels().get("infergate.dev/name") {
                labels["name"] = json!(name);
            }
            Some(json!({"targets": [format!("{ip}:{port}")], "labels": labels}))
        })
        .collect();
    Value::Array(targets)
}

/// Rewrites the targets file every second until dropped.
fn discover(client: Client, path: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::all(client);
        let staging = path.with_extension("tmp");
        loop {
            if let Ok(list) = pods.list(&ListParams::default()).await {
                let text = scrape_targets(&list.items).to_string();
                // Prometheus watches the file: replace it whole, never half-written.
                if std::fs::write(&staging, text).is_ok() {
                    let _ = std::fs::rename(&staging, &path);
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

pub async fn gate(suite: &Suite) -> Result<()> {
    let dir = &suite.cluster.dir;
    let config_path = dir.join("prometheus.yml");
    let targets = dir.join("prometheus-targets.json");
    std::fs::write(&targets, "[]").map_err(Error::io("writing the targets file"))?;
    std::fs::write(&config_path, config(&targets)).map_err(Error::io("writing prometheus.yml"))?;
    let discovery = discover(suite.client.clone(), targets);
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let prometheus = process::start(
        dir,
        "prometheus",
        &suite.prometheus_bin,
        &[
            format!("--config.file={}", s(&config_path)),
            format!("--storage.tsdb.path={}", s(&dir.join("prometheus-data"))),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".to_string(),
        ],
        &[],
    )?;
    let outcome = judged_by_prometheus(suite, &url).await;
    discovery.abort();
    process::stop(prometheus.pid, Duration::from_secs(10));
    process::forget(dir, "prometheus");
    outcome.map_err(|e| Error::Failed(format!("{e}\nprometheus log:\n{}", process::log_tail(&prometheus.log, 5))))
}

async fn judged_by_prometheus(suite: &Suite, url: &str) -> Result<()> {
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build()?;
    wait::until("prometheus ready", Duration::from_secs(30), || async {
        Ok(http.get(format!("{url}/-/ready")).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()))
    })
    .await?;

    promote_under_client_load(suite, NAMESPACE, NAME, Some(url)).await?;
    // The promotion was judged on data Prometheus really holds: the servers' TTFT histograms,
    // labelled with the namespace from service discovery.
    let ttft = metrics::TIME_TO_FIRST_TOKEN.full;
    let query = format!("sum({ttft}_count{{namespace=\"{NAMESPACE}\"}})");
    let answer: Value =
        http.get(format!("{url}/api/v1/query")).query(&[("query", &query)]).send().await?.json().await?;
    let count: f64 = answer["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    if count <= 0.0 {
        bail!("prometheus holds no TTFT samples for {NAMESPACE}: {answer}");
    }

    let s =
        roll_back(suite, NAMESPACE, NAME, "slow", &["--inject-ttft-delay-ms", SLOW_TTFT_DELAY_MS], Some(url)).await?;
    let ttft = s.last_measurement.as_ref().and_then(|m| m.ttft_p95_ms).unwrap_or(0.0);
    if ttft <= f64::from(SLO_TTFT_MS) {
        bail!("rolled back, but prometheus' P95 TTFT {ttft} ms is within the SLO: {}", summary(Some(&s)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_annotated_pods_with_an_ip_become_targets() {
        let pod = |name: &str, scrape: &str, ip: Option<&str>| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ml", "labels": {"infergate.dev/name": "chat"}, "annotations": {
                    "prometheus.io/scrape": scrape, "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"}},
                "status": {"podIP": ip},
            }))
            .unwrap()
        };
        let targets = scrape_targets(&[
            pod("a", "true", Some("127.1.0.2")),
            pod("b", "false", Some("127.1.0.3")),
            pod("c", "true", None),
        ]);
        assert_eq!(
            targets,
            json!([{"targets": ["127.1.0.2:8080"],
                "labels": {"namespace": "ml", "pod": "a", "__metrics_path__": "/metrics", "name": "chat"}}])
        );
    }
}
