//! Text <-> token ids. GGUF vocabularies are rebuilt from `tokenizer.ggml.*` with llama.cpp's
//! semantics (`src/llama-vocab.cpp`): SentencePiece (`llama`), byte-level BPE (`gpt2`) with
//! each `pre` type's splitting, and SentencePiece-style BPE (`gemma4`). Special-token
//! splitting and decoding are shared by all GGUF backends. `tokenizer.json` sources
//! (safetensors directories) keep using HF tokenizers as they are.

mod bpe;
mod pre;
mod special;
mod spm;
mod vocab;

use std::sync::OnceLock;

use ahash::AHashMap;
use tokenizers::Tokenizer;

use super::gguf::Metadata;
use crate::error::{Error, Result};
use bpe::Bpe;
use special::{Fragment, SpecialTokens};
use vocab::{Vocab, TYPE_BYTE, TYPE_NORMAL, TYPE_USER_DEFINED};

pub use pre::PreTokenizer;

/// Text of end-of-generation tokens llama.cpp recognises besides the declared EOS/EOT ids.
const END_OF_GENERATION_TEXTS: &[&str] =
    &["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>"];

pub struct TextTokenizer {
    backend: Backend,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    stop_ids: Vec<u32>,
}

enum Backend {
    /// A `tokenizer.json`: HF tokenizers handles its added tokens itself.
    Hf(Box<HfTokenizer>),
    Gguf(Box<GgufTokenizer>),
}

struct HfTokenizer {
    inner: Tokenizer,
    /// The same tokenizer with special tokens encoded as text (for `parse_special = false`).
    literal: OnceLock<Tokenizer>,
}

enum Model {
    Spm,
    Bpe(Box<Bpe>),
}

struct GgufTokenizer {
    vocab: Vocab,
    model: Model,
    specials: SpecialTokens,
    /// SentencePiece prepends a space to text at the start and after special tokens; decoding
    /// drops the first token's leading space (`tokenizer.ggml.add_space_prefix`).
    add_space_prefix: bool,
    add_eos: bool,
    unk: Option<u32>,
    /// Decoded bytes of each token (empty for control/unknown/unused tokens).
    pieces: Pieces,
}

impl TextTokenizer {
    /// Builds the tokenizer described by `tokenizer.ggml.*` metadata.
    pub fn from_gguf(meta: &Metadata<'_>) -> Result<Self> {
        let model_name = meta.string("tokenizer.ggml.model")?;
        let vocab = Vocab::from_gguf(meta)?;
        let (model, default_add_bos, default_space_prefix) = match model_name {
            // llama.cpp ignores `tokenizer.ggml.pre` for SentencePiece vocabularies.
            "llama" => (Model::Spm, true, true),
            "gpt2" | "gemma4" => {
                let pre = if model_name == "gemma4" {
                    PreTokenizer::from_name(Some("gemma4"))?
                } else {
                    PreTokenizer::from_name(meta.opt_string("tokenizer.ggml.pre"))?
                };
                let merges = meta.strings("tokenizer.ggml.merges")?;
                let add_bos = pre.default_add_bos;
                (Model::Bpe(Box::new(Bpe::new(&vocab, &merges, pre)?)), add_bos, false)
            }
            other => {
                return Err(Error::ModelLoad(format!(
                    "GGUF tokenizer model `{other}` is not supported (supported: llama (SentencePiece), gpt2 \
                     (byte-level BPE), gemma4)"
                )))
            }
        };
        let add_space_prefix = meta.opt_bool("tokenizer.ggml.add_space_prefix").unwrap_or(default_space_prefix);
        let mut add_bos = meta.opt_bool("tokenizer.ggml.add_bos_token").unwrap_or(default_add_bos);
        if matches!(&model, Model::Bpe(b) if b.pre.name == "gemma4") {
            // llama.cpp forces BOS for Gemma 4 vocabularies.
            add_bos = true;
        }
        let add_eos = meta.opt_bool("tokenizer.ggml.add_eos_token").unwrap_or(false);
        // SentencePiece vocabularies have llama.cpp defaults for the special ids.
        let spm = matches!(model, Model::Spm);
        let bos = meta.opt_u32("tokenizer.ggml.bos_token_id")?.or(if spm { Some(1) } else { None });
        let eos = meta.opt_u32("tokenizer.ggml.eos_token_id")?.or(if spm { Some(2) } else { None });
        let unk = meta.opt_u32("tokenizer.ggml.unknown_token_id")?.or(if spm { Some(0) } else { None });
        let eot = meta.opt_u32("tokenizer.ggml.eot_token_id")?;

        let mut stop_ids: Vec<u32> = eos.into_iter().chain(eot).collect();
        for (id, (text, ty)) in vocab.texts.iter().zip(&vocab.types).enumerate() {
            if *ty == vocab::TYPE_CONTROL && END_OF_GENERATION_TEXTS.contains(&text.as_str()) {
                stop_ids.push(id as u32);
            }
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();

        let specials = SpecialTokens::from_vocab(&vocab, meta.opt_string("general.name").unwrap_or(""));
        let pieces = decoded_pieces(&vocab, &model);
        let gguf = GgufTokenizer { vocab, model, specials, add_space_prefix, add_eos, unk, pieces };
        Ok(Self { backend: Backend::Gguf(Box::new(gguf)), bos, eos, add_bos, stop_ids })
    }

    /// Wraps a `tokenizer.json` tokenizer (safetensors directories).
    pub fn from_tokenizer(inner: Tokenizer, bos: Option<u32>, eos: Vec<u32>, add_bos: bool) -> Self {
        Self {
            backend: Backend::Hf(Box::new(HfTokenizer { inner, literal: OnceLock::new() })),
            bos,
            eos: eos.first().copied(),
            add_bos,
            stop_ids: eos,
        }
    }

    /// Token ids of a prompt: special-token strings (e.g. `<|im_start|>`) are parsed and BOS is
    /// added where the model asks for it. A prompt that already starts with the BOS text (a
    /// chat template that writes `bos_token`) keeps a single BOS.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode_with(text, true, true)?;
        if self.add_bos && ids.len() >= 2 && self.bos.is_some() && ids[0] == ids[1] && Some(ids[0]) == self.bos {
            ids.remove(0);
        }
        Ok(ids)
    }

