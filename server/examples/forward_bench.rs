//! Times the forward pass alone (no HTTP): prefill of a prompt and decode steps at several
//! batch sizes, for each backend. `cargo run --release -p infergate-server --example forward_bench -- MODEL.gguf`

use std::time::Instant;

use infergate_server::model::gguf::load_file;
use infergate_server::model::{CausalLm, ForwardItem, LoadOptions, NativeLlama};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench(name: &str, model: &dyn CausalLm) {
    let prompt: Vec<u32> = (0..100).map(|i| 200 + (i * 37) % 5000).collect();
    for batch in [1usize, 4, 10, 32] {
        let mut kvs: Vec<_> = (0..batch).map(|_| model.new_kv(200)).collect();
        let started = Instant::now();
        {
            let mut items: Vec<ForwardItem> =
                kvs.iter_mut().map(|kv| ForwardItem { tokens: &prompt, kv, want_logits: true }).collect();
            model.forward(&mut items).expect("prefill");
        }
        let prefill = started.elapsed().as_secs_f64();
        let mut steps = Vec::new();
        let token = [42u32];
        for _ in 0..20 {
            let started = Instant::now();
            let mut items: Vec<ForwardItem> =
                kvs.iter_mut().map(|kv| ForwardItem { tokens: &token, kv, want_logits: true }).collect();
            model.forward(&mut items).expect("decode");
            steps.push(started.elapsed().as_secs_f64());
        }
        let step = median(steps);
        println!(
            "{name:>7} batch {batch:>2}: prefill {:>7.1} ms ({:>6.0} tok/s), decode step {:>6.2} ms ({:>6.0} tok/s)",
            prefill * 1e3,
            (batch * prompt.len()) as f64 / prefill,
            step * 1e3,
            batch as f64 / step
        );
    }
}

fn main() {
    let path = std::env::args().nth(1).expect("usage: forward_bench MODEL.gguf [threads] [native-only]");
    let threads: usize = std::env::args().nth(2).and_then(|t| t.parse().ok()).unwrap_or(2);
    let block_columns: usize = std::env::var(infergate_protocol::server_flags::Q8_BLOCK_COLUMNS.env)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(64);
    let device = candle_core::Device::Cpu;
    let loaded = load_file(path.as_ref(), &LoadOptions::default(), &device).expect("load");
    let native = NativeLlama::from_llama(
        load_file(path.as_ref(), &LoadOptions::default(), &device).expect("load").model,
        threads,
        block_columns,
    )
    .expect("native");
    bench("native", &native);
    if std::env::args().nth(3).as_deref() != Some("native-only") {
        bench("candle", &loaded.model);
    }
}
