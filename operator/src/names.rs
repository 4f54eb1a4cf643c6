//! Names, labels and identities shared by every child object.
//!
//! These are the contract with the server (the revision env var) and with users' selectors
//! (the labels), so they live in one place.

use std::collections::BTreeMap;

/// The one field manager for every server-side apply and status write.
pub const FIELD_MANAGER: &str = "infergate-operator";
/// The finalizer older operator versions put on every object. There is none now (deletion must
/// not wait for an operator that may be gone); the reconciler removes this one where it is left.
pub const LEGACY_FINALIZER: &str = "infergate.dev/cleanup";

pub const LABEL_NAME: &str = "infergate.dev/name";
pub const LABEL_REVISION: &str = "infergate.dev/revision";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Selects every object this operator owns, for the controller's watches.
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=infergate-operator";

/// Container port of infergate-server (its default).
pub const SERVER_PORT: i32 = 8080;
pub const SERVER_PORT_NAME: &str = "http";

/// Service `<name>`: selects the active revision.
pub fn active_service_name(name: &str) -> String {
    name.to_string()
}

/// Service `<name>-preview`: selects the revision under evaluation.
pub fn preview_service_name(name: &str) -> String {
    format!("{name}-preview")
}

/// Deployment `<name>-<revision>`.
pub fn deployment_name(name: &str, revision: &str) -> String {
    format!("{name}-{revision}")
}

pub fn pdb_name(name: &str) -> String {
    name.to_string()
}

/// Labels on every child of the InferenceDeployment `name`.
pub fn common_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "infergate-server".to_string()),
        ("app.kubernetes.io/instance".to_string(), name.to_string()),
        ("app.kubernetes.io/component".to_string(), "inference".to_string()),
        ("app.kubernetes.io/part-of".to_string(), "infergate".to_string()),
        (LABEL_MANAGED_BY.to_string(), FIELD_MANAGER.to_string()),
        (LABEL_NAME.to_string(), name.to_string()),
    ])
}

/// Selects the pods of one revision.
pub fn revision_selector(name: &str, revision: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_NAME.to_string(), name.to_string()), (LABEL_REVISION.to_string(), revision.to_string())])
}

/// Labels of a revision's Deployment and pods.
pub fn revision_labels(name: &str, revision: &str) -> BTreeMap<String, String> {
    let mut labels = common_labels(name);
    labels.extend(revision_selector(name, revision));
    labels
}

/// [`revision_selector`] in the string form of `status.selector`, which the `/scale`
/// subresource hands to an HPA to find the pods it averages over.
pub fn selector_string(name: &str, revision: &str) -> String {
    revision_selector(name, revision).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}