    /// Token ids exactly as llama.cpp's `llama_tokenize(text, add_special, parse_special)`:
    /// `add_special` adds the model's BOS where it declares `add_bos_token` (and EOS where
    /// `tokenizer.ggml.add_eos_token` says so);
    /// `parse_special` turns control-token strings into their ids (user-defined tokens are
    /// always matched, as in llama.cpp).
    pub fn encode_with(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        match &self.backend {
            Backend::Hf(hf) => {
                let HfTokenizer { inner, literal } = hf.as_ref();
                let tokenizer = if parse_special {
                    inner
                } else {
                    literal.get_or_init(|| {
                        let mut t = inner.clone();
                        t.set_encode_special_tokens(true);
                        t
                    })
                };
                let encoding = tokenizer.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
                let mut ids = Vec::with_capacity(encoding.len() + 1);
                if add_special && self.add_bos {
                    ids.extend(self.bos);
                }
                ids.extend_from_slice(encoding.get_ids());
                Ok(ids)
            }
            Backend::Gguf(g) => {
                let mut ids = Vec::with_capacity(text.len() / 3 + 2);
                if add_special && self.add_bos {
                    ids.extend(self.bos);
                }
                g.tokenize(text, parse_special, &mut ids)?;
                if add_special && g.add_eos {
                    ids.extend(self.eos);
                }
                Ok(ids)
            }
        }
    }

