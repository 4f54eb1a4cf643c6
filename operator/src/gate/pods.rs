//! The pods the gate measures and loads, and their health over a window.
//!
//! Targets are ready pods of one revision, addressed by pod IP: the operator never dials Service
//! ClusterIPs (a Service mixes revisions and hides which pod answered, and in the end-to-end
//! environment pod IPs live on loopback). Health compares the pod lists taken at a window's
//! start and end: a restart, a pod that is not ready at the start or at the end, or one that
//! stops being ready or goes away, fails the window, as does a revision with no ready pod
//! although its Deployment wants some (a crash-looping preview is not ready most of the time;
//! that is the revision failing, not a measurement gap). A window passes only if every pod of
//! the candidate served all of it; one ready pod next to a broken one is not enough.
//!
//! Two kinds of not-ready pods are no failure: terminating ones (scaled down or replaced: the
//! Deployment's choice, not the revision's health) and pods that appeared during the window
//! without restarting (a scale-up, e.g. by the autoscaler during the watch). Such a new pod has
//! until the next window's start to become ready.

use std::collections::BTreeMap;
use std::future::Future;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::Client;

use crate::error::Result;
use crate::names::{deployment_name, LABEL_NAME, LABEL_REVISION, SERVER_PORT, SERVER_PORT_NAME};

/// One ready pod: its name and the base URL of its server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub pod: String,
    pub base_url: String,
}

/// One pod of a revision as the API showed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodState {
    pub name: String,
    /// Tells a replaced pod from the one before it under the same name.
    pub uid: String,
    /// Sum of its containers' restart counts.
    pub restarts: i32,
    /// Where to reach it, when it is ready, not terminating and has an IP.
    pub target: Option<Target>,
    /// It has a deletion timestamp: going away on purpose.
    pub terminating: bool,
}

impl PodState {
    /// Not ready although it is meant to serve (not terminating).
    fn not_ready(&self) -> bool {
        self.target.is_none() && !self.terminating
    }
}

/// The pods of one revision at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevisionPods {
    /// Replicas its Deployment asks for (0 when the Deployment is gone).
    pub wanted: i32,
    /// Sorted by name.
    pub pods: Vec<PodState>,
}

impl RevisionPods {
    /// Ready pods, by name.
    pub fn targets(&self) -> Vec<Target> {
        self.pods.iter().filter_map(|p| p.target.clone()).collect()
    }

    /// Restart counts by pod uid, to compare the next window's start with.
    pub fn restarts(&self) -> Restarts {
        self.pods.iter().map(|p| (p.uid.clone(), p.restarts)).collect()
    }
}

/// Restart counts by pod uid.
pub type Restarts = BTreeMap<String, i32>;

/// One reason the candidate was unhealthy, and the pod it concerns (its scrape failing then is
/// no measurement error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthFailure {
    pub pod: Option<String>,
    pub message: String,
}

/// Where the gate lists pods (the API server; a fixed list in tests).
pub trait PodLister: Sync {
    fn list(&self, revision: &str) -> impl Future<Output = Result<RevisionPods>> + Send;
}

/// The pods of an InferenceDeployment through the API.
pub struct ApiPods {
    pub client: Client,
    pub namespace: String,
    pub name: String,
}

impl PodLister for ApiPods {
    async fn list(&self, revision: &str) -> Result<RevisionPods> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        let selector = format!("{LABEL_NAME}={},{LABEL_REVISION}={revision}", self.name);
        let listed = pods.list(&ListParams::default().labels(&selector)).await?;
        let wanted = deployments
            .get_opt(&deployment_name(&self.name, revision))
            .await?
            .map_or(0, |d| d.spec.and_then(|s| s.replicas).unwrap_or(1));
        let mut pods: Vec<PodState> = listed.items.iter().map(pod_state).collect();
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(RevisionPods { wanted, pods })
    }
}

pub fn pod_state(pod: &Pod) -> PodState {
    let restarts = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |statuses| statuses.iter().map(|c| c.restart_count).sum());
    PodState {
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().or_else(|| pod.metadata.name.clone()).unwrap_or_default(),
        restarts,
        target: target_of(pod),
        terminating: pod.metadata.deletion_timestamp.is_some(),
    }
}

/// A pod that is Ready, not terminating and has an IP.
pub fn target_of(pod: &Pod) -> Option<Target> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let ready = status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
    let ip = status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
    if !ready {
        return None;
    }
    let port = pod
        .spec
        .as_ref()
        .and_then(|s| {
            s.containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(SERVER_PORT_NAME))
        })
        .map_or(SERVER_PORT, |p| p.container_port);
    // IPv6 pod IPs need brackets in a URL.
    let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
    Some(Target {
        pod: pod.metadata.name.clone().unwrap_or_else(|| ip.to_string()),
        base_url: format!("http://{host}:{port}"),
    })
}

