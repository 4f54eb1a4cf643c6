//! operator/deploy/operator.yaml grants what the reconcile and leader election call.

use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use serde_json::Value;

fn documents() -> Vec<Value> {
    let path = package_dir().join("deploy/operator.yaml");
    let text = std::fs::read_to_string(path).expect("deploy manifest");
    serde_saphyr::from_multiple(&text).expect("multi-document YAML")
}

fn of_kind<T: serde::de::DeserializeOwned>(kind: &str) -> T {
    let doc = documents().into_iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"));
    serde_json::from_value(doc).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

fn allows(rules: &[k8s_openapi::api::rbac::v1::PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        r.api_groups.iter().flatten().any(|g| g == group)
            && r.resources.iter().flatten().any(|x| x == resource)
            && r.verbs.iter().any(|v| v == verb)
    })
}

#[test]
fn cluster_role_covers_every_call_of_the_reconcile() {
    let role: ClusterRole = of_kind("ClusterRole");
    let rules = role.rules.unwrap_or_default();
    let needed = [
        // get: a fresh read before children follow an unchanged status; patch: the rollout removes
        // handled control annotations (and an older version's finalizer).
        ("infergate.dev", "inferencedeployments", ["get", "list", "watch", "patch"].as_slice()),
        ("infergate.dev", "inferencedeployments/status", &["patch"]),
        // The built-in autoscaler writes spec.replicas through /scale.
        ("infergate.dev", "inferencedeployments/scale", &["patch"]),
        ("infergate.dev", "inferencedeployments/finalizers", &["update"]),
        // get: the gate reads how many pods the measured revision wants.
        ("apps", "deployments", &["get", "list", "watch", "patch", "delete"]),
        ("", "services", &["list", "watch", "patch"]),
        ("", "pods", &["list"]),
        ("policy", "poddisruptionbudgets", &["patch"]),
        ("events.k8s.io", "events", &["create", "patch"]),
    ];
    for (group, resource, verbs) in needed {
        for verb in verbs {
            assert!(allows(&rules, group, resource, verb), "missing {verb} on {group}/{resource}");
        }
    }
}

#[test]
fn leader_election_role_covers_leases() {
    let role: Role = of_kind("Role");
    let rules = role.rules.unwrap_or_default();
    for verb in ["get", "create", "update", "patch"] {
        assert!(allows(&rules, "coordination.k8s.io", "leases", verb), "missing {verb} on leases");
    }
}

#[test]
fn operator_deployment_runs_with_leader_election_and_its_identity() {
    let deployment: k8s_openapi::api::apps::v1::Deployment = of_kind("Deployment");
    let spec = deployment.spec.expect("spec");
    let pod = spec.template.spec.expect("pod spec");
    let container = &pod.containers[0];
    // More than one replica is only safe with leader election on.
    assert!(spec.replicas.unwrap_or(1) > 1);
    assert!(container.args.iter().flatten().any(|a| a == "--leader-election"));
    let env: Vec<&str> = container.env.iter().flatten().map(|e| e.name.as_str()).collect();
    assert!(env.contains(&"POD_NAME") && env.contains(&"POD_NAMESPACE"), "{env:?}");
}

/// The package's folder: cargo sets CARGO_MANIFEST_DIR when it runs the binary; the build-time
/// value is only a fallback, since a build cache shared between checkouts can hand this binary
/// to another checkout than the one it was compiled in.
fn package_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
