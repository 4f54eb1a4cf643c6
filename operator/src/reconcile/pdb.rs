//! The PodDisruptionBudget of the serving revision.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::InferenceDeployment;
use crate::error::{Error, Result};
use crate::names;

/// At most one active pod evicted at a time. `maxUnavailable` (not `minAvailable`) so a
/// one-replica deployment still lets nodes drain instead of blocking them forever.
pub fn build_pdb(infd: &InferenceDeployment, active_revision: &str) -> Result<PodDisruptionBudget> {
    let name = infd.name_any();
    let owner = infd.controller_owner_ref(&()).ok_or(Error::MissingObjectKey("uid"))?;
    Ok(PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some(names::pdb_name(&name)),
            namespace: infd.namespace(),
            labels: Some(names::common_labels(&name)),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(names::revision_selector(&name, active_revision)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{infd, spec};

    #[test]
    fn pdb_protects_the_active_revision() {
        let pdb = build_pdb(&infd(spec()), "aaa").unwrap();
        let owner = &pdb.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.name.as_str(), owner.controller), ("chat", Some(true)));
        let spec = pdb.spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.selector.unwrap().match_labels.unwrap(), names::revision_selector("chat", "aaa"));
    }
}
