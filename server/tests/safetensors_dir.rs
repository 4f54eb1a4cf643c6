//! A Hugging Face checkpoint directory (config.json, safetensors, tokenizer.json) serves
//! the same model as the GGUF file: the directory is made here from the GGUF's weights,
//! with q/k rows put back into HF order, so the un-interleaved rotary path is exercised.

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use candle_core::{DType, Device, Tensor};
use common::{post_json, Server};
use infergate_server::model::gguf::Metadata;
use infergate_server::model::TextTokenizer;
use serde_json::json;

const HEADS: usize = 9;
const KV_HEADS: usize = 3;

/// Inverse of llama.cpp's converter permutation of q/k rows (interleaved rotary pairs).
fn unpermute(w: &Tensor, heads: usize) -> Tensor {
    let (out, inp) = w.dims2().unwrap();
    w.reshape((heads, out / heads / 2, 2, inp)).unwrap().transpose(1, 2).unwrap().reshape((out, inp)).unwrap()
}

fn export_hf_dir(gguf: &Path, dir: &Path) {
    let mut file = File::open(gguf).unwrap();
    let content = Content::read(&mut file).unwrap();
    let meta = Metadata(&content.metadata);
    let tokenizer = TextTokenizer::from_gguf(&meta).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_json().unwrap()).unwrap();
    let template = meta.string("tokenizer.chat_template").unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), json!({"chat_template": template}).to_string()).unwrap();
    std::fs::write(
        dir.join("config.json"),
        json!({
            "model_type": "llama", "hidden_size": 576, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
            "num_hidden_layers": 30, "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "max_position_embeddings": 8192,
            "vocab_size": 49152, "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2,
            "intermediate_size": 1536
        })
        .to_string(),
    )
    .unwrap();
    let mut tensors = HashMap::new();
    let names: Vec<String> = content.tensor_infos.keys().cloned().collect();
    for name in names {
        let w = content.tensor(&mut file, &name, &Device::Cpu).unwrap().dequantize(&Device::Cpu).unwrap();
        let hf_name = match name.as_str() {
            "token_embd.weight" => "model.embed_tokens.weight".to_string(),
            "output_norm.weight" => "model.norm.weight".to_string(),
            other => {
                let rest = other.strip_prefix("blk.").unwrap();
                let (layer, tail) = rest.split_once('.').unwrap();
                let hf = match tail {
                    "attn_q.weight" => "self_attn.q_proj.weight",
                    "attn_k.weight" => "self_attn.k_proj.weight",
                    "attn_v.weight" => "self_attn.v_proj.weight",
                    "attn_output.weight" => "self_attn.o_proj.weight",
                    "ffn_gate.weight" => "mlp.gate_proj.weight",
                    "ffn_up.weight" => "mlp.up_proj.weight",
                    "ffn_down.weight" => "mlp.down_proj.weight",
                    "attn_norm.weight" => "input_layernorm.weight",
                    "ffn_norm.weight" => "post_attention_layernorm.weight",
                    t => panic!("unexpected tensor {t}"),
                };
                format!("model.layers.{layer}.{hf}")
            }
        };
        let w = if hf_name.ends_with("q_proj.weight") {
            unpermute(&w, HEADS)
        } else if hf_name.ends_with("k_proj.weight") {
            unpermute(&w, KV_HEADS)
        } else {
            w
        };
        tensors.insert(hf_name, w.to_dtype(DType::F16).unwrap());
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
}

#[tokio::test]
async fn a_safetensors_directory_serves_the_same_model() {
    let dir = std::env::temp_dir().join(format!("infergate-hf-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    export_hf_dir(&common::model_path(), &dir);
    for quantize in ["none", "q8_0"] {
        let server = Server::start(&["--model", dir.to_str().unwrap(), "--quantize", quantize], &[]);
        let (status, body) = post_json(
            &server.url("/v1/completions"),
            &json!({"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(body["choices"][0]["text"].as_str().unwrap().contains("Paris"), "quantize={quantize}: {body}");
        let (status, body) = post_json(
            &server.url("/v1/chat/completions"),
            &json!({"messages": [{"role": "user", "content": "What is the capital of France?"}], "temperature": 0, "max_tokens": 20}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
