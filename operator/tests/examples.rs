//! The example manifests are valid InferenceDeployments, and the CRD rejects broken ones.

mod support;

use infergate_operator::model_source::ModelSource;
use infergate_operator::InferenceDeployment;
use serde_json::Value;
use support::{admission_errors, committed_schema};

fn examples() -> Vec<(String, String)> {
    let dir = package_dir().join("../examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.display().to_string(), std::fs::read_to_string(&p).expect("example"))).collect()
}

#[test]
fn examples_parse_and_pass_admission() {
    let schema = committed_schema();
    let examples = examples();
    assert!(examples.len() >= 2, "expected the SmolLM2 and the 7B GPU examples");
    for (path, text) in examples {
        let typed: InferenceDeployment = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        ModelSource::parse(&typed.spec.model.source).unwrap_or_else(|e| panic!("{path}: {e}"));
        let raw: Value = serde_saphyr::from_str(&text).expect("yaml");
        let errors = admission_errors(&schema, &raw);
        assert!(errors.is_empty(), "{path}: {errors:?}");
    }
}

#[test]
fn the_gpu_example_asks_for_a_gpu_and_the_default_one_for_smollm2() {
    let by_name: Vec<InferenceDeployment> =
        examples().iter().map(|(_, text)| serde_saphyr::from_str(text).expect("example")).collect();
    assert!(by_name
        .iter()
        .any(|d| d.spec.model.source.ends_with("SmolLM2-135M-Instruct.Q4_1.gguf") && d.spec.resources.gpu == 0));
    assert!(by_name.iter().any(|d| d.spec.model.source.contains("Q8_0.gguf") && d.spec.resources.gpu >= 1));
}

/// A valid manifest with `patch` merged into its spec.
fn with_spec(patch: Value) -> Value {
    let mut object = serde_json::json!({
        "apiVersion": "infergate.dev/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {"name": "chat"},
        "spec": {"image": "infergate-server:0.1.0", "model": {"source": "/models/m.gguf"}},
    });
    merge(&mut object["spec"], patch);
    object
}

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch,
    }
}

#[test]
fn a_minimal_manifest_is_admitted() {
    assert_eq!(admission_errors(&committed_schema(), &with_spec(serde_json::json!({}))), Vec::<String>::new());
}

/// The CRD's CEL rule admits exactly the sources of the shared grammar table that a spec may
/// name (the operator and the server parse the same table: their unit tests).
#[test]
fn the_cel_rule_follows_the_model_source_table() {
    let schema = committed_schema();
    for example in infergate_protocol::model_source::EXAMPLES {
        let errors = admission_errors(&schema, &with_spec(serde_json::json!({"model": {"source": example.source}})));
        if example.spec {
            assert_eq!(errors, Vec::<String>::new(), "{:?} refused", example.source);
        } else {
            assert!(
                errors.iter().any(|e| e.contains("model.source must be")),
                "{:?} admitted: {errors:?}",
                example.source
            );
        }
    }
}

