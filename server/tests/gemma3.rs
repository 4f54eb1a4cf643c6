//! Gemma 3 270M (the second real architecture) against llama.cpp's llama-server on the same
//! GGUF file: greedy tokens for token-id prompts (in process, recorded by
//! scripts/record-gemma-reference.py), batch invariance with sliding-window layers, and a
//! chat request to the real binary.

mod common;

use std::path::PathBuf;

use infergate_server::model::gemma3_load::load_model;
use infergate_server::model::{CausalLm, ForwardItem, LoadOptions, SequenceKv};
use serde_json::{json, Value};

/// Tokens of llama-server's greedy output that must match, per prompt.
const COMPARED: usize = 8;

fn gemma_path() -> PathBuf {
    common::gemma_model_path()
}

fn fixture() -> Value {
    let path = package_dir().join("tests/fixtures/gemma3_llama_server.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect()
}

fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32).unwrap()
}

/// Greedy continuations of all prompts run as one batch: `starts[i]` is the step at which
/// prompt `i` joins (its whole prompt as one chunk), so prefills mix with other decodes.
fn greedy(model: &dyn CausalLm, prompts: &[Vec<u32>], starts: &[usize], steps: usize) -> Vec<Vec<u32>> {
    let mut kvs: Vec<SequenceKv> = prompts.iter().map(|p| model.new_kv(p.len() + steps)).collect();
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    let last_step = starts.iter().max().unwrap() + steps;
    for step in 0..last_step {
        let mut active = Vec::new();
        let mut items = Vec::new();
        for (i, kv) in kvs.iter_mut().enumerate() {
            if step < starts[i] || out[i].len() == steps {
                continue;
            }
            let tokens: &[u32] =
                if out[i].is_empty() { &prompts[i] } else { std::slice::from_ref(out[i].last().unwrap()) };
            active.push(i);
            items.push(ForwardItem { tokens, kv, want_logits: true });
        }
        if items.is_empty() {
            continue;
        }
        let logits = model.forward(&mut items).unwrap();
        drop(items);
        for (i, l) in active.into_iter().zip(logits) {
            out[i].push(argmax(&l));
        }
    }
    out
}

#[test]
fn greedy_tokens_agree_with_llama_server() {
    let fixture = fixture();
    let model = load_model(&gemma_path(), &LoadOptions::default(), &candle_core::Device::Cpu).unwrap();
    let cases = fixture["prompts"].as_array().unwrap();
    let prompts: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["prompt_ids"])).collect();
    let starts = vec![0; prompts.len()];
    let ours = greedy(&model, &prompts, &starts, COMPARED);
    let mut agreeing = 0;
    for (case, got) in cases.iter().zip(&ours) {
        let want = ids(&case["completion_ids"]);
        let same = want.iter().zip(got).take_while(|(a, b)| a == b).count();
        println!(
            "{}: {same}/{COMPARED} leading tokens agree (llama-server {:?}, infergate {:?})",
            case["name"].as_str().unwrap(),
            &want[..COMPARED],
            got
        );
        if same >= COMPARED {
            agreeing += 1;
        }
    }
    println!("agreement: {agreeing}/{} prompts", cases.len());
    assert!(agreeing >= 4, "only {agreeing} of {} prompts agree on {COMPARED} tokens", cases.len());
}

#[test]
fn greedy_output_is_identical_alone_and_in_a_mixed_batch() {
    let model = load_model(&gemma_path(), &LoadOptions::default(), &candle_core::Device::Cpu).unwrap();
    let fixture = fixture();
    let cases = fixture["prompts"].as_array().unwrap();
    // The long prompt passes the sliding window (512) while the others decode beside it.
    let prompts: Vec<Vec<u32>> = [0, 3, 4].iter().map(|&i| ids(&cases[i]["prompt_ids"])).collect();
    assert!(prompts[2].len() > 512, "the long prompt should exceed the sliding window");
    let steps = 6;
    let alone: Vec<Vec<u32>> =
        prompts.iter().map(|p| greedy(&model, std::slice::from_ref(p), &[0], steps).remove(0)).collect();
    let batched = greedy(&model, &prompts, &[0, 2, 3], steps);
    assert_eq!(alone, batched, "a sequence's greedy tokens changed inside a batch");
}

/// The 270M file is the pretrained (not instruction-tuned) model and carries no chat
/// template, so the server is given Gemma's own turn format with `--chat-template` (Google's
/// Gemma 2 template from llama.cpp's collection; Gemma 3 uses the same turns). Asked "What is
/// the capital of France?" alone it repeats the question, in llama-server too; after one
/// example turn it answers "Paris." (checked by hand with llama-server, greedy).
#[tokio::test]
async fn the_binary_answers_a_chat_question_on_gemma() {
    let path = gemma_path();
    let template = common::llama_cpp_models().join("templates/google-gemma-2-2b-it.jinja");
    // Started on the test's own thread: the server's parent-death signal follows the thread
    // that spawned it, and a blocking-pool thread exits after 10 s idle, killing the server
    // mid-request on a loaded machine.
    let server = common::Server::start(
        &["--model", path.to_str().unwrap(), "--backend", "native", "--chat-template", template.to_str().unwrap()],
        &[],
    );
    let (status, body) = common::post_json(
        &server.url("/v1/chat/completions"),
        &json!({"messages": [{"role": "user", "content": "What is the capital of Germany?"},
                             {"role": "assistant", "content": "Berlin."},
                             {"role": "user", "content": "What is the capital of France?"}],
                "temperature": 0, "max_tokens": 24}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("Paris"), "{text}");
    // Token-id prompts give llama-server's greedy text.
    let case = &fixture()["prompts"][0];
    let (status, body) = common::post_json(
        &server.url("/v1/completions"),
        &json!({"prompt": case["prompt_ids"], "max_tokens": 16, "temperature": 0, "ignore_eos": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let text = body["choices"][0]["text"].as_str().unwrap();
    let want: String = case["completion_text"].as_str().unwrap().chars().take(12).collect();
    assert!(text.starts_with(&want), "{text:?} vs llama-server {want:?}");
}

/// Our SentencePiece tokenizer gives llama-server's `/tokenize` ids for every recorded prompt
/// text, with and without special-token parsing (no BOS, as /tokenize answers by default).
#[test]
fn tokenizer_matches_llama_server_ids() {
    let frontend = infergate_server::model::gguf::read_text_frontend(&gemma_path()).unwrap();
    let prompts = fixture()["prompts"].as_array().unwrap().clone();
    assert_eq!(prompts.len(), 5);
    for case in &prompts {
        let text = case["text"].as_str().unwrap();
        for (key, parse_special) in [("tokenize_parse_special", true), ("tokenize_no_parse_special", false)] {
            let got = frontend.tokenizer.encode_with(text, false, parse_special).unwrap();
            assert_eq!(got, ids(&case[key]), "{key} of {text:?}");
        }
    }
}

/// The package's folder: cargo sets CARGO_MANIFEST_DIR when it runs the binary; the build-time
/// value is only a fallback, since a build cache shared between checkouts can hand this binary
/// to another checkout than the one it was compiled in.
fn package_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
