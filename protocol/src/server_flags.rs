//! The server's command-line flags and the environment variables behind them.
//!
//! The server's clap definitions name these constants; the operator builds pod args and env
//! from them; a server test checks that clap's arguments and this list are the same set.

/// One server setting: `--long` on the command line, `env` in the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag {
    pub long: &'static str,
    pub env: &'static str,
}

impl Flag {
    /// `--long`, as the operator passes it.
    pub fn arg(&self) -> String {
        format!("--{}", self.long)
    }
}

macro_rules! flags {
    ($($(#[$doc:meta])* $id:ident = ($long:literal, $env:literal);)*) => {
        $($(#[$doc])* pub const $id: Flag = Flag { long: $long, env: $env };)*
        /// Every flag the server takes.
        pub const ALL: &[Flag] = &[$($id),*];
    };
}

flags! {
    MODEL = ("model", "INFERGATE_MODEL");
    SERVED_MODEL_NAME = ("served-model-name", "INFERGATE_MODEL_NAME");
    /// The revision label on every metric; the operator sets it per rollout revision.
    REVISION = ("revision", "INFERGATE_REVISION");
    HOST = ("host", "HOST");
    PORT = ("port", "PORT");
    QUANTIZE = ("quantize", "QUANTIZE");
    ENABLE_BATCHING = ("enable-batching", "ENABLE_BATCHING");
    MAX_BATCH_SIZE = ("max-batch-size", "MAX_BATCH_SIZE");
    /// The CRD's `maxWaitMs`.
    MAX_WAIT_TIME_MS = ("max-wait-time-ms", "MAX_WAIT_TIME_MS");
    MAX_QUEUE_SIZE = ("max-queue-size", "MAX_QUEUE_SIZE");
    REQUEST_TIMEOUT_SECONDS = ("request-timeout-seconds", "REQUEST_TIMEOUT_SECONDS");
    MAX_PREFILL_TOKENS = ("max-prefill-tokens", "MAX_PREFILL_TOKENS");
    MAX_KV_TOKENS = ("max-kv-tokens", "MAX_KV_TOKENS");
    KV_CACHE_MEMORY_GIB = ("kv-cache-memory-gib", "KV_CACHE_MEMORY_GIB");
    GPU_MEMORY_UTILIZATION = ("gpu-memory-utilization", "GPU_MEMORY_UTILIZATION");
    MAX_MODEL_LEN = ("max-model-len", "MAX_MODEL_LEN");
    BACKEND = ("backend", "INFERGATE_BACKEND");
    DEVICE = ("device", "INFERGATE_DEVICE");
    DTYPE = ("dtype", "INFERGATE_DTYPE");
    Q8_BLOCK_COLUMNS = ("q8-block-columns", "Q8_BLOCK_COLUMNS");
    CHAT_TEMPLATE = ("chat-template", "CHAT_TEMPLATE");
    THREADS = ("threads", "INFERGATE_THREADS");
    MAX_BODY_BYTES = ("max-body-bytes", "MAX_BODY_BYTES");
    DRAIN_TIMEOUT_SECONDS = ("drain-timeout-seconds", "DRAIN_TIMEOUT_SECONDS");
    DEFAULT_MAX_TOKENS = ("default-max-tokens", "DEFAULT_MAX_TOKENS");
    SHED_FACTOR = ("shed-factor", "SHED_FACTOR");
    TOKENIZER_WORKERS = ("tokenizer-workers", "TOKENIZER_WORKERS");
    MAX_TOKENIZER_QUEUE = ("max-tokenizer-queue", "MAX_TOKENIZER_QUEUE");
    /// `text` or `json`; every infergate binary takes it (`process::LogFormat`).
    LOG_FORMAT = ("log-format", "LOG_FORMAT");
    INJECT_TTFT_DELAY_MS = ("inject-ttft-delay-ms", "INJECT_TTFT_DELAY_MS");
    INJECT_ERROR_RATE = ("inject-error-rate", "INJECT_ERROR_RATE");
    INJECT_TTFT_DELAY_AFTER_REQUESTS = ("inject-ttft-delay-after-requests", "INJECT_TTFT_DELAY_AFTER_REQUESTS");
    INJECT_HANG_RATE = ("inject-hang-rate", "INJECT_HANG_RATE");
    INJECT_CRASH_AFTER_REQUESTS = ("inject-crash-after-requests", "INJECT_CRASH_AFTER_REQUESTS");
    INJECT_ENGINE_PANIC_AFTER_STEPS = ("inject-engine-panic-after-steps", "INJECT_ENGINE_PANIC_AFTER_STEPS");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longs_and_envs_are_unique_and_well_formed() {
        let mut longs = std::collections::BTreeSet::new();
        let mut envs = std::collections::BTreeSet::new();
        for flag in ALL {
            assert!(longs.insert(flag.long) && envs.insert(flag.env), "{flag:?} twice");
            assert!(flag.long.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'), "{flag:?}");
            assert!(flag.env.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'), "{flag:?}");
        }
        assert_eq!(MAX_BATCH_SIZE.arg(), "--max-batch-size");
    }
}
