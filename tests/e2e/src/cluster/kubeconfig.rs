//! Kubeconfig files for the local control plane: the admin's (client certificate) and a
//! service account's (a bound token from the TokenRequest API).

use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::TokenRequest;
use kube::Client;
use serde_json::json;

use crate::error::{Error, Result};

pub const CLUSTER_NAME: &str = "infergate-e2e";

/// A kubeconfig with file references (kubectl, helm, kube-rs and Go clients all read them).
pub fn write_admin(path: &Path, server: &str, ca: &Path, cert: &Path, key: &Path) -> Result<()> {
    let user = json!({"client-certificate": cert, "client-key": key});
    write(path, server, ca, "admin", user)
}

fn write(path: &Path, server: &str, ca: &Path, user_name: &str, user: serde_json::Value) -> Result<()> {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER_NAME, "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user_name}}],
        "current-context": CLUSTER_NAME,
    });
    // JSON is YAML; every client above reads it.
    std::fs::write(path, serde_json::to_vec_pretty(&config)?).map_err(Error::io(format!("writing {}", path.display())))
}

/// Issues service-account tokens, as the kubelet's projected token volume does, and wraps
/// each in a kubeconfig so a process outside any pod authenticates as that account.
#[derive(Clone)]
pub struct TokenIssuer {
    pub client: Client,
    pub server: String,
    pub ca: PathBuf,
}

impl TokenIssuer {
    pub async fn kubeconfig_for(&self, namespace: &str, account: &str, path: &Path) -> Result<PathBuf> {
        let url = format!("/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token");
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        });
        let request = http::Request::post(url)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body)?)
            .map_err(|e| Error::Failed(format!("token request: {e}")))?;
        let answer: TokenRequest = self.client.request(request).await?;
        let token = answer.status.map(|s| s.token).ok_or_else(|| Error::Failed("token request: no token".into()))?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(Error::io("creating the token folder"))?;
        }
        let file = path.with_extension("kubeconfig");
        write(
            &file,
            &self.server,
            &self.ca,
            &format!("system:serviceaccount:{namespace}:{account}"),
            json!({"token": token}),
        )?;
        Ok(file)
    }
}

/// A client from a kubeconfig file.
pub async fn client(path: &Path) -> Result<Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}
