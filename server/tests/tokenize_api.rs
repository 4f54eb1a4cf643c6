//! `/tokenize`, `/detokenize` and `infergate-server tokenize` on the real binary and the real
//! default model, against llama.cpp's ids (tests/fixtures/smollm2_llama_cpp_tokens.json).

mod common;

use std::fs::File;
use std::io::Write;
use std::process::{Command, Stdio};

use candle_core::quantized::gguf_file::{self, Content};
use common::{assert_openai_error, post_json, post_raw, shared, Server};
use serde_json::{json, Value};

fn url(path: &str) -> String {
    format!("{}{}", shared(), path)
}

/// (text, llama.cpp ids without BOS) for every fixture string.
fn fixtures() -> Vec<(String, Vec<u32>)> {
    let fixtures: Value = serde_json::from_str(include_str!("fixtures/smollm2_llama_cpp_tokens.json")).unwrap();
    let cases: Vec<_> = fixtures["fixtures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["text"].as_str().unwrap().to_string(), serde_json::from_value(c["ids"].clone()).unwrap()))
        .collect();
    assert!(cases.len() >= 13);
    cases
}

/// The BOS id if the model asks for BOS (`tokenizer.ggml.add_bos_token`).
fn declared_bos() -> Option<u32> {
    let content = Content::read(&mut File::open(common::model_path()).unwrap()).unwrap();
    let add_bos = content.metadata.get("tokenizer.ggml.add_bos_token").is_some_and(|v| v.to_bool().unwrap());
    let bos = content.metadata.get("tokenizer.ggml.bos_token_id").map(|v| v.to_u32().unwrap());
    bos.filter(|_| add_bos)
}

/// The ids `encode` gives with BOS as the model declares (no second BOS if the text has one).
fn with_bos(ids: &[u32], bos: Option<u32>) -> Vec<u32> {
    match bos {
        Some(b) if ids.first() != Some(&b) => std::iter::once(b).chain(ids.iter().copied()).collect(),
        _ => ids.to_vec(),
    }
}

async fn tokenize(body: Value) -> Value {
    let (status, value) = post_json(&url("/tokenize"), &body).await;
    assert_eq!(status, 200, "{body} -> {value}");
    value
}

async fn max_model_len() -> u64 {
    let models: Value = common::client().get(url("/v1/models")).send().await.unwrap().json().await.unwrap();
    models["data"][0]["max_model_len"].as_u64().unwrap()
}

const CHAT: &str = r#"[{"role": "user", "content": "What is the capital of France?"}]"#;

#[tokio::test]
async fn prompt_tokens_equal_llama_cpp_ids() {
    let bos = declared_bos();
    // SmolLM2 declares add_bos_token = false: its ids are llama.cpp's as they are.
    assert_eq!(bos, None, "SmolLM2's GGUF asks for no BOS");
    let max_len = max_model_len().await;
    assert!(max_len > 0);
    for (text, ids) in fixtures() {
        let body = tokenize(json!({"prompt": text})).await;
        let expected = with_bos(&ids, bos);
        assert_eq!(body["tokens"], json!(expected), "default add_special_tokens for {text:?}");
        assert_eq!(body["count"], expected.len());
        assert_eq!(body["max_model_len"], max_len);
        assert!(body.get("token_strs").is_none(), "token_strs only on request: {body}");
        let body = tokenize(json!({"prompt": text, "add_special_tokens": false, "model": ""})).await;
        assert_eq!(body["tokens"], json!(ids), "add_special_tokens false for {text:?}");
    }
    assert_eq!(tokenize(json!({"prompt": ""})).await["count"], with_bos(&[], bos).len());
}

#[tokio::test]
async fn messages_tokens_are_the_chat_endpoints_prompt() {
    let messages: Value = serde_json::from_str(CHAT).unwrap();
    let served: Value = common::client().get(url("/v1/models")).send().await.unwrap().json().await.unwrap();
    let served = served["data"][0]["id"].as_str().unwrap().to_string();
    let body = tokenize(json!({"model": served, "messages": messages})).await;
    let (status, chat) =
        post_json(&url("/v1/chat/completions"), &json!({"messages": messages, "max_tokens": 1, "temperature": 0}))
            .await;
    assert_eq!(status, 200, "{chat}");
    assert_eq!(body["count"], chat["usage"]["prompt_tokens"], "{body} vs {chat}");
    // SmolLM2's template adds its default system prompt: the fixture's chat string.
    let (text, ids) = &fixtures()[2];
    assert!(text.starts_with("<|im_start|>system"));
    assert_eq!(body["tokens"], json!(ids));

    let with_system = json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]);
    let body = tokenize(json!({"messages": with_system})).await;
    let (_, chat) =
        post_json(&url("/v1/chat/completions"), &json!({"messages": with_system, "max_tokens": 1, "temperature": 0}))
            .await;
    assert_eq!(body["count"], chat["usage"]["prompt_tokens"]);

    // Without the generation prompt the assistant opening `<|im_start|>assistant\n` is gone.
    let open = tokenize(json!({"messages": messages})).await["tokens"].as_array().unwrap().clone();
    let closed = tokenize(json!({"messages": messages, "add_generation_prompt": false})).await;
    let closed = closed["tokens"].as_array().unwrap();
    assert!(closed.len() < open.len() && open.starts_with(closed), "{closed:?} / {open:?}");
    let tail = tokenize(json!({"prompt": "<|im_start|>assistant\n"})).await;
    assert_eq!(json!(open[closed.len()..]), tail["tokens"]);
}

