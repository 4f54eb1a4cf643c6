//! The harness's one error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("`{command}` failed: {output}")]
    Command { command: String, output: String },
    #[error("{what} not ready after {seconds} s{detail}")]
    Timeout { what: String, seconds: u64, detail: String },
    #[error("missing binary {0} (run tests/cluster/build.sh)")]
    MissingBinary(PathBuf),
    #[error("{0}")]
    Failed(String),
}

impl Error {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    /// A short, fixed label for logs and the suite's summary.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::Kube(_) => "kube",
            Error::Kubeconfig(_) => "kubeconfig",
            Error::Http(_) => "http",
            Error::Json(_) => "json",
            Error::Command { .. } => "command",
            Error::Timeout { .. } => "timeout",
            Error::MissingBinary(_) => "missing_binary",
            Error::Failed(_) => "failed",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Fails the current scenario with a message.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::Error::Failed(format!($($arg)*)))
    };
}
