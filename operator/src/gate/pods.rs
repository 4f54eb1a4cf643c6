//! The pods the gate measures and loads: ready pods of one revision, addressed by pod IP.
//!
//! The operator never dials Service ClusterIPs: a Service mixes revisions and hides which pod
//! answered, and in the end-to-end environment pod IPs live on loopback.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::Client;

use crate::error::Result;
use crate::names::{LABEL_NAME, LABEL_REVISION, SERVER_PORT, SERVER_PORT_NAME};

/// One ready pod: its name and the base URL of its server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub pod: String,
    pub base_url: String,
}

pub async fn ready_targets(client: &Client, namespace: &str, name: &str, revision: &str) -> Result<Vec<Target>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{LABEL_NAME}={name},{LABEL_REVISION}={revision}");
    let pods = api.list(&ListParams::default().labels(&selector)).await?;
    Ok(pods.items.iter().filter_map(target_of).collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ready: &str, ip: Option<&str>, terminating: bool) -> Pod {
        let mut value = json!({
            "metadata": {"name": "chat-bbb-1"},
            "spec": {"containers": [{"name": "server", "ports": [{"name": "http", "containerPort": 9000}]}]},
            "status": {"conditions": [{"type": "Ready", "status": ready}]},
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
}
