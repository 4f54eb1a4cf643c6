//! The local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
//! KWOK, every one listening on 127.0.0.1 only, plus the pod runner. `up` starts it in a
//! folder (certificates, data, logs, pid files, kubeconfig); `down` stops every process by
//! the pids recorded there.

mod kubeconfig;
pub mod pki;

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::Client;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

pub use kubeconfig::{client, TokenIssuer};

use crate::error::{Error, Result};
use crate::ports::free_port;
use crate::process::{self, Started};
use crate::wait;

/// Where the cluster lives and what it runs.
#[derive(Clone, Debug)]
pub struct Options {
    pub dir: PathBuf,
    /// Folder with etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok.
    pub control_plane_bin: PathBuf,
    /// Pod runner flags: `--image NAME=BINARY`, `--mount PATH=HOST_PATH`.
    pub images: Vec<String>,
    pub mounts: Vec<String>,
}

/// What a running cluster's users need; written to `<dir>/cluster.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cluster {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub server: String,
    pub ca: PathBuf,
}

/// Pod IPs come from here (KWOK's own allocator is unused: the pod runner assigns them).
pub const POD_CIDR: &str = "127.1.0.0/16";
/// Service ClusterIPs are allocated from loopback too; nothing ever dials them.
pub const SERVICE_CIDR: &str = "127.96.0.0/16";
/// The nodes: one plain, one with GPUs (tainted, as GPU pools usually are).
pub const CPU_NODE: &str = "kwok-cpu-0";
pub const GPU_NODE: &str = "kwok-gpu-0";

/// KWOK's configuration: its default node stages keep the nodes Ready with heartbeats and
/// leases; one pod stage that never matches replaces its default pod stages, because pods
/// belong to the pod runner, whose readiness is the real process's.
const KWOK_CONFIG: &str = r#"apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pods-belong-to-the-pod-runner
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.name'
      operator: 'In'
      values:
      - ''
  next: {}
"#;

impl Cluster {
    pub fn load(dir: &Path) -> Result<Cluster> {
        let path = dir.join("cluster.json");
        let text =
            std::fs::read(&path).map_err(Error::io(format!("reading {} (is the cluster up?)", path.display())))?;
        Ok(serde_json::from_slice(&text)?)
    }

    pub async fn client(&self) -> Result<Client> {
        client(&self.kubeconfig).await
    }
}

