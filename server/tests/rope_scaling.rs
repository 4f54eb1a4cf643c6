//! RoPE scaling: our inverse frequencies match ones computed independently from the
//! published formulas (tests/fixtures/rope_scaling_inv_freq.json, recorded by
//! scripts/record-rope-fixtures.py with numpy), and GGUF files that scale their rotary
//! frequencies (`rope_freqs.weight`, `rope.scaling.type`) load and run on both backends.

mod common;
#[path = "support/gguf_rewrite.rs"]
mod gguf_rewrite;

use std::sync::OnceLock;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use gguf_rewrite::{greedy, Gguf};
use infergate_server::model::gguf::load_file;
use infergate_server::model::rope_scaling::RopeScaling;
use infergate_server::model::{LoadOptions, NativeLlama};
use serde_json::Value as Json;

const HISTORY: &str = "The history of the city begins in the early middle ages, when a small settlement of \
    fishermen grew around the river crossing. Over the following centuries the town became a market for the \
    whole region, and its merchants traded wool, salt and grain with their neighbours. The children of the town \
    learned to count at the market:";

/// A long prompt whose greedy continuation is confident (digits), so 8-bit rounding of the
/// native backend cannot flip it.
fn digits_prompt() -> Vec<u32> {
    prompt_tokens(&format!("{HISTORY} 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,"))
}

/// A long prompt whose next-token logits depend on the rotary scaling far beyond rounding.
fn words_prompt() -> Vec<u32> {
    prompt_tokens(&format!("{HISTORY} one, two, three, four, five, six, seven,"))
}

fn fixture() -> Json {
    let text = include_str!("fixtures/rope_scaling_inv_freq.json");
    serde_json::from_str(text).unwrap()
}

