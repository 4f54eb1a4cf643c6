//! The pod runner: the kubelet of the KWOK nodes. KWOK keeps the nodes alive; this runner
//! starts a real process for every pod bound to one of them, on the pod's own loopback
//! address, reports the pod's status (readiness from the process's own readiness endpoint),
//! and on deletion runs the preStop sleep, SIGTERM, waits out the grace period and removes
//! the pod, as a kubelet would.

pub mod plan;
pub mod status;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use infergate_protocol::process::StopSignal;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::process;
use plan::{Launch, Mapping};
use status::{ContainerState, Report};

/// Nodes with this annotation are KWOK's, and so this runner's.
pub const KWOK_NODE_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");
/// The address every KWOK node reports (`kwok --node-ip`).
pub const NODE_IP: &str = "127.0.0.1";
const PROBE_PERIOD: Duration = Duration::from_secs(1);
const RESTART_BACKOFF: Duration = Duration::from_secs(2);

pub struct Runner {
    client: Client,
    mapping: Mapping,
    /// Folder for pid files and logs of the processes (shared with `cluster down`).
    dir: PathBuf,
    /// Writes service-account kubeconfigs for processes that talk to the API server.
    tokens: Option<crate::cluster::TokenIssuer>,
    next_ip: AtomicU32,
    http: reqwest::Client,
}

enum Signal {
    /// The pod got a deletion timestamp: stop gracefully, then remove it.
    Terminate,
    /// The pod object is gone already (force-deleted): stop now.
    Gone,
}

