//! Model loading and the batched forward pass the engine drives.

pub mod architecture;
pub mod attention;
pub mod chat_template;
pub mod device_attention;
pub mod device_kv;
pub mod device_model;
pub mod device_sampling;
pub mod dtype;
pub mod gemma3;
pub mod gemma3_load;
pub mod gguf;
pub mod kernels;
pub mod llama;
pub mod native;
pub mod paged_kv;
pub mod rope_scaling;
pub mod safetensors;
pub mod source;
pub mod tokenizer;

use std::time::Instant;

use candle_core::Device;

pub use architecture::Architecture;
pub use chat_template::{ChatTemplate, RenderOptions};
pub use device_sampling::{RowRequest, SampleDraw};
pub use dtype::ModelDtype;
pub use llama::Llama;
pub use native::NativeLlama;
pub use source::ModelSource;
pub use tokenizer::TextTokenizer;

use crate::device::DeviceChoice;
use crate::error::Result;

/// Facts about a loaded model that the API and the scheduler need.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub architecture: Architecture,
    pub context_length: usize,
    pub vocab_size: usize,
    /// Token ids that end generation (EOS and end-of-turn tokens).
    pub stop_token_ids: Vec<u32>,
    /// Bytes of KV cache one token takes (all layers, keys and values).
    pub kv_bytes_per_token: usize,
}

/// The KV cache of one sequence, owned by the engine and handed to the model per step.
/// Host backends keep its keys/values in `layers`; a device-resident backend keeps them in
/// its paged cache and only the sequence's `paged` block table here, whose Drop gives the
/// blocks back: dropping a `SequenceKv` frees its KV either way.
pub struct SequenceKv {
    pub layers: Vec<attention::LayerKv>,
    /// Tokens whose keys/values are stored.
    pub len: usize,
    /// The blocks of a paged, device-resident cache (`layers` is then empty).
    pub paged: Option<paged_kv::BlockTable>,
}

impl SequenceKv {
    pub fn with_capacity(layers: usize, kv_width: usize, tokens: usize) -> Self {
        let layers = (0..layers)
            .map(|_| attention::LayerKv {
                keys: Vec::with_capacity(tokens * kv_width),
                values: Vec::with_capacity(tokens * kv_width),
            })
            .collect();
        Self { layers, len: 0, paged: None }
    }

    /// An empty sequence whose KV goes into the blocks `table` draws.
    pub fn paged(table: paged_kv::BlockTable) -> Self {
        Self { layers: Vec::new(), len: 0, paged: Some(table) }
    }

    /// Storage that can hold nothing (a backend whose cache could not be allocated hands
    /// this out; its forward then reports why).
    pub fn unavailable() -> Self {
        Self { layers: Vec::new(), len: 0, paged: None }
    }
}

/// One sequence's share of a batched forward step: its next tokens (a prompt chunk or the
/// last sampled token) appended after the `kv.len` tokens it already holds.
pub struct ForwardItem<'a> {
    pub tokens: &'a [u32],
    pub kv: &'a mut SequenceKv,
    /// Whether the logits after the last token are needed (false for non-final prompt chunks).
    pub want_logits: bool,
}