#[tokio::test]
async fn token_strs_are_the_vocabulary_entries() {
    let body = tokenize(json!({"prompt": "Hello world", "return_token_strs": true})).await;
    assert_eq!(body["tokens"], json!([19556, 905]));
    assert_eq!(body["token_strs"], json!(["Hello", "Ġworld"]));
    let body =
        tokenize(json!({"messages": serde_json::from_str::<Value>(CHAT).unwrap(), "return_token_strs": true})).await;
    let strs = body["token_strs"].as_array().unwrap();
    assert_eq!(strs.len() as u64, body["count"].as_u64().unwrap());
    assert_eq!(strs[0], "<|im_start|>");
    let body = tokenize(json!({"prompt": "x", "return_token_strs": false})).await;
    assert!(body.get("token_strs").is_none());
}

#[tokio::test]
async fn detokenize_round_trips_the_fixtures() {
    for (text, ids) in fixtures() {
        if text.contains("<|") {
            continue; // special tokens are left out of decoded text, as in completions
        }
        let (status, body) = post_json(&url("/detokenize"), &json!({"tokens": ids})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"prompt": text}));
        let again = tokenize(json!({"prompt": body["prompt"]})).await;
        assert_eq!(again["tokens"], json!(ids));
    }
    let (status, body) = post_json(&url("/detokenize"), &json!({"tokens": []})).await;
    assert_eq!((status, body), (200, json!({"prompt": ""})));
}

async fn expect_error(path: &str, body: Value, status: u16, param: Option<&str>) -> String {
    let (got, value) = post_json(&url(path), &body).await;
    assert_eq!(got, status, "{path} {body} -> {value}");
    let message = assert_openai_error(&value);
    if let Some(param) = param {
        assert_eq!(value["error"]["param"], param, "{value}");
    }
    message
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let chat: Value = serde_json::from_str(CHAT).unwrap();
    let msg = expect_error("/tokenize", json!({"model": "gpt-4", "prompt": "hi"}), 404, None).await;
    assert!(msg.contains("gpt-4"), "{msg}");
    let (_, value) = post_json(&url("/detokenize"), &json!({"model": "gpt-4", "tokens": [1]})).await;
    assert_eq!(value["error"]["code"], "model_not_found");
    expect_error("/tokenize", json!({"prompt": "hi", "messages": chat}), 400, Some("prompt")).await;
    expect_error("/tokenize", json!({}), 400, Some("prompt")).await;
    expect_error("/tokenize", json!({"prompt": ["a", "b"]}), 400, Some("prompt")).await;
    expect_error("/tokenize", json!({"prompt": "a", "add_special_tokens": "yes"}), 400, Some("add_special_tokens"))
        .await;
    expect_error("/tokenize", json!({"messages": []}), 400, Some("messages")).await;
    expect_error("/tokenize", json!({"messages": [{"role": "wizard", "content": "x"}]}), 400, Some("messages[0].role"))
        .await;
    let msg = expect_error("/detokenize", json!({"tokens": [1, 49152]}), 400, Some("tokens")).await;
    assert!(msg.contains("49152") && msg.contains("vocabulary"), "{msg}");
    expect_error("/detokenize", json!({"tokens": [u32::MAX]}), 400, Some("tokens")).await;
    expect_error("/detokenize", json!({"tokens": [-1]}), 400, Some("tokens")).await;
    expect_error("/detokenize", json!({"tokens": "hi"}), 400, Some("tokens")).await;
    expect_error("/detokenize", json!({}), 400, Some("tokens")).await;
    for path in ["/tokenize", "/detokenize"] {
        let (status, value) = post_raw(&url(path), b"{not json".to_vec()).await;
        assert_eq!(status, 400, "{value}");
        assert_openai_error(&value);
        let (status, value) = post_raw(&url(path), b"[1, 2]".to_vec()).await;
        assert_eq!(status, 400, "{value}");
        let resp = common::client().get(url(path)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 405);
    }
}

