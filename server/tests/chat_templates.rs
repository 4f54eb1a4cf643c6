//! Chat templates over HTTP on the real binary: content parts, a template that raises, the
//! `--chat-template` override and a template file that does not parse.

mod common;

use std::process::{Command, Stdio};

use common::{assert_openai_error, post_json, Server};
use serde_json::json;

fn write_template(name: &str, source: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("infergate-chat-templates-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, source).unwrap();
    path
}

/// A ChatML template that insists on alternating user/assistant turns (as Gemma's does).
const ALTERNATING: &str = "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}\
{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}\
<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

#[tokio::test]
async fn chat_templates_over_http() {
    let template = write_template("alternating.jinja", ALTERNATING);
    let server = Server::start(&["--chat-template", template.to_str().unwrap()], &[]);
    let url = server.url("/v1/chat/completions");

    // Text content parts are accepted; the model's own template reads content as a string, so
    // the parts are joined for it.
    let (status, body) = post_json(
        &url,
        &json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "What is the capital"},
                                                            {"type": "text", "text": "of France?"}]}],
                "max_tokens": 3, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The override's raise_exception is a 400 carrying the template's message.
    let (status, body) = post_json(
        &url,
        &json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                "max_tokens": 3}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let message = assert_openai_error(&body);
    assert!(message.contains("Conversation roles must alternate user/assistant/user/assistant/..."), "{message}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");

    // Non-text parts are refused clearly.
    let (status, body) = post_json(
        &url,
        &json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(assert_openai_error(&body).contains("only `text` parts are supported"), "{body}");

    // A tool role message without its tool_call_id is a shape error.
    let (status, body) = post_json(&url, &json!({"messages": [{"role": "tool", "content": "21"}]})).await;
    assert_eq!(status, 400, "{body}");
    assert!(assert_openai_error(&body).contains("tool_call_id"), "{body}");
}

#[test]
fn a_chat_template_that_does_not_parse_stops_startup_with_exit_2() {
    let template = write_template("broken.jinja", "{% for m in messages %}{{ m.content }");
    let output = Command::new(env!("CARGO_BIN_EXE_infergate-server"))
        .args(["--model", common::model_path().to_str().unwrap(), "--port", "0"])
        .args(["--chat-template", template.to_str().unwrap()])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--chat-template") && stderr.contains("does not parse"), "{stderr}");
}

#[test]
fn render_chat_prints_the_models_prompt() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_infergate-server"))
        .args(["render-chat", "--model", common::model_path().to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(br#"[{"role": "user", "content": "Hi"}]"#).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let prompt = String::from_utf8(output.stdout).unwrap();
    assert!(prompt.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"), "{prompt:?}");
}
