//! The crate's one error type. HTTP mapping lives in `api::error`.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot load model: {0}")]
    ModelLoad(String),
    /// The compute device cannot be used (no GPU, no driver, a build without CUDA).
    #[error("{0}")]
    Device(String),
    #[error("tokenizer failed: {0}")]
    Tokenizer(String),
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("{message}")]
    InvalidRequest { message: String, param: Option<String> },
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// A prompt (or prompt + max_tokens) longer than the served context.
    #[error("{message}")]
    ContextLengthExceeded { message: String, param: &'static str },
    #[error("`max_tokens` = {max_tokens} cannot be generated within the request timeout ({seconds} s) even on an idle server; lower max_tokens")]
    DeadlineTooShort { max_tokens: usize, seconds: u64 },
    #[error("{0}")]
    NotFound(String),
    #[error("The model `{requested}` does not exist; this server serves `{served}`")]
    ModelNotFound { requested: String, served: String },
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("the request queue is full ({capacity} waiting); retry later")]
    QueueFull { capacity: usize },
    #[error("the server is overloaded: this request would finish in about {estimate_seconds} s, after its deadline; retry in {retry_after_seconds} s")]
    Overloaded { estimate_seconds: u64, retry_after_seconds: u64 },
    #[error("too many requests are waiting for tokenization ({capacity}); retry later")]
    FrontDoorFull { capacity: usize },
    #[error("the model is still loading")]
    NotReady,
    #[error("the server is draining and takes no new requests")]
    Draining,
    #[error("request timed out after {seconds} s (queue and generation)")]
    Timeout { seconds: u64 },
    #[error("injected fault (--inject-error-rate)")]
    InjectedFault,
    #[error("the inference engine has stopped")]
    EngineStopped,
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(message: impl Into<String>, param: impl Into<Option<&'static str>>) -> Self {
        Error::InvalidRequest { message: message.into(), param: param.into().map(str::to_string) }
    }

    /// A low-cardinality label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::ModelLoad(_) => "model_load",
            Error::Device(_) => "device",
            Error::Tokenizer(_) => "tokenizer",
            Error::Tensor(_) => "tensor",
            Error::InvalidRequest { .. } => "invalid_request",
            Error::ContextLengthExceeded { .. } => "context_length_exceeded",
            Error::DeadlineTooShort { .. } => "max_tokens_exceeds_deadline",
            Error::ModelNotFound { .. } => "model_not_found",
            Error::Overloaded { .. } => "overloaded",
            Error::FrontDoorFull { .. } => "front_door_full",
            Error::BodyTooLarge { .. } => "body_too_large",
            Error::NotFound(_) => "not_found",
            Error::MethodNotAllowed(_) => "method_not_allowed",
            Error::QueueFull { .. } => "queue_full",
            Error::NotReady => "not_ready",
            Error::Draining => "draining",
            Error::Timeout { .. } => "timeout",
            Error::InjectedFault => "injected_fault",
            Error::EngineStopped => "engine_stopped",
            Error::Internal(_) => "internal",
        }
    }

    /// The HTTP status this error answers with.
    pub fn status_code(&self) -> u16 {
        match self {
            Error::InvalidRequest { .. }
            | Error::Tokenizer(_)
            | Error::ContextLengthExceeded { .. }
            | Error::DeadlineTooShort { .. } => 400,
            Error::NotFound(_) | Error::ModelNotFound { .. } => 404,
            Error::MethodNotAllowed(_) => 405,
            Error::BodyTooLarge { .. } => 413,
            Error::QueueFull { .. } | Error::Overloaded { .. } | Error::FrontDoorFull { .. } => 429,
            Error::NotReady | Error::Draining | Error::EngineStopped => 503,
            Error::Timeout { .. } => 504,
            Error::Config(_)
            | Error::ModelLoad(_)
            | Error::Device(_)
            | Error::Tensor(_)
            | Error::InjectedFault
            | Error::Internal(_) => 500,
        }
    }
}
