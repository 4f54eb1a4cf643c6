//! Splitting special-token strings out of text before the model tokenizer sees it, as
//! llama.cpp's `tokenizer_st_partition` does: longest token text first, every occurrence of it
//! in every remaining text fragment, then the next token. Control and unknown tokens are only
//! split out when `parse_special` is set; user-defined tokens always are (HF tokenizers does the
//! same for added tokens, which the neox-style vocabularies rely on).

use super::vocab::{Vocab, TYPE_CONTROL, TYPE_UNKNOWN, TYPE_USER_DEFINED};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

#[derive(Debug, Clone)]
struct Special {
    id: u32,
    text: String,
    /// Only split out when special tokens are parsed (control and unknown tokens).
    needs_parse_special: bool,
    /// Whitespace left of the token is dropped (llama.cpp's LSTRIP attribute).
    lstrip: bool,
    /// Whitespace right of the token is dropped (llama.cpp's RSTRIP attribute).
    rstrip: bool,
}

#[derive(Debug, Clone, Default)]
pub struct SpecialTokens {
    /// Sorted by text length, longest first (stable, so ties keep id order).
    tokens: Vec<Special>,
}

impl SpecialTokens {
    /// The control, user-defined and unknown tokens of a vocabulary. `model_name` is
    /// `general.name`: llama.cpp gives Phi-3's special tokens the RSTRIP attribute by name.
    pub fn from_vocab(vocab: &Vocab, model_name: &str) -> Self {
        let phi3 = {
            let name = model_name.to_lowercase();
            name.contains("phi-3") || name.contains("phi3")
        };
        let mut tokens: Vec<Special> = vocab
            .texts
            .iter()
            .zip(&vocab.types)
            .enumerate()
            .filter(|(_, (_, ty))| matches!(**ty, TYPE_CONTROL | TYPE_USER_DEFINED | TYPE_UNKNOWN))
            .map(|(id, (text, ty))| Special {
                id: id as u32,
                text: text.clone(),
                needs_parse_special: *ty != TYPE_USER_DEFINED,
                lstrip: false,
                rstrip: phi3 && !matches!(text.as_str(), "<unk>" | "<s>" | "<|endoftext|>"),
            })
            .collect();
        if phi3 {
            // llama.cpp sets RSTRIP on `</s>` even where it is not a special token.
            if let Some(id) = vocab.id("</s>") {
                if !tokens.iter().any(|t| t.id == id) {
                    tokens.push(Special {
                        id,
                        text: "</s>".into(),
                        needs_parse_special: true,
                        lstrip: false,
                        rstrip: true,
                    });
                }
            }
        }
        tokens.sort_by_key(|t| std::cmp::Reverse(t.text.len()));
        Self { tokens }
    }

    /// Special tokens given as (id, text, user_defined), for tests.
    #[cfg(test)]
    pub fn from_list(list: &[(u32, &str, bool)]) -> Self {
        let mut tokens: Vec<Special> = list
            .iter()
            .map(|(id, text, user)| Special {
                id: *id,
                text: text.to_string(),
                needs_parse_special: !user,
                lstrip: false,
                rstrip: false,
            })
            .collect();
        tokens.sort_by_key(|t| std::cmp::Reverse(t.text.len()));
        Self { tokens }
    }

    pub fn partition<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        let mut fragments = Vec::new();
        if text.is_empty() {
            return fragments;
        }
        fragments.push(Fragment::Text(text));
        for special in &self.tokens {
            if (special.needs_parse_special && !parse_special) || special.text.is_empty() {
                continue;
            }
            // Cheap rejection: most special tokens never occur in a prompt.
            if !text.contains(special.text.as_str()) {
                continue;
            }
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                match fragment {
                    Fragment::Text(raw) if raw.len() >= special.text.len() => split_one(raw, special, &mut next),
                    other => next.push(other),
                }
            }
            fragments = next;
        }
        fragments
    }
}

/// C's `isspace` in the "C" locale, which llama.cpp's strip attributes use.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn split_one<'a>(mut raw: &'a str, special: &Special, out: &mut Vec<Fragment<'a>>) {
    while let Some(at) = raw.find(special.text.as_str()) {
        let mut left = &raw[..at];
        if special.lstrip {
            left = left.trim_end_matches(|c: char| c.is_ascii() && is_c_space(c as u8));
        }
        if !left.is_empty() {
            out.push(Fragment::Text(left));
        }
        out.push(Fragment::Token(special.id));
        raw = &raw[at + special.text.len()..];
        if special.rstrip {
            raw = raw.trim_start_matches(|c: char| c.is_ascii() && is_c_space(c as u8));
        }
    }
    if !raw.is_empty() {
        out.push(Fragment::Text(raw));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specials() -> SpecialTokens {
        SpecialTokens::from_list(&[
            (1, "<s>", false),
            (7, "<start_of_turn>", false),
            (9, "<tool>", true),
            (10, "<t>", false),
        ])
    }

    #[test]
    fn control_tokens_are_split_out_only_when_parsing_specials() {
        let s = specials();
        assert_eq!(
            s.partition("a<start_of_turn>user<s>", true),
            vec![Fragment::Text("a"), Fragment::Token(7), Fragment::Text("user"), Fragment::Token(1)]
        );
        assert_eq!(s.partition("a<start_of_turn>user<s>", false), vec![Fragment::Text("a<start_of_turn>user<s>")]);
    }

    #[test]
    fn user_defined_tokens_are_always_split_out() {
        let s = specials();
        assert_eq!(
            s.partition("x<tool>y<tool>", false),
            vec![Fragment::Text("x"), Fragment::Token(9), Fragment::Text("y"), Fragment::Token(9)]
        );
    }

    #[test]
    fn longer_tokens_win_over_their_substrings() {
        // `<t>` is not inside `<tool>`, but `<s>`-like overlaps resolve longest first.
        let s = SpecialTokens::from_list(&[(1, "<|a|>", false), (2, "<|a|><|b|>", false)]);
        assert_eq!(s.partition("<|a|><|b|><|a|>", true), vec![Fragment::Token(2), Fragment::Token(1)]);
        assert!(s.partition("", true).is_empty());
    }

    #[test]
    fn rstrip_drops_whitespace_after_the_token() {
        let mut s = specials();
        s.tokens.iter_mut().for_each(|t| t.rstrip = t.id == 10);
        assert_eq!(s.partition("<t>  \nhi", true), vec![Fragment::Token(10), Fragment::Text("hi")]);
    }
}
