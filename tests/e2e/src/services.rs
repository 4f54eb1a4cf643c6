//! Reaching a Service the way kube-proxy would route it: its selector picks the pods, and only
//! ready, non-terminating ones take new requests. (EndpointSlices can't hold the loopback pod
//! IPs of this cluster, so the selector is resolved here directly.)

use std::collections::BTreeMap;

use infergate_operator::gate::pods::{target_of, Target};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};
use kube::Client;

use crate::error::{Error, Result};

pub async fn ready_backends(client: &Client, namespace: &str, service: &str) -> Result<Vec<Target>> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let selector: BTreeMap<String, String> = services
        .get(service)
        .await?
        .spec
        .and_then(|s| s.selector)
        .ok_or_else(|| Error::Failed(format!("service {service} has no selector")))?;
    let labels = selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods.list(&ListParams::default().labels(&labels)).await?;
    Ok(list.items.iter().filter_map(target_of).collect())
}
