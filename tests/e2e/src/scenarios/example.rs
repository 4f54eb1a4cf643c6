//! `kubectl apply -f examples/smollm2.yaml`: the resource becomes Healthy, its pods answer
//! OpenAI requests, `kubectl get infd` shows it; deleting it removes every child.

use std::time::Duration;

use infergate_operator::crd::Phase;
use infergate_operator::names;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams};
use serde_json::{json, Value};

use super::support::{is_phase, namespace, wait_status};
use super::Suite;
use crate::bail;
use crate::error::Result;
use crate::services::ready_backends;
use crate::wait;

const NAMESPACE: &str = "e2e-example";
const NAME: &str = "smollm2";
const SERVED_NAME: &str = "smollm2-135m-instruct";

pub async fn healthy_and_serving(suite: &Suite) -> Result<()> {
    namespace(suite, NAMESPACE).await?;
    suite.kubectl.apply_file(NAMESPACE, &suite.repo.join("examples/smollm2.yaml")).await?;
    let status = wait_status(&suite.client, NAMESPACE, NAME, "Healthy", Duration::from_secs(150), |s| {
        is_phase(s, Phase::Healthy) && s.ready_replicas == Some(2)
    })
    .await?;
    let revision = status.active_revision.unwrap_or_default();

    let listed = suite.kubectl.run(&["get", "infd", NAME, "-n", NAMESPACE], None).await?;
    if !listed.contains("Healthy") || !listed.contains(&revision) {
        bail!("kubectl get infd does not show the revision and phase:\n{listed}");
    }
    let backends = ready_backends(&suite.client, NAMESPACE, &names::active_service_name(NAME)).await?;
    if backends.len() != 2 {
        bail!("the Service routes to {} ready pods, expected 2", backends.len());
    }
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build()?;
    for backend in &backends {
        let models: Value = http.get(format!("{}/v1/models", backend.base_url)).send().await?.json().await?;
        if models["data"][0]["id"] != SERVED_NAME {
            bail!("{} lists models {models}", backend.pod);
        }
        let answer: Value = http
            .post(format!("{}/v1/chat/completions", backend.base_url))
            .json(&json!({
                "model": SERVED_NAME,
                "messages": [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": "What is the capital of France?"},
                ],
                "max_tokens": 16,
                "temperature": 0,
            }))
            .send()
            .await?
            .json()
            .await?;
        let content = answer["choices"][0]["message"]["content"].as_str().unwrap_or_default();
        if !content.contains("Paris") {
            bail!("{} answered {answer}", backend.pod);
        }
    }
    Ok(())
}

pub async fn delete_removes_children(suite: &Suite) -> Result<()> {
    let client = &suite.client;
    let before: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    if before.list(&ListParams::default()).await?.items.is_empty() {
        bail!("nothing to delete: the example scenario left no Deployment");
    }
    suite.kubectl.run(&["delete", "infd", NAME, "-n", NAMESPACE, "--timeout=60s"], None).await?;
    wait::until("every child gone", Duration::from_secs(90), || async {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
        let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), NAMESPACE);
        let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
        let all = ListParams::default();
        let left = deployments.list(&all).await?.items.len()
            + services.list(&all).await?.items.len()
            + pdbs.list(&all).await?.items.len()
            + pods.list(&all).await?.items.len();
        Ok((left == 0).then_some(()))
    })
    .await
}
