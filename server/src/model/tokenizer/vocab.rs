//! The token table of a GGUF vocabulary (`tokenizer.ggml.tokens/scores/token_type`) and the
//! per-token text llama.cpp's `token_to_piece` produces when decoding.

use ahash::AHashMap;

use crate::error::Result;
use crate::model::gguf::Metadata;

/// llama.cpp token types (`tokenizer.ggml.token_type`).
pub const TYPE_NORMAL: i32 = 1;
pub const TYPE_UNKNOWN: i32 = 2;
pub const TYPE_CONTROL: i32 = 3;
pub const TYPE_USER_DEFINED: i32 = 4;
pub const TYPE_BYTE: i32 = 6;

pub struct Vocab {
    pub texts: Vec<String>,
    pub types: Vec<i32>,
    pub scores: Vec<f32>,
    ids: AHashMap<String, u32>,
}

impl Vocab {
    pub fn from_gguf(meta: &Metadata<'_>) -> Result<Self> {
        let tokens = meta.strings("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        // Like llama.cpp, a missing type array means every token is normal, missing scores are 0.
        let types = if meta.0.contains_key("tokenizer.ggml.token_type") {
            meta.i32s("tokenizer.ggml.token_type")?
        } else {
            vec![TYPE_NORMAL; n]
        };
        let scores = if meta.0.contains_key("tokenizer.ggml.scores") {
            meta.f32s("tokenizer.ggml.scores")?
        } else {
            vec![0.0; n]
        };
        let texts: Vec<String> = tokens
            .iter()
            .enumerate()
            // llama.cpp renames empty tokens so that every text maps back to one id.
            .map(|(i, t)| if t.is_empty() { format!("[EMPTY_{i}]") } else { t.to_string() })
            .collect();
        Ok(Self::new(texts, types, scores))
    }

    pub fn new(texts: Vec<String>, mut types: Vec<i32>, mut scores: Vec<f32>) -> Self {
        types.resize(texts.len(), TYPE_NORMAL);
        scores.resize(texts.len(), 0.0);
        let mut ids = AHashMap::with_capacity(texts.len());
        // A duplicated text resolves to its last id, as llama.cpp's `token_to_id[word] = i`.
        for (i, t) in texts.iter().enumerate() {
            ids.insert(t.clone(), i as u32);
        }
        Self { texts, types, scores, ids }
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    /// The token of one byte in SentencePiece vocabularies: `<0xXX>`, else the byte itself.
    pub fn byte_token(&self, byte: u8) -> Option<u32> {
        self.id(&format!("<0x{byte:02X}>")).or_else(|| {
            if byte.is_ascii() {
                self.id(&(byte as char).to_string())
            } else {
                None
            }
        })
    }
}

/// The byte a `<0xXX>` token stands for.
pub fn byte_of_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}
