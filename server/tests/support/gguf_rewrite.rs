//! Rewrites the test model's GGUF with candle's writer (extra metadata, extra tensors,
//! split shards) and drives a model greedily in-process.
#![allow(dead_code)]

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;
use infergate_server::model::{CausalLm, ForwardItem};

/// Everything in a GGUF file: metadata, and tensors in file order.
pub struct Gguf {
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<(String, QTensor)>,
}

pub fn read(path: &Path) -> Gguf {
    let mut file = File::open(path).unwrap();
    let content = Content::read(&mut file).unwrap();
    let mut metadata: Vec<(String, Value)> = content.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    let mut names: Vec<(&String, u64)> = content.tensor_infos.iter().map(|(n, i)| (n, i.offset)).collect();
    names.sort_by_key(|(_, offset)| *offset);
    let tensors =
        names.into_iter().map(|(n, _)| (n.clone(), content.tensor(&mut file, n, &Device::Cpu).unwrap())).collect();
    Gguf { metadata, tensors }
}

pub fn write(path: &Path, metadata: &[(String, Value)], tensors: &[(&str, &QTensor)]) {
    let mut out = BufWriter::new(File::create(path).unwrap());
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut out, &metadata, tensors).unwrap();
}

/// A copy of `gguf` with `extra` metadata (replacing same-named keys) and `extra_tensors`.
pub fn with_extras(gguf: &Gguf, path: &Path, extra: &[(&str, Value)], extra_tensors: &[(&str, &QTensor)]) {
    let mut metadata: Vec<(String, Value)> =
        gguf.metadata.iter().filter(|(k, _)| !extra.iter().any(|(e, _)| e == k)).cloned().collect();
    metadata.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let mut tensors: Vec<(&str, &QTensor)> = gguf.tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    tensors.extend_from_slice(extra_tensors);
    write(path, &metadata, &tensors);
}

pub fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32).unwrap()
}

/// `n` greedy tokens after `prompt`, and the logits after the prompt.
pub fn greedy(model: &dyn CausalLm, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<f32>) {
    let mut kv = model.new_kv(prompt.len() + n);
    let mut logits =
        model.forward(&mut [ForwardItem { tokens: prompt, kv: &mut kv, want_logits: true }]).unwrap().remove(0);
    let first = logits.clone();
    let mut tokens = Vec::with_capacity(n);
    for _ in 0..n {
        let t = argmax(&logits);
        tokens.push(t);
        if tokens.len() < n {
            logits = model
                .forward(&mut [ForwardItem { tokens: std::slice::from_ref(&t), kv: &mut kv, want_logits: true }])
                .unwrap()
                .remove(0);
        }
    }
    (tokens, first)
}

pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("infergate-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
