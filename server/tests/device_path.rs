//! The device-resident path (paged KV, RoPE and attention as tensor ops) on candle's CPU
//! device, against the native backend and against candle's host-attention path on the
//! same weights: greedy tokens, logits, mixed lengths in one step, block boundaries,
//! freed-block reuse, batch invariance and running out of blocks.

mod common;

use candle_core::Device;
use infergate_server::model::gguf::load_file;
use infergate_server::model::llama::KvMode;
use infergate_server::model::{
    CausalLm, ForwardItem, KvLayout, Llama, LoadOptions, NativeLlama, RowRequest, SampleDraw, SequenceKv,
};

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn argmax(v: &[f32]) -> u32 {
    infergate_server::model::host_argmax(v)
}

/// The two largest logits, for failure messages.
fn top2(v: &[f32]) -> [(u32, f32); 2] {
    let first = argmax(v);
    let second = (0..v.len() as u32).filter(|i| *i != first).max_by(|a, b| v[*a as usize].total_cmp(&v[*b as usize]));
    let second = second.unwrap_or(first);
    [(first, v[first as usize]), (second, v[second as usize])]
}

/// Whether two logits rows differ only in the order of the same two best tokens, which the
/// reference has within 0.2 of each other: float noise between backends can swap such a
/// pair (seen on a synthetic prompt: 25.86 vs 25.79), while a real bug picks another token.
fn near_tie(got: &[f32], reference: &[f32]) -> bool {
    let [(a, _), (b, _)] = top2(got);
    let [(c, x), (d, y)] = top2(reference);
    a == d && b == c && x - y < 0.2
}

/// The agreement between the three paths over every compared row, printed by the test so
/// that the bounds it asserts can be read against what it measured.
#[derive(Default)]
struct Figures {
    rows: usize,
    device_host_cosine_min: Option<f32>,
    device_host_max_abs_diff: f32,
    device_native_cosine_min: Option<f32>,
    host_native_cosine_min: Option<f32>,
    device_native_greedy_equal: usize,
    device_host_greedy_equal: usize,
}

impl Figures {
    fn add(&mut self, device: &[f32], host: &[f32], native: &[f32]) {
        let lower = |slot: &mut Option<f32>, value: f32| *slot = Some(slot.map_or(value, |m| m.min(value)));
        self.rows += 1;
        lower(&mut self.device_host_cosine_min, cosine(device, host));
        lower(&mut self.device_native_cosine_min, cosine(device, native));
        lower(&mut self.host_native_cosine_min, cosine(host, native));
        self.device_host_max_abs_diff = self.device_host_max_abs_diff.max(max_abs_diff(device, host));
        self.device_native_greedy_equal += usize::from(argmax(device) == argmax(native));
        self.device_host_greedy_equal += usize::from(argmax(device) == argmax(host));
    }
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: Option<f32>| v.map_or("-".to_string(), |v| format!("{v:.6}"));
        write!(
            f,
            "device path figures over {} rows: vs host attention min cosine {}, max abs diff {:.2e}, greedy equal {}; \
             vs native min cosine {}, greedy equal {}; host attention vs native min cosine {}",
            self.rows,
            show(self.device_host_cosine_min),
            self.device_host_max_abs_diff,
            self.device_host_greedy_equal,
            show(self.device_native_cosine_min),
            self.device_native_greedy_equal,
            show(self.host_native_cosine_min),
        )
    }
}

fn candle_model() -> Llama {
    load_file(&common::model_path(), &LoadOptions::default(), &Device::Cpu).unwrap().model
}

/// One step: each sequence gets its chunk; returns the logits after each chunk.
fn step(model: &dyn CausalLm, kvs: &mut [SequenceKv], chunks: &[Vec<u32>]) -> Vec<Vec<f32>> {
    let mut items: Vec<ForwardItem> =
        chunks.iter().zip(kvs.iter_mut()).map(|(tokens, kv)| ForwardItem { tokens, kv, want_logits: true }).collect();
    model.forward(&mut items).unwrap()
}

/// Prompts of 5, 2, 14 and 21 tokens: the last two cross the 16-token block boundary while
/// decoding and during the prompt.
fn prompts() -> Vec<Vec<u32>> {
    let long: Vec<u32> = (0..21).map(|i| 300 + 37 * i).collect();
    let medium: Vec<u32> = (0..14).map(|i| 1000 + 11 * i).collect();
    vec![vec![504, 3575, 282, 4649, 314], vec![19556, 905], medium, long]
}

