//! The Prometheus gate source against a real Prometheus (Debian's) that discovers the pods
//! through the API server, as in a cluster: a good revision is promoted and a slow one rolled
//! back, both judged from PromQL over the scraped histograms.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::rollouts::{promote_under_client_load, roll_back};
use super::support::{summary, SLOW_TTFT_DELAY_MS, SLO_TTFT_MS};
use super::Suite;
use crate::bail;
use crate::error::{Error, Result};
use crate::ports::free_port;
use crate::{process, wait};

const NAMESPACE: &str = "e2e-prometheus";
const NAME: &str = "chat";

/// Pods announce themselves with the prometheus.io annotations the operator sets; the
/// namespace becomes a target label (the gate's PromQL filters on it), the servers' own
/// `model` and `revision` labels are kept.
fn config(kubeconfig: &Path) -> String {
    format!(
        r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
- job_name: infergate-pods
  honor_labels: true
  kubernetes_sd_configs:
  - role: pod
    kubeconfig_file: {kubeconfig}
  relabel_configs:
  - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
    action: keep
    regex: "true"
  - source_labels: [__meta_kubernetes_pod_ip, __meta_kubernetes_pod_annotation_prometheus_io_port]
    regex: (.+);(.+)
    replacement: $1:$2
    target_label: __address__
  - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
    regex: (.+)
    target_label: __metrics_path__
  - source_labels: [__meta_kubernetes_namespace]
    target_label: namespace
  - source_labels: [__meta_kubernetes_pod_name]
    target_label: pod
"#,
        kubeconfig = kubeconfig.display()
    )
}

pub async fn gate(suite: &Suite) -> Result<()> {
    let dir = &suite.cluster.dir;
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config(&suite.cluster.kubeconfig)).map_err(Error::io("writing prometheus.yml"))?;
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
    let query = format!("sum(infergate_time_to_first_token_seconds_count{{namespace=\"{NAMESPACE}\"}})");
    let answer: Value = http.get(format!("{url}/api/v1/query")).query(&[("query", &query)]).send().await?.json().await?;
    let count: f64 = answer["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    if count <= 0.0 {
        bail!("prometheus holds no TTFT samples for {NAMESPACE}: {answer}");
    }

    let s = roll_back(suite, NAMESPACE, NAME, "slow", &["--inject-ttft-delay-ms", SLOW_TTFT_DELAY_MS], Some(url)).await?;
    let ttft = s.last_measurement.as_ref().and_then(|m| m.ttft_p95_ms).unwrap_or(0.0);
    if ttft <= f64::from(SLO_TTFT_MS) {
        bail!("rolled back, but prometheus' P95 TTFT {ttft} ms is within the SLO: {}", summary(Some(&s)));
    }
    Ok(())
}
