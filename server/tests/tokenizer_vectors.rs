//! Conformance with llama.cpp's tokenizer vectors: every `models/ggml-vocab-*.gguf` that has
//! `.inp`/`.out` files (the ids HF tokenizers gives, which llama.cpp's
//! `tests/test-tokenizer-0.cpp` checks its own tokenizers against) must give the same ids,
//! encoded the way that test does (no BOS, no special-token parsing), and decode back to
//! the input text.
//!
//! The folder is `$INFERGATE_LLAMA_CPP_MODELS` (`make test` sets it), defaulting to the
//! llama.cpp sources `make test-data` unpacks under `~/.cache/infergate`.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use infergate_server::model::gguf::Metadata;
use infergate_server::model::TextTokenizer;

/// Vocabularies with vectors that are not tested: embedding models whose tokenizers (WordPiece,
/// Unigram) infergate does not serve.
const SKIPPED: &[&str] = &["bert-bge", "nomic-bert-moe"];

/// Every vocabulary with vectors in llama.cpp 0.3.36's `models/` (the test fails if one is
/// missing, so it cannot silently test less).
const EXPECTED: &[&str] = &[
    "command-r",
    "deepseek-coder",
    "deepseek-llm",
    "falcon",
    "gemma-4",
    "gpt-2",
    "llama-bpe",
    "llama-spm",
    "mpt",
    "phi-3",
    "qwen2",
    "qwen35",
    "refact",
    "starcoder",
];

fn models_dir() -> PathBuf {
    common::llama_cpp_models()
}

fn load(path: &Path) -> Content {
    let mut file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Content::read(&mut file).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn tokenizer(path: &Path) -> TextTokenizer {
    TextTokenizer::from_gguf(&Metadata(&load(path).metadata)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `.inp` strings and `.out` ids, split as test-tokenizer-0.cpp's `read_tests` does.
fn read_vectors(vocab: &Path) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(format!("{}.inp", vocab.display())).unwrap();
    let out = std::fs::read_to_string(format!("{}.out", vocab.display())).unwrap();
    let sep = "\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut pos = 0;
    while pos < inp.len() {
        match inp[pos..].find(sep) {
            Some(at) => {
                inputs.push(inp[pos..pos + at].to_string());
                pos += at + sep.len();
            }
            None => {
                inputs.push(inp[pos..].to_string());
                break;
            }
        }
    }
    let outputs: Vec<Vec<u32>> =
        out.lines().map(|l| l.split_whitespace().map(|t| t.parse().expect("token id")).collect()).collect();
    assert_eq!(inputs.len(), outputs.len(), "{}: .inp and .out have different numbers of tests", vocab.display());
    inputs.into_iter().zip(outputs).collect()
}

fn vocabs_with_vectors(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let vocab = name.strip_prefix("ggml-vocab-")?.strip_suffix(".gguf.out")?.to_string();
            Some((vocab, dir.join(name.strip_suffix(".out")?)))
        })
        .filter(|(v, _)| !SKIPPED.contains(&v.as_str()))
        .collect();
    found.sort();
    found
}

#[test]
fn every_vocab_matches_the_llama_cpp_vectors() {
    let dir = models_dir();
    let vocabs = vocabs_with_vectors(&dir);
    let names: Vec<&str> = vocabs.iter().map(|(v, _)| v.as_str()).collect();
    assert!(!vocabs.is_empty(), "no ggml-vocab-*.gguf.out in {}", dir.display());
    for expected in EXPECTED {
        assert!(names.contains(expected), "vocab `{expected}` has no vectors in {} (found {names:?})", dir.display());
    }

    let mut failures = Vec::new();
    let mut total = 0;
    for (name, path) in &vocabs {
        let tok = tokenizer(path);
        let vectors = read_vectors(path);
        let mut mismatches = 0;
        let mut round_trip_failures = 0;
        for (input, expected) in &vectors {
            total += 1;
            let got = tok.encode_with(input, false, false).unwrap();
            if &got != expected {
                mismatches += 1;
                failures.push(format!("{name}: ids of {input:?}: expected {expected:?}, got {got:?}"));
            }
            let decoded = tok.decode(expected).unwrap();
            if &decoded != input {
                round_trip_failures += 1;
                failures.push(format!("{name}: decode of the ids of {input:?} gave {decoded:?}"));
            }
        }
        eprintln!(
            "{name}: {} strings, {mismatches} id mismatches, {round_trip_failures} round-trip failures",
            vectors.len()
        );
    }
    eprintln!("{} vocabs, {total} strings, {} failures", vocabs.len(), failures.len());
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// Vocabularies without vectors still load (aquila and gpt-neox have no `tokenizer.ggml.pre`,
/// which llama.cpp treats as `default`; baichuan is SentencePiece) and tokenize plain text.
#[test]
fn vocabs_without_vectors_load() {
    let dir = models_dir();
    for name in ["aquila", "baichuan", "gpt-neox"] {
        let tok = tokenizer(&dir.join(format!("ggml-vocab-{name}.gguf")));
        let text = "Hello world, 123 times!";
        let ids = tok.encode_with(text, false, false).unwrap();
        assert!(!ids.is_empty(), "{name}");
        assert_eq!(tok.decode(&ids).unwrap(), text, "{name}");
    }
}

#[test]
fn unsupported_tokenizer_models_are_refused_by_name() {
    let dir = models_dir();
    for (name, model) in [("bert-bge", "bert"), ("nomic-bert-moe", "t5")] {
        let content = load(&dir.join(format!("ggml-vocab-{name}.gguf")));
        let err = TextTokenizer::from_gguf(&Metadata(&content.metadata)).err().expect("must refuse");
        assert!(err.to_string().contains(&format!("GGUF tokenizer model `{model}` is not supported")), "{err}");
    }
    let mut content = load(&dir.join("ggml-vocab-gpt-2.gguf"));
    content.metadata.insert("tokenizer.ggml.pre".into(), Value::String("mystery-pre".into()));
    let err = TextTokenizer::from_gguf(&Metadata(&content.metadata)).err().expect("must refuse");
    assert!(err.to_string().contains("unknown GGUF pre-tokenizer `mystery-pre`"), "{err}");
}

/// Gemma 4's vocabulary (262k tokens, 515k merges) builds in bounded time. Most of it is HF
/// tokenizers' BPE construction (about 1-2 s on a busy 2-core machine); the served 262k
/// SentencePiece vocabulary (Gemma 3, no merges) is held to under a second in
/// tokenizer_gemma3.rs.
#[test]
fn large_bpe_vocab_loads_in_bounded_time() {
    let dir = models_dir();
    let content = load(&dir.join("ggml-vocab-gemma-4.gguf"));
    let meta = Metadata(&content.metadata);
    let started = std::time::Instant::now();
    let tok = TextTokenizer::from_gguf(&meta).unwrap();
    let took = started.elapsed();
    assert_eq!(tok.vocab_size(), 262_144);
    eprintln!("gemma-4 vocab built in {took:?}");
    assert!(took < std::time::Duration::from_secs(6), "{took:?}");
}