/// Prompts batched in one step, then decode steps batched, every backend fed the native
/// backend's greedy tokens: the device path picks the same tokens as the native one, and
/// its logits match candle's host attention on the same weights.
#[test]
fn device_path_matches_native_and_host_attention_for_mixed_lengths() {
    let device_path = candle_model();
    assert_eq!(device_path.kv_mode(), KvMode::Paged);
    let host_path = candle_model().with_host_kv();
    let native = NativeLlama::from_llama(candle_model(), 2, 64).unwrap();
    let prompts = prompts();
    let mut device_kv: Vec<_> = prompts.iter().map(|p| device_path.new_kv(p.len())).collect();
    let mut host_kv: Vec<_> = prompts.iter().map(|p| host_path.new_kv(p.len())).collect();
    let mut native_kv: Vec<_> = prompts.iter().map(|p| native.new_kv(p.len())).collect();
    let mut chunks = prompts.clone();
    let (mut exact, mut compared) = (0, 0);
    let mut figures = Figures::default();
    for round in 0..4 {
        let from_device = step(&device_path, &mut device_kv, &chunks);
        let from_host = step(&host_path, &mut host_kv, &chunks);
        let from_native = step(&native, &mut native_kv, &chunks);
        for i in 0..chunks.len() {
            let (d, h, n) = (&from_device[i], &from_host[i], &from_native[i]);
            figures.add(d, h, n);
            let tops = format!(
                "device {:?}, host {:?}, native {:?}, cosines {} {}",
                top2(d),
                top2(h),
                top2(n),
                cosine(d, h),
                cosine(d, n)
            );
            for (name, reference) in [("native", n), ("host attention", h)] {
                if argmax(d) == argmax(reference) {
                    exact += 1;
                } else {
                    assert!(
                        near_tie(d, reference),
                        "round {round}, sequence {i}: greedy token differs from {name}: {tops}"
                    );
                }
                compared += 1;
            }
            // Same Q4_1 weights, same candle matmuls: measured min 0.99911 (max abs diff 0.91,
            // sequence 1 of 2 tokens bit-exact). The rest is float-order noise in attention
            // that the q8_1 activations of the next quantized matmuls round differently; on
            // dense weights the two agree to 1e-6 (on_dense_weights_... below).
            assert!(cosine(d, h) > 0.999, "round {round}, sequence {i}: cosine {} vs host attention", cosine(d, h));
            // The native backend requantizes the Q4_1 weights to its own 8-bit blocks of 64
            // columns (and quantizes activations to 8 bits): measured min 0.99124 vs the device
            // path, and 0.98723 between candle's host attention and native, so the gap is the
            // native backend's, not the device path's. The 0.999 vs native holds where
            // the requantization costs only 8-bit rounding (dense weights, test below); here
            // 0.985 keeps a 1.7x margin, and a wrong mask or rotation is far lower.
            assert!(cosine(d, n) > 0.985, "round {round}, sequence {i}: cosine {} vs native", cosine(d, n));
        }
        chunks = from_native.iter().map(|l| vec![argmax(l)]).collect();
    }
    eprintln!("{figures}");
    // Near ties are the exception: almost every choice is exactly the same (measured: 31 of
    // 32, the one swap a near tie with host attention, 25.86 vs 25.79; native 16 of 16).
    assert!(exact + 2 >= compared, "only {exact} of {compared} greedy choices equal");
    assert_eq!(device_kv[3].len, 24);
    let (used, _) = device_path.kv_blocks().unwrap();
    // 5+3, 2+3, 14+3 and 21+3 tokens: 1 + 1 + 2 + 2 blocks of 16.
    assert_eq!(used, 6);
    drop(device_kv);
    assert_eq!(device_path.kv_blocks().unwrap().0, 0, "dropping the sequences frees their blocks");
}

/// A sequence alone and the same sequence batched with others (prefill beside decode) get
/// the same logits up to float noise.
#[test]
fn device_path_is_batch_invariant() {
    let model = candle_model();
    let prompts = prompts();
    let mut alone_kv = vec![model.new_kv(0)];
    let alone = step(&model, &mut alone_kv, &prompts[3..4]).remove(0);
    let alone_next = step(&model, &mut alone_kv, &[vec![argmax(&alone)]]).remove(0);
    // The others' prompts first, so in the mixed step they decode while sequence 3 prefills.
    let mut kvs: Vec<_> = (0..4).map(|_| model.new_kv(0)).collect();
    let firsts = step(&model, &mut kvs[..3], &prompts[..3]);
    let mut chunks: Vec<Vec<u32>> = firsts.iter().map(|l| vec![argmax(l)]).collect();
    chunks.push(prompts[3].clone());
    let batched = step(&model, &mut kvs, &chunks).remove(3);
    assert!(max_abs_diff(&alone, &batched) < 1e-3, "prefill: max diff {}", max_abs_diff(&alone, &batched));
    assert_eq!(argmax(&alone), argmax(&batched));
    let chunks: Vec<Vec<u32>> = vec![vec![1], vec![2], vec![3], vec![argmax(&alone)]];
    let batched_next = step(&model, &mut kvs, &chunks).remove(3);
    eprintln!(
        "batch invariance: prefill max abs diff {:.2e}, decode max abs diff {:.2e}",
        max_abs_diff(&alone, &batched),
        max_abs_diff(&alone_next, &batched_next)
    );
    assert!(
        max_abs_diff(&alone_next, &batched_next) < 1e-3,
        "decode: max diff {}",
        max_abs_diff(&alone_next, &batched_next)
    );
}

