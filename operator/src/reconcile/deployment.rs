//! The Deployment of one revision: infergate-server pods for the spec's pod template.

use std::collections::BTreeMap;

use infergate_protocol::server_flags as flags;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction, Lifecycle, LifecycleHandler,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SleepAction, Toleration,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::InferenceDeployment;
use crate::error::{Error, Result};
use crate::model_source::{ModelSource, PVC_MOUNT_PATH};
use crate::names::{self, SERVER_PORT, SERVER_PORT_NAME};

pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
const CONTAINER_NAME: &str = "server";
const HF_CACHE_PATH: &str = "/cache/huggingface";
/// Endpoint controllers and proxies need a moment to stop routing to a terminating pod; the
/// server only starts refusing (503) after this, so no request is sent to a closed socket.
pub const PRE_STOP_SLEEP_SECONDS: i64 = 5;
/// Headroom after the drain for the process to exit before SIGKILL.
const EXIT_MARGIN_SECONDS: i64 = 10;
const STARTUP_PERIOD_SECONDS: i32 = 5;

/// The Deployment `<name>-<revision>` with `replicas` pods.
pub fn build_deployment(
    infd: &InferenceDeployment,
    model: &ModelSource,
    revision: &str,
    replicas: i32,
) -> Result<Deployment> {
    let name = infd.name_any();
    let owner = infd.controller_owner_ref(&()).ok_or(Error::MissingObjectKey("uid"))?;
    let labels = names::revision_labels(&name, revision);
    let spec = &infd.spec;

    Ok(Deployment {
        metadata: ObjectMeta {
            name: Some(names::deployment_name(&name, revision)),
            namespace: infd.namespace(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(names::revision_selector(&name, revision)),
                ..LabelSelector::default()
            },
            progress_deadline_seconds: Some(i32::try_from(spec.rollout.progress_deadline_seconds).unwrap_or(i32::MAX)),
            revision_history_limit: Some(2),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(scrape_annotations()),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(infd, model, revision)),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

fn scrape_annotations() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), SERVER_PORT.to_string()),
        ("prometheus.io/path".to_string(), "/metrics".to_string()),
    ])
}

