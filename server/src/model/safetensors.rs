//! Hugging Face checkpoint directories: config.json, *.safetensors, tokenizer.json.

use std::path::Path;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::attention::RopeStyle;
use super::llama::{Embedding, Layer, Linear, Llama, LlamaConfig};
use super::rope_scaling::RopeScaling;
use super::{Architecture, ChatTemplate, LoadOptions, TextFrontend, TextTokenizer};
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
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    max_position_embeddings: usize,
    vocab_size: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    bos_token_id: Option<u32>,
    eos_token_id: Option<OneOrMany>,
}

impl HfConfig {
    fn eos_ids(&self) -> Vec<u32> {
        match &self.eos_token_id {
            Some(OneOrMany::One(id)) => vec![*id],
            Some(OneOrMany::Many(ids)) => ids.clone(),
            None => Vec::new(),
        }
    }
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

/// The tokenizer (tokenizer.json) and chat template (tokenizer_config.json) of a checkpoint
/// directory, without reading any weights.
pub fn read_text_frontend(dir: &Path) -> Result<TextFrontend> {
    let config: HfConfig = read_json(&dir.join("config.json"))?;
    frontend_with(dir, config.bos_token_id, config.eos_ids())
}

fn frontend_with(dir: &Path, bos: Option<u32>, eos: Vec<u32>) -> Result<TextFrontend> {
    let tokenizer_config: TokenizerConfig = if dir.join("tokenizer_config.json").exists() {
        read_json(&dir.join("tokenizer_config.json"))?
    } else {
        TokenizerConfig::default()
    };
    let inner = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json"))
        .map_err(|e| Error::ModelLoad(format!("cannot load tokenizer.json in {}: {e}", dir.display())))?;
    let tokenizer = TextTokenizer::from_tokenizer(inner, bos, eos, tokenizer_config.add_bos_token);
    let chat_template =
        tokenizer_config.chat_template.as_deref().map(|t| ChatTemplate::new(t, &tokenizer)).transpose()?;
    Ok(TextFrontend { tokenizer, chat_template })
}

pub fn load_dir(dir: &Path, options: &LoadOptions, device: &Device) -> Result<SafetensorsModel> {
    let config: HfConfig = read_json(&dir.join("config.json"))?;
    architecture(&config)?;
    let eos = config.eos_ids();
    // Scaling is checked before any weight is read: an unsupported scheme fails at once.
    let llama_config = llama_config(&config, eos.clone())?;
    let TextFrontend { tokenizer, chat_template } = frontend_with(dir, config.bos_token_id, eos.clone())?;

    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::ModelLoad(format!("cannot list {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::ModelLoad(format!("no .safetensors files in {}", dir.display())));
    }
    // SAFETY: the checkpoint files are mapped read-only for the duration of loading and are
    // not modified meanwhile (a model directory is immutable input); every tensor is copied
    // out before the map is dropped at the end of this function.
    let mapped = unsafe { MmapedSafetensors::multi(&files) }
        .map_err(|e| Error::ModelLoad(format!("cannot read the safetensors in {}: {e}", dir.display())))?;
    // The stored type of the embedding table stands for the checkpoint's (`--dtype auto`).
    let stored = mapped
        .get("model.embed_tokens.weight")
        .map(|view| view.dtype())
        .map_err(|e| Error::ModelLoad(format!("checkpoint tensor `model.embed_tokens.weight`: {e}")))?;
    let stored = DType::try_from(stored).unwrap_or(DType::F32);
    let dtype = options.dtype.weights(stored, device);
    let weights = Weights { mapped, device, quantize: options.quantize, dtype };
    let has_bias = llama_config.architecture == Architecture::Qwen2;
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let linear = |name: &str, bias: bool| -> Result<Linear> {
            let weight = weights.matrix(&weights.host(&format!("{p}.{name}.weight"))?)?;
            let bias = if bias { Some(weights.dense(&format!("{p}.{name}.bias"))?) } else { None };
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
            attn_norm: weights.dense(&format!("{p}.input_layernorm.weight"))?,
            ffn_norm: weights.dense(&format!("{p}.post_attention_layernorm.weight"))?,
        });
    }
    let embedding = weights.embedding(&weights.host("model.embed_tokens.weight")?)?;
    let final_norm = weights.dense("model.norm.weight")?;
    // Tied embeddings share the table's storage with the head instead of a second copy.
    let output = match (&embedding, config.tie_word_embeddings) {
        (Embedding::Quantized(q), true) => QMatMul::from_arc(q.clone())?,
        (Embedding::Dense(t), true) => QMatMul::Tensor(t.clone()),
        (_, false) => weights.matrix(&weights.host("lm_head.weight")?)?,
    };
    let output = Linear { weight: output, bias: None };
    let model = Llama::new(llama_config, embedding, layers, final_norm, output, device.clone())?;
    Ok(SafetensorsModel { model, tokenizer, chat_template })
}

