//! Command line and environment configuration, validated before anything starts.

use std::net::IpAddr;
use std::time::Duration;

use clap::Parser;
use infergate_protocol::process::LogFormat;
use infergate_protocol::server_flags as flags;

use crate::device::DeviceChoice;
use crate::error::{Error, Result};
use crate::model::{Backend, ModelSource};

/// `--quantize`: the format matmul weights are requantized to at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Quantize {
    /// The seed's 8-bit format.
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
    #[value(name = "q4_1")]
    Q4_1,
    /// Keep the checkpoint's formats (the same as not passing the flag).
    None,
}

impl Quantize {
    /// candle's type for it; None keeps the weights as they are.
    pub fn ggml_dtype(self) -> Option<candle_core::quantized::GgmlDType> {
        use candle_core::quantized::GgmlDType;
        match self {
            Quantize::Q8_0 => Some(GgmlDType::Q8_0),
            Quantize::Q4_0 => Some(GgmlDType::Q4_0),
            Quantize::Q4_1 => Some(GgmlDType::Q4_1),
            Quantize::None => None,
        }
    }
}

#[derive(Debug, Clone, Parser)]
#[command(name = "infergate-server", version, about = "OpenAI-compatible LLM server with continuous batching")]
pub struct Config {
    /// Model: a GGUF path, file:///path, hf://org/repo[@rev]/file.gguf, or a safetensors directory.
    #[arg(long, env = flags::MODEL.env)]
    pub model: String,
    /// Name the model is served under (default: the file name without .gguf).
    #[arg(long, env = flags::SERVED_MODEL_NAME.env)]
    pub served_model_name: Option<String>,
    /// Revision label on every metric (the operator sets it per rollout revision).
    #[arg(long, env = flags::REVISION.env, default_value = "dev")]
    pub revision: String,
    #[arg(long, env = flags::HOST.env, default_value = "127.0.0.1")]
    pub host: IpAddr,
    #[arg(long, env = flags::PORT.env, default_value_t = 8080)]
    pub port: u16,
    /// Requantize matmul weights at load: q8_0 (the seed's 8-bit), q4_0, q4_1 or none.
    #[arg(long, env = flags::QUANTIZE.env, value_enum, ignore_case = true)]
    pub quantize: Option<Quantize>,

