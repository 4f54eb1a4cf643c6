//! Gemma 3 from a GGUF file (`general.architecture = gemma3`), as llama.cpp reads it.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::QMatMul;
use candle_core::Device;

use super::gemma3::{sliding_pattern, Gemma3, Gemma3Config, Gemma3Layer, Proj};
use super::gguf::{text_frontend, GgufShards, Metadata, Weights};
use super::llama::Embedding;
use super::{Architecture, ChatTemplate, LoadOptions, TextFrontend, TextTokenizer};
use crate::error::{Error, Result};

pub const ARCHITECTURE: Architecture = Architecture::Gemma3;

pub struct Gemma3File {
    pub model: Gemma3,
    pub tokenizer: TextTokenizer,
    pub chat_template: Option<ChatTemplate>,
}

/// `general.architecture` of a GGUF file (reads its header only).
pub fn architecture(path: &Path) -> Result<String> {
    let file = File::open(path).map_err(|e| Error::ModelLoad(format!("cannot open {}: {e}", path.display())))?;
    let content = Content::read(&mut BufReader::new(file))
        .map_err(|e| Error::ModelLoad(format!("{} is not a readable GGUF file: {e}", path.display())))?;
    Ok(Metadata(&content.metadata).string("general.architecture")?.to_string())
}

/// The model, tokenizer and chat template of a Gemma 3 GGUF file (or the first shard of a
/// split one). A file without `tokenizer.chat_template` gets none: chat then answers 400
/// unless `--chat-template` gives one (the 270M base model ships without).
pub fn load_file(path: &Path, options: &LoadOptions, device: &Device) -> Result<Gemma3File> {
    let mut shards = GgufShards::open(path)?;
    let (meta, mut weights) = shards.for_loading(device, options.quantize);
    let TextFrontend { tokenizer, chat_template } = text_frontend(&meta)?;
    let mut stop_ids = tokenizer.stop_token_ids();
    let model = build(&meta, &mut weights, &mut stop_ids)?;
    Ok(Gemma3File { model, tokenizer, chat_template })
}

/// Only the model (no tokenizer): for tests that feed token ids.
pub fn load_model(path: &Path, options: &LoadOptions, device: &Device) -> Result<Gemma3> {
    let mut shards = GgufShards::open(path)?;
    let (meta, mut weights) = shards.for_loading(device, options.quantize);
    build(&meta, &mut weights, &mut Vec::new())
}

/// Stop tokens from the metadata alone: EOS, EOT and `<end_of_turn>`.
fn metadata_stop_ids(meta: &Metadata<'_>) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"] {
        if let Some(id) = meta.opt_u32(key)? {
            ids.push(id);
        }
    }
    if let Ok(tokens) = meta.strings("tokenizer.ggml.tokens") {
        if let Some(i) = tokens.iter().position(|t| *t == "<end_of_turn>") {
            ids.push(i as u32);
        }
    }
    Ok(ids)
}

/// The sliding-window flags per layer: `attention.sliding_window_pattern` as an array of
/// flags or a period, else llama.cpp's default period of 6.
fn sliding_layers(meta: &Metadata<'_>, key: &str, layers: usize) -> Result<Vec<bool>> {
    let pattern = match meta.0.get(key) {
        None => sliding_pattern(layers, 6),
        Some(Value::Array(flags)) => {
            let flags: Vec<bool> = flags
                .iter()
                .map(|v| v.to_bool())
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| Error::ModelLoad(format!("GGUF metadata `{key}`: {e}")))?;
            flags
        }
        Some(_) => sliding_pattern(layers, meta.u32(key)? as usize),
    };
    if pattern.len() != layers {
        return Err(Error::ModelLoad(format!("GGUF metadata `{key}` has {} flags for {layers} layers", pattern.len())));
    }
    Ok(pattern)
}

