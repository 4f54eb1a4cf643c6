//! Byte-level BPE (`tokenizer.ggml.model = gpt2`) and SentencePiece-style BPE (`gemma4`).
//!
//! Splitting and merging run in a `tokenizers::Tokenizer` without added tokens (special
//! tokens are split out beforehand by `special.rs`, the same way for every backend): the
//! `.out` vectors llama.cpp tests against were produced by HF tokenizers, and its BPE model
//! merges by rank with the same leftmost tie-break as `llm_tokenizer_bpe_session`.

use ahash::AHashMap;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::pre::PreTokenizer;
use super::vocab::{Vocab, TYPE_CONTROL, TYPE_USER_DEFINED};
use crate::error::{Error, Result};

pub struct Bpe {
    inner: Tokenizer,
    pub pre: PreTokenizer,
}

impl Bpe {
    pub fn new(vocab: &Vocab, merges: &[&str], pre: PreTokenizer) -> Result<Self> {
        let map: AHashMap<String, u32> = vocab.texts.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let mut pairs = Vec::with_capacity(merges.len());
        let mut joined = String::new();
        for m in merges {
            // llama.cpp splits at the first space after the first byte (a token may be a space).
            let at = m.as_bytes().iter().skip(1).position(|b| *b == b' ').map(|i| i + 1);
            let Some(at) = at else {
                return Err(Error::ModelLoad(format!("malformed BPE merge `{m}`")));
            };
            let (a, b) = (&m[..at], &m[at + 1..]);
            // HF's BPE needs both halves and their join in the vocabulary; llama.cpp would
            // byte-encode such a join, which no converter produces.
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            if map.contains_key(a) && map.contains_key(b) && map.contains_key(joined.as_str()) {
                pairs.push((a.to_string(), b.to_string()));
            }
        }
        let bpe = BPE::builder()
            .vocab_and_merges(map, pairs)
            .ignore_merges(pre.ignore_merges)
            .byte_fallback(!pre.byte_encode)
            .build()
            .map_err(|e| Error::ModelLoad(format!("cannot build BPE from GGUF vocabulary: {e}")))?;
        let mut inner = Tokenizer::new(bpe);
        if pre.byte_encode {
            let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
            for regex in &pre.regexes {
                let split = Split::new(SplitPattern::Regex(regex.to_string()), SplitDelimiterBehavior::Isolated, false)
                    .map_err(|e| Error::ModelLoad(format!("bad pre-tokenizer regex for `{}`: {e}", pre.name)))?;
                steps.push(split.into());
            }
            steps.push(ByteLevel::new(false, false, false).into());
            inner.with_pre_tokenizer(Some(Sequence::new(steps)));
            inner.with_decoder(Some(ByteLevelDecoder::default()));
        }
        // SentencePiece-style BPE splits lines itself (see `tokenize`), so no pre-tokenizer.
        Ok(Self { inner, pre })
    }

    /// Appends the tokens of one text fragment (no special tokens in it) to `out`.
    pub fn tokenize(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) -> Result<()> {
        if self.pre.byte_encode {
            return self.encode_piece(text, out);
        }
        let text = if self.pre.escape_whitespace { text.replace(' ', "\u{2581}") } else { text.to_string() };
        // `[^\n]+|[\n]+`: BPE runs per line; a run of newlines that is a token stays whole.
        let mut rest = text.as_str();
        while !rest.is_empty() {
            let newline = rest.starts_with('\n');
            let end = rest.find(|c: char| (c == '\n') != newline).unwrap_or(rest.len());
            let (piece, tail) = rest.split_at(end);
            match vocab.id(piece) {
                Some(id) if newline && self.pre.newline_runs_whole => out.push(id),
                _ => self.encode_piece(piece, out)?,
            }
            rest = tail;
        }
        Ok(())
    }

    fn encode_piece(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let encoding = self.inner.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        out.extend_from_slice(encoding.get_ids());
        Ok(())
    }

    /// The byte-level tokenizer as `tokenizer.json`, special tokens registered as added tokens.
    pub fn to_json(&self, vocab: &Vocab) -> Result<String> {
        if !self.pre.byte_encode {
            return Err(Error::Tokenizer(format!(
                "exporting a `{}` SentencePiece-style BPE vocabulary as tokenizer.json is not supported",
                self.pre.name
            )));
        }
        let mut tokenizer = self.inner.clone();
        let specials: Vec<AddedToken> = vocab
            .texts
            .iter()
            .zip(&vocab.types)
            .filter(|(_, ty)| matches!(**ty, TYPE_CONTROL | TYPE_USER_DEFINED))
            .map(|(t, ty)| AddedToken::from(t.clone(), *ty == TYPE_CONTROL).normalized(false))
            .collect();
        tokenizer.add_special_tokens(specials).map_err(|e| Error::Tokenizer(e.to_string()))?;
        tokenizer.to_string(false).map_err(|e| Error::Tokenizer(e.to_string()))
    }
}

/// GPT-2's byte-to-unicode table reversed: the byte each vocabulary character stands for.
pub fn byte_level_decoder() -> AHashMap<char, u8> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut extra = 0;
    for b in 0..=255u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    printable.iter().zip(chars).map(|(b, c)| (char::from_u32(c).unwrap(), *b as u8)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_table_maps_all_bytes() {
        let t = byte_level_decoder();
        assert_eq!(t.len(), 256);
        assert_eq!(t[&'Ġ'], b' ');
        assert_eq!(t[&'Ċ'], b'\n');
        assert_eq!(t[&'a'], b'a');
    }
}
