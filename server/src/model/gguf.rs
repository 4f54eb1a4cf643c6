//! GGUF files: metadata, weights, tokenizer and chat template from one file, or from the
//! shards of a split model (`name-00001-of-00003.gguf`, as llama.cpp's gguf-split writes them).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Tensor};

use super::attention::RopeStyle;
use super::llama::{Embedding, Layer, Linear, Llama, LlamaConfig};
use super::rope_scaling::RopeScaling;
use super::Architecture;
use super::{ChatTemplate, LoadOptions, TextFrontend, TextTokenizer};
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
        // llama.cpp also accepts integer scores.
        values.iter().map(|v| v.to_f32().or_else(|_| v.to_i32().map(|x| x as f32)).map_err(|e| bad(key, e))).collect()
    }
}

fn bad(key: &str, e: candle_core::Error) -> Error {
    Error::ModelLoad(format!("GGUF metadata `{key}` has an unexpected type: {e}"))
}

/// The llama-family architecture of a GGUF file, and how its rotary pairs are laid out.
fn llama_architecture(name: &str) -> Result<(Architecture, RopeStyle)> {
    let unsupported =
        || Error::ModelLoad(format!("unsupported GGUF architecture `{name}` (supported: llama, mistral, qwen2)"));
    let architecture: Architecture = name.parse().map_err(|_| unsupported())?;
    // llama.cpp's converter permutes q/k of "llama" checkpoints for interleaved rotary
    // pairs; qwen2 keeps the NeoX (halves) layout.
    match architecture {
        Architecture::Llama | Architecture::Mistral => Ok((architecture, RopeStyle::Interleaved)),
        Architecture::Qwen2 => Ok((architecture, RopeStyle::Halves)),
        Architecture::Gemma3 => Err(unsupported()),
    }
}

/// The tokenizer and chat template a GGUF file's metadata describes.
pub fn text_frontend(meta: &Metadata<'_>) -> Result<TextFrontend> {
    let tokenizer = TextTokenizer::from_gguf(meta)?;
    let chat_template =
        meta.opt_string("tokenizer.chat_template").map(|t| ChatTemplate::new(t, &tokenizer)).transpose()?;
    Ok(TextFrontend { tokenizer, chat_template })
}

/// Reads only the metadata of a GGUF file (no tensor data) for its tokenizer and template.
pub fn read_text_frontend(path: &Path) -> Result<TextFrontend> {
    let file = File::open(path).map_err(|e| Error::ModelLoad(format!("cannot open {}: {e}", path.display())))?;
    let content = Content::read(&mut BufReader::new(file))
        .map_err(|e| Error::ModelLoad(format!("{} is not a readable GGUF file: {e}", path.display())))?;
    text_frontend(&Metadata(&content.metadata))
}

fn open(path: &Path) -> Result<BufReader<File>> {
    let file = File::open(path).map_err(|e| Error::ModelLoad(format!("cannot open {}: {e}", path.display())))?;
    Ok(BufReader::new(file))
}

fn read_content(path: &Path, reader: &mut BufReader<File>) -> Result<Content> {
    Content::read(reader).map_err(|e| Error::ModelLoad(format!("{} is not a readable GGUF file: {e}", path.display())))
}

/// The file name suffix of shard `no` (0-based) of `count`, as llama.cpp names them.
fn split_suffix(no: usize, count: usize) -> String {
    format!("-{:05}-of-{count:05}.gguf", no + 1)
}

/// The paths of all `count` shards of a split model, derived from its first shard's path
/// the way llama.cpp does (`<prefix>-%05d-of-%05d.gguf`, same folder).
pub fn split_paths(first: &Path, count: usize) -> Result<Vec<PathBuf>> {
    let name = first.to_string_lossy();
    let prefix = name.strip_suffix(&split_suffix(0, count)).filter(|p| !p.is_empty()).ok_or_else(|| {
        Error::ModelLoad(format!(
            "{} is the first of {count} GGUF shards but is not named <name>{}",
            first.display(),
            split_suffix(0, count)
        ))
    })?;
    Ok((0..count).map(|no| PathBuf::from(format!("{prefix}{}", split_suffix(no, count)))).collect())
}

