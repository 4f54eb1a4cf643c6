//! A `tokenizers::Tokenizer` rebuilt from GGUF metadata, matching llama.cpp's BPE tokenizer.

use ahash::AHashMap;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;
use tokenizers::{AddedToken, Tokenizer};

use super::gguf::Metadata;
use crate::error::{Error, Result};

// The pre-tokenizer regexes llama.cpp applies for each `tokenizer.ggml.pre` value.
const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)";
const DIGIT_REGEX: &str = r"\p{N}";

/// llama.cpp token types.
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// Text of end-of-generation tokens llama.cpp recognises besides the declared EOS/EOT ids.
const END_OF_GENERATION_TEXTS: &[&str] =
    &["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>"];

pub struct TextTokenizer {
    inner: Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    stop_ids: Vec<u32>,
}

fn pre_tokenizer_regexes(pre: &str) -> Result<&'static [&'static str]> {
    Ok(match pre {
        "default" | "gpt-2" | "gpt2" | "phi-2" | "jina-es" | "jina-de" | "olmo" => &[GPT2_REGEX],
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => &[DIGIT_REGEX, GPT2_REGEX],
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" => &[LLAMA3_REGEX],
        "qwen2" | "deepseek-r1-qwen" => &[QWEN2_REGEX],
        other => {
            return Err(Error::ModelLoad(format!(
                "unknown GGUF pre-tokenizer `{other}`: refusing to guess how to split text (known: gpt-2, smollm, starcoder, llama-bpe, qwen2)"
            )))
        }
    })
}

impl TextTokenizer {
    /// Builds the tokenizer described by `tokenizer.ggml.*` metadata.
    pub fn from_gguf(meta: &Metadata<'_>) -> Result<Self> {
        let model = meta.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(Error::ModelLoad(format!(
                "GGUF tokenizer model `{model}` is not supported (supported: gpt2 byte-level BPE)"
            )));
        }
        let tokens = meta.strings("tokenizer.ggml.tokens")?;
        let merges = meta
            .strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| Error::ModelLoad(format!("malformed BPE merge `{m}`")))
            })
            .collect::<Result<Vec<_>>>()?;
        let token_types = if meta.0.contains_key("tokenizer.ggml.token_type") {
            meta.i32s("tokenizer.ggml.token_type")?
        } else {
            vec![1; tokens.len()]
        };
        let pre = meta.opt_string("tokenizer.ggml.pre").unwrap_or("default");
        let regexes = pre_tokenizer_regexes(pre)?;

        let vocab: AHashMap<String, u32> = tokens.iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| Error::ModelLoad(format!("cannot build BPE from GGUF vocabulary: {e}")))?;
        let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
        for regex in regexes {
            let split = Split::new(SplitPattern::Regex(regex.to_string()), SplitDelimiterBehavior::Isolated, false)
                .map_err(|e| Error::ModelLoad(format!("bad pre-tokenizer regex: {e}")))?;
            steps.push(split.into());
        }
        steps.push(ByteLevel::new(false, false, false).into());
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(Sequence::new(steps)));
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(token_types.iter())
            .filter(|(_, ty)| **ty == TOKEN_TYPE_CONTROL || **ty == TOKEN_TYPE_USER_DEFINED)
            .map(|(t, ty)| AddedToken::from(t.to_string(), *ty == TOKEN_TYPE_CONTROL).normalized(false))
            .collect();
        inner
            .add_special_tokens(specials)
            .map_err(|e| Error::ModelLoad(format!("cannot register special tokens: {e}")))?;

        let bos = meta.opt_u32("tokenizer.ggml.bos_token_id")?;
        let eos = meta.opt_u32("tokenizer.ggml.eos_token_id")?;
        let eot = meta.opt_u32("tokenizer.ggml.eot_token_id")?;
        let mut stop_ids: Vec<u32> = eos.into_iter().chain(eot).collect();
        for (id, (text, ty)) in tokens.iter().zip(token_types.iter()).enumerate() {
            if *ty == TOKEN_TYPE_CONTROL && END_OF_GENERATION_TEXTS.contains(text) {
                stop_ids.push(id as u32);
            }
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let add_bos = meta.opt_bool("tokenizer.ggml.add_bos_token").unwrap_or(false);
        Ok(Self { inner, bos, eos, add_bos, stop_ids })
    }

    /// Wraps a `tokenizer.json` tokenizer (safetensors directories).
    pub fn from_tokenizer(inner: Tokenizer, bos: Option<u32>, eos: Vec<u32>, add_bos: bool) -> Self {
        Self { inner, bos, eos: eos.first().copied(), add_bos, stop_ids: eos }
    }

    /// Token ids of text in which special-token strings (e.g. `<|im_start|>`) are parsed.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, true, true)
    }

    /// Token ids of `text`. `add_bos`: prepend BOS when the model asks for it
    /// (`add_bos_token`) and the text does not already start with it, as llama.cpp's
    /// `add_special`. `parse_special`: control-token strings (`<|im_start|>`) become their
    /// ids; without it they are tokenized as plain text (user-defined tokens still match,
    /// as in llama.cpp).
    pub fn encode_with(&self, text: &str, add_bos: bool, parse_special: bool) -> Result<Vec<u32>> {
        let encoding = if parse_special {
            self.inner.encode(text, false)
        } else {
            let mut plain = self.inner.clone();
            plain.set_encode_special_tokens(true);
            plain.encode(text, false)
        }
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut ids = encoding.get_ids().to_vec();
        if add_bos && self.add_bos {
            if let Some(bos) = self.bos {
                if ids.first() != Some(&bos) {
                    ids.insert(0, bos);
                }
            }
        }
        Ok(ids)
    }

    /// Text of token ids, without special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// The tokenizer as `tokenizer.json`, e.g. to export a GGUF model as a HF directory.
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// Token ids are `0..vocab_size()`.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn stop_token_ids(&self) -> Vec<u32> {
        self.stop_ids.clone()
    }

    pub fn bos_text(&self) -> String {
        self.bos.and_then(|id| self.token_text(id)).unwrap_or_default()
    }

    pub fn eos_text(&self) -> String {
        self.eos.and_then(|id| self.token_text(id)).unwrap_or_default()
    }
}
