//! The two Services: `<name>` for users (active revision) and `<name>-preview` for the gate.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::InferenceDeployment;
use crate::error::{Error, Result};
use crate::names::{self, SERVER_PORT, SERVER_PORT_NAME};

/// A ClusterIP Service `service_name` selecting the pods of `revision`.
pub fn build_service(infd: &InferenceDeployment, service_name: String, revision: &str) -> Result<Service> {
    let name = infd.name_any();
    let owner = infd.controller_owner_ref(&()).ok_or(Error::MissingObjectKey("uid"))?;
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(service_name),
            namespace: infd.namespace(),
            labels: Some(names::common_labels(&name)),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(names::revision_selector(&name, revision)),
            ports: Some(vec![ServicePort {
                name: Some(SERVER_PORT_NAME.into()),
                port: SERVER_PORT,
                target_port: Some(IntOrString::String(SERVER_PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{infd, spec};

    #[test]
    fn services_select_one_revision_of_this_resource() {
        let obj = infd(spec());
        let active = build_service(&obj, names::active_service_name("chat"), "aaa").unwrap();
        let preview = build_service(&obj, names::preview_service_name("chat"), "bbb").unwrap();
        assert_eq!(active.metadata.name.as_deref(), Some("chat"));
        assert_eq!(preview.metadata.name.as_deref(), Some("chat-preview"));
        let selector = |s: &Service| s.spec.as_ref().unwrap().selector.clone().unwrap();
        assert_eq!(selector(&active), names::revision_selector("chat", "aaa"));
        assert_eq!(selector(&preview), names::revision_selector("chat", "bbb"));
        let port = &active.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(port.port, 8080);
        assert_eq!(port.target_port, Some(IntOrString::String("http".into())));
        assert_eq!(active.metadata.owner_references.as_ref().unwrap()[0].name, "chat");
    }
}
