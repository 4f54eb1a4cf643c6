//! The pre-tokenizer of each `tokenizer.ggml.pre` value: the regexes llama.cpp's
//! `llm_tokenizer_bpe` applies in order (each one splits the pieces the previous ones left,
//! matches and gaps both kept), and the other per-type switches of `llama_vocab::load`.

use crate::error::{Error, Result};

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const DEEPSEEK_LLM_LETTERS: &str = r"\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+";
const DEEPSEEK_LLM_PUNCT: &str = r"\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+";
const CJK: &str = r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+";
const DEEPSEEK3: &str = r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##;
// Copied from llama.cpp as code points: the literal characters do not survive Unicode normalisation.
const KANA_CJK: &str = r"[\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+";
const CHATGLM4: &str = LLAMA3;
const BLOOM: &str = r" ?[^(\s|.,!?…。，、।۔،)]+";
const SEED_CODER: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const BAILINGMOE: &str = r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";
const EXAONE_MOE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+";
const MINICPM5: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const UFAKZEKA: &str = r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Gemma 4 style: spaces escaped to U+2581, BPE over whole lines of raw UTF-8.
const LINES: &str = r"[^\n]+|[\n]+";

/// How a byte-level (or SentencePiece-style) BPE vocabulary splits and merges text.
#[derive(Debug, Clone, PartialEq)]
pub struct PreTokenizer {
    /// The name llama.cpp resolved (for messages).
    pub name: String,
    pub regexes: Vec<&'static str>,
    /// A whole pre-token that is itself a token is emitted without merging (llama.cpp
    /// `ignore_merges`, HF `ignore_merges`).
    pub ignore_merges: bool,
    /// GPT-2 byte-to-unicode mapping of pre-tokens; false for SentencePiece-style BPE (Gemma 4)
    /// whose tokens are raw UTF-8 with U+2581 for spaces and `<0xXX>` byte tokens.
    pub byte_encode: bool,
    /// Spaces become U+2581 before splitting (Gemma 4).
    pub escape_whitespace: bool,
    /// `add_bos` when `tokenizer.ggml.add_bos_token` is absent.
    pub default_add_bos: bool,
    /// Newline-only pieces that are tokens are emitted whole (llama.cpp's Gemma 4 fix).
    pub newline_runs_whole: bool,
}

impl PreTokenizer {
    fn new(name: &str, regexes: &[&'static str]) -> Self {
        Self {
            name: name.to_string(),
            regexes: regexes.to_vec(),
            ignore_merges: false,
            byte_encode: true,
            escape_whitespace: false,
            default_add_bos: false,
            newline_runs_whole: false,
        }
    }

    /// The pre-tokenizer of `tokenizer.ggml.pre` (None: missing, which llama.cpp treats as
    /// `default` with a warning).
    pub fn from_name(pre: Option<&str>) -> Result<Self> {
        let name = pre.unwrap_or("default");
        let mut p = match name {
            "default" => Self::new(name, &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"]),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2"
            | "jina-v5-nano" => Self { ignore_merges: true, default_add_bos: true, ..Self::new(name, &[LLAMA3]) },
            "dbrx" | "smaug-bpe" => Self::new(name, &[LLAMA3]),
            "deepseek-llm" => {
                Self::new(name, &[r"[\r\n]", DEEPSEEK_LLM_LETTERS, DEEPSEEK_LLM_PUNCT, r"\s+$", CJK, r"\p{N}+"])
            }
            "deepseek-coder" => Self::new(name, &[r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", CJK, r"\p{N}"]),
            "deepseek-v3" | "hunyuan-dense" | "joyai-llm" | "hy_v4" => {
                Self::new(name, &[r"\p{N}{1,3}", KANA_CJK, DEEPSEEK3])
            }
            "falcon" => Self::new(name, &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"]),
            "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
                Self::new(name, &[r"\p{N}", GPT2])
            }
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de" | "a.x-4.0"
            | "mellum" | "modern-bert" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe" | "mpt" | "olmo" | "jais"
            | "trillion" | "granite-docling" | "exaone4" => Self::new(name, &[GPT2]),
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "stablelm2" | "hunyuan" | "solar-open" | "grok-2"
            | "megrez" => Self::new(name, &[QWEN2]),
            "qwen35" => Self::new(name, &[QWEN35]),
            "poro-chat" | "bloom" | "gpt3-finnish" => Self::new(name, &[BLOOM]),
            "chatglm-bpe" => Self::new(name, &[CHATGLM4]),
            "glm4" | "glm5" => Self { ignore_merges: true, ..Self::new(name, &[CHATGLM4]) },
            "laguna" => Self::new(name, &[LINES, QWEN2]),
            "viking" => Self::new(name, &[BLOOM, r"\p{N}"]),
            "tekken" => Self { ignore_merges: true, default_add_bos: true, ..Self::new(name, &[TEKKEN]) },
            "bailingmoe" | "bailingmoe2" | "llada-moe" => Self::new(name, &[BAILINGMOE]),
            "seed-coder" => Self::new(name, &[SEED_CODER]),
            "ufakzeka" => Self::new(name, &[UFAKZEKA]),
            "exaone-moe" => Self::new(name, &[EXAONE_MOE]),
            "minicpm5" => Self { ignore_merges: true, ..Self::new(name, &[r"\p{N}{1,3}", MINICPM5]) },
            "gemma4" | "granite-embed-multi-311m" => Self {
                byte_encode: false,
                escape_whitespace: true,
                default_add_bos: true,
                newline_runs_whole: true,
                ..Self::new(name, &[LINES])
            },
            other => {
                return Err(Error::ModelLoad(format!(
                    "unknown GGUF pre-tokenizer `{other}`: refusing to guess how to split text (known: default, \
                     gpt-2, llama-bpe, qwen2, qwen35, deepseek-llm, deepseek-coder, falcon, starcoder, refact, \
                     command-r, smollm, mpt, gemma4 and other llama.cpp types)"
                )))
            }
        };
        p.name = name.to_string();
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_regex_compiles_in_fancy_regex() {
        for name in [
            "default",
            "llama-bpe",
            "deepseek-llm",
            "deepseek-coder",
            "deepseek-v3",
            "falcon",
            "starcoder",
            "gpt-2",
            "qwen2",
            "qwen35",
            "bloom",
            "viking",
            "tekken",
            "bailingmoe",
            "seed-coder",
            "exaone-moe",
            "minicpm5",
            "gemma4",
            "ufakzeka",
        ] {
            let p = PreTokenizer::from_name(Some(name)).unwrap();
            for r in p.regexes {
                tokenizers::pre_tokenizers::split::Split::new(
                    tokenizers::pre_tokenizers::split::SplitPattern::Regex(r.to_string()),
                    tokenizers::SplitDelimiterBehavior::Isolated,
                    false,
                )
                .unwrap_or_else(|e| panic!("{name}: {r}: {e}"));
            }
        }
    }

    #[test]
    fn unknown_names_are_refused_by_name() {
        let err = PreTokenizer::from_name(Some("mystery")).unwrap_err().to_string();
        assert!(err.contains("unknown GGUF pre-tokenizer `mystery`"), "{err}");
        assert_eq!(PreTokenizer::from_name(None).unwrap().regexes.len(), 4, "missing pre means default");
    }
}