fn case(name: &str) -> Json {
    fixture()["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone()
}

fn floats(v: &Json) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn assert_close(ours: &[f64], expected: &[f64], what: &str) {
    assert_eq!(ours.len(), expected.len(), "{what}: pair count");
    for (i, (a, b)) in ours.iter().zip(expected).enumerate() {
        let rel = (a - b).abs() / b.abs();
        assert!(rel <= 1e-6, "{what}: pair {i}: ours {a}, expected {b} (relative error {rel})");
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn original() -> &'static Gguf {
    static GGUF: OnceLock<Gguf> = OnceLock::new();
    GGUF.get_or_init(|| gguf_rewrite::read(&common::model_path()))
}

/// The SmolLM2 file rewritten with `extra` metadata and tensors, in a fresh folder.
fn rewritten(tag: &str, extra: &[(&str, Value)], extra_tensors: &[(&str, &QTensor)]) -> std::path::PathBuf {
    let path = gguf_rewrite::temp_dir(tag).join("model.gguf");
    gguf_rewrite::with_extras(original(), &path, extra, extra_tensors);
    path
}

fn rope_freqs(factors: &[f32]) -> QTensor {
    QTensor::quantize(&Tensor::new(factors, &Device::Cpu).unwrap(), candle_core::quantized::GgmlDType::F32).unwrap()
}

fn prompt_tokens(text: &str) -> Vec<u32> {
    let frontend = infergate_server::model::gguf::read_text_frontend(&common::model_path()).unwrap();
    frontend.tokenizer.encode(text).unwrap()
}

#[test]
fn inverse_frequencies_match_the_published_formulas() {
    for case in fixture()["cases"].as_array().unwrap() {
        let scaling = RopeScaling::from_hf_config(Some(&case["scaling"])).unwrap();
        let dims = case["dims"].as_u64().unwrap() as usize;
        let theta = case["theta"].as_f64().unwrap() as f32;
        let ours = scaling.inverse_frequencies(dims, theta).unwrap();
        assert_close(&ours, &floats(&case["inv_freq"]), case["name"].as_str().unwrap());
    }
}

#[test]
fn rope_freqs_of_ones_change_nothing() {
    let path = rewritten("rope-ones", &[], &[("rope_freqs.weight", &rope_freqs(&[1.0; 32]))]);
    let options = LoadOptions::default();
    let plain = load_file(&common::model_path(), &options, &Device::Cpu).unwrap().model;
    let ones = load_file(&path, &options, &Device::Cpu).unwrap().model;
    assert_eq!(ones.config().rope_scaling, RopeScaling::FreqFactors(vec![1.0; 32]));
    assert_eq!(ones.rope().inverse_frequencies(), plain.rope().inverse_frequencies());
    let prompt = digits_prompt();
    let (plain_tokens, plain_logits) = greedy(&plain, &prompt, 8);
    let (ones_tokens, ones_logits) = greedy(&ones, &prompt, 8);
    assert_eq!(ones_tokens, plain_tokens);
    assert_eq!(ones_logits, plain_logits);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// The divisors llama.cpp's converter stores in `rope_freqs.weight` for a fixture case on
/// SmolLM2 (theta 100000, 64 rotary dims): unscaled / scaled inverse frequency.
fn smollm2_factors(case: &Json) -> (Vec<f32>, Vec<f64>) {
    assert_eq!((case["theta"].as_f64(), case["dims"].as_u64()), (Some(100000.0), Some(64)));
    let scaled = floats(&case["inv_freq"]);
    let factors =
        scaled.iter().enumerate().map(|(i, s)| (1.0 / 100000f64.powf(2.0 * i as f64 / 64.0) / s) as f32).collect();
    (factors, scaled)
}

fn plain_logits(prompt: &[u32]) -> Vec<f32> {
    let plain = load_file(&common::model_path(), &LoadOptions::default(), &Device::Cpu).unwrap().model;
    greedy(&plain, prompt, 1).1
}

#[test]
fn llama3_rope_freqs_give_the_same_greedy_tokens_on_both_backends() {
    // Llama 3.1's parameters (factor 8, low 1, high 4, original 8192): on SmolLM2 only the
    // slowest pairs change, so the model stays confident and 8-bit rounding cannot flip it.
    let (factors, scaled) = smollm2_factors(&case("smollm2-llama3.1"));
    assert!(factors.iter().any(|f| *f > 7.9) && factors.iter().any(|f| *f > 1.1 && *f < 7.9) && factors[0] == 1.0);
    let path = rewritten("rope-llama3.1", &[], &[("rope_freqs.weight", &rope_freqs(&factors))]);
    let options = LoadOptions::default();
    let candle = load_file(&path, &options, &Device::Cpu).unwrap().model;
    assert_close(candle.rope().inverse_frequencies(), &scaled, "loaded GGUF");
    let prompt = digits_prompt();
    let plain_logits = plain_logits(&prompt);
    let (candle_tokens, candle_logits) = greedy(&candle, &prompt, 8);
    let moved = plain_logits.iter().zip(&candle_logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(moved > 1e-3, "scaled frequencies should change the logits (max change {moved})");

    let native = NativeLlama::from_llama(load_file(&path, &options, &Device::Cpu).unwrap().model, 2, 64).unwrap();
    assert_eq!(native.rope().inverse_frequencies(), candle.rope().inverse_frequencies());
    let (native_tokens, _) = greedy(&native, &prompt, 8);
    assert_eq!(native_tokens, candle_tokens, "native and candle backends disagree under llama3 scaling");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn strong_llama3_scaling_moves_both_backends_the_same_way() {
    // A short original context (2048) divides half of SmolLM2's pairs: the logits move well
    // beyond 8-bit rounding, and the native backend follows candle's scaled model, not the
    // unscaled one.
    let (factors, scaled) = smollm2_factors(&case("smollm2-llama3"));
    let path = rewritten("rope-llama3", &[], &[("rope_freqs.weight", &rope_freqs(&factors))]);
    let options = LoadOptions::default();
    // candle with host attention, as the native backend: the device-resident paged path
    // differs from both by float noise (cosine ~0.999 on this 77-token prompt, from 8-bit
    // activation rounding) of the order of this test's 0.002 margin.
    let candle = load_file(&path, &options, &Device::Cpu).unwrap().model.with_host_kv();
    assert_close(candle.rope().inverse_frequencies(), &scaled, "loaded GGUF");
    let prompt = words_prompt();
    let plain = load_file(&common::model_path(), &options, &Device::Cpu).unwrap().model.with_host_kv();
    let plain_logits = greedy(&plain, &prompt, 1).1;
    drop(plain);
    let (_, candle_logits) = greedy(&candle, &prompt, 1);
    drop(candle);
    let native = NativeLlama::from_llama(load_file(&path, &options, &Device::Cpu).unwrap().model, 2, 64).unwrap();
    let (_, native_logits) = greedy(&native, &prompt, 1);
    let (to_scaled, to_plain) = (cosine(&native_logits, &candle_logits), cosine(&native_logits, &plain_logits));
    assert!(to_scaled > 0.995 && to_scaled > to_plain + 0.002, "native vs scaled {to_scaled}, vs unscaled {to_plain}");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn gguf_linear_scaling_divides_positions() {
    let path = rewritten(
        "rope-linear",
        &[("llama.rope.scaling.type", Value::String("linear".into())), ("llama.rope.scaling.factor", Value::F32(4.0))],
        &[],
    );
    let options = LoadOptions::default();
    let linear = load_file(&path, &options, &Device::Cpu).unwrap().model;
    assert_eq!(linear.config().rope_scaling, RopeScaling::Linear { factor: 4.0 });
    let expected = RopeScaling::None.inverse_frequencies(64, 100000.0).unwrap();
    let expected: Vec<f64> = expected.iter().map(|f| f / 4.0).collect();
    assert_close(linear.rope().inverse_frequencies(), &expected, "linear factor 4");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn unsupported_gguf_scaling_types_are_refused_by_name() {
    let dir = gguf_rewrite::temp_dir("rope-yarn");
    for kind in ["yarn", "longrope"] {
        // Metadata only: the scaling is refused before any tensor is read.
        let mut metadata: Vec<(String, Value)> =
            original().metadata.iter().filter(|(k, _)| k != "llama.rope.scaling.type").cloned().collect();
        metadata.push(("llama.rope.scaling.type".into(), Value::String(kind.into())));
        metadata.push(("llama.rope.scaling.factor".into(), Value::F32(4.0)));
        let path = dir.join(format!("{kind}.gguf"));
        gguf_rewrite::write(&path, &metadata, &[]);
        let err = load_file(&path, &LoadOptions::default(), &Device::Cpu).err().expect("refused").to_string();
        assert!(err.contains(&format!("`{kind}`")), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
