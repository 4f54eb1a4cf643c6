//! The plugin's one error type; each error knows its exit code.

use super::outcome::ExitStatus;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The command line does not say something the plugin can do.
    #[error("{0}")]
    Usage(String),
    /// The resource's state refuses the request (nothing to promote, no such revision).
    #[error("{0}")]
    Refused(String),
    #[error("inferencedeployment {name:?} not found in namespace {namespace:?}")]
    NotFound { namespace: String, name: String },
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

impl PluginError {
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            PluginError::Usage(_) | PluginError::Refused(_) => ExitStatus::Usage,
            PluginError::NotFound { .. }
            | PluginError::Kubeconfig(_)
            | PluginError::Api(_)
            | PluginError::Output(_) => ExitStatus::ApiError,
        }
    }
}
