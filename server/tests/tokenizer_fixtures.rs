//! The tokenizer rebuilt from GGUF metadata gives llama.cpp's token ids (recorded with
//! scripts/record-tokenizer-fixtures.py) and decodes them back to the text.

mod common;

use std::fs::File;

use candle_core::quantized::gguf_file::Content;
use infergate_server::model::gguf::Metadata;
use infergate_server::model::TextTokenizer;
use serde_json::Value;

#[test]
fn gguf_tokenizer_matches_llama_cpp_ids() {
    let mut file = File::open(common::model_path()).unwrap();
    let content = Content::read(&mut file).unwrap();
    let tokenizer = TextTokenizer::from_gguf(&Metadata(&content.metadata)).unwrap();
    let fixtures: Value = serde_json::from_str(include_str!("fixtures/smollm2_llama_cpp_tokens.json")).unwrap();
    let fixtures = fixtures["fixtures"].as_array().unwrap();
    assert!(fixtures.len() >= 10);
    for case in fixtures {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(tokenizer.encode(text).unwrap(), expected, "ids differ for {text:?}");
        if !text.contains("<|") {
            assert_eq!(tokenizer.decode(&expected).unwrap(), text, "round trip of {text:?}");
        }
    }
}

#[test]
fn unknown_pre_tokenizer_is_refused_with_a_clear_error() {
    let mut file = File::open(common::model_path()).unwrap();
    let mut content = Content::read(&mut file).unwrap();
    content
        .metadata
        .insert("tokenizer.ggml.pre".into(), candle_core::quantized::gguf_file::Value::String("mystery-pre".into()));
    let err = TextTokenizer::from_gguf(&Metadata(&content.metadata)).err().expect("must refuse");
    assert!(err.to_string().contains("unknown GGUF pre-tokenizer `mystery-pre`"), "{err}");
}
