//! Request parsing and validation on arbitrary input: the headers' declared body length and a
//! body of either generation endpoint, through the same `validation::validate` the handlers
//! call. Any outcome is fine but a panic (or a sanitizer report): bad input must become a
//! `RequestError`, which leaves as a 4xx.
//!
//! Input layout: byte 0 picks the endpoint (even: chat, odd: completions), bytes up to the first
//! `\n` are a Content-Length header value, the rest is the body. The seeds in corpus/ are real
//! bodies (content parts, tools, token prompts) for the mutator to start from.
//!
//! No model is loaded: the tokenizer is a word-level fake over a few words (whitespace split),
//! the chat template a small ChatML one that reads string and content-part messages and tools.

#![no_main]

use std::sync::{Arc, OnceLock};

use axum::http::{header, HeaderMap, HeaderValue};
use infergate_server::api::validation::{self, Endpoint, Limits};
use infergate_server::engine::ModelHandle;
use infergate_server::model::{ChatTemplate, ModelInfo, TextTokenizer};
use libfuzzer_sys::fuzz_target;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::Tokenizer;

const TEMPLATE: &str = "{%- if tools %}<|im_start|>system\n{{ tools | tojson }}<|im_end|>\n{% endif %}\
{%- for m in messages %}<|im_start|>{{ m.role }}\n\
{%- if m.content is string %}{{ m.content }}{% elif m.content %}{% for p in m.content %}{{ p.text }}{% endfor %}{% endif %}\
<|im_end|>\n{% endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

const WORDS: &[&str] = &["<unk>", "<|im_start|>", "<|im_end|>", "hello", "world", "user", "assistant", "system"];

fn model() -> &'static ModelHandle {
    static MODEL: OnceLock<ModelHandle> = OnceLock::new();
    MODEL.get_or_init(|| {
        let vocab = WORDS.iter().enumerate().map(|(i, w)| (w.to_string(), i as u32)).collect();
        let words = WordLevel::builder().vocab(vocab).unk_token("<unk>".into()).build().expect("word-level vocab");
        let mut tokenizer = Tokenizer::new(words);
        tokenizer.with_pre_tokenizer(Some(Whitespace {}));
        ModelHandle {
            info: ModelInfo {
                architecture: "llama".into(),
                // Small, so context-length checks are reached by short inputs.
                context_length: 64,
                vocab_size: WORDS.len(),
                stop_token_ids: vec![2],
                kv_bytes_per_token: 1,
            },
            tokenizer: Arc::new(TextTokenizer::from_tokenizer(tokenizer, Some(1), vec![2], false)),
            chat_template: Some(
                ChatTemplate::with_tokens(TEMPLATE, "<|im_start|>".into(), "<|im_end|>".into()).expect("template"),
            ),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let endpoint = if selector % 2 == 0 { Endpoint::Chat } else { Endpoint::Completions };
    let (length, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (&[][..], rest),
    };
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(length) {
        headers.insert(header::CONTENT_LENGTH, value);
    }
    let _ = validation::declared_length(&headers);
    let limits = Limits { default_max_tokens: 16 };
    if let Ok(valid) = validation::validate(endpoint, body, "fuzz-model", model(), limits) {
        // What validation promises the engine: a prompt that fits with its max_tokens.
        assert!(valid.prompt.len() + valid.params.max_tokens <= model().info.context_length);
        assert!(valid.params.max_tokens >= 1);
    }
});
