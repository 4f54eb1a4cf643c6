//! The API server itself refuses resources that break the CRD's schema and CEL rules, with a
//! message naming the field: users learn at `kubectl apply`, not from a stuck rollout.

use serde_json::Value;

use super::support::{gated_manifest, namespace};
use super::Suite;
use crate::bail;
use crate::error::{Error, Result};

const NAMESPACE: &str = "e2e-validation";

/// What one case changes in a valid manifest.
type Mutation = Box<dyn Fn(&mut Value)>;

pub async fn rejects_invalid(suite: &Suite) -> Result<()> {
    namespace(suite, NAMESPACE).await?;
    let base = gated_manifest("invalid", "v1", &[], None);
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            // A dot is a valid object name but no DNS-1035 label: the Service could not exist.
            "name that is no DNS-1035 label",
            Box::new(|m| m["metadata"]["name"] = "llama.v3".into()),
            "metadata.name must be a DNS-1035 label",
        ),
        (
            "probe request timeout not below the window",
            Box::new(|m| m["spec"]["rollout"]["probe"]["requestTimeoutSeconds"] = 8.into()),
            "probe.requestTimeoutSeconds must be less than analysis.intervalSeconds",
        ),
        (
            // The defaults (10 s) against a short window the user set: refused too.
            "default probe request timeout with a 5 s window",
            Box::new(|m| {
                m["spec"]["rollout"]["analysis"]["intervalSeconds"] = 5.into();
                if let Some(probe) = m["spec"]["rollout"]["probe"].as_object_mut() {
                    probe.remove("requestTimeoutSeconds");
                }
            }),
            "probe.requestTimeoutSeconds must be less than analysis.intervalSeconds",
        ),
        ("zero replicas", Box::new(|m| m["spec"]["replicas"] = 0.into()), "spec.replicas"),
        ("unknown field", Box::new(|m| m["spec"]["replica"] = 2.into()), "unknown field \"spec.replica\""),
        (
            "bad model source",
            Box::new(|m| m["spec"]["model"]["source"] = "ftp://host/m.gguf".into()),
            "model.source must be hf://",
        ),
        (
            // The apiserver's CEL follows the grammar the server parses: an empty revision is
            // refused at admission, not left to crash-loop the pods.
            "hub source with an empty revision",
            Box::new(|m| m["spec"]["model"]["source"] = "hf://org/repo@/m.gguf".into()),
            "model.source must be hf://",
        ),
        (
            "Prometheus without a URL",
            Box::new(|m| m["spec"]["metrics"] = serde_json::json!({"source": "Prometheus"})),
            "metrics.prometheusUrl is required",
        ),
        ("bad enum", Box::new(|m| m["spec"]["rollout"]["analysis"]["onNoData"] = "Maybe".into()), "onNoData"),
        ("empty image", Box::new(|m| m["spec"]["image"] = "".into()), "image must not be empty"),
        (
            "autoscaling down to zero",
            Box::new(|m| {
                m["spec"]["autoscaling"] =
                    serde_json::json!({"minReplicas": 0, "maxReplicas": 2, "target": {"queueDepthPerReplica": 2}})
            }),
            "spec.autoscaling.minReplicas",
        ),
        (
            "autoscaling with two targets",
            Box::new(|m| {
                m["spec"]["autoscaling"] = serde_json::json!({"maxReplicas": 2,
                    "target": {"queueDepthPerReplica": 2, "inFlightPerReplica": 2}})
            }),
            "sets exactly one of",
        ),
    ];
    for (what, mutate, expected) in cases {
        let mut manifest = base.clone();
        mutate(&mut manifest);
        match suite.kubectl.apply(NAMESPACE, &manifest.to_string()).await {
            Ok(out) => bail!("{what}: the API server accepted it: {out}"),
            Err(Error::Command { output, .. }) if output.contains(expected) => {}
            Err(e) => bail!("{what}: expected a message containing {expected:?}, got: {e}"),
        }
    }
    // The valid base manifest is accepted, so the refusals above were about the mutations.
    suite.kubectl.run(&["apply", "--dry-run=server", "-n", NAMESPACE, "-f", "-"], Some(&base.to_string())).await?;
    Ok(())
}
