//! The revision id: a hash of everything that goes into a pod template.
//!
//! Replicas, rollout, slo and metrics settings are left out on purpose: changing them must not
//! start a new revision. The hash is FNV-1a (as Kubernetes' pod-template-hash) over the JSON of
//! the inputs, so it is stable across operator builds and Rust versions; fields that serialize
//! only when set keep old revisions' ids when new optional fields are added.

use serde::Serialize;

use crate::crd::{InferenceDeploymentSpec, ModelSpec, ResourcesSpec, SchedulingSpec, ServerSpec};

#[derive(Serialize)]
struct PodTemplateInputs<'a> {
    image: &'a str,
    model: &'a ModelSpec,
    resources: &'a ResourcesSpec,
    scheduling: &'a SchedulingSpec,
    server: &'a ServerSpec,
}

/// The revision id of the pod template `spec` asks for: 10 lowercase hex digits.
pub fn revision_of(spec: &InferenceDeploymentSpec) -> Result<String, serde_json::Error> {
    let inputs = PodTemplateInputs {
        image: &spec.image,
        model: &spec.model,
        resources: &spec.resources,
        scheduling: &spec.scheduling,
        server: &spec.server,
    };
    let bytes = serde_json::to_vec(&inputs)?;
    // 40 bits keep names short; a collision needs ~10^6 revisions of one resource.
    Ok(format!("{:010x}", fnv1a_64(&bytes) & 0xff_ffff_ffff))
}

fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::spec;

    #[test]
    fn fnv1a_matches_reference_vectors() {
        assert_eq!(fnv1a_64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn replicas_and_rollout_settings_keep_the_revision() {
        let base = spec();
        let mut scaled = base.clone();
        scaled.replicas = 7;
        scaled.rollout.preview_replicas = 3;
        scaled.slo.ttft_p95_ms = 42;
        assert_eq!(revision_of(&base).unwrap(), revision_of(&scaled).unwrap());
    }

    #[test]
    fn model_image_and_server_changes_make_a_new_revision() {
        let base = spec();
        let base_rev = revision_of(&base).unwrap();
        let mut image = base.clone();
        image.image = "infergate-server:v2".into();
        let mut model = base.clone();
        model.model.source = "hf://org/repo/other.gguf".into();
        let mut server = base.clone();
        server.server.max_batch_size = Some(16);
        for changed in [image, model, server] {
            let rev = revision_of(&changed).unwrap();
            assert_ne!(rev, base_rev);
            assert_eq!(rev.len(), 10);
        }
    }
}
