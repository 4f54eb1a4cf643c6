//! Split GGUF models (`name-00001-of-00003.gguf`, as llama.cpp's gguf-split writes them:
//! all metadata in the first shard, tensors spread, `split.*` keys in every shard) load from
//! their first shard, locally and from an `hf://` source in the HF cache.

mod common;
#[path = "support/gguf_rewrite.rs"]
mod gguf_rewrite;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::QTensor;
use candle_core::Device;
use common::{post_json, Server};
use gguf_rewrite::greedy;
use infergate_server::model::gguf::load_file;
use infergate_server::model::LoadOptions;
use serde_json::json;

const SHARDS: usize = 3;

fn shard_name(no: usize) -> String {
    format!("smol-{:05}-of-{SHARDS:05}.gguf", no + 1)
}

/// The test model split into three shards, made once per test binary.
fn shards() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let gguf = gguf_rewrite::read(&common::model_path());
        let dir = gguf_rewrite::temp_dir("split");
        let per_shard = gguf.tensors.len().div_ceil(SHARDS);
        let chunks: Vec<&[(String, QTensor)]> = gguf.tensors.chunks(per_shard).collect();
        assert_eq!(chunks.len(), SHARDS);
        for (no, chunk) in chunks.iter().enumerate() {
            let mut metadata = if no == 0 { gguf.metadata.clone() } else { Vec::new() };
            metadata.push(("split.no".into(), Value::U16(no as u16)));
            metadata.push(("split.count".into(), Value::U16(SHARDS as u16)));
            metadata.push(("split.tensors.count".into(), Value::I32(gguf.tensors.len() as i32)));
            let tensors: Vec<(&str, &QTensor)> = chunk.iter().map(|(n, t)| (n.as_str(), t)).collect();
            gguf_rewrite::write(&dir.join(shard_name(no)), &metadata, &tensors);
        }
        dir
    })
}

/// `shards` linked into a fresh folder.
fn linked(tag: &str, which: &[usize]) -> PathBuf {
    let dir = gguf_rewrite::temp_dir(tag);
    for &no in which {
        std::fs::hard_link(shards().join(shard_name(no)), dir.join(shard_name(no))).unwrap();
    }
    dir
}

#[test]
fn a_split_gguf_loads_from_its_first_shard_like_the_whole_file() {
    let options = LoadOptions::default();
    let whole = load_file(&common::model_path(), &options, &Device::Cpu).unwrap();
    let split = load_file(&shards().join(shard_name(0)), &options, &Device::Cpu).unwrap();
    let prompt = whole.tokenizer.encode("The capital of France is Paris. The capital of Italy is").unwrap();
    assert_eq!(
        split.tokenizer.encode("The capital of France is").unwrap(),
        whole.tokenizer.encode("The capital of France is").unwrap()
    );
    assert_eq!(split.chat_template.is_some(), whole.chat_template.is_some());
    let (whole_tokens, whole_logits) = greedy(&whole.model, &prompt, 8);
    let (split_tokens, split_logits) = greedy(&split.model, &prompt, 8);
    assert_eq!(split_tokens, whole_tokens);
    assert_eq!(split_logits, whole_logits);
}

#[test]
fn a_missing_or_wrong_shard_is_named() {
    let dir = linked("split-missing", &[0, 2]);
    let err = load_file(&dir.join(shard_name(0)), &LoadOptions::default(), &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("shard 2 of 3 is missing") && err.contains(&shard_name(1)), "{err}");
    let err = load_file(&dir.join(shard_name(2)), &LoadOptions::default(), &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("shard 3 of 3") && err.contains("first shard"), "{err}");
    // A first shard renamed out of the naming scheme cannot find its siblings.
    std::fs::rename(dir.join(shard_name(0)), dir.join("renamed.gguf")).unwrap();
    let err = load_file(&dir.join("renamed.gguf"), &LoadOptions::default(), &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("-00001-of-00003.gguf"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_hf_split_source_loads_every_shard_from_the_cache_offline() {
    let home = gguf_rewrite::temp_dir("split-hf-home");
    let repo = home.join("hub/models--org--smol-split");
    let snapshot = repo.join("snapshots/1234567890abcdef");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "1234567890abcdef").unwrap();
    for no in 0..SHARDS {
        std::fs::hard_link(shards().join(shard_name(no)), snapshot.join(shard_name(no))).unwrap();
    }
    let source = format!("hf://org/smol-split/{}", shard_name(0));
    let env = [("HF_HOME", home.to_str().unwrap()), ("HF_HUB_OFFLINE", "1")];
    let server = Server::start(&["--model", &source], &env);
    let (status, body) = post_json(
        &server.url("/v1/completions"),
        &json!({"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["choices"][0]["text"].as_str().unwrap().contains("Paris"), "{body}");
    drop(server);

    // Without the last shard in the cache, offline loading names it.
    std::fs::remove_file(snapshot.join(shard_name(2))).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_infergate-server"))
        .args(["--model", &source, "--host", "127.0.0.1", "--port", &common::free_port().to_string()])
        .envs(env)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(
        format!("{stdout}{stderr}").contains(&format!("{} (shard 3 of 3)", shard_name(2))),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn every_tensor_must_be_in_exactly_one_shard() {
    use infergate_server::model::gguf::GgufShards;
    let dir = gguf_rewrite::temp_dir("split-tiny");
    let tensor = |v: f32| {
        let t = candle_core::Tensor::new(&[v, v], &Device::Cpu).unwrap();
        QTensor::quantize(&t, candle_core::quantized::GgmlDType::F32).unwrap()
    };
    let (a, b) = (tensor(1.0), tensor(2.0));
    let write = |names: [&str; 2], declared: i32| {
        for (no, name) in names.iter().enumerate() {
            let metadata = vec![
                ("split.no".to_string(), Value::U16(no as u16)),
                ("split.count".to_string(), Value::U16(2)),
                ("split.tensors.count".to_string(), Value::I32(declared)),
            ];
            let t = if no == 0 { &a } else { &b };
            gguf_rewrite::write(&dir.join(format!("t-{:05}-of-00002.gguf", no + 1)), &metadata, &[(name, t)]);
        }
    };
    let first = dir.join("t-00001-of-00002.gguf");
    write(["x", "y"], 2);
    let shards = GgufShards::open(&first).unwrap();
    assert_eq!(shards.paths.len(), 2);
    let mut names: Vec<&str> = shards.tensor_names().collect();
    names.sort();
    assert_eq!(names, ["x", "y"]);
    write(["x", "x"], 2);
    let err = GgufShards::open(&first).err().unwrap().to_string();
    assert!(err.contains("`x` is in both shard 1 and shard 2"), "{err}");
    write(["x", "y"], 3);
    let err = GgufShards::open(&first).err().unwrap().to_string();
    assert!(err.contains("declares 3 tensors") && err.contains("hold 2"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
