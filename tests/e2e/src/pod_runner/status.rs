//! Pod status as a kubelet reports it, for the states the pod runner knows. Every patch
//! carries the whole conditions and containerStatuses lists (a merge patch replaces lists).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

/// Where the pod's one container stands.
#[derive(Clone, Debug, PartialEq)]
pub enum ContainerState {
    /// The process runs since `started`; `ready` is the last readiness probe's answer.
    Running { started: Timestamp, ready: bool },
    /// The process cannot start or is waiting to be restarted.
    Waiting { reason: String, message: String },
    /// The process exited (during termination).
    Terminated { exit_code: i32, reason: String },
}

#[derive(Clone, Debug)]
pub struct Report<'a> {
    pub container: &'a str,
    pub image: &'a str,
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
    pub pod_started: Timestamp,
    pub restarts: u32,
    pub pid: Option<u32>,
    pub state: ContainerState,
}

fn time(t: Timestamp) -> Value {
    serde_json::to_value(Time(t)).unwrap_or(Value::Null)
}

fn condition(kind: &str, on: bool, now: Timestamp) -> Value {
    json!({"type": kind, "status": if on { "True" } else { "False" }, "lastTransitionTime": time(now)})
}

/// The `{"status": ...}` merge patch for a report.
pub fn patch(report: &Report<'_>, now: Timestamp) -> Value {
    let (ready, state, phase) = match &report.state {
        ContainerState::Running { started, ready } => {
            (*ready, json!({"running": {"startedAt": time(*started)}}), "Running")
        }
        ContainerState::Waiting { reason, message } => {
            (false, json!({"waiting": {"reason": reason, "message": message}}), "Pending")
        }
        ContainerState::Terminated { exit_code, reason } => (
            false,
            json!({"terminated": {"exitCode": exit_code, "reason": reason, "finishedAt": time(now)}}),
            "Running",
        ),
    };
    let started = matches!(report.state, ContainerState::Running { .. });
    json!({
        "status": {
            "phase": phase,
            "hostIP": report.host_ip,
            "hostIPs": [{"ip": report.host_ip}],
            "podIP": report.pod_ip,
            "podIPs": [{"ip": report.pod_ip}],
            "startTime": time(report.pod_started),
            "conditions": [
                condition("PodReadyToStartContainers", true, now),
                condition("Initialized", true, now),
                condition("Ready", ready, now),
                condition("ContainersReady", ready, now),
                condition("PodScheduled", true, now),
            ],
            "containerStatuses": [{
                "name": report.container,
                "image": report.image,
                "imageID": "",
                "containerID": report.pid.map(|pid| format!("infergate-e2e://{pid}")),
                "ready": ready,
                "started": started,
                "restartCount": report.restarts,
                "state": state,
            }],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(state: ContainerState) -> Report<'static> {
        Report {
            container: "server",
            image: "infergate-server:0.1.0",
            pod_ip: "127.1.0.2",
            host_ip: "127.0.0.1",
            pod_started: Timestamp::UNIX_EPOCH,
            restarts: 1,
            pid: Some(42),
            state,
        }
    }

    fn ready_conditions(p: &Value) -> Vec<(String, String)> {
        p["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["type"] == "Ready" || c["type"] == "ContainersReady")
            .map(|c| (c["type"].as_str().unwrap().to_string(), c["status"].as_str().unwrap().to_string()))
            .collect()
    }

    #[test]
    fn readiness_follows_the_probe() {
        let now = Timestamp::UNIX_EPOCH;
        let up = patch(&report(ContainerState::Running { started: now, ready: true }), now);
        assert_eq!(up["status"]["phase"], "Running");
        assert_eq!(up["status"]["podIP"], "127.1.0.2");
        assert_eq!(up["status"]["containerStatuses"][0]["ready"], true);
        assert_eq!(up["status"]["containerStatuses"][0]["containerID"], "infergate-e2e://42");
        assert!(ready_conditions(&up).iter().all(|(_, s)| s == "True"));
        let down = patch(&report(ContainerState::Running { started: now, ready: false }), now);
        assert!(ready_conditions(&down).iter().all(|(_, s)| s == "False"));
    }

    #[test]
    fn a_container_that_cannot_start_waits_with_its_reason() {
        let now = Timestamp::UNIX_EPOCH;
        let p =
            patch(&report(ContainerState::Waiting { reason: "ErrImagePull".into(), message: "no binary".into() }), now);
        assert_eq!(p["status"]["phase"], "Pending");
        assert_eq!(p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "ErrImagePull");
        assert!(ready_conditions(&p).iter().all(|(_, s)| s == "False"));
    }
}