fn requests_with_status(metrics: &str, code: u16) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(&format!("status=\"{code}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics() -> String {
    common::client().get(url("/metrics")).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn tokenize_requests_count_in_the_request_metrics() {
    let before = metrics().await;
    let (status, _) = post_json(&url("/tokenize"), &json!({"model": "nope", "prompt": "x"})).await;
    assert_eq!(status, 404);
    let (status, _) = post_json(&url("/detokenize"), &json!({"tokens": [19556]})).await;
    assert_eq!(status, 200);
    let after = metrics().await;
    assert!(requests_with_status(&after, 404) > requests_with_status(&before, 404), "{after}");
    assert!(requests_with_status(&after, 200) > requests_with_status(&before, 200), "{after}");
}

/// A copy of the default model without `tokenizer.chat_template`.
fn model_without_template(path: &std::path::Path) {
    let mut file = File::open(common::model_path()).unwrap();
    let content = Content::read(&mut file).unwrap();
    let tensors: Vec<(String, _)> = content
        .tensor_infos
        .keys()
        .map(|name| (name.clone(), content.tensor(&mut file, name, &candle_core::Device::Cpu).unwrap()))
        .collect();
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| k.as_str() != "tokenizer.chat_template")
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let tensors: Vec<(&str, _)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = std::io::BufWriter::new(File::create(path).unwrap());
    gguf_file::write(&mut out, &metadata, &tensors).unwrap();
    out.flush().unwrap();
}

#[tokio::test]
async fn messages_without_a_chat_template_are_400() {
    let path = std::env::temp_dir().join(format!("infergate-no-template-{}.gguf", std::process::id()));
    model_without_template(&path);
    let server = Server::start(&["--model", path.to_str().unwrap()], &[]);
    let chat: Value = serde_json::from_str(CHAT).unwrap();
    let (status, value) = post_json(&server.url("/tokenize"), &json!({"messages": chat})).await;
    let (prompt_status, prompt) = post_json(&server.url("/tokenize"), &json!({"prompt": "Hello world"})).await;
    drop(server);
    let _ = std::fs::remove_file(&path);
    assert_eq!(status, 400, "{value}");
    assert!(assert_openai_error(&value).contains("no chat template"), "{value}");
    assert_eq!((prompt_status, &prompt["tokens"]), (200, &json!([19556, 905])));
}

fn cli(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_infergate-server"))
        .arg("tokenize")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn infergate-server tokenize");
    // A failing run may exit before reading its input.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

/// One line per text: backslashes and line breaks written as llama-tokenize's escapes.
fn escaped(text: &str) -> String {
    text.replace('\\', r"\\").replace('\n', r"\n").replace('\r', r"\r").replace('\t', r"\t")
}

fn ids_line(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
}

#[test]
fn cli_gives_llama_cpp_ids_for_every_fixture() {
    let model = common::model_path();
    let model = model.to_str().unwrap();
    let cases = fixtures();
    let input: String = cases.iter().map(|(t, _)| escaped(t) + "\n").collect();
    let bos = declared_bos();
    let expected: Vec<String> = cases.iter().map(|(_, ids)| ids_line(&with_bos(ids, bos))).collect();
    let (code, out, err) = cli(&["--model", model], &input);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);
    let (code, out, err) = cli(&["--model", model, "--no-bos", "--parse-special"], &input);
    assert_eq!(code, 0, "{err}");
    let no_bos: Vec<String> = cases.iter().map(|(_, ids)| ids_line(ids)).collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), no_bos);

    // Without special-token parsing `<|im_start|>` is plain text; plain text is unchanged.
    let (code, out, err) = cli(&["--model", model, "--no-parse-special"], "<|im_start|>user\nHello world");
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(!lines[0].split(' ').any(|id| id == "1") && lines[0].split(' ').count() > 3, "{out}");
    assert_eq!(lines[1], "19556 905");
    // Raw input with --no-escape: `\n` stays two characters.
    let (_, raw, _) = cli(&["--model", model, "--no-escape"], r"a\nb");
    let (_, esc, _) = cli(&["--model", model], r"a\nb");
    assert_ne!(raw, esc);
    // An empty line is an empty text; no input, no output.
    assert_eq!(cli(&["--model", model], "\n").1, format!("{}\n", ids_line(&with_bos(&[], bos))));
    assert_eq!(cli(&["--model", model], ""), (0, String::new(), String::new()));
}

#[test]
fn cli_errors_exit_1_for_the_model_and_2_for_flags() {
    let (code, out, err) = cli(&["--model", "/nonexistent/model.gguf"], "hi\n");
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/model.gguf"), "{err}");
    let not_a_model = std::env::temp_dir().join(format!("infergate-not-a-model-{}.gguf", std::process::id()));
    std::fs::write(&not_a_model, b"hello").unwrap();
    let (code, _, err) = cli(&["--model", not_a_model.to_str().unwrap()], "hi\n");
    let _ = std::fs::remove_file(&not_a_model);
    assert_eq!((code, err.lines().count()), (1, 1), "{err}");
    let model = common::model_path();
    let (code, _, err) = cli(&["--model", model.to_str().unwrap(), "--bogus"], "");
    assert_eq!(code, 2, "{err}");
    assert_eq!(cli(&[], "").0, 2);
    let (code, out, _) = cli(&["--help"], "");
    assert_eq!(code, 0);
    assert!(out.contains("--no-parse-special"), "{out}");
}