/// Rejects items a forward step cannot run: empty, past the context, or unknown token ids.
pub(crate) fn check_items(items: &[ForwardItem<'_>], context_length: usize, vocab_size: usize) -> Result<usize> {
    let mut total = 0;
    for item in items {
        if item.tokens.is_empty() {
            return Err(crate::error::Error::Internal("forward item without tokens".into()));
        }
        if item.kv.len + item.tokens.len() > context_length {
            return Err(crate::error::Error::Internal("sequence exceeds the model context".into()));
        }
        if let Some(bad) = item.tokens.iter().find(|t| **t as usize >= vocab_size) {
            return Err(crate::error::Error::Internal(format!("token id {bad} outside the vocabulary")));
        }
        total += item.tokens.len();
    }
    Ok(total)
}

/// Marks the items' new tokens as cached and returns the batch rows whose logits are wanted
/// (the last token of each item that asked).
pub(crate) fn commit_items(items: &mut [ForwardItem<'_>]) -> Vec<usize> {
    let mut wanted = Vec::new();
    let mut row = 0;
    for item in items.iter_mut() {
        row += item.tokens.len();
        item.kv.len += item.tokens.len();
        if item.want_logits {
            wanted.push(row - 1);
        }
    }
    wanted
}

/// Tokens per KV cache block: the unit in which memory is budgeted, admitted and allocated
/// (vLLM's default block size).
pub const KV_BLOCK_TOKENS: usize = 16;

/// How much KV cache the engine gives the model: `blocks` blocks of `block_tokens` tokens,
/// sized by the engine from memory (the KV budget), the same numbers on every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLayout {
    pub block_tokens: usize,
    pub blocks: usize,
}

/// A causal language model that runs one step over sequences of different lengths.
pub trait CausalLm: Send {
    fn info(&self) -> &ModelInfo;
    /// Sizes the KV cache. The engine calls it once after loading, before the first forward;
    /// a backend with device-resident paged KV allocates its block tensors here, one that keeps
    /// host KV per sequence only needs the layout to stay within it.
    fn configure_kv(&mut self, layout: KvLayout) -> Result<()> {
        let _ = layout;
        Ok(())
    }
    /// Empty KV storage sized for `tokens` tokens.
    fn new_kv(&self, tokens: usize) -> SequenceKv;
    /// Runs all items in one step; returns one logits row per item with `want_logits`, in order.
    fn forward(&self, items: &mut [ForwardItem<'_>]) -> Result<Vec<Vec<f32>>>;
    /// Whether `forward_step` draws `RowRequest::Sample` rows itself (on the model's device);
    /// otherwise the engine asks such rows for their logits and samples on the host.
    fn samples_on_device(&self) -> bool {
        false
    }
    /// `forward` that gives back tokens: one `StepOutput` per item with `want_logits`, in
    /// order, `rows[i]` saying what the i-th of those needs. A device-resident backend takes
    /// the argmax or the draw on the device and copies only the ids and the `Logits` rows.
    fn forward_step(&self, items: &mut [ForwardItem<'_>], rows: &[RowRequest]) -> Result<Vec<StepOutput>> {
        let logits = self.forward(items)?;
        if logits.len() != rows.len() {
            return Err(crate::error::Error::Internal(format!(
                "{} row requests for {} logits rows",
                rows.len(),
                logits.len()
            )));
        }
        logits
            .into_iter()
            .zip(rows)
            .map(|(row, request)| match request {
                RowRequest::Greedy => Ok(StepOutput { token: host_argmax(&row), logits: None }),
                RowRequest::Logits => Ok(StepOutput { token: host_argmax(&row), logits: Some(row) }),
                RowRequest::Sample(_) => {
                    Err(crate::error::Error::Internal("this backend samples on the host: ask for logits".into()))
                }
            })
            .collect()
    }
    /// KV blocks (in use, in all) of a paged cache; None for backends that keep host KV.
    fn kv_blocks(&self) -> Option<(usize, usize)> {
        None
    }
}

/// What one step gives back for an item that wanted logits.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// The token the row's request chose: drawn for `Sample`, the argmax otherwise.
    pub token: u32,
    /// The whole logits row, for a `Logits` request.
    pub logits: Option<Vec<f32>>,
}

/// Index of the largest logit (the first on ties, as the device argmax).
pub fn host_argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Everything loaded from a model source.
pub struct LoadedModel {
    pub model: Box<dyn CausalLm>,
    pub tokenizer: TextTokenizer,
    pub chat_template: Option<ChatTemplate>,
    /// The device the weights live on.
    pub device: Device,
    pub load_seconds: f64,
}

/// What turns text into a prompt and token ids: everything of a model but its weights.
pub struct TextFrontend {
    pub tokenizer: TextTokenizer,
    pub chat_template: Option<ChatTemplate>,
}

/// The tokenizer and chat template of a model source, read without its weights (for the
/// `tokenize` and `render-chat` subcommands); of a split GGUF only the first shard is needed.
pub fn load_text_frontend(source: &ModelSource) -> Result<TextFrontend> {
    let path = source.resolve_metadata()?;
    if path.is_dir() {
        safetensors::read_text_frontend(&path)
    } else {
        gguf::read_text_frontend(&path)
    }
}

/// Which implementation runs the forward pass (`--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Backend {
    /// Our CPU kernels (8-bit weights, AVX-512 VNNI when present); candle on GPUs.
    #[default]
    Native,
    /// candle's quantized matmuls on any device.
    Candle,
}

/// Options for loading that come from the command line.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Requantize matmul weights at load (e.g. `q8_0`): the seed's 8-bit path.
    pub quantize: Option<candle_core::quantized::GgmlDType>,
    pub backend: Backend,
    /// Compute threads of the native backend.
    pub threads: usize,
    /// Columns per 8-bit scale block of the native backend.
    pub q8_block_columns: usize,
    /// Where the model runs (`--device`).
    pub device: DeviceChoice,
    /// Dense weights and KV cache element type of the candle path (`--dtype`).
    pub dtype: ModelDtype,
    /// A chat template that replaces the model's (`--chat-template`, its source text).
    pub chat_template: Option<String>,
}

/// Resolves and loads a model: GGUF files or a safetensors directory.
pub fn load(source: &ModelSource, options: &LoadOptions) -> Result<LoadedModel> {
    let started = Instant::now();
    // The device first: a missing GPU fails before a download or a long read.
    let device = options.device.open()?;
    let path = source.resolve()?;
    if !path.is_dir() && gemma3_load::architecture(&path)?.parse() == Ok(Architecture::Gemma3) {
        // Gemma 3 runs on candle's quantized matmuls only (our kernels implement the llama family).
        if options.backend == Backend::Native && device.is_cpu() {
            tracing::info!("the native backend does not implement gemma3 yet; using the candle backend");
        }
        let loaded = gemma3_load::load_file(&path, options, &device)?;
        let chat_template = match &options.chat_template {
            Some(source) => Some(ChatTemplate::new(source, &loaded.tokenizer)?),
            None => loaded.chat_template,
        };
        return Ok(LoadedModel {
            model: Box::new(loaded.model.with_kv_dtype(options.dtype.kv_cache(&device))?),
            tokenizer: loaded.tokenizer,
            chat_template,
            device,
            load_seconds: started.elapsed().as_secs_f64(),
        });
    }
    let (model, tokenizer, mut chat_template) = if path.is_dir() {
        let loaded = safetensors::load_dir(&path, options, &device)?;
        (loaded.model, loaded.tokenizer, loaded.chat_template)
    } else {
        let loaded = gguf::load_file(&path, options, &device)?;
        (loaded.model, loaded.tokenizer, loaded.chat_template)
    };
    if let Some(source) = &options.chat_template {
        chat_template = Some(ChatTemplate::new(source, &tokenizer)?);
    }
    // Our kernels are CPU code; on a GPU candle's quantized matmuls run whatever --backend says.
    let model: Box<dyn CausalLm> = match (options.backend, device.is_cpu()) {
        (Backend::Native, true) => {
            Box::new(native::NativeLlama::from_llama(model, options.threads.max(1), options.q8_block_columns)?)
        }
        _ => Box::new(model.with_kv_dtype(options.dtype.kv_cache(&device))?),
    };
    Ok(LoadedModel { model, tokenizer, chat_template, device, load_seconds: started.elapsed().as_secs_f64() })
}
