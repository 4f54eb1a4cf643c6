//! The chart as users install it: `helm install` takes over from the manifest-installed
//! operator, its operator (its own service account and least-privilege RBAC) reconciles and
//! rolls out; `helm upgrade` to two replicas turns leader election on; `helm uninstall`
//! removes everything the chart made and leaves the CRD (and users' resources) alone.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use kube::ResourceExt;

use super::rollouts::promote_under_client_load;
use super::support::{apply_and_wait_healthy, gated_manifest, namespace};
use super::Suite;
use crate::bail;
use crate::error::Result;
use crate::kubectl::helm;
use crate::wait;

const RELEASE: &str = "infergate";
const RELEASE_NAMESPACE: &str = "infergate-helm";
const NAMESPACE: &str = "e2e-helm";
const RELEASE_SELECTOR: &str = "app.kubernetes.io/instance=infergate";

pub async fn install_upgrade_uninstall(suite: &Suite) -> Result<()> {
    // Two operators must never reconcile the same resources: the manifest install goes first,
    // whole (its namespace, service account and RBAC), as a user switching to the chart does.
    let manifest = suite.repo.join("operator/deploy/operator.yaml");
    suite.kubectl.run(&["delete", "-f", &manifest.to_string_lossy(), "--wait=true", "--timeout=90s"], None).await?;

    let chart = suite.repo.join("charts/infergate");
    let chart = chart.to_string_lossy();
    let kubeconfig = &suite.cluster.kubeconfig;
    helm(
        kubeconfig,
        &["install", RELEASE, &chart, "-n", RELEASE_NAMESPACE, "--create-namespace", "--wait", "--timeout", "90s"],
    )
    .await?;
    namespace(suite, NAMESPACE).await?;
    let first = apply_and_wait_healthy(
        suite,
        NAMESPACE,
        &gated_manifest("chat", "v1", &[], None),
        None,
        Duration::from_secs(90),
    )
    .await?;

    helm(
        kubeconfig,
        &[
            "upgrade",
            RELEASE,
            &chart,
            "-n",
            RELEASE_NAMESPACE,
            "--reuse-values",
            "--set",
            "replicaCount=2",
            "--wait",
            "--timeout",
            "90s",
        ],
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(suite.client.clone(), RELEASE_NAMESPACE);
    let names: Vec<String> = pods
        .list(&ListParams::default().labels(RELEASE_SELECTOR))
        .await?
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect();
    if names.len() != 2 {
        bail!("after the upgrade the release runs pods {names:?}, expected 2");
    }
    let leases: Api<Lease> = Api::namespaced(suite.client.clone(), RELEASE_NAMESPACE);
    let holder = wait::until("a Lease held by a chart operator pod", Duration::from_secs(60), || async {
        let all = leases.list(&ListParams::default()).await?;
        Ok(all.items.into_iter().filter_map(|l| l.spec.and_then(|s| s.holder_identity)).find(|h| names.contains(h)))
    })
    .await?;
    // The upgraded, leader-elected operator rolls out with the chart's RBAC alone.
    let second = promote_under_client_load(suite, NAMESPACE, "chat", None).await?;
    if second == first {
        bail!("the rollout under {holder} kept revision {first}");
    }

    helm(kubeconfig, &["uninstall", RELEASE, "-n", RELEASE_NAMESPACE, "--wait", "--timeout", "90s"]).await?;
    let deployments: Api<Deployment> = Api::namespaced(suite.client.clone(), RELEASE_NAMESPACE);
    let roles: Api<ClusterRole> = Api::all(suite.client.clone());
    wait::until("the release's objects gone", Duration::from_secs(60), || async {
        let left = deployments.list(&ListParams::default().labels(RELEASE_SELECTOR)).await?.items.len()
            + roles.list(&ListParams::default().labels(RELEASE_SELECTOR)).await?.items.len()
            + pods.list(&ListParams::default().labels(RELEASE_SELECTOR)).await?.items.len();
        Ok((left == 0).then_some(()))
    })
    .await?;
    let crds: Api<CustomResourceDefinition> = Api::all(suite.client.clone());
    if crds.get_opt("inferencedeployments.infergate.dev").await?.is_none() {
        bail!("helm uninstall removed the CRD (and with it every InferenceDeployment)");
    }
    Ok(())
}