/// The metadata and tensor directory of every file of one GGUF model, in split order
/// (a single file is a split of one). The metadata lives in the first.
pub struct GgufShards {
    pub paths: Vec<PathBuf>,
    pub contents: Vec<Content>,
    readers: Vec<BufReader<File>>,
    /// Which shard holds each tensor.
    index: HashMap<String, usize>,
}

impl GgufShards {
    /// The first shard's metadata and a reader of every shard's tensors.
    pub(super) fn for_loading<'a>(
        &'a mut self,
        device: &'a Device,
        quantize: Option<GgmlDType>,
    ) -> (Metadata<'a>, Weights<'a>) {
        let GgufShards { contents, readers, index, .. } = self;
        let contents: &'a [Content] = contents;
        (Metadata(&contents[0].metadata), Weights { contents, readers, index, device, quantize })
    }

    /// Opens a GGUF file; when its metadata says it is the first shard of a split, opens
    /// every other shard too and checks the split (numbering, each tensor exactly once, the
    /// tensor count).
    pub fn open(path: &Path) -> Result<Self> {
        let mut reader = open(path)?;
        let first = read_content(path, &mut reader)?;
        let meta = Metadata(&first.metadata);
        let count = meta.opt_u32("split.count")?.unwrap_or(1) as usize;
        let mut shards = GgufShards {
            paths: vec![path.to_path_buf()],
            contents: Vec::new(),
            readers: vec![reader],
            index: HashMap::new(),
        };
        if count <= 1 {
            shards.index = first.tensor_infos.keys().map(|name| (name.clone(), 0)).collect();
            shards.contents.push(first);
            return Ok(shards);
        }
        let no = meta.opt_u32("split.no")?.unwrap_or(0) as usize;
        if no != 0 {
            return Err(Error::ModelLoad(format!(
                "{} is shard {} of {count} of a split GGUF; load the model from its first shard",
                path.display(),
                no + 1
            )));
        }
        let expected = meta.u32("split.tensors.count")? as usize;
        let paths = split_paths(path, count)?;
        shards.contents.push(first);
        for (no, shard) in paths.iter().enumerate().skip(1) {
            if !shard.exists() {
                return Err(Error::ModelLoad(format!(
                    "GGUF shard {} of {count} is missing: {} (a split model needs all its shards in one folder)",
                    no + 1,
                    shard.display()
                )));
            }
            let mut reader = open(shard)?;
            let content = read_content(shard, &mut reader)?;
            let shard_meta = Metadata(&content.metadata);
            let shard_no = shard_meta.opt_u32("split.no")?.map(|x| x as usize);
            let shard_count = shard_meta.opt_u32("split.count")?.map(|x| x as usize);
            if shard_no != Some(no) || shard_count.is_some_and(|c| c != count) {
                return Err(Error::ModelLoad(format!(
                    "{} says it is shard {} of {}, expected shard {} of {count}",
                    shard.display(),
                    shard_no.map(|n| (n + 1).to_string()).unwrap_or_else(|| "?".into()),
                    shard_count.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                    no + 1
                )));
            }
            shards.paths.push(shard.clone());
            shards.contents.push(content);
            shards.readers.push(reader);
        }
        for (no, content) in shards.contents.iter().enumerate() {
            for name in content.tensor_infos.keys() {
                if let Some(other) = shards.index.insert(name.clone(), no) {
                    return Err(Error::ModelLoad(format!(
                        "GGUF tensor `{name}` is in both shard {} and shard {} of {count}",
                        other + 1,
                        no + 1
                    )));
                }
            }
        }
        if shards.index.len() != expected {
            return Err(Error::ModelLoad(format!(
                "split GGUF {} declares {expected} tensors but its {count} shards hold {}",
                path.display(),
                shards.index.len()
            )));
        }
        Ok(shards)
    }

    /// The model's metadata (the first shard's).
    pub fn metadata(&self) -> Metadata<'_> {
        Metadata(&self.contents[0].metadata)
    }

    /// Whether any shard holds tensor `name`.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Every tensor name of the model.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }
}

