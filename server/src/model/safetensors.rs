//! Hugging Face checkpoint directories: config.json, *.safetensors, tokenizer.json.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::attention::RopeStyle;
use super::llama::{Embedding, Layer, Linear, Llama, LlamaConfig};
use super::{ChatTemplate, LoadOptions, TextTokenizer};
use crate::error::{Error, Result};

pub struct SafetensorsModel {
    pub model: Llama,
    pub tokenizer: TextTokenizer,
    pub chat_template: Option<ChatTemplate>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

#[derive(Debug, Deserialize)]
struct HfConfig {
    model_type: String,
    hidden_size: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    num_hidden_layers: usize,
    head_dim: Option<usize>,
    rms_norm_eps: f64,
    rope_theta: Option<f32>,
    max_position_embeddings: usize,
    vocab_size: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    bos_token_id: Option<u32>,
    eos_token_id: Option<OneOrMany>,
}

#[derive(Debug, Deserialize, Default)]
struct TokenizerConfig {
    chat_template: Option<String>,
    #[serde(default)]
    add_bos_token: bool,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::ModelLoad(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| Error::ModelLoad(format!("{} is not valid: {e}", path.display())))
}

pub fn load_dir(dir: &Path, options: &LoadOptions, device: &Device) -> Result<SafetensorsModel> {
    let config: HfConfig = read_json(&dir.join("config.json"))?;
    if !matches!(config.model_type.as_str(), "llama" | "mistral" | "qwen2") {
        return Err(Error::ModelLoad(format!(
            "unsupported model_type `{}` in config.json (supported: llama, mistral, qwen2)",
            config.model_type
        )));
    }
    let tokenizer_config: TokenizerConfig = if dir.join("tokenizer_config.json").exists() {
        read_json(&dir.join("tokenizer_config.json"))?
    } else {
        TokenizerConfig::default()
    };
    let inner = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json"))
        .map_err(|e| Error::ModelLoad(format!("cannot load tokenizer.json in {}: {e}", dir.display())))?;
    let eos = match config.eos_token_id {
        Some(OneOrMany::One(id)) => vec![id],
        Some(OneOrMany::Many(ids)) => ids,
        None => Vec::new(),
    };
    let tokenizer =
        TextTokenizer::from_tokenizer(inner, config.bos_token_id, eos.clone(), tokenizer_config.add_bos_token);
    let chat_template =
        tokenizer_config.chat_template.as_deref().map(|t| ChatTemplate::new(t, &tokenizer)).transpose()?;

    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::ModelLoad(format!("cannot list {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::ModelLoad(format!("no .safetensors files in {}", dir.display())));
    }
    for file in files {
        let loaded = candle_core::safetensors::load(&file, device)
            .map_err(|e| Error::ModelLoad(format!("cannot read {}: {e}", file.display())))?;
        tensors.extend(loaded);
    }
    let mut take = |name: &str| -> Result<Tensor> {
        let t = tensors.remove(name).ok_or_else(|| Error::ModelLoad(format!("checkpoint has no tensor `{name}`")))?;
        Ok(t.to_dtype(DType::F32)?)
    };
    let quantize = options.quantize;
    let matmul = |w: Tensor| -> Result<QMatMul> {
        Ok(match quantize {
            Some(dtype) if w.dim(1)? % dtype.block_size() == 0 => QMatMul::from_qtensor(QTensor::quantize(&w, dtype)?)?,
            _ => QMatMul::Tensor(w),
        })
    };
    let has_bias = config.model_type == "qwen2";
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let mut linear = |name: &str, bias: bool| -> Result<Linear> {
            let weight = matmul(take(&format!("{p}.{name}.weight"))?)?;
            let bias = if bias { Some(take(&format!("{p}.{name}.bias"))?) } else { None };
            Ok(Linear { weight, bias })
        };
        layers.push(Layer {
            wq: linear("self_attn.q_proj", has_bias)?,
            wk: linear("self_attn.k_proj", has_bias)?,
            wv: linear("self_attn.v_proj", has_bias)?,
            wo: linear("self_attn.o_proj", false)?,
            w_gate: linear("mlp.gate_proj", false)?,
            w_up: linear("mlp.up_proj", false)?,
            w_down: linear("mlp.down_proj", false)?,
            attn_norm: take(&format!("{p}.input_layernorm.weight"))?,
            ffn_norm: take(&format!("{p}.post_attention_layernorm.weight"))?,
        });
    }
    let embedding = take("model.embed_tokens.weight")?;
    let final_norm = take("model.norm.weight")?;
    let output = if config.tie_word_embeddings {
        Linear { weight: matmul(embedding.clone())?, bias: None }
    } else {
        Linear { weight: matmul(take("lm_head.weight")?)?, bias: None }
    };
    let head_dim = config.head_dim.unwrap_or(config.hidden_size / config.num_attention_heads.max(1));
    let llama_config = LlamaConfig {
        architecture: config.model_type.clone(),
        hidden_size: config.hidden_size,
        heads: config.num_attention_heads,
        kv_heads: config.num_key_value_heads.unwrap_or(config.num_attention_heads),
        head_dim,
        layers: config.num_hidden_layers,
        rms_eps: config.rms_norm_eps,
        rope_base: config.rope_theta.unwrap_or(10000.0),
        rope_dims: head_dim,
        rope_style: RopeStyle::Halves,
        context_length: config.max_position_embeddings,
        vocab_size: config.vocab_size,
        stop_token_ids: eos,
    };
    let model = Llama::new(llama_config, Embedding::Dense(embedding), layers, final_norm, output, device.clone())?;
    Ok(SafetensorsModel { model, tokenizer, chat_template })
}