pub async fn up(options: &Options) -> Result<Cluster> {
    let dir = &options.dir;
    if running_pids(dir) > 0 {
        return Err(Error::Failed(format!("a cluster is already running in {} (cluster-down first)", dir.display())));
    }
    // A fresh cluster every time: stale etcd data or certificates would only confuse.
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(Error::io(format!("clearing {}", dir.display())))?;
    }
    std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    let pki = pki::Pki::generate(&dir.join("pki"))?;
    let bin = |name: &str| options.control_plane_bin.join(name);
    let s = |p: &Path| p.to_string_lossy().into_owned();

    let etcd_port = free_port()?;
    let etcd_peer = free_port()?;
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let etcd = process::start(
        dir,
        "etcd",
        &bin("etcd"),
        &strings(&[
            "--name",
            "e2e",
            "--data-dir",
            &s(&dir.join("etcd")),
            "--listen-client-urls",
            &etcd_url,
            "--advertise-client-urls",
            &etcd_url,
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{etcd_peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{etcd_peer}"),
            "--initial-cluster",
            &format!("e2e=http://127.0.0.1:{etcd_peer}"),
            // Test data: losing it in a power cut costs nothing, fsync costs seconds per write burst.
            "--unsafe-no-fsync",
            "--log-level",
            "warn",
        ]),
        &[],
    )?;
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build()?;
    wait::until("etcd", Duration::from_secs(30), || {
        let http = http.clone();
        let url = format!("{etcd_url}/health");
        let etcd = etcd.clone();
        async move {
            alive(&etcd)?;
            Ok(http.get(url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()))
        }
    })
    .await?;

    let api_port = free_port()?;
    let server = format!("https://127.0.0.1:{api_port}");
    let apiserver = process::start(
        dir,
        "kube-apiserver",
        &bin("kube-apiserver"),
        &strings(&[
            "--etcd-servers",
            &etcd_url,
            "--bind-address",
            "127.0.0.1",
            "--advertise-address",
            "127.0.0.1",
            "--secure-port",
            &api_port.to_string(),
            "--tls-cert-file",
            &s(&pki.serving_cert),
            "--tls-private-key-file",
            &s(&pki.serving_key),
            "--client-ca-file",
            &s(&pki.ca_cert),
            "--service-account-issuer",
            "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file",
            &s(&pki.sa_pub),
            "--service-account-signing-key-file",
            &s(&pki.sa_key),
            "--service-cluster-ip-range",
            SERVICE_CIDR,
            "--authorization-mode",
            "Node,RBAC",
            // The `kubernetes` Service's endpoints would be the loopback advertise address, which
            // Endpoints validation rejects; nothing here reaches the API through that Service.
            "--endpoint-reconciler-type",
            "none",
            "--cert-dir",
            &s(&dir.join("apiserver-certs")),
            "--profiling=false",
        ]),
        &[],
    )?;
    let kubeconfig = dir.join("kubeconfig");
    kubeconfig::write_admin(&kubeconfig, &server, &pki.ca_cert, &pki.admin_cert, &pki.admin_key)?;
    let kube = wait::until("kube-apiserver /readyz", Duration::from_secs(90), || {
        let kubeconfig = kubeconfig.clone();
        let apiserver = apiserver.clone();
        async move {
            alive(&apiserver)?;
            let client = client(&kubeconfig).await?;
            let request = http::Request::get("/readyz").body(Vec::new()).map_err(|e| Error::Failed(e.to_string()))?;
            Ok(client.request_text(request).await.ok().filter(|t| t.trim() == "ok").map(|_| client))
        }
    })
    .await?;
    info!(%server, "API server ready");

    let kc = s(&kubeconfig);
    let mut kcm_args = component_args(&kc, free_port()?);
    kcm_args.extend(strings(&[
        "--cert-dir",
        &s(&dir.join("kcm-certs")),
        "--use-service-account-credentials=false",
        "--root-ca-file",
        &s(&pki.ca_cert),
        "--service-account-private-key-file",
        &s(&pki.sa_key),
        // EndpointSlices and Endpoints may not hold loopback addresses (API validation), and
        // every pod IP here is one: these controllers could only fail. Clients resolve a
        // Service from its selector and the pods' readiness instead (see `services`).
        "--controllers",
        "*,-endpoints-controller,-endpointslice-controller,-endpointslice-mirroring-controller",
    ]));
    let kcm = process::start(dir, "kube-controller-manager", &bin("kube-controller-manager"), &kcm_args, &[])?;
    let scheduler_args = component_args(&kc, free_port()?);
    let scheduler = process::start(dir, "kube-scheduler", &bin("kube-scheduler"), &scheduler_args, &[])?;
    let kwok_config = dir.join("kwok.yaml");
    std::fs::write(&kwok_config, KWOK_CONFIG).map_err(Error::io("writing kwok.yaml"))?;
    let kwok_port = free_port()?;
    let kwok = process::start(
        dir,
        "kwok",
        &bin("kwok"),
        &strings(&[
            "--kubeconfig",
            &kc,
            "--config",
            &s(&kwok_config),
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector",
            "kwok.x-k8s.io/node=fake",
            "--cidr",
            POD_CIDR,
            "--node-ip",
            crate::pod_runner::NODE_IP,
            "--server-address",
            &format!("127.0.0.1:{kwok_port}"),
            // Node leases renewed every few seconds: without them the node lifecycle controller
            // marks the nodes, and every pod on them, NotReady after its grace period.
            "--node-lease-duration-seconds",
            "40",
        ]),
        &[],
    )?;

    create_nodes(&kube).await?;
    wait::until("KWOK nodes Ready", Duration::from_secs(60), || {
        let kube = kube.clone();
        let kwok = kwok.clone();
        async move {
            alive(&kwok)?;
            let nodes: Api<Node> = Api::all(kube);
            let mut ready = 0;
            for name in [CPU_NODE, GPU_NODE] {
                let node = nodes.get(name).await?;
                let conditions = node.status.and_then(|s| s.conditions).unwrap_or_default();
                ready += usize::from(conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            }
            Ok((ready == 2).then_some(()))
        }
    })
    .await?;
    // The service-account controller in the controller manager creates `default` accounts;
    // pods are refused until it has, so this also proves the controller manager works.
    wait::until("the default ServiceAccount", Duration::from_secs(60), || {
        let kube = kube.clone();
        let (kcm, scheduler) = (kcm.clone(), scheduler.clone());
        async move {
            alive(&kcm)?;
            alive(&scheduler)?;
            let accounts: Api<ServiceAccount> = Api::namespaced(kube, "default");
            Ok(accounts.get_opt("default").await?.map(|_| ()))
        }
    })
    .await?;

    let cluster = Cluster { dir: dir.clone(), kubeconfig, server, ca: pki.ca_cert.clone() };
    std::fs::write(dir.join("cluster.json"), serde_json::to_vec_pretty(&cluster)?)
        .map_err(Error::io("writing cluster.json"))?;

    let me = std::env::current_exe().map_err(Error::io("locating the harness binary"))?;
    let mut runner_args = strings(&["pod-runner", "--dir", &s(dir)]);
    for image in &options.images {
        runner_args.extend(["--image".to_string(), image.clone()]);
    }
    for mount in &options.mounts {
        runner_args.extend(["--mount".to_string(), mount.clone()]);
    }
    let runner = process::start(dir, "pod-runner", &me, &runner_args, &[("RUST_LOG".into(), "info".into())])?;
    wait::until("the pod runner", Duration::from_secs(30), || {
        let marker = dir.join("pod-runner.ready");
        let runner = runner.clone();
        async move {
            alive(&runner)?;
            Ok(marker.exists().then_some(()))
        }
    })
    .await?;

    Ok(cluster)
}

/// Stops everything `up` (and the pod runner) started in `dir`.
pub fn down(dir: &Path) -> Vec<String> {
    process::stop_all(dir, Duration::from_secs(15))
}

fn running_pids(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir.join("pids")) else { return 0 };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|s| s.trim().parse::<u32>().ok())
        .filter(|pid| process::is_alive(*pid))
        .count()
}