/// The rotary scaling GGUF metadata and `rope_freqs.weight` describe.
fn rope_scaling(meta: &Metadata<'_>, key: &dyn Fn(&str) -> String, weights: &mut Weights<'_>) -> Result<RopeScaling> {
    let scaling_type = meta.opt_string(&key("rope.scaling.type"));
    if meta.0.contains_key(&key("rope.scaling.type")) && scaling_type.is_none() {
        return Err(Error::ModelLoad(format!("GGUF metadata `{}` is not a string", key("rope.scaling.type"))));
    }
    let factor = if meta.0.contains_key(&key("rope.scaling.factor")) {
        Some(meta.f32(&key("rope.scaling.factor"))?)
    } else if meta.0.contains_key(&key("rope.scale_linear")) {
        Some(meta.f32(&key("rope.scale_linear"))?)
    } else {
        None
    };
    let freq_factors = if weights.has("rope_freqs.weight") {
        let t = weights.read_onto("rope_freqs.weight", &Device::Cpu)?.dequantize(&Device::Cpu)?;
        Some(t.flatten_all()?.to_vec1::<f32>()?)
    } else {
        None
    };
    RopeScaling::from_gguf(scaling_type, factor, freq_factors)
}

pub fn load_file(path: &Path, options: &LoadOptions, device: &Device) -> Result<GgufModel> {
    let mut shards = GgufShards::open(path)?;
    let (meta, mut weights) = shards.for_loading(device, options.quantize);
    let (architecture, rope_style) = llama_architecture(meta.string("general.architecture")?)?;
    let key = |k: &str| format!("{}.{k}", architecture.name());
    let hidden_size = meta.u32(&key("embedding_length"))? as usize;
    let heads = meta.u32(&key("attention.head_count"))? as usize;
    let kv_heads = meta.opt_u32(&key("attention.head_count_kv"))?.map(|x| x as usize).unwrap_or(heads);
    let head_dim =
        meta.opt_u32(&key("attention.key_length"))?.map(|x| x as usize).unwrap_or(hidden_size / heads.max(1));
    let layers = meta.u32(&key("block_count"))? as usize;
    let rope_dims = meta.opt_u32(&key("rope.dimension_count"))?.map(|x| x as usize).unwrap_or(head_dim);
    let rope_base =
        if meta.0.contains_key(&key("rope.freq_base")) { meta.f32(&key("rope.freq_base"))? } else { 10000.0 };
    let rms_eps = meta.f32(&key("attention.layer_norm_rms_epsilon"))? as f64;
    let context_length = meta.u32(&key("context_length"))? as usize;
    let rope_scaling = rope_scaling(&meta, &key, &mut weights)?;

    let TextFrontend { tokenizer, chat_template } = text_frontend(&meta)?;
    let mut stop_token_ids = tokenizer.stop_token_ids();
    stop_token_ids.sort_unstable();
    stop_token_ids.dedup();

    let embedding_q = Arc::new(weights.read("token_embd.weight")?);
    let vocab_size = embedding_q.shape().dims2()?.0;
    let has_bias = weights.has("blk.0.attn_q.bias");
    let mut blocks = Vec::with_capacity(layers);
    for i in 0..layers {
        let mut linear = |name: &str, bias: bool| -> Result<Linear> {
            let weight = QMatMul::from_qtensor(weights.matrix(&format!("blk.{i}.{name}.weight"))?)?;
            let bias = if bias { Some(weights.dense(&format!("blk.{i}.{name}.bias"))?) } else { None };
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
            attn_norm: weights.dense(&format!("blk.{i}.attn_norm.weight"))?,
            ffn_norm: weights.dense(&format!("blk.{i}.ffn_norm.weight"))?,
        });
    }
    let final_norm = weights.dense("output_norm.weight")?;
    // Tied embeddings (SmolLM2, Qwen2 small): the head reuses token_embd.
    let output = if weights.has("output.weight") {
        Linear { weight: QMatMul::from_qtensor(weights.matrix("output.weight")?)?, bias: None }
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
        rope_scaling,
        context_length,
        vocab_size,
        stop_token_ids,
    };
    let model = Llama::new(config, Embedding::Quantized(embedding_q), blocks, final_norm, output, device.clone())?;
    Ok(GgufModel { model, tokenizer, chat_template })
}

/// Reads tensors of a GGUF model (from whichever shard holds them) onto the serving device
/// (also used by `gemma3_load`).
pub(super) struct Weights<'a> {
    contents: &'a [Content],
    readers: &'a mut [BufReader<File>],
    index: &'a HashMap<String, usize>,
    device: &'a Device,
    quantize: Option<GgmlDType>,
}