/// Decode rows past 8 in one step (candle's CUDA quantized matmul leaves its matrix-vector
/// kernel above 8 rows; the CPU device has one kernel, so here this pins the batched
/// attention and KV paths): a sequence decoded alone and as one of 10 decode rows gets the
/// same logits up to float noise, for several steps.
#[test]
fn device_path_decode_is_batch_invariant_past_eight_rows() {
    let model = candle_model();
    let prompt = &prompts()[3];
    let mut alone = vec![model.new_kv(0)];
    let mut token = argmax(&step(&model, &mut alone, std::slice::from_ref(prompt)).remove(0));
    // Nine neighbours with prompts of their own, then the same sequence as the tenth.
    let mut kvs: Vec<_> = (0..10).map(|_| model.new_kv(0)).collect();
    let mut chunks: Vec<Vec<u32>> = (0..9u32).map(|n| (0..3 + n).map(|t| 700 + 29 * t + n).collect()).collect();
    chunks.push(prompt.clone());
    let firsts = step(&model, &mut kvs, &chunks);
    let mut batched_token = argmax(&firsts[9]);
    let mut neighbours: Vec<u32> = firsts[..9].iter().map(|l| argmax(l)).collect();
    let mut worst: f32 = 0.0;
    for decode in 0..3 {
        assert_eq!(token, batched_token, "decode {decode}: greedy token alone vs batched");
        let alone_logits = step(&model, &mut alone, &[vec![token]]).remove(0);
        let mut chunks: Vec<Vec<u32>> = neighbours.iter().map(|t| vec![*t]).collect();
        chunks.push(vec![batched_token]);
        let rows = step(&model, &mut kvs, &chunks);
        let diff = max_abs_diff(&alone_logits, &rows[9]);
        assert!(diff < 1e-3, "decode {decode}: max abs diff {diff} alone vs in a batch of 10");
        worst = worst.max(diff);
        token = argmax(&alone_logits);
        batched_token = argmax(&rows[9]);
        neighbours = rows[..9].iter().map(|l| argmax(l)).collect();
    }
    eprintln!("batch of 10 decode rows: max abs diff {worst:.2e} over 3 steps");
}