impl Runner {
    pub fn new(
        client: Client,
        mapping: Mapping,
        dir: PathBuf,
        tokens: Option<crate::cluster::TokenIssuer>,
    ) -> Result<Self> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).no_proxy().build()?;
        Ok(Runner { client, mapping, dir, tokens, next_ip: AtomicU32::new(0), http })
    }

    /// Pod IPs: 127.1.0.2, 127.1.0.3, ... never reused within a run.
    fn allocate_ip(&self) -> String {
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed);
        format!("127.1.{}.{}", n / 250, n % 250 + 2)
    }

    /// Watches pods until SIGTERM, then stops every process it started.
    pub async fn run(self: Arc<Self>) -> Result<()> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let nodes: Api<Node> = Api::all(self.client.clone());
        let mut running: HashMap<String, (mpsc::UnboundedSender<Signal>, tokio::task::JoinHandle<()>)> = HashMap::new();
        let mut stream = watcher::watcher(pods, watcher::Config::default()).default_backoff().boxed();
        let mut kwok_nodes: BTreeMap<String, bool> = BTreeMap::new();
        // Installed before the ready marker: a SIGTERM right after it is not lost.
        let mut term = StopSignal::install().map_err(Error::io("installing the SIGTERM handler"))?;
        std::fs::write(self.dir.join("pod-runner.ready"), "").map_err(Error::io("writing the ready marker"))?;
        info!("pod runner watching pods");
        loop {
            let event = tokio::select! {
                _ = term.recv() => break,
                event = stream.next() => event,
            };
            let pod = match event {
                None => break,
                Some(Err(e)) => {
                    warn!(error = %e, "pod watch");
                    continue;
                }
                Some(Ok(Event::Apply(pod) | Event::InitApply(pod))) => pod,
                Some(Ok(Event::Delete(pod))) => {
                    if let Some((tx, _)) = running.remove(&pod.uid().unwrap_or_default()) {
                        let _ = tx.send(Signal::Gone);
                    }
                    continue;
                }
                Some(Ok(_)) => continue,
            };
            let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else { continue };
            let ours = match kwok_nodes.get(&node) {
                Some(ours) => *ours,
                None => {
                    let ours = nodes.get_opt(&node).await?.is_some_and(|n| {
                        n.annotations().get(KWOK_NODE_ANNOTATION.0).map(String::as_str) == Some(KWOK_NODE_ANNOTATION.1)
                    });
                    kwok_nodes.insert(node, ours);
                    ours
                }
            };
            if !ours {
                continue;
            }
            let uid = pod.uid().unwrap_or_default();
            let terminating = pod.metadata.deletion_timestamp.is_some();
            match running.get(&uid) {
                Some((tx, _)) if terminating => {
                    let _ = tx.send(Signal::Terminate);
                }
                Some(_) => {}
                None => {
                    let finished = pod
                        .status
                        .as_ref()
                        .and_then(|s| s.phase.as_deref())
                        .is_some_and(|p| p == "Succeeded" || p == "Failed");
                    if finished {
                        continue;
                    }
                    let (tx, rx) = mpsc::unbounded_channel();
                    if terminating {
                        let _ = tx.send(Signal::Terminate);
                    }
                    let runner = self.clone();
                    let task = tokio::spawn(async move { runner.run_pod(pod, rx).await });
                    running.insert(uid, (tx, task));
                }
            }
        }
        info!(pods = running.len(), "pod runner stopping its processes");
        for (tx, _) in running.values() {
            let _ = tx.send(Signal::Gone);
        }
        for (_, (_, task)) in running {
            let _ = task.await;
        }
        Ok(())
    }

    /// One pod from start to removal.
    async fn run_pod(self: Arc<Self>, pod: Pod, mut signals: mpsc::UnboundedReceiver<Signal>) {
        let name = pod.name_any();
        let namespace = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let ip = self.allocate_ip();
        let pod_started = Timestamp::now();
        let key = format!("pod.{namespace}.{name}");

        let container = pod.spec.as_ref().and_then(|s| s.containers.first());
        let reporter = StatusReporter {
            api: api.clone(),
            name: name.clone(),
            container: container.map(|c| c.name.clone()).unwrap_or_default(),
            image: container.and_then(|c| c.image.clone()).unwrap_or_default(),
            pod_ip: ip.clone(),
            pod_started,
        };

        let launch = match plan::plan(&pod, &ip, &self.mapping) {
            Ok(launch) => launch,
            Err(refusal) => {
                warn!(pod = %key, reason = refusal.reason, message = %refusal.message, "cannot start");
                let waiting = ContainerState::Waiting { reason: refusal.reason.into(), message: refusal.message };
                reporter.send(0, None, waiting).await;
                // Nothing runs; on deletion the pod can go at once.
                if let Some(Signal::Terminate) = signals.recv().await {
                    remove_pod(&api, &pod).await;
                }
                return;
            }
        };

        let mut restarts = 0u32;
        'lifecycle: loop {
            let prepared =
                self.process_env(&launch, &namespace, &key).await.map_err(|e| ("CreateContainerConfigError", e));
            let started = prepared.and_then(|env| {
                process::start(&self.dir, &key, &launch.program, &launch.args, &env)
                    .map_err(|e| ("RunContainerError", e))
            });
            let started = match started {
                Ok(started) => started,
                Err((reason, e)) => {
                    warn!(pod = %key, error = %e, reason, "start failed");
                    let waiting = ContainerState::Waiting { reason: reason.into(), message: e.to_string() };
                    if !back_off(&reporter, &mut signals, restarts, waiting).await {
                        remove_pod(&api, &pod).await;
                        return;
                    }
                    restarts += 1;
                    continue 'lifecycle;
                }
            };
            info!(pod = %key, pid = started.pid, ip = %ip, "started");
            let since = Timestamp::now();
            let mut ready = launch.readiness.is_none();
            reporter.send(restarts, Some(started.pid), ContainerState::Running { started: since, ready }).await;
            loop {
                let signal = wait_or_signal(&mut signals, PROBE_PERIOD).await;
                if let Some(signal) = signal {
                    let graceful = matches!(signal, Signal::Terminate);
                    self.stop_container(&launch, started.pid, graceful).await;
                    process::forget(&self.dir, &key);
                    if graceful {
                        remove_pod(&api, &pod).await;
                    }
                    info!(pod = %key, "stopped");
                    return;
                }
                if !process::is_alive(started.pid) {
                    warn!(pod = %key, log = %started.log.display(), "process exited; restarting");
                    process::forget(&self.dir, &key);
                    let waiting = ContainerState::Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: process::log_tail(&started.log, 3),
                    };
                    if !back_off(&reporter, &mut signals, restarts, waiting).await {
                        remove_pod(&api, &pod).await;
                        return;
                    }
                    restarts += 1;
                    continue 'lifecycle;
                }
                if let Some((path, port)) = &launch.readiness {
                    let now_ready = self.probe(&ip, *port, path).await;
                    if now_ready != ready {
                        ready = now_ready;
                        info!(pod = %key, ready, "readiness changed");
                        let running = ContainerState::Running { started: since, ready };
                        reporter.send(restarts, Some(started.pid), running).await;
                    }
                }
            }
        }
    }

    /// A container sees only its own environment, never the runner's, plus what it mounts:
    /// a kubeconfig holding its service account's token stands in for the token volume.
    async fn process_env(&self, launch: &Launch, namespace: &str, key: &str) -> Result<Vec<(String, String)>> {
        let mut env = vec![
            ("PATH".to_string(), "/usr/local/bin:/usr/bin:/bin".to_string()),
            ("HOME".to_string(), "/tmp".to_string()),
            ("HF_HUB_OFFLINE".to_string(), "1".to_string()),
        ];
        if let (Some(issuer), Some(account)) = (&self.tokens, &launch.service_account) {
            let kubeconfig = issuer.kubeconfig_for(namespace, account, &self.dir.join("tokens").join(key)).await?;
            env.push(("KUBECONFIG".to_string(), kubeconfig.to_string_lossy().into_owned()));
        }
        env.extend(launch.env.iter().cloned());
        Ok(env)
    }

    async fn probe(&self, ip: &str, port: u16, path: &str) -> bool {
        let url = format!("http://{ip}:{port}{path}");
        matches!(self.http.get(&url).send().await, Ok(r) if r.status().is_success())
    }

    /// preStop sleep, SIGTERM, wait out the grace period, SIGKILL: the kubelet's sequence.
    /// Force deletion skips the preStop hook.
    async fn stop_container(&self, launch: &Launch, pid: u32, graceful: bool) {
        let pre_stop = if graceful { launch.pre_stop_sleep_seconds.min(launch.grace_seconds) } else { 0 };
        if pre_stop > 0 {
            tokio::time::sleep(Duration::from_secs(pre_stop)).await;
        }
        let grace = Duration::from_secs(if graceful { launch.grace_seconds - pre_stop } else { 2 });
        let _ = tokio::task::spawn_blocking(move || process::stop(pid, grace)).await;
    }
}