/// The checkpoint's architecture (`model_type`), one of the llama family.
fn architecture(config: &HfConfig) -> Result<Architecture> {
    config.model_type.parse::<Architecture>().ok().filter(|a| a.is_llama_family()).ok_or_else(|| {
        Error::ModelLoad(format!(
            "unsupported model_type `{}` in config.json (supported: llama, mistral, qwen2)",
            config.model_type
        ))
    })
}

/// The decoder's hyper-parameters from config.json (HF checkpoints rotate halves).
fn llama_config(config: &HfConfig, eos: Vec<u32>) -> Result<LlamaConfig> {
    let head_dim = config.head_dim.unwrap_or(config.hidden_size / config.num_attention_heads.max(1));
    Ok(LlamaConfig {
        architecture: architecture(config)?,
        hidden_size: config.hidden_size,
        heads: config.num_attention_heads,
        kv_heads: config.num_key_value_heads.unwrap_or(config.num_attention_heads),
        head_dim,
        layers: config.num_hidden_layers,
        rms_eps: config.rms_norm_eps,
        rope_base: config.rope_theta.unwrap_or(10000.0),
        rope_dims: head_dim,
        rope_style: RopeStyle::Halves,
        rope_scaling: RopeScaling::from_hf_config(config.rope_scaling.as_ref())?,
        context_length: config.max_position_embeddings,
        vocab_size: config.vocab_size,
        stop_token_ids: eos,
    })
}

/// Places checkpoint tensors on the serving device. Tensors are read one at a time from the
/// mapped files; with `--quantize` the matmul weights are quantized on the CPU and uploaded
/// packed, so a GPU never holds a float copy of the model (a 7B model at q8_0 takes about
/// 7.5 GB instead of 28 GB as f32).
struct Weights<'a> {
    mapped: MmapedSafetensors,
    device: &'a Device,
    quantize: Option<GgmlDType>,
    /// The type of dense (unquantized) matrices and embeddings on the device.
    dtype: DType,
}

impl Weights<'_> {
    /// A tensor as f32 on the CPU.
    fn host(&self, name: &str) -> Result<Tensor> {
        let tensor = self
            .mapped
            .load(name, &Device::Cpu)
            .map_err(|e| Error::ModelLoad(format!("checkpoint tensor `{name}`: {e}")))?;
        Ok(tensor.to_dtype(DType::F32)?)
    }

    /// A small tensor (norm, bias) as f32 on the device.
    fn dense(&self, name: &str) -> Result<Tensor> {
        Ok(self.host(name)?.to_device(self.device)?)
    }

    /// The `--quantize` form of a matrix on the device, when it applies: rows that split
    /// into whole blocks.
    fn quantized(&self, w: &Tensor) -> Result<Option<QTensor>> {
        match self.quantize {
            Some(dtype) if w.dim(1)?.is_multiple_of(dtype.block_size()) => {
                Ok(Some(QTensor::quantize_onto(w, dtype, self.device)?))
            }
            _ => Ok(None),
        }
    }

    fn matrix(&self, w: &Tensor) -> Result<QMatMul> {
        Ok(match self.quantized(w)? {
            Some(q) => QMatMul::from_qtensor(q)?,
            None => QMatMul::Tensor(w.to_dtype(self.dtype)?.to_device(self.device)?),
        })
    }

    /// The token embedding table, kept quantized with `--quantize` (its rows are looked up,
    /// never multiplied, so the quantized table is exact enough and a quarter of the size).
    fn embedding(&self, w: &Tensor) -> Result<Embedding> {
        Ok(match self.quantized(w)? {
            Some(q) => Embedding::Quantized(std::sync::Arc::new(q)),
            None => Embedding::Dense(w.to_dtype(self.dtype)?.to_device(self.device)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config_with(rope_scaling: serde_json::Value) -> HfConfig {
        serde_json::from_value(json!({
            "model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
            "num_hidden_layers": 32, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
            "max_position_embeddings": 256, "vocab_size": 128256, "rope_scaling": rope_scaling
        }))
        .unwrap()
    }

    #[test]
    fn llama3_rope_scaling_reaches_the_rotary_table() {
        let scaling = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192});
        let config = llama_config(&config_with(scaling), vec![]).unwrap();
        let expected = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        assert_eq!(config.rope_scaling, expected);
        let table = config.rope_table().unwrap();
        assert_eq!(table.inverse_frequencies(), &expected.inverse_frequencies(128, 500000.0).unwrap()[..]);
        let plain = llama_config(&config_with(serde_json::Value::Null), vec![]).unwrap().rope_table().unwrap();
        assert_eq!(plain.inverse_frequencies()[0], table.inverse_frequencies()[0]);
        assert!((plain.inverse_frequencies()[63] / table.inverse_frequencies()[63] - 8.0).abs() < 1e-9);
    }

    #[test]
    fn unsupported_rope_scaling_is_refused_by_name() {
        let err = llama_config(&config_with(json!({"rope_type": "yarn", "factor": 4.0})), vec![]).unwrap_err();
        assert!(err.to_string().contains("`yarn`"), "{err}");
    }
}
