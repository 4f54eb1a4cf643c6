//! Gemma 3 270M's SentencePiece vocabulary (262k tokens, `add_space_prefix = false`,
//! `\n` a user-defined token): fast to build, special tokens, known ids and round trips.
//!
//! Gemma 4's vocabulary (llama.cpp `models/ggml-vocab-gemma-4.gguf`, ids from HF tokenizers in
//! its `.out`) has the same texts at the ids of ordinary tokens, so its vectors give reference
//! ids for strings where SentencePiece's score order and Gemma 4's BPE ranks agree.

mod common;

use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file::Content;
use infergate_server::model::gguf::Metadata;
use infergate_server::model::TextTokenizer;

fn gemma_path() -> PathBuf {
    common::gemma_model_path()
}

fn gemma() -> (TextTokenizer, Duration) {
    let mut file = File::open(gemma_path()).unwrap();
    let content = Content::read(&mut file).unwrap();
    let started = Instant::now();
    let tok = TextTokenizer::from_gguf(&Metadata(&content.metadata)).unwrap();
    (tok, started.elapsed())
}

const BOS: u32 = 2;
const START_OF_TURN: u32 = 105;
const NEWLINE: u32 = 107;
const HELLO: u32 = 9259;
const SPACE_HELLO: u32 = 26352;

#[test]
fn gemma3_vocab_builds_fast_and_knows_its_tokens() {
    let (tok, took) = gemma();
    eprintln!("gemma 3 tokenizer built in {took:?}");
    // Only a guard against a pathological (e.g. quadratic) builder: well above what a loaded
    // machine needs for 262k tokens, since speed belongs in benchmarks, not in test asserts.
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(tok.vocab_size(), 262_144);
    assert_eq!(tok.token_text(START_OF_TURN).as_deref(), Some("<start_of_turn>"));
    assert_eq!(tok.token_text(HELLO).as_deref(), Some("Hello"));
    assert_eq!(tok.token_text(SPACE_HELLO).as_deref(), Some("▁Hello"));
    assert_eq!(tok.bos_text(), "<bos>");
    assert!(tok.stop_token_ids().contains(&106), "<end_of_turn> stops generation");
}

#[test]
fn gemma3_ids_of_plain_words() {
    let (tok, _) = gemma();
    // No space prefix: "Hello" is the token Hello, " Hello" the token ▁Hello.
    assert_eq!(tok.encode_with("Hello", false, false).unwrap(), vec![HELLO]);
    assert_eq!(tok.encode_with(" Hello", false, false).unwrap(), vec![SPACE_HELLO]);
    // The model adds BOS (tokenizer.ggml.add_bos_token) in `encode`.
    assert_eq!(tok.encode("Hello").unwrap(), vec![BOS, HELLO]);
    // A prompt that starts with the BOS text keeps one BOS.
    assert_eq!(tok.encode("<bos>Hello").unwrap(), vec![BOS, HELLO]);
    // `\n` is a user-defined token, split out even without special-token parsing.
    assert_eq!(tok.encode_with("Hello\nHello", false, false).unwrap(), vec![HELLO, NEWLINE, HELLO]);
}

#[test]
fn gemma3_start_of_turn_is_one_token_only_when_parsing_specials() {
    let (tok, _) = gemma();
    let text = "<start_of_turn>user\nHello<end_of_turn>\n";
    let parsed = tok.encode_with(text, false, true).unwrap();
    assert_eq!(parsed[0], START_OF_TURN);
    assert_eq!(parsed.iter().filter(|id| **id == START_OF_TURN).count(), 1);
    assert!(parsed.contains(&106), "{parsed:?}");
    let literal = tok.encode_with(text, false, false).unwrap();
    assert!(!literal.contains(&START_OF_TURN) && literal.len() > parsed.len(), "{literal:?}");
    // Decoding skips control tokens and gives back the rest.
    assert_eq!(tok.decode(&parsed).unwrap(), "user\nHello\n");
    assert_eq!(tok.decode(&literal).unwrap(), text);
}

fn gemma4_vectors() -> Vec<(String, Vec<u32>)> {
    let dir = common::llama_cpp_models();
    let inp = std::fs::read_to_string(dir.join("ggml-vocab-gemma-4.gguf.inp"))
        .unwrap_or_else(|e| panic!("llama.cpp models/ missing at {} ({e}): run `make test-data`", dir.display()));
    let out = std::fs::read_to_string(dir.join("ggml-vocab-gemma-4.gguf.out")).unwrap();
    let inputs: Vec<String> =
        inp.split("\n__ggml_vocab_test__\n").map(str::to_string).filter(|s| !s.is_empty()).collect();
    let outputs: Vec<Vec<u32>> =
        out.lines().map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect()).collect();
    // The empty input has an empty line; keep pairs aligned by dropping empty ones on both sides.
    let outputs: Vec<Vec<u32>> = outputs.into_iter().filter(|o| !o.is_empty()).collect();
    assert_eq!(inputs.len(), outputs.len());
    inputs.into_iter().zip(outputs).collect()
}

#[test]
fn gemma3_round_trips_and_agrees_with_gemma4_reference_ids() {
    let (tok, _) = gemma();
    let mut agree = 0;
    let vectors = gemma4_vectors();
    for (text, reference) in &vectors {
        let ids = tok.encode_with(text, false, false).unwrap();
        assert_eq!(&tok.decode(&ids).unwrap(), text, "round trip of {text:?} ({ids:?})");
        if &ids == reference {
            agree += 1;
        } else {
            eprintln!("differs from gemma-4 BPE: {text:?}: gemma-4 {reference:?}, gemma 3 SPM {ids:?}");
        }
    }
    eprintln!("{agree} of {} gemma-4 vectors give the same ids with Gemma 3's SentencePiece vocab", vectors.len());
    // All of them do with llama.cpp 0.3.36's vectors (45 non-empty strings: whitespace runs,
    // emoji, CJK, Khmer, code, digits), so a regression in the score merge shows up here.
    assert!(vectors.len() >= 45);
    assert_eq!(agree, vectors.len(), "Gemma 3 SentencePiece ids differ from the Gemma 4 reference ids");
}

#[test]
fn gemma3_encodes_a_40kb_prompt_in_linear_time() {
    let (tok, _) = gemma();
    let paragraph = "The quick brown fox jumps over the lazy dog; naïve café ünïcödé 🦙 12345.\n";
    let text = paragraph.repeat(40_000 / paragraph.len() + 1);
    let tenth = paragraph.repeat(4_000 / paragraph.len() + 1);
    // Side by side, best of three each: ten times the text takes about ten times as long when
    // encoding is linear, and a hundred times when it is quadratic. The bound sits between.
    let best = |input: &str| {
        (0..3)
            .map(|_| {
                let started = Instant::now();
                let ids = tok.encode(input).unwrap();
                (started.elapsed(), ids)
            })
            .min_by_key(|(took, _)| *took)
            .unwrap()
    };
    let (small, _) = best(&tenth);
    let (large, ids) = best(&text);
    let ratio = large.as_secs_f64() / small.as_secs_f64().max(1e-6);
    eprintln!(
        "{} bytes -> {} tokens in {large:?}; {} bytes in {small:?}: ratio {ratio:.1}",
        text.len(),
        ids.len(),
        tenth.len()
    );
    assert!(ratio < 30.0, "10x the text took {ratio:.1}x as long: not linear");
    assert_eq!(tok.decode(&ids).unwrap(), text);
}