/// The candidate's health over one window: `start` and `end` are its pods at the window's
/// start and end, `before` the restart counts seen at the end of the previous window (empty for
/// the first window of a step, or after an operator restart). Every failure that concerns one
/// pod names it.
pub fn window_health(start: &RevisionPods, end: &RevisionPods, before: &Restarts) -> Vec<HealthFailure> {
    let mut failures = Vec::new();
    let whole = |message: String| HealthFailure { pod: None, message };
    let about = |pod: &PodState, message: String| HealthFailure { pod: Some(pod.name.clone()), message };
    let at_start = |uid: &str| start.pods.iter().find(|p| p.uid == uid);
    for (pods, when) in [(start, "start"), (end, "end")] {
        // At the end, a pod ready at the start that is not any more is reported below (stopped
        // being ready), and a pod new in this window without a restart is still starting.
        let not_ready: Vec<&PodState> = pods
            .pods
            .iter()
            .filter(|p| p.not_ready())
            .filter(|p| {
                when == "start"
                    || match at_start(&p.uid) {
                        Some(earlier) => earlier.target.is_none(),
                        None => p.restarts > 0,
                    }
            })
            .collect();
        if pods.wanted > 0 && pods.targets().is_empty() {
            let names: Vec<&str> = pods.pods.iter().filter(|p| p.not_ready()).map(|p| p.name.as_str()).collect();
            let named = if names.is_empty() { String::new() } else { format!(": {} not ready", names.join(", ")) };
            failures.push(whole(format!(
                "no ready pod at the window's {when} ({} wanted, {} present{named})",
                pods.wanted,
                pods.pods.len()
            )));
            continue;
        }
        for pod in not_ready {
            failures.push(about(pod, format!("pod {} not ready at the window's {when}", pod.name)));
        }
    }
    for pod in &start.pods {
        if let Some(&earlier) = before.get(&pod.uid) {
            if pod.restarts > earlier {
                failures.push(about(
                    pod,
                    format!(
                        "pod {} restarted since the previous window (restarts {earlier} -> {})",
                        pod.name, pod.restarts
                    ),
                ));
            }
        }
        let later = end.pods.iter().find(|p| p.uid == pod.uid);
        match later {
            Some(later) if later.restarts > pod.restarts => failures.push(about(
                pod,
                format!(
                    "pod {} restarted during the window (restarts {} -> {})",
                    pod.name, pod.restarts, later.restarts
                ),
            )),
            Some(later) if pod.target.is_some() && later.not_ready() => {
                failures.push(about(pod, format!("pod {} stopped being ready during the window", pod.name)))
            }
            None if pod.target.is_some() => {
                failures.push(about(pod, format!("pod {} went away during the window", pod.name)))
            }
            _ => {}
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ready: &str, ip: Option<&str>, terminating: bool) -> Pod {
        let mut value = json!({
            "metadata": {"name": "chat-bbb-1", "uid": "u1"},
            "spec": {"containers": [{"name": "server", "ports": [{"name": "http", "containerPort": 9000}]}]},
            "status": {
                "conditions": [{"type": "Ready", "status": ready}],
                "containerStatuses": [
                    {"name": "server", "restartCount": 2, "ready": true, "image": "i", "imageID": ""},
                    {"name": "sidecar", "restartCount": 1, "ready": true, "image": "i", "imageID": ""},
                ],
            },
        });
        if let Some(ip) = ip {
            value["status"]["podIP"] = json!(ip);
        }
        if terminating {
            value["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn only_ready_pods_with_an_ip_are_targets() {
        assert_eq!(
            target_of(&pod("True", Some("127.0.0.5"), false)),
            Some(Target { pod: "chat-bbb-1".into(), base_url: "http://127.0.0.5:9000".into() })
        );
        assert_eq!(target_of(&pod("False", Some("127.0.0.5"), false)), None);
        assert_eq!(target_of(&pod("True", None, false)), None);
        assert_eq!(target_of(&pod("True", Some("127.0.0.5"), true)), None);
        assert_eq!(target_of(&pod("True", Some("fd00::5"), false)).unwrap().base_url, "http://[fd00::5]:9000");
    }

    #[test]
    fn a_pod_state_sums_its_containers_restarts() {
        let state = pod_state(&pod("True", Some("127.0.0.5"), false));
        assert_eq!((state.name.as_str(), state.uid.as_str(), state.restarts), ("chat-bbb-1", "u1", 3));
        assert!(state.target.is_some());
    }

    fn state(uid: &str, restarts: i32, ready: bool) -> PodState {
        PodState {
            name: format!("chat-new-{uid}"),
            uid: uid.into(),
            restarts,
            target: ready.then(|| Target { pod: format!("chat-new-{uid}"), base_url: "http://127.0.0.1:1".into() }),
            terminating: false,
        }
    }

    fn terminating(uid: &str) -> PodState {
        PodState { terminating: true, ..state(uid, 0, false) }
    }

    fn revision(wanted: i32, pods: Vec<PodState>) -> RevisionPods {
        RevisionPods { wanted, pods }
    }

    fn messages(failures: Vec<HealthFailure>) -> Vec<String> {
        failures.into_iter().map(|f| f.message).collect()
    }

    #[test]
    fn a_steady_revision_is_healthy() {
        let pods = revision(2, vec![state("a", 1, true), state("b", 0, true)]);
        assert_eq!(window_health(&pods, &pods, &pods.restarts()), vec![]);
        // A pod going away on purpose (scale-down, replacement) is no failure.
        let end = revision(1, vec![state("a", 1, true), terminating("b")]);
        assert_eq!(window_health(&pods, &end, &pods.restarts()), vec![]);
    }

    #[test]
    fn a_pod_not_ready_at_the_start_or_the_end_fails_the_window_next_to_a_ready_one() {
        // Never ready, next to a ready pod: the window fails at both ends, naming the pod.
        let pods = revision(2, vec![state("a", 0, true), state("b", 0, false)]);
        let failures = window_health(&pods, &pods, &Restarts::new());
        assert!(failures.iter().all(|f| f.pod.as_deref() == Some("chat-new-b")), "{failures:?}");
        assert_eq!(
            messages(failures),
            vec!["pod chat-new-b not ready at the window's start", "pod chat-new-b not ready at the window's end"]
        );
        // Ready at the start, not at the end: said once, as the change it is.
        let start = revision(2, vec![state("a", 0, true), state("b", 0, true)]);
        let end = revision(2, vec![state("a", 0, true), state("b", 0, false)]);
        assert_eq!(
            messages(window_health(&start, &end, &Restarts::new())),
            vec!["pod chat-new-b stopped being ready during the window"]
        );
    }

    #[test]
    fn a_pod_that_appears_during_the_window_may_still_be_starting() {
        let start = revision(1, vec![state("a", 0, true)]);
        // A scale-up: the new pod is not ready yet at the end, without a restart.
        let end = revision(2, vec![state("a", 0, true), state("b", 0, false)]);
        assert_eq!(window_health(&start, &end, &Restarts::new()), vec![]);
        // Still not ready at the next window's start: a failure.
        assert_eq!(
            messages(window_health(&end, &end, &end.restarts())),
            vec!["pod chat-new-b not ready at the window's start", "pod chat-new-b not ready at the window's end"]
        );
        // A new pod that already restarted is crash-looping, not starting.
        let crashed = revision(2, vec![state("a", 0, true), state("c", 2, false)]);
        assert_eq!(
            messages(window_health(&start, &crashed, &Restarts::new())),
            vec!["pod chat-new-c not ready at the window's end"]
        );
    }

    #[test]
    fn restarts_and_lost_pods_are_failures() {
        let start = revision(3, vec![state("a", 0, true), state("b", 0, true), state("c", 0, true)]);
        let end = revision(3, vec![state("a", 1, true), state("b", 0, false), state("d", 0, true)]);
        let failures = window_health(&start, &end, &Restarts::new());
        let pods: Vec<Option<String>> = failures.iter().map(|f| f.pod.clone()).collect();
        assert_eq!(pods, vec![Some("chat-new-a".into()), Some("chat-new-b".into()), Some("chat-new-c".into())]);
        let text = messages(failures).join("; ");
        assert!(text.contains("chat-new-a restarted during the window (restarts 0 -> 1)"), "{text}");
        assert!(text.contains("chat-new-b stopped being ready"), "{text}");
        assert!(text.contains("chat-new-c went away"), "{text}");
    }

    #[test]
    fn a_restart_between_windows_counts_once() {
        let before = revision(1, vec![state("a", 0, true)]).restarts();
        let now = revision(1, vec![state("a", 1, true)]);
        assert_eq!(
            messages(window_health(&now, &now, &before)),
            vec!["pod chat-new-a restarted since the previous window (restarts 0 -> 1)"]
        );
        // The next window starts from this one's end: the same restart is not counted again.
        assert_eq!(window_health(&now, &now, &now.restarts()), vec![]);
    }

    #[test]
    fn no_ready_pod_is_a_failure_only_when_pods_are_wanted() {
        let crash_looping = revision(1, vec![state("a", 4, false)]);
        let text = messages(window_health(&crash_looping, &crash_looping, &Restarts::new()));
        assert_eq!(
            text,
            vec![
                "no ready pod at the window's start (1 wanted, 1 present: chat-new-a not ready)",
                "no ready pod at the window's end (1 wanted, 1 present: chat-new-a not ready)"
            ]
        );
        let scaled_away = revision(0, vec![]);
        assert_eq!(window_health(&scaled_away, &scaled_away, &Restarts::new()), vec![]);
    }
}