impl Weights<'_> {
    pub(super) fn device(&self) -> &Device {
        self.device
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn shard(&self, name: &str) -> Result<usize> {
        self.index.get(name).copied().ok_or_else(|| Error::ModelLoad(format!("GGUF has no tensor `{name}`")))
    }

    fn read_onto(&mut self, name: &str, device: &Device) -> Result<QTensor> {
        let shard = self.shard(name)?;
        self.contents[shard]
            .tensor(&mut self.readers[shard], name, device)
            .map_err(|e| Error::ModelLoad(format!("GGUF tensor `{name}`: {e}")))
    }

    /// A tensor as stored, on the device.
    pub(super) fn read(&mut self, name: &str) -> Result<QTensor> {
        self.read_onto(name, self.device)
    }

    /// A small tensor (norm, bias) as f32 on the device.
    pub(super) fn dense(&mut self, name: &str) -> Result<Tensor> {
        Ok(self.read(name)?.dequantize(self.device)?)
    }

    /// A matmul weight in the `--quantize` type where it applies. A weight that changes type
    /// is read and converted on the CPU and uploaded packed, so a GPU never holds its float copy.
    pub(super) fn matrix(&mut self, name: &str) -> Result<QTensor> {
        let shard = self.shard(name)?;
        let info = &self.contents[shard].tensor_infos[name];
        match self.quantize {
            Some(target) if needs_requantize(info.ggml_dtype, info.shape.dims(), target) => {
                requantize_onto(&self.read_onto(name, &Device::Cpu)?, target, self.device)
            }
            _ => self.read(name),
        }
    }
}

/// Whether `--quantize target` converts a stored weight: matrices of another type whose rows
/// split into whole blocks of the target (others keep their type).
pub fn needs_requantize(stored: GgmlDType, dims: &[usize], target: GgmlDType) -> bool {
    stored != target && dims.len() == 2 && dims[1].is_multiple_of(target.block_size())
}

/// Converts a weight to another GGML type on the CPU (e.g. Q4_1 -> Q8_0 for faster CPU
/// kernels, or a float matrix to Q8_0 to fit a GPU) and places the result on `device`.
pub fn requantize_onto(q: &QTensor, target: GgmlDType, device: &Device) -> Result<QTensor> {
    let dense = q.dequantize(&Device::Cpu)?;
    Ok(QTensor::quantize_onto(&dense, target, device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_block_matrices_of_another_type_are_requantized() {
        assert!(needs_requantize(GgmlDType::Q4_1, &[64, 576], GgmlDType::Q8_0));
        assert!(needs_requantize(GgmlDType::F16, &[64, 4096], GgmlDType::Q8_0));
        assert!(!needs_requantize(GgmlDType::Q8_0, &[64, 576], GgmlDType::Q8_0), "already the type");
        assert!(!needs_requantize(GgmlDType::F32, &[576], GgmlDType::Q8_0), "vectors stay");
        assert!(!needs_requantize(GgmlDType::F32, &[64, 48], GgmlDType::Q8_0), "48 columns are not whole blocks");
    }

    #[test]
    fn requantize_onto_keeps_the_values_within_the_target_precision() {
        let dense = Tensor::arange(0f32, 64.0 * 32.0, &Device::Cpu).unwrap().reshape((64, 32)).unwrap();
        let dense = ((dense / 100.0).unwrap().sin()).unwrap();
        let q4 = QTensor::quantize(&dense, GgmlDType::Q4_1).unwrap();
        let q8 = requantize_onto(&q4, GgmlDType::Q8_0, &Device::Cpu).unwrap();
        assert_eq!((q8.dtype(), q8.shape().dims()), (GgmlDType::Q8_0, &[64usize, 32][..]));
        let from_q4 = q4.dequantize(&Device::Cpu).unwrap();
        let from_q8 = q8.dequantize(&Device::Cpu).unwrap();
        let worst = (from_q4 - from_q8).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        // Q8_0 steps are max|x|/127 per block of 32 (at most 1/127 here, |x| <= 1): rounding
        // costs half a step, the f16 scale a little more; a misplaced block costs far more.
        assert!(worst < 1.0 / 127.0, "{worst}");
    }
}