    /// false runs one sequence at a time through the same API.
    #[arg(long, env = flags::ENABLE_BATCHING.env, default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_batching: bool,
    /// Most sequences decoded together in one step.
    #[arg(long, env = flags::MAX_BATCH_SIZE.env, default_value_t = 32)]
    pub max_batch_size: usize,
    /// How long an idle engine holds the first request to let a batch form.
    #[arg(long, env = flags::MAX_WAIT_TIME_MS.env, default_value_t = 0)]
    pub max_wait_time_ms: u64,
    /// Requests waiting beyond the running batch; more are refused with 429.
    #[arg(long, env = flags::MAX_QUEUE_SIZE.env, default_value_t = 1000)]
    pub max_queue_size: usize,
    /// Limit on queue time plus generation.
    #[arg(long, env = flags::REQUEST_TIMEOUT_SECONDS.env, default_value_t = 30)]
    pub request_timeout_seconds: u64,
    /// Prompt tokens prefilled per engine step (long prompts are split into chunks).
    #[arg(long, env = flags::MAX_PREFILL_TOKENS.env, default_value_t = 512)]
    pub max_prefill_tokens: usize,
    /// KV cache budget in tokens over all running sequences, rounded up to blocks of 16; an
    /// explicit override of the budget derived from memory (0: derive it).
    #[arg(long, env = flags::MAX_KV_TOKENS.env, default_value_t = 0)]
    pub max_kv_tokens: usize,
    /// CPU: host memory for the KV cache in GiB (vLLM's VLLM_CPU_KVCACHE_SPACE); 0: half the
    /// memory available after loading (within a cgroup limit), at most what a full batch of
    /// full contexts needs.
    #[arg(long, env = flags::KV_CACHE_MEMORY_GIB.env, default_value_t = 0.0)]
    pub kv_cache_memory_gib: f64,
    /// GPU: share of the device's memory the weights plus the KV cache may use (vLLM's flag);
    /// the KV cache gets total x this, less what is in use after loading.
    #[arg(long, env = flags::GPU_MEMORY_UTILIZATION.env, default_value_t = 0.9)]
    pub gpu_memory_utilization: f64,
    /// Context length served (0: the model's own).
    #[arg(long, env = flags::MAX_MODEL_LEN.env, default_value_t = 0)]
    pub max_model_len: usize,
    /// Forward implementation: native (our CPU kernels) or candle.
    #[arg(long, env = flags::BACKEND.env, value_enum, default_value_t = Backend::Native)]
    pub backend: Backend,
    /// Compute device: auto (the first GPU when built with CUDA and one is visible, else the
    /// CPU), cpu, cuda or cuda:N (fails at start when that GPU cannot be opened).
    #[arg(long, env = flags::DEVICE.env, default_value = "auto")]
    pub device: DeviceChoice,
    /// Element type of dense weights and of the KV cache on the candle path (GPUs): auto
    /// (the checkpoint's bf16/f16 on a GPU, f32 on the CPU), bf16, f16 or f32. Quantized
    /// weights stay packed; the native CPU backend computes with its own 8-bit kernels.
    #[arg(long, env = flags::DTYPE.env, default_value = "auto")]
    pub dtype: crate::model::ModelDtype,
    /// Native backend: columns per 8-bit scale block, 64 to 256. Larger blocks cut float work
    /// per multiply-add (faster batches) and add quantization error.
    #[arg(long, env = flags::Q8_BLOCK_COLUMNS.env, default_value_t = 64)]
    pub q8_block_columns: usize,
    /// A Jinja chat template file that replaces the model's own (vLLM's flag); one that does not
    /// parse stops startup.
    #[arg(long, env = flags::CHAT_TEMPLATE.env)]
    pub chat_template: Option<std::path::PathBuf>,
    /// Compute threads (0: all cores).
    #[arg(long, env = flags::THREADS.env, default_value_t = 0)]
    pub threads: usize,
    /// Largest accepted request body.
    #[arg(long, env = flags::MAX_BODY_BYTES.env, default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// How long in-flight requests may finish after SIGTERM.
    #[arg(long, env = flags::DRAIN_TIMEOUT_SECONDS.env, default_value_t = 30)]
    pub drain_timeout_seconds: u64,
    /// Completion tokens a chat request gets when it sends no max_tokens (shown in /v1/models);
    /// /v1/completions keeps OpenAI's 16 (or this, if lower).
    #[arg(long, env = flags::DEFAULT_MAX_TOKENS.env, default_value_t = 256)]
    pub default_max_tokens: usize,
    /// Deadline-aware admission: refuse (429 + Retry-After) a request when this factor times
    /// its estimated finish time exceeds the time left to its deadline; 0 turns it off. The
    /// default keeps a fifth of the deadline spare: the rate is measured, not known, and a busy
    /// neighbour can slow the host after a request was admitted.
    #[arg(long, env = flags::SHED_FACTOR.env, default_value_t = 1.25)]
    pub shed_factor: f64,
    /// Threads that tokenize prompts and render chat templates (0: the number of cores).
    #[arg(long, env = flags::TOKENIZER_WORKERS.env, default_value_t = 0)]
    pub tokenizer_workers: usize,
    /// Requests waiting for a tokenizer worker; more are refused with 429.
    #[arg(long, env = flags::MAX_TOKENIZER_QUEUE.env, default_value_t = 256)]
    pub max_tokenizer_queue: usize,
    /// Log lines as text or JSON (what is logged: RUST_LOG, default info).
    #[arg(long, env = flags::LOG_FORMAT.env, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Fault injection for rollout drills: added delay before the first token.
    #[arg(long, env = flags::INJECT_TTFT_DELAY_MS.env, default_value_t = 0)]
    pub inject_ttft_delay_ms: u64,
    /// Fault injection: fraction of requests answered with a 500.
    #[arg(long, env = flags::INJECT_ERROR_RATE.env, default_value_t = 0.0)]
    pub inject_error_rate: f64,
    /// Fault injection: --inject-ttft-delay-ms applies only after this many generation
    /// requests (a revision passes analysis, then regresses under traffic). Unset: always.
    #[arg(long, env = flags::INJECT_TTFT_DELAY_AFTER_REQUESTS.env)]
    pub inject_ttft_delay_after_requests: Option<u64>,
    /// Fault injection: fraction of generation requests accepted and never answered (held
    /// open until the client goes away).
    #[arg(long, env = flags::INJECT_HANG_RATE.env, default_value_t = 0.0)]
    pub inject_hang_rate: f64,
    /// Fault injection: once this many generation requests were accepted, the next one makes
    /// the process exit with status 1 (a crash, not a drain).
    #[arg(long, env = flags::INJECT_CRASH_AFTER_REQUESTS.env)]
    pub inject_crash_after_requests: Option<u64>,
    /// Fault injection: the model panics in the forward of the step after this many steps, as
    /// a model or device bug would (a failed step ends the engine: /health and /ready turn 503
    /// and every request is answered).
    #[arg(long, env = flags::INJECT_ENGINE_PANIC_AFTER_STEPS.env)]
    pub inject_engine_panic_after_steps: Option<u64>,
}