/// `infergate-server batch-check` (what scripts/gpu-check.sh runs on the GPU) on the CPU
/// device: one JSON object whose decode rows, alone vs among 10, agree to float noise.
#[test]
fn the_batch_check_subcommand_reports_alone_vs_batched_figures() {
    let model = common::model_path();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_infergate-server"))
        .args(["batch-check", "--device", "cpu", "--batch", "10", "--prompt-tokens", "12", "--steps", "3", "--model"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("batch-check on the CPU device: {report}");
    assert_eq!(report["batch"], 10);
    assert_eq!(report["decode"].as_array().map(Vec::len), Some(3));
    assert_eq!(report["decode_greedy_equal"], 3, "{report}");
    let diff = report["decode_max_abs_diff"].as_f64().unwrap();
    assert!(diff < 1e-3, "decode max abs diff {diff}: {report}");
    assert!(report["prefill"]["cosine"].as_f64().unwrap() > 0.9999, "{report}");
    // Bad flags are refused by clap (exit 2), not run.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_infergate-server"))
        .args(["batch-check", "--batch", "1", "--model"])
        .arg(&model)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
}

/// With room for one long sequence only, a finished sequence's blocks go to the next one,
/// whose logits still match the host-attention reference.
#[test]
fn freed_blocks_are_reused_and_give_the_same_logits() {
    let mut model = candle_model();
    model.configure_kv(KvLayout { block_tokens: 16, blocks: 2 }).unwrap();
    let host = candle_model().with_host_kv();
    let prompts = prompts();
    let mut first = vec![model.new_kv(0)];
    step(&model, &mut first, &prompts[3..4]);
    assert_eq!(model.kv_blocks(), Some((2, 2)));
    // No block left: a second sequence fails cleanly and keeps nothing once dropped.
    let mut blocked = vec![model.new_kv(0)];
    let mut items = [ForwardItem { tokens: &prompts[0], kv: &mut blocked[0], want_logits: true }];
    let err = model.forward(&mut items).unwrap_err();
    assert!(err.to_string().contains("out of KV cache blocks"), "{err}");
    drop(blocked);
    drop(first);
    assert_eq!(model.kv_blocks(), Some((0, 2)));
    // The reused blocks still hold the first sequence's rows: the new one must not see them.
    let mut second = vec![model.new_kv(0)];
    let mut reference = vec![host.new_kv(0)];
    let got = step(&model, &mut second, &prompts[2..3]).remove(0);
    let want = step(&host, &mut reference, &prompts[2..3]).remove(0);
    assert!(cosine(&got, &want) > 0.999, "cosine {}", cosine(&got, &want));
    let next = vec![vec![argmax(&want)]];
    let got = step(&model, &mut second, &next).remove(0);
    let want = step(&host, &mut reference, &next).remove(0);
    assert_eq!(argmax(&got), argmax(&want));
    assert!(cosine(&got, &want) > 0.999, "decode cosine {}", cosine(&got, &want));
}

/// forward_step returns the device argmax of every greedy item and logits only where asked.
#[test]
fn forward_step_returns_greedy_tokens_and_only_the_asked_logits() {
    let model = candle_model();
    let prompts = prompts();
    let mut a = vec![model.new_kv(0), model.new_kv(0)];
    let logits = step(&model, &mut a, &prompts[..2]);
    let mut b = [model.new_kv(0), model.new_kv(0)];
    let [b0, b1] = &mut b;
    let mut items = [
        ForwardItem { tokens: &prompts[0], kv: b0, want_logits: true },
        ForwardItem { tokens: &prompts[1], kv: b1, want_logits: true },
    ];
    assert!(model.samples_on_device());
    let out = model.forward_step(&mut items, &[RowRequest::Greedy, RowRequest::Logits]).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].token, argmax(&logits[0]));
    assert_eq!(out[1].token, argmax(&logits[1]));
    assert!(out[0].logits.is_none());
    let row = out[1].logits.as_ref().unwrap();
    assert!(max_abs_diff(row, &logits[1]) < 1e-4);
}

