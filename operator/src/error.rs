//! The crate's one error type.

/// Everything that can fail in the operator.
///
/// Spec problems are not errors here: they are reported as a status condition (see
/// `model_source::SpecError`), so a bad manifest never turns into a crash or retry loop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),

    #[error("serialize {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error("object has no {0}")]
    MissingObjectKey(&'static str),

    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),

    #[error("leader election: {0}")]
    LeaderElection(#[from] kube_lease_manager::LeaseManagerError),

    #[error("lost the leader lease")]
    LeadershipLost,

    #[error("io: {0}")]
    Io(#[from] std::io::Error),

    /// HTTP to a pod or to Prometheus (the gate's scrapes, queries and probe load).
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),

    /// A gate measurement that could not be taken (bad answer from a pod or Prometheus).
    #[error("gate: {0}")]
    Gate(String),
}

impl Error {
    /// A bounded label for the errors metric (never embeds names or messages).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "kube_api",
            Error::Kube(_) => "kube_client",
            Error::Serialize { .. } => "serialize",
            Error::MissingObjectKey(_) => "missing_object_key",
            Error::Metrics(_) => "metrics",
            Error::LeaderElection(_) => "leader_election",
            Error::LeadershipLost => "leadership_lost",
            Error::Io(_) => "io",
            Error::Http(_) => "http",
            Error::Gate(_) => "gate",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