#[test]
fn broken_manifests_are_rejected_for_the_right_reason() {
    let schema = committed_schema();
    let cases = [
        (serde_json::json!({"slo": {"maxErrorRate": 1.5}}), "above the maximum"),
        (serde_json::json!({"slo": {"maxErrorRate": -0.1}}), "below the minimum"),
        (serde_json::json!({"replicas": 0}), "below the minimum"),
        (serde_json::json!({"rollout": {"analysis": {"onNoData": "Maybe"}}}), "is not one of"),
        (serde_json::json!({"replica": 2}), "unknown field"),
        (serde_json::json!({"image": 7}), "expected a string"),
        (serde_json::json!({"model": {"source": "s3://bucket/m.gguf"}}), "model.source must be hf://"),
        (serde_json::json!({"image": ""}), "image must not be empty"),
        (serde_json::json!({"metrics": {"source": "Prometheus"}}), "prometheusUrl is required"),
        (
            serde_json::json!({"model": {"source": "hf://o/r/m.Q4_0.gguf", "quantization": "q8_0"}}),
            "a GGUF file is already quantized",
        ),
        (
            serde_json::json!({"rollout": {"warmupSeconds": 900, "progressDeadlineSeconds": 600}}),
            "must exceed warmupSeconds",
        ),
        // A hung request must time out inside its window: equal is not enough.
        (
            serde_json::json!({"rollout": {"analysis": {"intervalSeconds": 10}, "probe": {"requestTimeoutSeconds": 10}}}),
            "probe.requestTimeoutSeconds must be less than analysis.intervalSeconds",
        ),
        // The default timeout (10 s) against a shorter window.
        (
            serde_json::json!({"rollout": {"analysis": {"intervalSeconds": 8}}}),
            "probe.requestTimeoutSeconds must be less than analysis.intervalSeconds",
        ),
    ];
    for (patch, expected) in cases {
        let errors = admission_errors(&schema, &with_spec(patch.clone()));
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{patch} should be rejected with {expected:?}, got {errors:?}"
        );
    }

    let mut long_name = with_spec(serde_json::json!({}));
    long_name["metadata"]["name"] = Value::String("x".repeat(53));
    let errors = admission_errors(&schema, &long_name);
    assert!(errors.iter().any(|e| e.contains("at most 52")), "{errors:?}");

    // Names become Service and Deployment names: DNS-1035 labels only, refused with the rule named.
    for bad in ["llama.v3", "Chat", "7b-chat", "chat-", "chat_v2"] {
        let mut named = with_spec(serde_json::json!({}));
        named["metadata"]["name"] = Value::String(bad.into());
        let errors = admission_errors(&schema, &named);
        assert!(errors.iter().any(|e| e.contains("must be a DNS-1035 label")), "{bad}: {errors:?}");
    }
    for good in ["chat", "llama-v3", "a", "m7b"] {
        let mut named = with_spec(serde_json::json!({}));
        named["metadata"]["name"] = Value::String(good.into());
        assert_eq!(admission_errors(&schema, &named), Vec::<String>::new(), "{good}");
    }

    for (patch, expected) in [
        (serde_json::json!({"rollout": {"analysis": {"deadlineSeconds": 5}}}), "below the minimum"),
        (serde_json::json!({"rollout": {"analysis": {"onLimitExceeded": "Ignore"}}}), "is not one of"),
    ] {
        let errors = admission_errors(&schema, &with_spec(patch.clone()));
        assert!(errors.iter().any(|e| e.contains(expected)), "{patch}: {errors:?}");
    }

    // Autoscaling: minReplicas at least 1 (no scale to zero without an activator), max >= min,
    // exactly one target.
    let autoscaling = |a: Value| serde_json::json!({"autoscaling": a});
    for (patch, expected) in [
        (
            autoscaling(serde_json::json!({"minReplicas": 0, "maxReplicas": 2, "target": {"queueDepthPerReplica": 2}})),
            "below the minimum",
        ),
        (
            autoscaling(serde_json::json!({"minReplicas": 3, "maxReplicas": 2, "target": {"queueDepthPerReplica": 2}})),
            "maxReplicas must be at least minReplicas",
        ),
        (autoscaling(serde_json::json!({"maxReplicas": 2, "target": {}})), "sets exactly one of"),
        (
            autoscaling(serde_json::json!({"maxReplicas": 2, "target": {"queueDepthPerReplica": 2, "ttftP95Ms": 500}})),
            "sets exactly one of",
        ),
        (
            autoscaling(serde_json::json!({"minReplicas": 1, "target": {"inFlightPerReplica": 2}})),
            "maxReplicas: required",
        ),
    ] {
        let errors = admission_errors(&schema, &with_spec(patch.clone()));
        assert!(errors.iter().any(|e| e.contains(expected)), "{patch}: {errors:?}");
    }

    let mut no_image = with_spec(serde_json::json!({}));
    no_image["spec"].as_object_mut().unwrap().remove("image");
    assert!(admission_errors(&schema, &no_image).iter().any(|e| e.contains(".spec.image: required")));
}

#[test]
fn valid_cross_field_combinations_are_admitted() {
    let schema = committed_schema();
    for patch in [
        serde_json::json!({"metrics": {"source": "Prometheus", "prometheusUrl": "http://prometheus:9090"}}),
        serde_json::json!({"model": {"source": "pvc://weights/qwen", "quantization": "q8_0"}}),
        serde_json::json!({"slo": {"maxErrorRate": 0}}),
        serde_json::json!({"slo": {"maxErrorRate": 1}}),
        serde_json::json!({"autoscaling": {"maxReplicas": 4, "target": {"ttftP95Ms": 800}}}),
        serde_json::json!({"autoscaling": {
            "minReplicas": 2, "maxReplicas": 2, "target": {"inFlightPerReplica": 4},
            "scaleUpStabilizationSeconds": 10, "scaleDownStabilizationSeconds": 0
        }}),
        serde_json::json!({"rollout": {"analysis": {
            "inconclusiveLimit": 0, "consecutiveErrorLimit": 10, "deadlineSeconds": 10, "onLimitExceeded": "Pause"
        }}}),
        serde_json::json!({"rollout": {"analysis": {"intervalSeconds": 11}}}),
        serde_json::json!({"rollout": {"analysis": {"intervalSeconds": 5}, "probe": {"requestTimeoutSeconds": 4}}}),
    ] {
        let errors = admission_errors(&schema, &with_spec(patch.clone()));
        assert!(errors.is_empty(), "{patch}: {errors:?}");
    }
}

/// The package's folder: cargo sets CARGO_MANIFEST_DIR when it runs the binary; the build-time
/// value is only a fallback, since a build cache shared between checkouts can hand this binary
/// to another checkout than the one it was compiled in.
fn package_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
