//! GGUF files: metadata, weights, tokenizer and chat template from one file.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::Device;

use super::attention::RopeStyle;
use super::llama::{Embedding, Layer, Linear, Llama, LlamaConfig};
use super::{ChatTemplate, LoadOptions, TextTokenizer};
use crate::error::{Error, Result};

pub struct GgufModel {
    pub model: Llama,
    pub tokenizer: TextTokenizer,
    pub chat_template: Option<ChatTemplate>,
}

/// Typed access to GGUF metadata with errors that name the missing key.
pub struct Metadata<'a>(pub &'a HashMap<String, Value>);

impl<'a> Metadata<'a> {
    pub fn get(&self, key: &str) -> Result<&'a Value> {
        self.0.get(key).ok_or_else(|| Error::ModelLoad(format!("GGUF metadata has no `{key}`")))
    }
    pub fn u32(&self, key: &str) -> Result<u32> {
        let v = self.get(key)?;
        v.to_u32()
            .or_else(|_| v.to_u64().map(|x| x as u32))
            .or_else(|_| v.to_i32().map(|x| x as u32))
            .map_err(|e| bad(key, e))
    }
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        if self.0.contains_key(key) {
            self.u32(key).map(Some)
        } else {
            Ok(None)
        }
    }
    pub fn f32(&self, key: &str) -> Result<f32> {
        self.get(key)?.to_f32().map_err(|e| bad(key, e))
    }
    pub fn string(&self, key: &str) -> Result<&'a str> {
        self.get(key)?.to_string().map(|s| s.as_str()).map_err(|e| bad(key, e))
    }
    pub fn opt_string(&self, key: &str) -> Option<&'a str> {
        self.0.get(key).and_then(|v| v.to_string().ok()).map(|s| s.as_str())
    }
    pub fn opt_bool(&self, key: &str) -> Option<bool> {
        self.0.get(key).and_then(|v| v.to_bool().ok())
    }
    pub fn strings(&self, key: &str) -> Result<Vec<&'a str>> {
        let values = self.get(key)?.to_vec().map_err(|e| bad(key, e))?;
        values.iter().map(|v| v.to_string().map(|s| s.as_str()).map_err(|e| bad(key, e))).collect()
    }
    pub fn i32s(&self, key: &str) -> Result<Vec<i32>> {
        let values = self.get(key)?.to_vec().map_err(|e| bad(key, e))?;
        values.iter().map(|v| v.to_i32().or_else(|_| v.to_u32().map(|x| x as i32)).map_err(|e| bad(key, e))).collect()
    }
    pub fn f32s(&self, key: &str) -> Result<Vec<f32>> {
        let values = self.get(key)?.to_vec().map_err(|e| bad(key, e))?;
        values.iter().map(|v| v.to_f32().map_err(|e| bad(key, e))).collect()
    }
}

fn bad(key: &str, e: candle_core::Error) -> Error {
    Error::ModelLoad(format!("GGUF metadata `{key}` has an unexpected type: {e}"))
}

fn rope_style(architecture: &str) -> Result<RopeStyle> {
    // llama.cpp's converter permutes q/k of "llama" checkpoints for interleaved rotary
    // pairs; qwen2 keeps the NeoX (halves) layout.
    match architecture {
        "llama" | "mistral" => Ok(RopeStyle::Interleaved),
        "qwen2" => Ok(RopeStyle::Halves),
        other => {
            Err(Error::ModelLoad(format!("unsupported GGUF architecture `{other}` (supported: llama, mistral, qwen2)")))
        }
    }
}

