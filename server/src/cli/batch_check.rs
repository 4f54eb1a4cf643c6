//! `infergate-server batch-check --model M [--device D] [--batch N] [--steps S]`: one
//! sequence's logits computed alone and as one of N sequences in the same steps, compared
//! (max abs diff, cosine, greedy agreement) and printed as one JSON object.
//!
//! Why: candle's CUDA quantized matmul picks its kernel by the rows of the step (MMVQ for up
//! to 8 rows, the tiled MMQ above; candle-core 0.11 `quantized/fast_mmvq.rs` and
//! `fast_mmq.rs`), so a decode row alone and a decode row among 9 or more take different
//! kernels and sum in different orders. scripts/gpu-check.sh runs this on the GPU; on the CPU
//! device (one kernel) the differences are float noise of the batched attention.

use std::ffi::OsString;

use clap::Parser;
use serde_json::{json, Value};

use crate::device::DeviceChoice;
use crate::model::{self, host_argmax, Backend, CausalLm, ForwardItem, KvLayout, LoadOptions, ModelDtype, ModelSource};

#[derive(Debug, Parser)]
#[command(
    name = "infergate-server batch-check",
    bin_name = "infergate-server batch-check",
    about = "Logits of one sequence alone vs inside a batch (JSON on stdout)"
)]
struct Args {
    /// The model (any `--model` source of the server).
    #[arg(long)]
    model: String,
    /// Where the model runs: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Dense weights and KV cache type (as the server's --dtype).
    #[arg(long, default_value = "auto")]
    dtype: ModelDtype,
    /// Sequences in the batched run (the compared one included); 9 or more cross candle's
    /// 8-row kernel switch on a GPU.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(2..=256))]
    batch: u16,
    /// Prompt tokens of the compared sequence (its neighbours get 1, 2, ... more).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u16).range(1..=2048))]
    prompt_tokens: u16,
    /// Decode steps compared after the prompt.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    steps: u16,
}

/// Exit status: 0 done (whatever the figures), 1 the model failed, 2 bad flags.
pub fn run(args: &[OsString]) -> i32 {
    super::run_parsed::<Args>("batch-check", args, |args| {
        let report = batch_check(args)?;
        println!("{report}");
        Ok(())
    })
}

/// A prompt of `len` ids in [3, vocab): a fixed walk, different per `seed`.
fn prompt(len: usize, seed: u32, vocab: usize) -> Vec<u32> {
    let span = vocab.saturating_sub(3).max(1) as u64;
    (0..len as u64).map(|i| 3 + ((i * 7919 + u64::from(seed) * 104_729 + 17) % span) as u32).collect()
}

/// How one logits row of the batched run compares with the same row computed alone.
fn compare(alone: &[f32], batched: &[f32]) -> Value {
    let dot: f64 = alone.iter().zip(batched).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    let max_abs_diff = alone.iter().zip(batched).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    json!({
        "max_abs_diff": max_abs_diff,
        "cosine": dot / (norm(alone) * norm(batched)),
        "same_argmax": host_argmax(alone) == host_argmax(batched),
    })
}

fn forward(model: &dyn CausalLm, items: &mut [ForwardItem<'_>]) -> Result<Vec<Vec<f32>>, String> {
    model.forward(items).map_err(|e| e.to_string())
}

fn batch_check(args: &Args) -> Result<Value, String> {
    let source = ModelSource::parse(&args.model).map_err(|e| e.to_string())?;
    let options = LoadOptions {
        backend: Backend::Candle,
        device: args.device,
        dtype: args.dtype,
        threads: 1,
        q8_block_columns: 64,
        ..Default::default()
    };
    let mut loaded = model::load(&source, &options).map_err(|e| e.to_string())?;
    let (batch, steps) = (usize::from(args.batch), usize::from(args.steps));
    let vocab = loaded.model.info().vocab_size;
    let prompts: Vec<Vec<u32>> =
        (0..batch).map(|i| prompt(usize::from(args.prompt_tokens) + i, i as u32, vocab)).collect();
    // Room for the alone run and the batched one at once, nothing more: the default layout
    // would take 8 GiB of a 7B-shaped model's VRAM.
    let tokens: usize = prompts.iter().map(|p| p.len() + steps).sum::<usize>() + prompts[0].len() + steps;
    let block_tokens = model::KV_BLOCK_TOKENS;
    let blocks = tokens.div_ceil(block_tokens) + 2 * batch;
    loaded.model.configure_kv(KvLayout { block_tokens, blocks }).map_err(|e| e.to_string())?;
    let model = loaded.model.as_ref();

    // Alone: the prompt, then `steps` greedy tokens.
    let mut alone_kv = model.new_kv(prompts[0].len() + steps);
    let mut alone_rows = Vec::with_capacity(steps + 1);
    let mut chunk = prompts[0].clone();
    for _ in 0..=steps {
        let row = forward(model, &mut [ForwardItem { tokens: &chunk, kv: &mut alone_kv, want_logits: true }])?
            .pop()
            .ok_or("the model returned no logits")?;
        chunk = vec![host_argmax(&row)];
        alone_rows.push(row);
    }

    // Batched: every prompt in one step, then decode steps of `batch` rows; the compared
    // sequence is fed the alone run's tokens so that each row stays comparable.
    let mut kvs: Vec<_> = prompts.iter().map(|p| model.new_kv(p.len() + steps)).collect();
    let mut chunks = prompts.clone();
    let mut compared = Vec::with_capacity(steps + 1);
    for alone in &alone_rows {
        let mut items: Vec<ForwardItem> = chunks
            .iter()
            .zip(kvs.iter_mut())
            .map(|(tokens, kv)| ForwardItem { tokens, kv, want_logits: true })
            .collect();
        let rows = forward(model, &mut items)?;
        if rows.len() != batch {
            return Err(format!("{} logits rows for {batch} sequences", rows.len()));
        }
        compared.push(compare(alone, &rows[0]));
        chunks = rows.iter().map(|row| vec![host_argmax(row)]).collect();
        chunks[0] = vec![host_argmax(alone)];
    }
    let decode = &compared[1..];
    let field = |v: &Value, name: &str| v[name].as_f64().unwrap_or(f64::NAN);
    let max_abs_diff = decode.iter().map(|v| field(v, "max_abs_diff")).fold(0.0, f64::max);
    let min_cosine = decode.iter().map(|v| field(v, "cosine")).fold(1.0, f64::min);
    let greedy_equal = decode.iter().filter(|v| v["same_argmax"] == true).count();
    Ok(json!({
        "device": format!("{:?}", loaded.device.location()),
        "batch": batch,
        "prompt_tokens": prompts[0].len(),
        "decode_rows_per_step": {"alone": 1, "batched": batch},
        "prefill": compared[0],
        "decode_steps": steps,
        "decode_max_abs_diff": max_abs_diff,
        "decode_min_cosine": min_cosine,
        "decode_greedy_equal": greedy_equal,
        "decode": decode,
    }))
}
