//! The API server side of the plugin: the kubeconfig as kubectl reads it, the resource, its
//! pods, and the annotation patch a user would make with `kubectl annotate`.

use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

use super::render::PodView;
use super::PluginError;
use crate::crd::InferenceDeployment;
use crate::names;

/// A client and the namespace the command works in.
pub struct Target {
    pub client: Client,
    pub namespace: String,
}

/// `--kubeconfig` (else `KUBECONFIG`, else `~/.kube/config`, else in-cluster), `--context`,
/// and `-n` (else the context's namespace, else `default`), as kubectl resolves them.
pub async fn connect(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    namespace: Option<&str>,
) -> Result<Target, PluginError> {
    let options = KubeConfigOptions { context: context.map(String::from), ..KubeConfigOptions::default() };
    let kubeconfig_error = |e: &dyn std::fmt::Display| PluginError::Kubeconfig(e.to_string());
    let config = match (kubeconfig, context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path).map_err(|e| kubeconfig_error(&e))?;
            Config::from_custom_kubeconfig(file, &options).await.map_err(|e| kubeconfig_error(&e))?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options).await.map_err(|e| kubeconfig_error(&e))?,
        (None, None) => Config::infer().await.map_err(|e| kubeconfig_error(&e))?,
    };
    let namespace = namespace.map_or_else(|| config.default_namespace.clone(), String::from);
    let client = Client::try_from(config)?;
    Ok(Target { client, namespace })
}

impl Target {
    fn api(&self) -> Api<InferenceDeployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub async fn resource(&self, name: &str) -> Result<InferenceDeployment, PluginError> {
        match self.api().get(name).await {
            Ok(resource) => Ok(resource),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                Err(PluginError::NotFound { namespace: self.namespace.clone(), name: name.to_string() })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every pod of the resource (all revisions, terminating ones included).
    pub async fn pods(&self, name: &str) -> Result<Vec<PodView>, PluginError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let selector = format!("{}={name}", names::LABEL_NAME);
        let mut views: Vec<PodView> =
            pods.list(&ListParams::default().labels(&selector)).await?.items.iter().map(pod_view).collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(views)
    }

    /// `kubectl annotate --overwrite infd NAME KEY=true`, the same merge patch.
    pub async fn annotate(&self, name: &str, key: &str) -> Result<(), PluginError> {
        let patch = json!({"metadata": {"annotations": {key: "true"}}});
        match self.api().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                Err(PluginError::NotFound { namespace: self.namespace.clone(), name: name.to_string() })
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn pod_view(pod: &Pod) -> PodView {
    let status = pod.status.as_ref();
    let containers = status.and_then(|s| s.container_statuses.as_deref()).unwrap_or_default();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    PodView {
        name: pod.metadata.name.clone().unwrap_or_default(),
        revision: pod.metadata.labels.as_ref().and_then(|l| l.get(names::LABEL_REVISION)).cloned().unwrap_or_default(),
        phase: status.and_then(|s| s.phase.clone()).unwrap_or_else(|| "Unknown".into()),
        ready,
        restarts: containers.iter().map(|c| c.restart_count).sum(),
        terminating: pod.metadata.deletion_timestamp.is_some(),
    }
}