pub fn load_file(path: &Path, options: &LoadOptions, device: &Device) -> Result<GgufModel> {
    let file = File::open(path).map_err(|e| Error::ModelLoad(format!("cannot open {}: {e}", path.display())))?;
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader)
        .map_err(|e| Error::ModelLoad(format!("{} is not a readable GGUF file: {e}", path.display())))?;
    let meta = Metadata(&content.metadata);
    let architecture = meta.string("general.architecture")?.to_string();
    let rope_style = rope_style(&architecture)?;
    let key = |k: &str| format!("{architecture}.{k}");
    let hidden_size = meta.u32(&key("embedding_length"))? as usize;
    let heads = meta.u32(&key("attention.head_count"))? as usize;
    let kv_heads = meta.opt_u32(&key("attention.head_count_kv"))?.map(|x| x as usize).unwrap_or(heads);
    let head_dim =
        meta.opt_u32(&key("attention.key_length"))?.map(|x| x as usize).unwrap_or(hidden_size / heads.max(1));
    let layers = meta.u32(&key("block_count"))? as usize;
    let rope_dims = meta.opt_u32(&key("rope.dimension_count"))?.map(|x| x as usize).unwrap_or(head_dim);
    let rope_base =
        if content.metadata.contains_key(&key("rope.freq_base")) { meta.f32(&key("rope.freq_base"))? } else { 10000.0 };
    let rms_eps = meta.f32(&key("attention.layer_norm_rms_epsilon"))? as f64;
    let context_length = meta.u32(&key("context_length"))? as usize;
    if content.tensor_infos.contains_key("rope_freqs.weight") {
        return Err(Error::ModelLoad(
            "GGUF uses scaled rotary frequencies (rope_freqs), which are not supported yet".into(),
        ));
    }

    let tokenizer = TextTokenizer::from_gguf(&meta)?;
    let chat_template =
        meta.opt_string("tokenizer.chat_template").map(|t| ChatTemplate::new(t, &tokenizer)).transpose()?;
    let mut stop_token_ids = tokenizer.stop_token_ids();
    stop_token_ids.sort_unstable();
    stop_token_ids.dedup();

    let mut tensor = |name: &str| -> Result<QTensor> {
        content.tensor(&mut reader, name, device).map_err(|e| Error::ModelLoad(format!("GGUF tensor `{name}`: {e}")))
    };
    let matmul = |q: QTensor| -> Result<QMatMul> {
        let q = match options.quantize {
            Some(target) if q.dtype() != target && q.rank() == 2 => requantize(q, target)?,
            _ => q,
        };
        Ok(QMatMul::from_qtensor(q)?)
    };
    let embedding_q = Arc::new(tensor("token_embd.weight")?);
    let vocab_size = embedding_q.shape().dims2()?.0;
    let has_bias = content.tensor_infos.contains_key("blk.0.attn_q.bias");
    let mut blocks = Vec::with_capacity(layers);
    for i in 0..layers {
        let mut linear = |name: &str, bias: bool| -> Result<Linear> {
            let weight = matmul(tensor(&format!("blk.{i}.{name}.weight"))?)?;
            let bias = if bias { Some(tensor(&format!("blk.{i}.{name}.bias"))?.dequantize(device)?) } else { None };
            Ok(Linear { weight, bias })
        };
        blocks.push(Layer {
            wq: linear("attn_q", has_bias)?,
            wk: linear("attn_k", has_bias)?,
            wv: linear("attn_v", has_bias)?,
            wo: linear("attn_output", false)?,
            w_gate: linear("ffn_gate", false)?,
            w_up: linear("ffn_up", false)?,
            w_down: linear("ffn_down", false)?,
            attn_norm: tensor(&format!("blk.{i}.attn_norm.weight"))?.dequantize(device)?,
            ffn_norm: tensor(&format!("blk.{i}.ffn_norm.weight"))?.dequantize(device)?,
        });
    }
    let final_norm = tensor("output_norm.weight")?.dequantize(device)?;
    // Tied embeddings (SmolLM2, Qwen2 small): the head reuses token_embd.
    let output = if content.tensor_infos.contains_key("output.weight") {
        Linear { weight: matmul(tensor("output.weight")?)?, bias: None }
    } else {
        Linear { weight: QMatMul::from_arc(embedding_q.clone())?, bias: None }
    };
    let config = LlamaConfig {
        architecture,
        hidden_size,
        heads,
        kv_heads,
        head_dim,
        layers,
        rms_eps,
        rope_base,
        rope_dims,
        rope_style,
        context_length,
        vocab_size,
        stop_token_ids,
    };
    let model = Llama::new(config, Embedding::Quantized(embedding_q), blocks, final_norm, output, device.clone())?;
    Ok(GgufModel { model, tokenizer, chat_template })
}

/// Converts a weight to another GGML type (e.g. Q4_1 -> Q8_0 for faster CPU kernels).
pub fn requantize(q: QTensor, target: GgmlDType) -> Result<QTensor> {
    let dims = q.shape().dims2()?;
    if dims.1 % target.block_size() != 0 {
        return Ok(q);
    }
    let dense = q.dequantize(&q.device())?;
    Ok(QTensor::quantize(&dense, target)?)
}