fn alive(started: &Started) -> Result<()> {
    if process::is_alive(started.pid) {
        Ok(())
    } else {
        Err(Error::Failed(format!(
            "{} exited; its log ends with:\n{}",
            started.name,
            process::log_tail(&started.log, 15)
        )))
    }
}

/// What the controller manager and the scheduler share: the admin kubeconfig for the API and
/// for delegated authn/authz of their own (loopback-only) HTTPS port, no leader election.
fn component_args(kubeconfig: &str, port: u16) -> Vec<String> {
    let mut args = Vec::new();
    for flag in ["--kubeconfig", "--authentication-kubeconfig", "--authorization-kubeconfig"] {
        args.extend([flag.to_string(), kubeconfig.to_string()]);
    }
    args.extend(strings(&["--bind-address", "127.0.0.1", "--secure-port", &port.to_string(), "--leader-elect=false"]));
    args
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

async fn create_nodes(client: &Client) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for (name, gpus) in [(CPU_NODE, 0), (GPU_NODE, 8)] {
        let mut capacity = json!({"cpu": "32", "memory": "256Gi", "pods": "110"});
        let mut labels = json!({
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
        });
        let mut taints = json!([]);
        if gpus > 0 {
            capacity["nvidia.com/gpu"] = json!(gpus.to_string());
            labels["nvidia.com/gpu.present"] = json!("true");
            taints = json!([{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]);
        }
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": {"taints": taints},
            "status": {"capacity": capacity, "allocatable": capacity},
        }))?;
        nodes.create(&PostParams::default(), &node).await?;
    }
    Ok(())
}
