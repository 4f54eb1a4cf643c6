//! What the pod runner starts for a pod, as a kubelet and container runtime would decide it:
//! the image names a local binary, the pod's network namespace is its own loopback address
//! (so `0.0.0.0` in args and env means that address), volumes of the image are host folders.
//! Pure: a pod in, a launch plan or a reason it cannot start out.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// How the runner maps the cluster's world onto this machine.
#[derive(Clone, Debug, Default)]
pub struct Mapping {
    /// Image repository name (last path segment, no tag) -> local binary.
    pub images: BTreeMap<String, PathBuf>,
    /// Path inside the "image" -> host path (e.g. /models -> ~/.cache/infergate/models).
    pub mounts: Vec<(String, String)>,
}

/// Everything needed to run one pod's container and probe it.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    pub container: String,
    pub image: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `/path` and port of the readiness probe; without one a started process is ready.
    pub readiness: Option<(String, u16)>,
    pub pre_stop_sleep_seconds: u64,
    pub grace_seconds: u64,
    /// The service account whose token the process gets, when it mounts one.
    pub service_account: Option<String>,
}

/// Why a pod cannot start; the reason goes to the container's waiting state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

fn refuse(reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal { reason, message: message.into() }
}

/// The repository name of an image reference: `ghcr.io/org/infergate-server:0.1.0` ->
/// `infergate-server`.
pub fn image_name(image: &str) -> &str {
    let last = image.rsplit('/').next().unwrap_or(image);
    let no_digest = last.split('@').next().unwrap_or(last);
    no_digest.split(':').next().unwrap_or(no_digest)
}

pub fn plan(pod: &Pod, pod_ip: &str, mapping: &Mapping) -> Result<Launch, Refusal> {
    let spec = pod.spec.as_ref().ok_or_else(|| refuse("InvalidPod", "pod has no spec"))?;
    let [container] = spec.containers.as_slice() else {
        return Err(refuse("Unsupported", "the pod runner runs single-container pods"));
    };
    let image = container.image.clone().unwrap_or_default();
    let program = mapping
        .images
        .get(image_name(&image))
        .cloned()
        .ok_or_else(|| refuse("ErrImagePull", format!("no local binary for image {image:?}")))?;
    let substitute = |value: &str| substitute(value, pod_ip, &mapping.mounts);

    let mut args: Vec<String> = Vec::new();
    if let Some(command) = container.command.as_ref().filter(|c| !c.is_empty()) {
        // The image's entrypoint is the binary itself; a command naming something else can't run here.
        let wanted = program.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let given = command[0].rsplit('/').next().unwrap_or_default();
        if given != wanted {
            return Err(refuse("Unsupported", format!("command {:?} is not the image's binary {wanted}", command[0])));
        }
        args.extend(command[1..].iter().map(|a| substitute(a)));
    }
    args.extend(container.args.iter().flatten().map(|a| substitute(a)));

    let mut env = Vec::new();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => substitute(value),
            (None, Some(from)) => {
                let field = from.field_ref.as_ref().map(|f| f.field_path.as_str()).ok_or_else(|| {
                    refuse(
                        "CreateContainerConfigError",
                        format!("env {}: only fieldRef sources are supported", var.name),
                    )
                })?;
                field_value(pod, field, pod_ip).ok_or_else(|| {
                    refuse("CreateContainerConfigError", format!("env {}: unsupported field {field}", var.name))
                })?
            }
            (None, None) => String::new(),
        };
        env.push((var.name.clone(), value));
    }

    let readiness = container
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .map(|get| Ok::<_, Refusal>((get.path.clone().unwrap_or_else(|| "/".into()), port_of(container, &get.port)?)))
        .transpose()?;
    let pre_stop_sleep_seconds = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.sleep.as_ref())
        .map_or(0, |s| u64::try_from(s.seconds).unwrap_or(0));
    let grace_seconds = spec.termination_grace_period_seconds.map_or(30, |s| u64::try_from(s).unwrap_or(0));
    let mounts_token = spec.automount_service_account_token.unwrap_or(true);
    Ok(Launch {
        container: container.name.clone(),
        image,
        program,
        args,
        env,
        readiness,
        pre_stop_sleep_seconds,
        grace_seconds,
        service_account: mounts_token.then(|| spec.service_account_name.clone().unwrap_or_else(|| "default".into())),
    })
}

/// `0.0.0.0` is the pod's own address (its network namespace has no other); image paths
/// under a mount are host paths.
fn substitute(value: &str, pod_ip: &str, mounts: &[(String, String)]) -> String {
    let mut value = value.replace("0.0.0.0", pod_ip);
    for (inside, host) in mounts {
        if value == *inside || value.starts_with(&format!("{inside}/")) {
            value = format!("{host}{}", &value[inside.len()..]);
        } else if let Some(rest) = value.strip_prefix(&format!("file://{inside}/")) {
            value = format!("file://{host}/{rest}");
        }
    }
    value
}