/// Reports the container waiting to be restarted and sleeps the back-off; `false` when the
/// pod was deleted meanwhile.
async fn back_off(
    reporter: &StatusReporter,
    signals: &mut mpsc::UnboundedReceiver<Signal>,
    restarts: u32,
    waiting: ContainerState,
) -> bool {
    reporter.send(restarts, None, waiting).await;
    wait_or_signal(signals, RESTART_BACKOFF).await.is_none()
}

/// Sleeps `period` unless a signal comes first.
async fn wait_or_signal(signals: &mut mpsc::UnboundedReceiver<Signal>, period: Duration) -> Option<Signal> {
    tokio::select! {
        signal = signals.recv() => Some(signal.unwrap_or(Signal::Gone)),
        _ = tokio::time::sleep(period) => None,
    }
}

/// Sends the pod's status; everything but the container's state is fixed for the pod's life.
struct StatusReporter {
    api: Api<Pod>,
    name: String,
    container: String,
    image: String,
    pod_ip: String,
    pod_started: Timestamp,
}

impl StatusReporter {
    async fn send(&self, restarts: u32, pid: Option<u32>, state: ContainerState) {
        let report = Report {
            container: &self.container,
            image: &self.image,
            pod_ip: &self.pod_ip,
            host_ip: NODE_IP,
            pod_started: self.pod_started,
            restarts,
            pid,
            state,
        };
        let patch = status::patch(&report, Timestamp::now());
        if let Err(e) = self.api.patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            warn!(pod = %self.name, error = %e, "status patch failed");
        }
    }
}

/// The kubelet's last word: delete with grace 0, only the pod instance we ran (uid).
async fn remove_pod(api: &Api<Pod>, pod: &Pod) {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions { uid: pod.uid(), resource_version: None }),
        ..DeleteParams::default()
    };
    match api.delete(&pod.name_any(), &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => warn!(pod = %pod.name_any(), error = %e, "delete failed"),
    }
}

/// For `main`: the mapping flags parsed.
pub fn parse_mapping(images: &[String], mounts: &[String]) -> Result<Mapping> {
    let pair = |s: &String, what: &str| {
        s.split_once('=')
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .ok_or_else(|| Error::Failed(format!("{what} {s:?}: expected NAME=VALUE")))
    };
    let mut mapping = Mapping::default();
    for image in images {
        let (name, bin) = pair(image, "--image")?;
        mapping.images.insert(name, Path::new(&bin).to_path_buf());
    }
    for mount in mounts {
        mapping.mounts.push(pair(mount, "--mount")?);
    }
    Ok(mapping)
}