impl Config {
    /// Checks every value; the message names the flag and why.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        // `--flag (ENV)`: both names a user may have set it by, from the one list of them.
        let named = |flag: flags::Flag| format!("{} ({})", flag.arg(), flag.env);
        ModelSource::parse(&self.model)?;
        if self.max_batch_size == 0 {
            return bad(format!("{} must be at least 1", named(flags::MAX_BATCH_SIZE)));
        }
        if self.max_queue_size == 0 {
            return bad(format!("{} must be at least 1", named(flags::MAX_QUEUE_SIZE)));
        }
        if self.request_timeout_seconds == 0 {
            return bad(format!("{} must be at least 1", named(flags::REQUEST_TIMEOUT_SECONDS)));
        }
        if self.max_prefill_tokens < 16 {
            return bad(format!("{} must be at least 16", named(flags::MAX_PREFILL_TOKENS)));
        }
        if self.max_wait_time_ms > 10_000 {
            return bad(format!("{} must be at most 10000", named(flags::MAX_WAIT_TIME_MS)));
        }
        if !(0.0..=1.0).contains(&self.inject_error_rate) || self.inject_error_rate.is_nan() {
            return bad(format!("--inject-error-rate must be within [0, 1], got {}", self.inject_error_rate));
        }
        if !(0.0..=1.0).contains(&self.inject_hang_rate) || self.inject_hang_rate.is_nan() {
            return bad(format!("--inject-hang-rate must be within [0, 1], got {}", self.inject_hang_rate));
        }
        if self.inject_crash_after_requests == Some(0) {
            return bad("--inject-crash-after-requests must be at least 1 (unset it for no crash)".into());
        }
        if self.inject_ttft_delay_after_requests.is_some() && self.inject_ttft_delay_ms == 0 {
            return bad("--inject-ttft-delay-after-requests needs --inject-ttft-delay-ms above 0".into());
        }
        if !(self.kv_cache_memory_gib >= 0.0 && self.kv_cache_memory_gib.is_finite()) {
            return bad(format!("--kv-cache-memory-gib must be 0 or more GiB, got {}", self.kv_cache_memory_gib));
        }
        if !(self.gpu_memory_utilization > 0.0 && self.gpu_memory_utilization <= 1.0) {
            return bad(format!("--gpu-memory-utilization must be within (0, 1], got {}", self.gpu_memory_utilization));
        }
        if self.inject_engine_panic_after_steps == Some(0) {
            return bad("--inject-engine-panic-after-steps must be at least 1 (unset it for no panic)".into());
        }
        if self.default_max_tokens == 0 {
            return bad(format!("{} must be at least 1", named(flags::DEFAULT_MAX_TOKENS)));
        }
        if !(0.0..=100.0).contains(&self.shed_factor) || self.shed_factor.is_nan() {
            return bad(format!("--shed-factor must be within [0, 100] (0: off), got {}", self.shed_factor));
        }
        if self.max_tokenizer_queue == 0 {
            return bad(format!("{} must be at least 1", named(flags::MAX_TOKENIZER_QUEUE)));
        }
        if self.max_body_bytes < 1024 {
            return bad("--max-body-bytes must be at least 1024".into());
        }
        if self.revision.is_empty() {
            return bad(format!("{} must not be empty", named(flags::REVISION)));
        }
        if !(64..=256).contains(&self.q8_block_columns) || !self.q8_block_columns.is_multiple_of(64) {
            return bad(format!("--q8-block-columns must be 64, 128, 192 or 256, got {}", self.q8_block_columns));
        }
        self.device.check_build()?;
        self.chat_template_source()?;
        Ok(())
    }

    /// The `--chat-template` file's text, checked to parse.
    pub fn chat_template_source(&self) -> Result<Option<String>> {
        let Some(path) = &self.chat_template else { return Ok(None) };
        let source = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("--chat-template {}: {e}", path.display())))?;
        crate::model::ChatTemplate::check(&source)
            .map_err(|e| Error::Config(format!("--chat-template {} does not parse: {e}", path.display())))?;
        Ok(Some(source))
    }

    pub fn quantize_dtype(&self) -> Option<candle_core::quantized::GgmlDType> {
        self.quantize.and_then(Quantize::ggml_dtype)
    }

    /// Running sequences at most: 1 when batching is off.
    pub fn effective_batch_size(&self) -> usize {
        if self.enable_batching {
            self.max_batch_size
        } else {
            1
        }
    }

    /// Threads for tokenization and template rendering: the flag, or every core.
    pub fn effective_tokenizer_workers(&self) -> usize {
        if self.tokenizer_workers > 0 {
            self.tokenizer_workers
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag the server takes is in the protocol's list with the same environment
    /// variable, and every listed flag exists: the operator builds pod args and env from that list.
    #[test]
    fn the_flags_are_the_protocols() {
        use clap::CommandFactory;
        let command = Config::command();
        let ours: std::collections::BTreeSet<(String, String)> = command
            .get_arguments()
            .filter_map(|arg| {
                let env = arg.get_env()?.to_string_lossy().into_owned();
                Some((arg.get_long()?.to_string(), env))
            })
            .collect();
        let listed: std::collections::BTreeSet<(String, String)> =
            flags::ALL.iter().map(|f| (f.long.to_string(), f.env.to_string())).collect();
        assert_eq!(ours, listed);
        let without_env: Vec<_> = command
            .get_arguments()
            .filter(|a| a.get_env().is_none())
            .filter_map(|a| a.get_long())
            .filter(|long| !matches!(*long, "help" | "version"))
            .collect();
        assert!(without_env.is_empty(), "flags without an environment variable: {without_env:?}");
    }

    fn parse(args: &[&str]) -> Config {
        let mut all = vec!["infergate-server", "--model", "/m.gguf"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).unwrap()
    }

    #[test]
    fn defaults_are_valid_and_follow_the_seed() {
        let c = parse(&[]);
        c.validate().unwrap();
        assert_eq!((c.max_queue_size, c.request_timeout_seconds, c.port), (1000, 30, 8080));
        assert_eq!((c.gpu_memory_utilization, c.kv_cache_memory_gib, c.max_kv_tokens), (0.9, 0.0, 0));
        assert!(c.enable_batching);
    }

    #[test]
    fn quantize_and_backend_parse_to_their_enums() {
        use candle_core::quantized::GgmlDType;
        assert_eq!(parse(&[]).quantize_dtype(), None);
        assert_eq!(parse(&["--quantize", "Q8_0"]).quantize_dtype(), Some(GgmlDType::Q8_0));
        assert_eq!(parse(&["--quantize", "q4_1"]).quantize_dtype(), Some(GgmlDType::Q4_1));
        assert_eq!(parse(&["--quantize", "none"]).quantize_dtype(), None);
        assert_eq!(parse(&[]).backend, Backend::Native);
        assert_eq!(parse(&["--backend", "candle"]).backend, Backend::Candle);
    }

    #[test]
    fn disabling_batching_runs_one_sequence() {
        assert_eq!(parse(&["--enable-batching", "false"]).effective_batch_size(), 1);
    }

    #[test]
    fn invalid_values_fail_with_the_flag_named() {
        for (args, needle) in [
            (vec!["--max-batch-size", "0"], "max-batch-size"),
            (vec!["--inject-error-rate", "1.5"], "inject-error-rate"),
            (vec!["--inject-hang-rate=1.5"], "inject-hang-rate"),
            (vec!["--inject-hang-rate", "NaN"], "inject-hang-rate"),
            (vec!["--inject-crash-after-requests", "0"], "inject-crash-after-requests"),
            (vec!["--inject-ttft-delay-after-requests", "5"], "inject-ttft-delay-after-requests"),
            (vec!["--request-timeout-seconds", "0"], "request-timeout"),
            (vec!["--gpu-memory-utilization", "0"], "gpu-memory-utilization"),
            (vec!["--gpu-memory-utilization", "1.5"], "gpu-memory-utilization"),
            (vec!["--gpu-memory-utilization", "NaN"], "gpu-memory-utilization"),
            (vec!["--kv-cache-memory-gib=-1"], "kv-cache-memory-gib"),
            (vec!["--kv-cache-memory-gib", "inf"], "kv-cache-memory-gib"),
            (vec!["--inject-engine-panic-after-steps", "0"], "inject-engine-panic-after-steps"),
            (vec!["--default-max-tokens", "0"], "default-max-tokens"),
            (vec!["--shed-factor=-1"], "shed-factor"),
            (vec!["--max-tokenizer-queue", "0"], "max-tokenizer-queue"),
        ] {
            let err = parse(&args).validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        assert!(Config::try_parse_from(["infergate-server", "--model", "x", "--port", "70000"]).is_err());
        assert!(Config::try_parse_from(["infergate-server", "--model", "x", "--device", "tpu"]).is_err());
        let quantize = Config::try_parse_from(["infergate-server", "--model", "x", "--quantize", "q3"]).unwrap_err();
        assert!(quantize.to_string().contains("q8_0"), "{quantize}");
        assert!(Config::try_parse_from(["infergate-server", "--model", "x", "--backend", "onnx"]).is_err());
    }

    #[test]
    fn device_flag_parses_and_defaults_to_auto() {
        assert_eq!(parse(&[]).device, DeviceChoice::Auto);
        assert_eq!(parse(&["--device", "cpu"]).device, DeviceChoice::Cpu);
        assert_eq!(parse(&["--device", "cuda:1"]).device, DeviceChoice::Cuda(1));
        parse(&["--device", "cpu"]).validate().unwrap();
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_cpu_build_refuses_cuda_at_start() {
        let err = parse(&["--device", "cuda"]).validate().unwrap_err().to_string();
        assert!(err.contains("--device cuda:0") && err.contains("without CUDA"), "{err}");
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn a_cuda_build_accepts_cuda_at_start() {
        // Whether a GPU is present is known only when the device opens (at load).
        parse(&["--device", "cuda:0"]).validate().unwrap();
    }
}