fn pod_spec(infd: &InferenceDeployment, model: &ModelSource, revision: &str) -> PodSpec {
    let spec = &infd.spec;
    let drain = i64::from(spec.server.drain_timeout_seconds);
    let mut tolerations = spec.scheduling.tolerations.clone();
    if spec.resources.gpu > 0 && !tolerations.iter().any(tolerates_gpu_taint) {
        // GPU nodes are commonly tainted nvidia.com/gpu:NoSchedule.
        tolerations.push(Toleration {
            key: Some(GPU_RESOURCE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        });
    }
    let (volumes, mounts) = volumes(model);

    PodSpec {
        containers: vec![Container {
            name: CONTAINER_NAME.into(),
            image: Some(spec.image.clone()),
            args: Some(server_args(infd, model)),
            env: Some(server_env(infd, model, revision)),
            ports: Some(vec![ContainerPort {
                name: Some(SERVER_PORT_NAME.into()),
                container_port: SERVER_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            }]),
            resources: Some(resources(infd)),
            readiness_probe: Some(http_probe("/ready", 5, 2)),
            liveness_probe: Some(http_probe("/health", 10, 3)),
            startup_probe: Some(startup_probe(spec.server.startup_timeout_seconds)),
            lifecycle: Some(Lifecycle {
                pre_stop: Some(LifecycleHandler {
                    sleep: Some(SleepAction { seconds: PRE_STOP_SLEEP_SECONDS }),
                    ..LifecycleHandler::default()
                }),
                ..Lifecycle::default()
            }),
            volume_mounts: (!mounts.is_empty()).then_some(mounts),
            ..Container::default()
        }],
        termination_grace_period_seconds: Some(PRE_STOP_SLEEP_SECONDS + drain + EXIT_MARGIN_SECONDS),
        node_selector: (!spec.scheduling.node_selector.is_empty()).then(|| spec.scheduling.node_selector.clone()),
        tolerations: (!tolerations.is_empty()).then_some(tolerations),
        volumes: (!volumes.is_empty()).then_some(volumes),
        // Service env vars of every Service in the namespace are noise for the server.
        enable_service_links: Some(false),
        ..PodSpec::default()
    }
}

fn tolerates_gpu_taint(t: &Toleration) -> bool {
    t.key.as_deref() == Some(GPU_RESOURCE) || (t.key.is_none() && t.operator.as_deref() == Some("Exists"))
}

/// The server's command line: model, bind address, drain, then the user's extra args last so
/// they can override.
pub fn server_args(infd: &InferenceDeployment, model: &ModelSource) -> Vec<String> {
    let spec = &infd.spec;
    let mut args = vec![
        flags::MODEL.arg(),
        model.server_arg(),
        flags::HOST.arg(),
        "0.0.0.0".to_string(),
        flags::PORT.arg(),
        SERVER_PORT.to_string(),
        flags::DRAIN_TIMEOUT_SECONDS.arg(),
        spec.server.drain_timeout_seconds.to_string(),
    ];
    if let Some(q) = spec.model.quantization {
        args.extend([flags::QUANTIZE.arg(), q.as_arg().to_string()]);
    }
    args.extend(spec.server.extra_args.iter().cloned());
    args
}

fn env(name: &str, value: impl ToString) -> EnvVar {
    EnvVar { name: name.to_string(), value: Some(value.to_string()), ..EnvVar::default() }
}

pub fn server_env(infd: &InferenceDeployment, model: &ModelSource, revision: &str) -> Vec<EnvVar> {
    let spec = &infd.spec;
    let server = &spec.server;
    let mut vars = vec![env(flags::REVISION.env, revision)];
    if let Some(served) = &spec.model.served_name {
        vars.push(env(flags::SERVED_MODEL_NAME.env, served));
    }
    if let Some(v) = server.enable_batching {
        vars.push(env(flags::ENABLE_BATCHING.env, v));
    }
    if let Some(v) = server.max_batch_size {
        vars.push(env(flags::MAX_BATCH_SIZE.env, v));
    }
    if let Some(v) = server.max_wait_ms {
        vars.push(env(flags::MAX_WAIT_TIME_MS.env, v));
    }
    if let Some(v) = server.max_queue_size {
        vars.push(env(flags::MAX_QUEUE_SIZE.env, v));
    }
    if let Some(v) = server.request_timeout_seconds {
        vars.push(env(flags::REQUEST_TIMEOUT_SECONDS.env, v));
    }
    if matches!(model, ModelSource::HuggingFace { .. }) {
        vars.push(env("HF_HOME", HF_CACHE_PATH));
    }
    vars.extend(server.extra_env.iter().cloned());
    vars
}

fn resources(infd: &InferenceDeployment) -> ResourceRequirements {
    let res = &infd.spec.resources;
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    if let Some(cpu) = &res.cpu {
        requests.insert("cpu".to_string(), cpu.clone());
    }
    if let Some(memory) = &res.memory {
        requests.insert("memory".to_string(), memory.clone());
        limits.insert("memory".to_string(), memory.clone());
    }
    if res.gpu > 0 {
        limits.insert(GPU_RESOURCE.to_string(), Quantity(res.gpu.to_string()));
    }
    ResourceRequirements {
        requests: (!requests.is_empty()).then_some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..ResourceRequirements::default()
    }
}

fn volumes(model: &ModelSource) -> (Vec<Volume>, Vec<VolumeMount>) {
    match model {
        ModelSource::Pvc { claim, .. } => (
            vec![Volume {
                name: "model".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone(),
                    read_only: Some(true),
                }),
                ..Volume::default()
            }],
            vec![VolumeMount {
                name: "model".into(),
                mount_path: PVC_MOUNT_PATH.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            }],
        ),
        ModelSource::HuggingFace { .. } => (
            vec![Volume {
                name: "hf-cache".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            }],
            vec![VolumeMount { name: "hf-cache".into(), mount_path: HF_CACHE_PATH.into(), ..VolumeMount::default() }],
        ),
        ModelSource::File { .. } => (Vec::new(), Vec::new()),
    }
}

fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(SERVER_PORT_NAME.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(3),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

/// Liveness waits until the model is downloaded and loaded: the startup probe allows
/// `startup_timeout_seconds` for that.
fn startup_probe(startup_timeout_seconds: u32) -> Probe {
    let period = STARTUP_PERIOD_SECONDS as u32;
    let attempts = startup_timeout_seconds.div_ceil(period).max(1);
    http_probe("/health", STARTUP_PERIOD_SECONDS, i32::try_from(attempts).unwrap_or(i32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Quantization;
    use crate::test_support::{infd, spec};

    fn container(d: &Deployment) -> &Container {
        &d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
    }

    fn pod(d: &Deployment) -> &PodSpec {
        d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    fn env_value<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
        c.env.as_ref()?.iter().find(|e| e.name == name)?.value.as_deref()
    }

    #[test]
    fn deployment_is_named_labelled_and_owned_per_revision() {
        let obj = infd(spec());
        let model = ModelSource::parse(&obj.spec.model.source).unwrap();
        let d = build_deployment(&obj, &model, "abc123", 2).unwrap();
        assert_eq!(d.metadata.name.as_deref(), Some("chat-abc123"));
        assert_eq!(d.metadata.namespace.as_deref(), Some("ml"));
        let labels = d.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["infergate.dev/name"], "chat");
        assert_eq!(labels["infergate.dev/revision"], "abc123");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "infergate-operator");
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "InferenceDeployment");
        assert_eq!(owner.controller, Some(true));
        let ds = d.spec.as_ref().unwrap();
        assert_eq!(ds.replicas, Some(2));
        assert_eq!(ds.selector.match_labels.as_ref().unwrap(), &names::revision_selector("chat", "abc123"));
        let tpl_labels = ds.template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(tpl_labels["infergate.dev/revision"], "abc123");
        let ann = ds.template.metadata.as_ref().unwrap().annotations.as_ref().unwrap();
        assert_eq!(ann["prometheus.io/scrape"], "true");
        assert_eq!(ann["prometheus.io/port"], "8080");
    }

    #[test]
    fn pod_runs_the_server_with_model_revision_and_knobs() {
        let mut s = spec();
        s.server.max_batch_size = Some(16);
        s.server.enable_batching = Some(true);
        s.server.extra_args = vec!["--inject-ttft-delay-ms".into(), "200".into()];
        let obj = infd(s);
        let model = ModelSource::parse(&obj.spec.model.source).unwrap();
        let d = build_deployment(&obj, &model, "abc123", 1).unwrap();
        let c = container(&d);
        assert_eq!(c.image.as_deref(), Some("infergate-server:v1"));
        assert_eq!(
            c.args.as_ref().unwrap(),
            &[
                "--model",
                "/models/SmolLM2-135M-Instruct.Q4_1.gguf",
                "--host",
                "0.0.0.0",
                "--port",
                "8080",
                "--drain-timeout-seconds",
                "30",
                "--inject-ttft-delay-ms",
                "200"
            ]
        );
        assert_eq!(env_value(c, flags::REVISION.env), Some("abc123"));
        assert_eq!(env_value(c, flags::SERVED_MODEL_NAME.env), Some("smollm2"));
        assert_eq!(env_value(c, flags::MAX_BATCH_SIZE.env), Some("16"));
        assert_eq!(env_value(c, flags::ENABLE_BATCHING.env), Some("true"));
        // Unset knobs keep the server's defaults.
        assert_eq!(env_value(c, flags::MAX_QUEUE_SIZE.env), None);
        assert_eq!(env_value(c, "HF_HOME"), None);
    }

    #[test]
    fn probes_and_grace_period_cover_load_and_drain() {
        let mut s = spec();
        s.server.drain_timeout_seconds = 45;
        s.server.startup_timeout_seconds = 300;
        let obj = infd(s);
        let model = ModelSource::parse(&obj.spec.model.source).unwrap();
        let d = build_deployment(&obj, &model, "r", 1).unwrap();
        let c = container(&d);
        let path = |p: &Option<Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone();
        assert_eq!(path(&c.readiness_probe).as_deref(), Some("/ready"));
        assert_eq!(path(&c.liveness_probe).as_deref(), Some("/health"));
        let startup = c.startup_probe.as_ref().unwrap();
        let budget = startup.period_seconds.unwrap() * startup.failure_threshold.unwrap();
        assert!(budget >= 300, "startup budget {budget}s < 300s");
        let sleep = c.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap().sleep.as_ref().unwrap();
        let grace = pod(&d).termination_grace_period_seconds.unwrap();
        assert!(grace >= sleep.seconds + 45, "grace {grace}s does not cover preStop + drain");
        assert!(c.args.as_ref().unwrap().windows(2).any(|w| w == ["--drain-timeout-seconds", "45"]));
    }

    #[test]
    fn gpu_pods_get_gpu_limits_toleration_and_node_selector() {
        let mut s = spec();
        s.resources.gpu = 1;
        s.resources.memory = Some(Quantity("16Gi".into()));
        s.scheduling.node_selector = BTreeMap::from([("gpu".into(), "h100".into())]);
        let obj = infd(s);
        let model = ModelSource::parse(&obj.spec.model.source).unwrap();
        let d = build_deployment(&obj, &model, "r", 1).unwrap();
        let c = container(&d);
        let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits[GPU_RESOURCE], Quantity("1".into()));
        assert_eq!(limits["memory"], Quantity("16Gi".into()));
        let p = pod(&d);
        assert_eq!(p.node_selector.as_ref().unwrap()["gpu"], "h100");
        assert!(p.tolerations.as_ref().unwrap().iter().any(tolerates_gpu_taint));
    }

    #[test]
    fn cpu_pods_have_no_gpu_limit_or_toleration() {
        let obj = infd(spec());
        let model = ModelSource::parse(&obj.spec.model.source).unwrap();
        let d = build_deployment(&obj, &model, "r", 1).unwrap();
        let c = container(&d);
        let has_gpu =
            c.resources.as_ref().and_then(|r| r.limits.as_ref()).is_some_and(|l| l.contains_key(GPU_RESOURCE));
        assert!(!has_gpu);
        assert!(pod(&d).tolerations.is_none());
    }

    #[test]
    fn hf_and_pvc_sources_get_their_volumes_and_quantize_flag() {
        let mut s = spec();
        s.model.source = "pvc://weights/qwen/model.safetensors".into();
        s.model.quantization = Some(Quantization::Q8_0);
        let obj = infd(s);
        let model = ModelSource::parse(&obj.spec.model.source).unwrap();
        let d = build_deployment(&obj, &model, "r", 1).unwrap();
        let c = container(&d);
        let args = c.args.as_ref().unwrap();
        assert!(args.windows(2).any(|w| w == ["--model", "/mnt/model/qwen/model.safetensors"]));
        assert!(args.windows(2).any(|w| w == ["--quantize", "q8_0"]));
        let vol = &pod(&d).volumes.as_ref().unwrap()[0];
        assert_eq!(vol.persistent_volume_claim.as_ref().unwrap().claim_name, "weights");

        let mut s = spec();
        s.model.source = "hf://org/repo/m.gguf".into();
        let obj = infd(s);
        let model = ModelSource::parse(&obj.spec.model.source).unwrap();
        let d = build_deployment(&obj, &model, "r", 1).unwrap();
        assert_eq!(env_value(container(&d), "HF_HOME"), Some(HF_CACHE_PATH));
        assert!(pod(&d).volumes.as_ref().unwrap()[0].empty_dir.is_some());
    }
}
