//! The native CPU kernels and candle compute the same model: same next-token choice and
//! nearly the same logits, alone and for sequences batched at different positions.

mod common;

use infergate_server::model::gguf::load_file;
use infergate_server::model::{CausalLm, ForwardItem, LoadOptions, NativeLlama};

/// Requantizing Q4_1 weights to 8 bits moves low-probability logits a little (cosine ~0.99);
/// a wrong rotary layout or attention mask drops it far lower and changes the argmax.
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap()
}

#[test]
fn native_and_candle_backends_agree() {
    let device = candle_core::Device::Cpu;
    let options = LoadOptions::default();
    let candle = load_file(&common::model_path(), &options, &device).unwrap();
    let native =
        NativeLlama::from_llama(load_file(&common::model_path(), &options, &device).unwrap().model, 2, 64).unwrap();
    let candle = candle.model;
    let prompts: [&[u32]; 3] =
        [&[504, 3575, 282, 4649, 314], &[19556, 905], &[1, 4093, 198, 6004, 2, 198, 1, 520, 9531, 198]];
    let mut candle_kv: Vec<_> = prompts.iter().map(|p| candle.new_kv(p.len() + 1)).collect();
    let mut native_kv: Vec<_> = prompts.iter().map(|p| native.new_kv(p.len() + 1)).collect();
    let run = |model: &dyn CausalLm, kv: &mut Vec<infergate_server::model::SequenceKv>| {
        let mut items: Vec<ForwardItem> =
            prompts.iter().zip(kv.iter_mut()).map(|(p, kv)| ForwardItem { tokens: p, kv, want_logits: true }).collect();
        model.forward(&mut items).unwrap()
    };
    let from_candle = run(&candle, &mut candle_kv);
    let from_native = run(&native, &mut native_kv);
    for (i, (c, n)) in from_candle.iter().zip(&from_native).enumerate() {
        assert_eq!(argmax(c), argmax(n), "prompt {i}: next token differs");
        assert!(cosine(c, n) > 0.98, "prompt {i}: logits diverge (cosine {})", cosine(c, n));
    }
    // One decode step for all three at their different positions.
    let next: Vec<u32> = from_native.iter().map(|l| argmax(l) as u32).collect();
    let step = |model: &dyn CausalLm, kv: &mut Vec<infergate_server::model::SequenceKv>| {
        let mut items: Vec<ForwardItem> = next
            .iter()
            .zip(kv.iter_mut())
            .map(|(t, kv)| ForwardItem { tokens: std::slice::from_ref(t), kv, want_logits: true })
            .collect();
        model.forward(&mut items).unwrap()
    };
    let c2 = step(&candle, &mut candle_kv);
    let n2 = step(&native, &mut native_kv);
    for (i, (c, n)) in c2.iter().zip(&n2).enumerate() {
        assert_eq!(argmax(c), argmax(n), "decode {i}: next token differs");
        assert!(cosine(c, n) > 0.98, "decode {i}: cosine {}", cosine(c, n));
    }
}