fn build(meta: &Metadata<'_>, weights: &mut Weights<'_>, stop_ids: &mut Vec<u32>) -> Result<Gemma3> {
    let architecture = meta.string("general.architecture")?;
    if architecture != ARCHITECTURE.name() {
        return Err(Error::ModelLoad(format!("not a gemma3 GGUF (architecture `{architecture}`)")));
    }
    let key = |k: &str| format!("{}.{k}", ARCHITECTURE.name());
    let hidden_size = meta.u32(&key("embedding_length"))? as usize;
    let heads = meta.u32(&key("attention.head_count"))? as usize;
    let kv_heads = meta.opt_u32(&key("attention.head_count_kv"))?.map(|x| x as usize).unwrap_or(heads);
    let head_dim =
        meta.opt_u32(&key("attention.key_length"))?.map(|x| x as usize).unwrap_or(hidden_size / heads.max(1));
    if let Some(v) = meta.opt_u32(&key("attention.value_length"))? {
        if v as usize != head_dim {
            return Err(Error::ModelLoad(format!("gemma3: value length {v} differs from key length {head_dim}")));
        }
    }
    let layers = meta.u32(&key("block_count"))? as usize;
    let rope_dims = meta.opt_u32(&key("rope.dimension_count"))?.map(|x| x as usize).unwrap_or(head_dim);
    let opt_f32 = |k: &str| -> Result<Option<f32>> {
        if meta.0.contains_key(k) {
            meta.f32(k).map(Some)
        } else {
            Ok(None)
        }
    };
    let rope_base = opt_f32(&key("rope.freq_base"))?.unwrap_or(10000.0);
    // llama.cpp's default for the local layers' base when the file names none.
    let rope_base_local = opt_f32(&key("rope.freq_base_swa"))?.unwrap_or(10000.0);
    if let Some(factor) = opt_f32(&key("rope.scaling.factor"))? {
        if factor != 1.0 {
            // The larger Gemma 3 models scale the global layers' positions (linear, factor 8).
            return Err(Error::ModelLoad(format!("gemma3 with rotary scaling (factor {factor}) is not supported yet")));
        }
    }
    let rms_eps = meta.f32(&key("attention.layer_norm_rms_epsilon"))? as f64;
    let context_length = meta.u32(&key("context_length"))? as usize;
    let window = meta.opt_u32(&key("attention.sliding_window"))?.map(|w| w as usize).filter(|w| *w > 0);
    let (sliding_window, sliding_layers) = match window {
        Some(w) => (w, sliding_layers(meta, &key("attention.sliding_window_pattern"), layers)?),
        None => (0, vec![false; layers]),
    };
    let final_logit_softcapping = opt_f32(&key("final_logit_softcapping"))?.filter(|c| *c > 0.0);
    // As llama.cpp: 1/sqrt(head_dim), except the 27B (62 layers), which uses hidden/heads.
    let attention_scale =
        if layers == 62 { 1.0 / ((hidden_size / heads) as f32).sqrt() } else { 1.0 / (head_dim as f32).sqrt() };
    if weights.has("rope_freqs.weight") {
        return Err(Error::ModelLoad("gemma3 GGUF with rope_freqs is not supported".into()));
    }
    stop_ids.extend(metadata_stop_ids(meta)?);
    stop_ids.sort_unstable();
    stop_ids.dedup();

    let embedding_q = Arc::new(weights.read("token_embd.weight")?);
    let vocab_size = embedding_q.shape().dims2()?.0;
    let mut blocks = Vec::with_capacity(layers);
    for i in 0..layers {
        let mut proj = |name: &str| -> Result<Proj> {
            Ok(Proj(QMatMul::from_qtensor(weights.matrix(&format!("blk.{i}.{name}.weight"))?)?))
        };
        let (wq, wk, wv, wo) = (proj("attn_q")?, proj("attn_k")?, proj("attn_v")?, proj("attn_output")?);
        let (w_gate, w_up, w_down) = (proj("ffn_gate")?, proj("ffn_up")?, proj("ffn_down")?);
        let mut norm = |name: &str| weights.dense(&format!("blk.{i}.{name}.weight"));
        blocks.push(Gemma3Layer {
            attn_norm: norm("attn_norm")?,
            q_norm: norm("attn_q_norm")?,
            k_norm: norm("attn_k_norm")?,
            post_attn_norm: norm("post_attention_norm")?,
            ffn_norm: norm("ffn_norm")?,
            post_ffn_norm: norm("post_ffw_norm")?,
            wq,
            wk,
            wv,
            wo,
            w_gate,
            w_up,
            w_down,
        });
    }
    let final_norm = weights.dense("output_norm.weight")?;
    // Tied embeddings unless the file has its own head.
    let output = if weights.has("output.weight") {
        Proj(QMatMul::from_qtensor(weights.matrix("output.weight")?)?)
    } else {
        Proj(QMatMul::from_arc(embedding_q.clone())?)
    };
    let config = Gemma3Config {
        hidden_size,
        heads,
        kv_heads,
        head_dim,
        layers,
        rms_eps,
        rope_base,
        rope_base_local,
        rope_dims,
        sliding_window,
        sliding_layers,
        attention_scale,
        final_logit_softcapping,
        context_length,
        vocab_size,
        stop_token_ids: stop_ids.clone(),
    };
    Gemma3::new(config, Embedding::Quantized(embedding_q), blocks, final_norm, output, weights.device().clone())
}