    /// Text of token ids, without special tokens (llama.cpp's `llama_detokenize` with
    /// `remove_special`, without its `clean_spaces` pass, which llama-server's streamed
    /// completions do not apply either).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match &self.backend {
            Backend::Hf(hf) => hf.inner.decode(ids, true).map_err(|e| Error::Tokenizer(e.to_string())),
            Backend::Gguf(g) => {
                let mut ids = ids;
                let mut strip_space = g.add_space_prefix;
                if self.add_bos && self.bos.is_some() && ids.first().copied() == self.bos {
                    // llama.cpp keeps the space of the text after a leading BOS.
                    strip_space = false;
                    ids = &ids[1..];
                }
                if g.add_eos && self.eos.is_some() && ids.last().copied() == self.eos {
                    ids = &ids[..ids.len() - 1];
                }
                let mut bytes = Vec::with_capacity(ids.len() * 4);
                for (i, id) in ids.iter().enumerate() {
                    let piece =
                        g.pieces.get(*id).ok_or_else(|| Error::Tokenizer(format!("token id {id} is out of range")))?;
                    let piece = if i == 0 && strip_space { piece.strip_prefix(b" ").unwrap_or(piece) } else { piece };
                    bytes.extend_from_slice(piece);
                }
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
        }
    }

    /// The tokenizer as `tokenizer.json`, e.g. to export a GGUF model as a HF directory.
    pub fn to_json(&self) -> Result<String> {
        match &self.backend {
            Backend::Hf(hf) => hf.inner.to_string(false).map_err(|e| Error::Tokenizer(e.to_string())),
            Backend::Gguf(g) => match &g.model {
                Model::Bpe(b) => b.to_json(&g.vocab),
                Model::Spm => Err(Error::Tokenizer(
                    "exporting a SentencePiece GGUF vocabulary as tokenizer.json is not supported".into(),
                )),
            },
        }
    }

    pub fn token_text(&self, id: u32) -> Option<String> {
        match &self.backend {
            Backend::Hf(hf) => hf.inner.id_to_token(id),
            Backend::Gguf(g) => g.vocab.texts.get(id as usize).cloned(),
        }
    }

    /// Number of token ids the tokenizer knows (added tokens included).
    pub fn vocab_size(&self) -> usize {
        match &self.backend {
            Backend::Hf(hf) => hf.inner.get_vocab_size(true),
            Backend::Gguf(g) => g.vocab.len(),
        }
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

impl GgufTokenizer {
    fn tokenize(&self, text: &str, parse_special: bool, out: &mut Vec<u32>) -> Result<()> {
        let fragments = self.specials.partition(text, parse_special);
        match &self.model {
            Model::Spm => {
                // llama.cpp: the space prefix goes before the first text and any text that
                // follows a special token.
                let mut after_special = true;
                for fragment in fragments {
                    match fragment {
                        Fragment::Text(t) => {
                            let escaped = spm::escape(t, self.add_space_prefix && after_special);
                            spm::tokenize(&self.vocab, &escaped, self.unk, out);
                            after_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                    }
                }
            }
            Model::Bpe(bpe) => {
                for fragment in fragments {
                    match fragment {
                        Fragment::Text(t) => bpe.tokenize(&self.vocab, t, out)?,
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        Ok(())
    }
}

/// What each token contributes to decoded text (llama.cpp's `token_to_piece` without
/// `special`): user-defined tokens their text, normal tokens their text with U+2581 as space
/// (SentencePiece) or GPT-2 bytes mapped back, byte tokens their byte, others nothing.
fn decoded_pieces(vocab: &Vocab, model: &Model) -> Pieces {
    let byte_level = match model {
        Model::Bpe(b) if b.pre.byte_encode => Some(bpe::byte_level_decoder()),
        _ => None,
    };
    let mut pieces = Pieces { bytes: Vec::with_capacity(vocab.texts.iter().map(String::len).sum()), ends: Vec::new() };
    pieces.ends.reserve(vocab.len());
    for (text, ty) in vocab.texts.iter().zip(&vocab.types) {
        let piece = match *ty {
            TYPE_USER_DEFINED => text.as_bytes().to_vec(),
            TYPE_NORMAL => match &byte_level {
                Some(table) => unmap_byte_level(text, table),
                None => spm::unescape(text).into_bytes(),
            },
            TYPE_BYTE => match vocab::byte_of_token(text) {
                Some(b) => vec![b],
                None => match &byte_level {
                    Some(table) => unmap_byte_level(text, table),
                    None => text.as_bytes().to_vec(),
                },
            },
            _ => Vec::new(),
        };
        pieces.bytes.extend_from_slice(&piece);
        pieces.ends.push(pieces.bytes.len());
    }
    pieces
}

/// All tokens' decoded bytes in one buffer (one allocation instead of one per token).
struct Pieces {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Pieces {
    fn get(&self, id: u32) -> Option<&[u8]> {
        let id = id as usize;
        let end = *self.ends.get(id)?;
        let start = if id == 0 { 0 } else { self.ends[id - 1] };
        Some(&self.bytes[start..end])
    }
}

/// GPT-2 byte-level text back to its bytes; a character outside the table (not produced by
/// byte-level BPE converters) is kept as its UTF-8.
fn unmap_byte_level(text: &str, table: &AHashMap<char, u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match table.get(&c) {
            Some(b) => out.push(*b),
            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::quantized::gguf_file::Value;

    use super::*;

    /// A toy SentencePiece vocabulary as GGUF metadata.
    fn spm(add_space_prefix: Option<bool>) -> TextTokenizer {
        let mut tokens = vec![("<unk>", 2, 0.0), ("<s>", 3, 0.0), ("</s>", 3, 0.0), ("<|turn|>", 3, 0.0)];
        tokens.extend([
            ("▁", 1, -1.0),
            ("h", 1, -5.0),
            ("i", 1, -5.0),
            ("hi", 1, -2.0),
            ("▁hi", 1, -1.5),
            ("<tool>", 4, 0.0),
        ]);
        let bytes: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
        let mut meta: HashMap<String, Value> = HashMap::new();
        let mut texts: Vec<Value> = tokens.iter().map(|t| Value::String(t.0.into())).collect();
        texts.extend(bytes.iter().map(|b| Value::String(b.clone())));
        let mut types: Vec<Value> = tokens.iter().map(|t| Value::I32(t.1)).collect();
        types.extend(bytes.iter().map(|_| Value::I32(6)));
        let mut scores: Vec<Value> = tokens.iter().map(|t| Value::F32(t.2)).collect();
        scores.extend(bytes.iter().map(|_| Value::F32(0.0)));
        meta.insert("tokenizer.ggml.model".into(), Value::String("llama".into()));
        meta.insert("tokenizer.ggml.tokens".into(), Value::Array(texts));
        meta.insert("tokenizer.ggml.token_type".into(), Value::Array(types));
        meta.insert("tokenizer.ggml.scores".into(), Value::Array(scores));
        if let Some(prefix) = add_space_prefix {
            meta.insert("tokenizer.ggml.add_space_prefix".into(), Value::Bool(prefix));
        }
        TextTokenizer::from_gguf(&Metadata(&meta)).unwrap()
    }

    const BYTE0: u32 = 10;

    #[test]
    fn space_prefix_defaults_on_for_sentencepiece_and_follows_special_tokens() {
        let tok = spm(None);
        assert_eq!(tok.encode_with("hi", false, false).unwrap(), vec![8]);
        // BOS by default (llama.cpp's SPM default), and a space prefix after each special token.
        assert_eq!(tok.encode("hi<|turn|>hi").unwrap(), vec![1, 8, 3, 8]);
        // Without special-token parsing the control token is text (bytes here), the
        // user-defined one is still matched.
        let literal = tok.encode_with("<|turn|>", false, false).unwrap();
        assert_eq!(literal[0], 4, "the space prefix ▁");
        assert_eq!(literal[1], BYTE0 + b'<' as u32);
        // Any token fragment, user-defined too, is followed by the space prefix (llama.cpp).
        assert_eq!(tok.encode_with("hi<tool>hi", false, false).unwrap(), vec![8, 9, 8]);
        // Decoding drops the prefix space of the first token, keeps the rest.
        assert_eq!(tok.decode(&[8, 3, 8]).unwrap(), "hi hi");
        assert_eq!(tok.decode(&[4, 8]).unwrap(), " hi");
        // After a leading BOS llama.cpp keeps the space.
        assert_eq!(tok.decode(&[1, 8]).unwrap(), " hi");
    }

    #[test]
    fn space_prefix_off() {
        let tok = spm(Some(false));
        assert_eq!(tok.encode_with("hi", false, true).unwrap(), vec![7]);
        assert_eq!(tok.encode_with(" hi", false, true).unwrap(), vec![8]);
        assert_eq!(tok.decode(&[8]).unwrap(), " hi");
    }

    #[test]
    fn byte_fallback_round_trips_utf8() {
        let tok = spm(Some(false));
        let ids = tok.encode_with("hié", false, false).unwrap();
        assert_eq!(ids, vec![7, BYTE0 + 0xC3, BYTE0 + 0xA9]);
        assert_eq!(tok.decode(&ids).unwrap(), "hié");
        assert_eq!(tok.vocab_size(), 10 + 256);
        assert!(tok.to_json().unwrap_err().to_string().contains("SentencePiece"));
    }

    #[test]
    fn unknown_tokenizer_models_are_refused_by_name() {
        let mut meta: HashMap<String, Value> = HashMap::new();
        meta.insert("tokenizer.ggml.model".into(), Value::String("rwkv".into()));
        meta.insert("tokenizer.ggml.tokens".into(), Value::Array(vec![Value::String("a".into())]));
        let err = TextTokenizer::from_gguf(&Metadata(&meta)).err().unwrap().to_string();
        assert!(err.contains("GGUF tokenizer model `rwkv` is not supported"), "{err}");
    }
}