/// A tiny random bf16 checkpoint directory (config.json, model.safetensors, a word-level
/// tokenizer.json) for the `--dtype` tests.
fn write_bf16_checkpoint(dir: &std::path::Path) {
    use candle_core::{DType, Tensor};
    let (hidden, kv, ffn, vocab) = (64usize, 32usize, 96usize, 128usize);
    let mut tensors = std::collections::HashMap::new();
    let random =
        |shape: (usize, usize)| Tensor::randn(0f32, 0.08, shape, &Device::Cpu).unwrap().to_dtype(DType::BF16).unwrap();
    tensors.insert("model.embed_tokens.weight".to_string(), random((vocab, hidden)));
    tensors.insert("lm_head.weight".to_string(), random((vocab, hidden)));
    for i in 0..2 {
        let p = format!("model.layers.{i}.");
        for (name, shape) in [
            ("self_attn.q_proj.weight", (hidden, hidden)),
            ("self_attn.k_proj.weight", (kv, hidden)),
            ("self_attn.v_proj.weight", (kv, hidden)),
            ("self_attn.o_proj.weight", (hidden, hidden)),
            ("mlp.gate_proj.weight", (ffn, hidden)),
            ("mlp.up_proj.weight", (ffn, hidden)),
            ("mlp.down_proj.weight", (hidden, ffn)),
        ] {
            tensors.insert(format!("{p}{name}"), random(shape));
        }
        for norm in ["input_layernorm.weight", "post_attention_layernorm.weight"] {
            tensors.insert(format!("{p}{norm}"), Tensor::ones(hidden, DType::BF16, &Device::Cpu).unwrap());
        }
    }
    tensors.insert("model.norm.weight".into(), Tensor::ones(hidden, DType::BF16, &Device::Cpu).unwrap());
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let config = serde_json::json!({
        "model_type": "mistral", "hidden_size": hidden, "intermediate_size": ffn, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": vocab, "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let vocab_map: serde_json::Map<String, serde_json::Value> =
        (0..vocab).map(|i| (format!("w{i}"), serde_json::Value::from(i))).collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab_map, "unk_token": "w0"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
}

/// `--dtype bf16` keeps a bf16 checkpoint's matrices and the KV cache in bf16 and still
/// computes the f32 model's logits closely; `auto` on the CPU device computes in f32.
#[test]
fn bf16_checkpoints_stay_bf16_with_dtype_bf16() {
    use infergate_server::model::safetensors::load_dir;
    use infergate_server::model::ModelDtype;
    let dir = std::env::temp_dir().join(format!("infergate-bf16-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_bf16_checkpoint(&dir);
    let load = |dtype| {
        let options = LoadOptions { dtype, ..Default::default() };
        load_dir(&dir, &options, &Device::Cpu).unwrap().model.with_kv_dtype(dtype.kv_cache(&Device::Cpu)).unwrap()
    };
    let half = load(ModelDtype::Bf16);
    let full = load(ModelDtype::Auto);
    assert_eq!(half.dense_weight_dtype(), Some(candle_core::DType::BF16));
    assert_eq!(half.kv_dtype(), candle_core::DType::BF16);
    assert_eq!(full.dense_weight_dtype(), Some(candle_core::DType::F32));
    assert_eq!(full.kv_dtype(), candle_core::DType::F32);
    let prompt: Vec<u32> = (3..40).collect();
    let mut half_kv = vec![half.new_kv(0)];
    let mut full_kv = vec![full.new_kv(0)];
    let a = step(&half, &mut half_kv, std::slice::from_ref(&prompt)).remove(0);
    let b = step(&full, &mut full_kv, std::slice::from_ref(&prompt)).remove(0);
    assert!(cosine(&a, &b) > 0.99, "bf16 vs f32 cosine {}", cosine(&a, &b));
    let a = step(&half, &mut half_kv, &[vec![7]]).remove(0);
    let b = step(&full, &mut full_kv, &[vec![7]]).remove(0);
    assert!(cosine(&a, &b) > 0.99, "decode: bf16 vs f32 cosine {}", cosine(&a, &b));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Where the device path's distance from the other paths comes from, on dense f32 weights
/// (the random checkpoint above, computed in f32): with no quantized matmul in between, the
/// device path and candle's host attention agree to float noise, so the gap of the Q4_1 test
/// above (max abs diff up to ~0.9) is float-order noise in attention amplified by the 8-bit
/// activations of candle's quantized matmuls (q8_1 rounding flips). The native backend
/// requantizes the weights to its 8-bit blocks and quantizes activations to 8 bits, so it
/// sits as far from the f32 result as candle's own `--quantize q8_0` does.
#[test]
fn on_dense_weights_the_device_path_matches_host_attention_to_float_noise() {
    use infergate_server::model::safetensors::load_dir;
    let dir = std::env::temp_dir().join(format!("infergate-dense-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_bf16_checkpoint(&dir);
    let load = |quantize| {
        let options = LoadOptions { quantize, ..Default::default() };
        load_dir(&dir, &options, &Device::Cpu).unwrap().model
    };
    let device_path = load(None);
    let host_path = load(None).with_host_kv();
    let q8_0 = load(Some(candle_core::quantized::GgmlDType::Q8_0));
    let native = NativeLlama::from_llama(load(None), 2, 64).unwrap();
    let models: [&dyn CausalLm; 4] = [&device_path, &host_path, &q8_0, &native];
    let prompts: Vec<Vec<u32>> = prompts().into_iter().map(|p| p.into_iter().map(|t| t % 128).collect()).collect();
    let mut kvs: Vec<Vec<SequenceKv>> = models.iter().map(|m| prompts.iter().map(|_| m.new_kv(0)).collect()).collect();
    let mut chunks = prompts.clone();
    let (mut host_diff, mut host_cosine, mut q8_cosine, mut native_cosine) = (0f32, 1f32, 1f32, 1f32);
    for _round in 0..4 {
        let rows: Vec<Vec<Vec<f32>>> = models.iter().zip(kvs.iter_mut()).map(|(m, kv)| step(*m, kv, &chunks)).collect();
        let [device, host, q8, native] = &rows[..] else { panic!("four models, {} rows", rows.len()) };
        for (i, d) in device.iter().enumerate() {
            host_diff = host_diff.max(max_abs_diff(d, &host[i]));
            host_cosine = host_cosine.min(cosine(d, &host[i]));
            q8_cosine = q8_cosine.min(cosine(d, &q8[i]));
            native_cosine = native_cosine.min(cosine(d, &native[i]));
        }
        chunks = rows[0].iter().map(|l| vec![argmax(l)]).collect();
    }
    eprintln!(
        "dense f32 weights: device path vs host attention max abs diff {host_diff:.2e}, min cosine {host_cosine:.7}; \
         vs candle q8_0 min cosine {q8_cosine:.6}; vs native min cosine {native_cosine:.6}"
    );
    // Measured over two runs (the weights are random per run): max abs diff 8.9e-7 and 9.5e-7,
    // cosine 0.9999998; candle q8_0 0.99968 and 0.99962, native 0.99958 and 0.99957.
    assert!(host_diff < 1e-4, "device path vs host attention: max abs diff {host_diff}");
    assert!(host_cosine > 0.99999, "device path vs host attention: cosine {host_cosine}");
    assert!(q8_cosine > 0.999, "candle q8_0 vs f32: cosine {q8_cosine}");
    assert!(native_cosine > 0.999, "native (8-bit) vs f32 device path: cosine {native_cosine}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The logits rows after each of the test prompts, from the device path.
fn prompt_logits(model: &Llama) -> Vec<Vec<f32>> {
    let prompts = prompts();
    let mut kvs: Vec<_> = prompts.iter().map(|_| model.new_kv(0)).collect();
    step(model, &mut kvs, &prompts)
}

/// Draws with `draw`'s knobs, one per uniform, through forward_step's sampler on the CPU device.
fn device_draws(logits: &[f32], knobs: SampleDraw, uniforms: &[f32]) -> Vec<u32> {
    use candle_core::Tensor;
    let rows = uniforms.len();
    let repeated: Vec<f32> = (0..rows).flat_map(|_| logits.iter().copied()).collect();
    let tensor = Tensor::from_vec(repeated, (rows, logits.len()), &Device::Cpu).unwrap();
    let requests: Vec<RowRequest> =
        uniforms.iter().map(|&uniform| RowRequest::Sample(SampleDraw { uniform, ..knobs })).collect();
    infergate_server::model::device_sampling::choose_tokens(&tensor, &requests).unwrap()
}

fn uniforms(count: usize, seed: u64) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..count).map(|_| rng.random::<f32>()).collect()
}

/// The tokens the host keeps for top-k then top-p (by probability, highest first), with
/// `slack` of extra mass so a token at the nucleus edge counts as inside.
fn host_nucleus(logits: &[f32], temperature: f32, top_k: usize, top_p: f32, slack: f32) -> Vec<u32> {
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
    if top_k > 0 {
        order.truncate(top_k);
    }
    let max = logits[order[0] as usize] / temperature;
    let weights: Vec<f64> = order.iter().map(|t| ((logits[*t as usize] / temperature - max) as f64).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut mass = 0.0;
    let mut kept = Vec::new();
    for (token, w) in order.iter().zip(&weights) {
        kept.push(*token);
        mass += w / total;
        if mass >= (top_p + slack).min(1.0) as f64 {
            break;
        }
    }
    kept
}

/// The probability of the most likely of `kept` tokens, renormalized over them.
fn top_share(logits: &[f32], temperature: f32, kept: &[u32]) -> f64 {
    let weights: Vec<f64> = kept.iter().map(|t| ((logits[*t as usize] / temperature) as f64).exp()).collect();
    weights.iter().cloned().fold(0.0, f64::max) / weights.iter().sum::<f64>()
}

/// On the model's real logits (49k vocabulary): top_k 1 and a temperature near 0 give the
/// greedy token, and every draw lies inside the top-k / top-p set the host computes.
#[test]
fn device_sampling_stays_inside_the_host_nucleus_and_degenerates_to_greedy() {
    let model = candle_model();
    let rows = prompt_logits(&model);
    let draws = uniforms(32, 5);
    for (i, row) in rows.iter().enumerate() {
        let greedy = argmax(row);
        let knobs = |temperature, top_k, top_p| SampleDraw { temperature, top_k, top_p, uniform: 0.0 };
        assert!(device_draws(row, knobs(1.0, 1, 1.0), &draws).iter().all(|t| *t == greedy), "row {i}: top_k 1");
        let [(_, first), (_, second)] = top2(row);
        if first - second > 0.05 {
            // exp(-0.05 / 0.001) = e^-50 for the runner-up: a token that is not greedy is a bug.
            let cold = device_draws(row, knobs(0.001, 0, 1.0), &draws);
            assert!(cold.iter().all(|t| *t == greedy), "row {i}: temperature 0.001 gave {cold:?}, greedy {greedy}");
        }
        for (temperature, top_k, top_p) in [(1.0, 5, 1.0), (0.8, 40, 1.0), (1.0, 0, 0.9), (1.3, 50, 0.8)] {
            let inside = host_nucleus(row, temperature, top_k, top_p, 1e-4);
            let got = device_draws(row, knobs(temperature, top_k, top_p), &draws);
            for t in &got {
                assert!(inside.contains(t), "row {i}, T {temperature} k {top_k} p {top_p}: {t} not in {inside:?}");
            }
            // With no token above half the kept mass, 32 equal draws have odds below 2^-31.
            if top_share(row, temperature, &inside) < 0.5 {
                let distinct: std::collections::HashSet<_> = got.iter().collect();
                assert!(distinct.len() > 1, "row {i}: 32 draws over {} tokens all gave {:?}", inside.len(), got[0]);
            }
        }
    }
}

/// Device and host samplers against the exact distribution: for a small row with
/// temperature, top-k and top-p, 20000 seeded draws from each land on every token with its
/// probability within 5 standard errors. (Not token for token: the two walk the CDF in
/// different orders.)
#[test]
fn device_and_host_samplers_draw_from_the_same_distribution() {
    use infergate_server::engine::sampling::{Sampler, SamplingParams};
    let logits = [2.0f32, 1.5, 0.2, 1.9, -1.0, 0.7, 1.0, -3.0];
    let (temperature, top_k, top_p) = (0.7f32, 5usize, 0.9f32);
    let nucleus = host_nucleus(&logits, temperature, top_k, top_p, 0.0);
    let weights: Vec<f64> = nucleus.iter().map(|t| ((logits[*t as usize] / temperature) as f64).exp()).collect();
    let total: f64 = weights.iter().sum();
    const DRAWS: usize = 20_000;
    let device = device_draws(&logits, SampleDraw { temperature, top_k, top_p, uniform: 0.0 }, &uniforms(DRAWS, 11));
    let mut sampler = Sampler::new(SamplingParams { temperature, top_p, top_k, seed: Some(11) });
    let host: Vec<u32> = (0..DRAWS).map(|_| sampler.sample(&logits)).collect();
    for (name, tokens) in [("device", &device), ("host", &host)] {
        for token in 0..logits.len() as u32 {
            let p = nucleus.iter().position(|t| *t == token).map_or(0.0, |i| weights[i] / total);
            let seen = tokens.iter().filter(|t| **t == token).count() as f64 / DRAWS as f64;
            let error = (p * (1.0 - p) / DRAWS as f64).sqrt();
            if p == 0.0 {
                assert_eq!(seen, 0.0, "{name}: token {token} is outside the nucleus {nucleus:?}");
            } else {
                assert!((seen - p).abs() < 5.0 * error, "{name}: token {token} drawn {seen}, probability {p}");
            }
        }
    }
}

/// A seeded request's row requests carry the same uniforms each time, so the device draws
/// repeat exactly; another seed draws differently.
#[test]
fn seeded_device_sampling_reproduces_itself() {
    use infergate_server::engine::sampling::{Sampler, SamplingParams};
    let model = candle_model();
    let rows = prompt_logits(&model);
    let run = |seed| {
        let mut sampler = Sampler::new(SamplingParams { temperature: 1.0, top_p: 0.95, top_k: 50, seed: Some(seed) });
        let requests: Vec<RowRequest> = (0..32).map(|_| sampler.row_request(true)).collect();
        let mut tokens = Vec::new();
        for request in &requests {
            let RowRequest::Sample(draw) = request else { panic!("not a device draw: {request:?}") };
            tokens.extend(device_draws(&rows[0], *draw, &[draw.uniform]));
        }
        tokens
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
    let mut greedy = Sampler::new(SamplingParams { temperature: 0.0, top_p: 1.0, top_k: 0, seed: Some(1) });
    assert_eq!(greedy.row_request(true), RowRequest::Greedy);
    let mut host = Sampler::new(SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 0, seed: Some(1) });
    assert_eq!(host.row_request(false), RowRequest::Logits, "a host-sampling backend is asked for the row");
}

/// The server on the candle path (device KV, forward_step, device argmax): greedy completions
/// are the tokens a plain forward + host argmax loop picks on the same model, and a seeded
/// sampled completion repeats itself.
#[tokio::test]
async fn the_server_on_the_device_path_gives_the_greedy_tokens_and_repeats_seeded_samples() {
    use infergate_server::engine::text_stream::TextStream;
    use serde_json::json;
    let loaded = load_file(&common::model_path(), &LoadOptions::default(), &Device::Cpu).unwrap();
    let (model, tokenizer) = (loaded.model, loaded.tokenizer);
    let server = common::Server::start(&["--backend", "candle"], &[]);
    let url = server.url("/v1/completions");
    for prompt in prompts().into_iter().take(3) {
        let mut kv = vec![model.new_kv(0)];
        let mut chunk = prompt.clone();
        let mut text = TextStream::new(Vec::new());
        let mut want = String::new();
        for _ in 0..12 {
            let token = argmax(&step(&model, &mut kv, &[chunk]).remove(0));
            want.push_str(&text.push(token, &tokenizer).unwrap().text);
            chunk = vec![token];
        }
        want.push_str(&text.finish());
        let body = json!({"prompt": prompt, "max_tokens": 12, "temperature": 0, "ignore_eos": true});
        let (status, got) = common::post_json(&url, &body).await;
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["choices"][0]["text"], want.as_str(), "prompt {prompt:?}");
    }
    let sampled = |seed: u64| {
        let url = url.clone();
        async move {
            let body = json!({"prompt": "Once upon a time", "max_tokens": 16, "temperature": 1.0, "top_k": 50,
                "top_p": 0.95, "seed": seed, "ignore_eos": true});
            let (status, got) = common::post_json(&url, &body).await;
            assert_eq!(status, 200, "{got}");
            got["choices"][0]["text"].as_str().unwrap_or_default().to_string()
        }
    };
    let first = sampled(7).await;
    assert_eq!(sampled(7).await, first, "seed 7 twice");
    let others = [sampled(8).await, sampled(9).await, sampled(10).await];
    assert!(others.iter().any(|t| *t != first), "seeds 7-10 all wrote {first:?}");
}

/// On the candle path the scheduler's ledger and the device cache count the same blocks: a
/// cache with room for about one long sequence queues and preempts, and no step ever finds
/// the device cache fuller than the ledger (that would fail the step with a 500).
#[tokio::test]
async fn a_tight_device_kv_cache_queues_preempts_and_completes_every_request() {
    use infergate_protocol::metrics;
    use serde_json::{json, Value};
    // Generous timeout: the candle backend on two shared cores recomputes preempted sequences.
    let server = common::Server::start(
        &["--backend", "candle", "--max-kv-tokens", "96", "--request-timeout-seconds", "300"],
        &[],
    );
    let metrics_text =
        || async { common::client().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap() };
    assert_eq!(common::metric_value(&metrics_text().await, metrics::KV_CACHE_BLOCKS_TOTAL.full), Some(6.0));
    // Prompts of 20-28 tokens growing by 30: 4 blocks each at the end, two never fit together.
    let prompts: Vec<Vec<u32>> =
        (0..3).map(|i| (0..20 + 4 * i).map(|t| 500 + 13 * t as u32 + i as u32).collect()).collect();
    let complete = |prompt: Vec<u32>| {
        let url = server.url("/v1/completions");
        async move {
            common::post_json(&url, &json!({"prompt": prompt, "max_tokens": 30, "temperature": 0, "ignore_eos": true}))
                .await
        }
    };
    let together: Vec<(u16, Value)> = futures::future::join_all(prompts.iter().cloned().map(complete)).await;
    for (i, (status, value)) in together.iter().enumerate() {
        assert_eq!(*status, 200, "request {i}: {value}");
        assert_eq!(value["usage"]["completion_tokens"], 30, "request {i}: {value}");
    }
    let text = metrics_text().await;
    assert!(common::metric_value(&text, metrics::PREEMPTIONS.full).unwrap_or(0.0) >= 1.0, "nobody preempted: {text}");
    assert_eq!(common::metric_value(&text, metrics::KV_CACHE_BLOCKS_USED.full), Some(0.0), "every block freed");
}

/// scripts/cuda-archs.sh (read by scripts/build-cuda.sh and the CUDA Dockerfile) lists the
/// architectures the server accepts at start-up: a GPU the check lets through has kernels.
#[test]
fn the_cuda_build_list_is_what_the_server_accepts() {
    let path = package_dir().join("../scripts/cuda-archs.sh");
    let text = std::fs::read_to_string(&path).unwrap();
    let value = |name: &str| {
        let line = text.lines().find(|l| l.starts_with(&format!("{name}="))).unwrap_or_else(|| panic!("no {name}"));
        line[name.len() + 1..].trim_matches('"').to_string()
    };
    let archs: Vec<(i32, i32)> = value("CUDA_ARCHS_DEFAULT")
        .split_whitespace()
        .map(|a| {
            let n: i32 = a.parse().unwrap();
            (n / 10, n % 10)
        })
        .collect();
    assert_eq!(archs, infergate_server::device::BUILT_COMPUTE_CAPABILITIES.to_vec());
    // PTX for the oldest architecture, so the driver can JIT it for every newer one.
    assert_eq!(value("CUDA_COMPUTE_CAP_DEFAULT"), "80");
    for file in ["scripts/build-cuda.sh", "docker/server-cuda.Dockerfile"] {
        let source = std::fs::read_to_string(package_dir().join("..").join(file)).unwrap();
        assert!(
            source.contains("scripts/cuda-archs.sh") && source.contains("write_nvcc_wrapper"),
            "{file} has its own list"
        );
    }
}

/// The package's folder: cargo sets CARGO_MANIFEST_DIR when it runs the binary; the build-time
/// value is only a fallback, since a build cache shared between checkouts can hand this binary
/// to another checkout than the one it was compiled in.
fn package_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
