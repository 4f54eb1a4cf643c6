//! `infergate-server render-chat`: prints the prompt a chat template makes of the messages on
//! stdin (a JSON array, as a client's `messages`), byte for byte, with no newline added.
//!
//! Exit status: 0 rendered; 1 the template failed (its message on stderr) or the model could not
//! be read; 2 a usage error (bad flags, unreadable files, input that is not a JSON array of objects).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;

use clap::Parser;
use serde_json::Value;

use crate::model::chat_template::parse_now;
use crate::model::{self, ChatTemplate, ModelSource, RenderOptions};

#[derive(Debug, Parser)]
#[command(
    name = "infergate-server render-chat",
    about = "Print the prompt the chat template makes of the JSON messages on stdin"
)]
struct Args {
    /// The model whose template and bos/eos tokens are used (a GGUF file, a safetensors
    /// directory or a hub id); optional with --chat-template.
    #[arg(long)]
    model: Option<String>,
    /// A Jinja chat template file used instead of the model's.
    #[arg(long)]
    chat_template: Option<PathBuf>,
    /// A JSON file with the OpenAI `tools` array.
    #[arg(long)]
    tools: Option<PathBuf>,
    /// Render with add_generation_prompt=false (no opened assistant turn).
    #[arg(long)]
    no_generation_prompt: bool,
    /// The template's `bos_token` (default: the model's, else empty).
    #[arg(long)]
    bos_token: Option<String>,
    /// The template's `eos_token` (default: the model's, else empty).
    #[arg(long)]
    eos_token: Option<String>,
    /// What `strftime_now` formats: RFC 3339 or Unix seconds, read as UTC (default: now).
    #[arg(long)]
    now: Option<String>,
}

fn usage(message: impl std::fmt::Display) -> i32 {
    eprintln!("infergate-server render-chat: {message}");
    2
}

fn failed(message: impl std::fmt::Display) -> i32 {
    eprintln!("infergate-server render-chat: {message}");
    1
}

pub fn run(args: &[OsString]) -> i32 {
    let args = match Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    if args.model.is_none() && args.chat_template.is_none() {
        return usage("give --model, --chat-template or both");
    }
    let now = match args.now.as_deref().map(parse_now).transpose() {
        Ok(n) => n,
        Err(e) => return usage(format!("--now: {e}")),
    };
    let template_source = match &args.chat_template {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(s) => Some(s),
            Err(e) => return usage(format!("--chat-template {}: {e}", path.display())),
        },
        None => None,
    };
    let tools = match &args.tools {
        Some(path) => match std::fs::read_to_string(path).map_err(|e| e.to_string()).and_then(|t| read_tools(&t)) {
            Ok(t) => Some(t),
            Err(e) => return usage(format!("--tools {}: {e}", path.display())),
        },
        None => None,
    };
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        return usage(format!("cannot read the messages from stdin: {e}"));
    }
    let messages = match read_messages(&input) {
        Ok(m) => m,
        Err(e) => return usage(format!("stdin: {e}")),
    };

    let (model_template, model_bos, model_eos) = match &args.model {
        Some(m) => {
            let source = match ModelSource::parse(m) {
                Ok(s) => s,
                Err(e) => return usage(format!("--model: {e}")),
            };
            match model::load_text_frontend(&source) {
                Ok(front) => (front.chat_template, front.tokenizer.bos_text(), front.tokenizer.eos_text()),
                Err(e) => return failed(e),
            }
        }
        None => (None, String::new(), String::new()),
    };
    let bos = args.bos_token.unwrap_or(model_bos);
    let eos = args.eos_token.unwrap_or(model_eos);
    let template = match template_source {
        Some(source) => match ChatTemplate::with_tokens(&source, bos, eos) {
            Ok(t) => t,
            Err(e) => return failed(e),
        },
        None => match model_template {
            Some(mut t) => {
                t.set_tokens(bos, eos);
                t
            }
            None => return failed("the model has no chat template; give --chat-template FILE"),
        },
    };
    let options = RenderOptions { tools: tools.as_deref(), add_generation_prompt: !args.no_generation_prompt, now };
    match template.render(&messages, &options) {
        Ok(prompt) => {
            let mut out = std::io::stdout().lock();
            if out.write_all(prompt.as_bytes()).and_then(|_| out.flush()).is_err() {
                return 1;
            }
            0
        }
        Err(e) => failed(e),
    }
}

fn read_messages(text: &str) -> Result<Vec<Value>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Array(messages) = value else {
        return Err("expected a JSON array of messages".into());
    };
    if messages.is_empty() {
        return Err("the conversation is empty".into());
    }
    if let Some(i) = messages.iter().position(|m| !m.is_object()) {
        return Err(format!("messages[{i}] is not an object"));
    }
    Ok(messages)
}

fn read_tools(text: &str) -> Result<Vec<Value>, String> {
    match serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))? {
        Value::Array(tools) => Ok(tools),
        _ => Err("expected a JSON array of tools".into()),
    }
}