fn field_value(pod: &Pod, field: &str, pod_ip: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    match field {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "status.podIP" => Some(pod_ip.to_string()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        _ => None,
    }
}

fn port_of(container: &Container, port: &IntOrString) -> Result<u16, Refusal> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .ok_or_else(|| refuse("InvalidPod", format!("probe port {name:?} is not a container port")))?,
    };
    u16::try_from(number).map_err(|_| refuse("InvalidPod", format!("probe port {number} out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use infergate_protocol::server_flags as flags;
    use serde_json::json;

    fn mapping() -> Mapping {
        Mapping {
            images: BTreeMap::from([("infergate-server".to_string(), PathBuf::from("/bin/infergate-server"))]),
            mounts: vec![("/models".into(), "/home/u/models".into())],
        }
    }

    fn pod(container: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "chat-abc-1", "namespace": "ml", "uid": "u-1"},
            "spec": {"containers": [container], "nodeName": "kwok-cpu-0", "terminationGracePeriodSeconds": 45},
        }))
        .unwrap()
    }

    fn server_container() -> serde_json::Value {
        json!({
            "name": "server",
            "image": "registry.local/team/infergate-server:0.1.0",
            "args": ["--model", "/models/m.gguf", "--host", "0.0.0.0", "--port", "8080"],
            "env": [
                {"name": flags::REVISION.env, "value": "abc"},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "HTTP_ADDR", "value": "0.0.0.0:9090"},
            ],
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
            "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
        })
    }

    #[test]
    fn a_server_pod_runs_the_local_binary_on_its_own_address() {
        let launch = plan(&pod(server_container()), "127.1.0.7", &mapping()).unwrap();
        assert_eq!(launch.program, PathBuf::from("/bin/infergate-server"));
        assert_eq!(launch.args, ["--model", "/home/u/models/m.gguf", "--host", "127.1.0.7", "--port", "8080"]);
        assert_eq!(
            launch.env,
            [
                (flags::REVISION.env.to_string(), "abc".to_string()),
                ("POD_NAME".to_string(), "chat-abc-1".to_string()),
                ("HTTP_ADDR".to_string(), "127.1.0.7:9090".to_string()),
            ]
        );
        assert_eq!(launch.readiness, Some(("/ready".to_string(), 8080)));
        assert_eq!((launch.pre_stop_sleep_seconds, launch.grace_seconds), (5, 45));
        assert_eq!(launch.service_account.as_deref(), Some("default"));
    }

    #[test]
    fn unknown_images_and_foreign_commands_are_refused_with_a_reason() {
        let mut c = server_container();
        c["image"] = json!("nginx:1.27");
        assert_eq!(plan(&pod(c), "127.1.0.7", &mapping()).unwrap_err().reason, "ErrImagePull");
        let mut c = server_container();
        c["command"] = json!(["/bin/sh", "-c", "sleep 1"]);
        assert_eq!(plan(&pod(c), "127.1.0.7", &mapping()).unwrap_err().reason, "Unsupported");
        let mut c = server_container();
        c["env"] = json!([{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]);
        assert_eq!(plan(&pod(c), "127.1.0.7", &mapping()).unwrap_err().reason, "CreateContainerConfigError");
    }

    #[test]
    fn a_command_naming_the_binary_keeps_its_arguments() {
        let mut c = server_container();
        c["command"] = json!(["/usr/local/bin/infergate-server", "--threads", "1"]);
        let launch = plan(&pod(c), "127.1.0.7", &mapping()).unwrap();
        assert_eq!(&launch.args[..2], ["--threads", "1"]);
    }

    #[test]
    fn image_names_drop_registry_tag_and_digest() {
        assert_eq!(image_name("infergate-server:0.1.0"), "infergate-server");
        assert_eq!(image_name("ghcr.io/a/b/infergate-operator@sha256:ff"), "infergate-operator");
        assert_eq!(image_name("localhost:5000/infergate-server"), "infergate-server");
    }

    #[test]
    fn mounts_rewrite_paths_and_file_urls_but_not_lookalikes() {
        let m = mapping().mounts;
        assert_eq!(substitute("/models/x.gguf", "127.1.0.2", &m), "/home/u/models/x.gguf");
        assert_eq!(substitute("file:///models/x.gguf", "127.1.0.2", &m), "file:///home/u/models/x.gguf");
        assert_eq!(substitute("/modelsx/y", "127.1.0.2", &m), "/modelsx/y");
    }
}
