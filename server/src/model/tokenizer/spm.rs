//! SentencePiece BPE (`tokenizer.ggml.model = llama`) with llama.cpp's `llm_tokenizer_spm`
//! semantics: start from UTF-8 characters, repeatedly merge the adjacent pair whose joined
//! text is a token with the highest score (ties: the leftmost pair), and emit each final
//! piece as its token or, when it is not one, as `<0xXX>` byte tokens.
//!
//! A max-heap of candidate pairs keeps this O(n log n) for long prompts. Entries go stale when
//! a neighbour merges first; like llama.cpp they are recognised by their length no longer
//! matching the two symbols' and skipped.
//!
//! llama.cpp also keeps a `rev_merge` map to re-split a final piece that is not a token, but a
//! final piece is either one character or the text of a pair that was only queued because it
//! is a token, so only single characters ever fall back; they fall back to bytes here.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;

/// The text SentencePiece tokenizes: spaces escaped to U+2581, with the optional leading space.
pub fn escape(text: &str, space_prefix: bool) -> String {
    let mut out = String::with_capacity(text.len() + 3);
    if space_prefix {
        out.push('\u{2581}');
    }
    for c in text.chars() {
        if c == ' ' {
            out.push('\u{2581}');
        } else {
            out.push(c);
        }
    }
    out
}

/// Decoded text of a normal SentencePiece piece.
pub fn unescape(piece: &str) -> String {
    piece.replace('\u{2581}', " ")
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Higher score first; at equal scores the pair further left first.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.left.cmp(&self.left))
    }
}

/// Appends the tokens of already escaped `text` to `out`; `unk` stands in for a byte without token.
pub fn tokenize(vocab: &Vocab, text: &str, unk: Option<u32>, out: &mut Vec<u32>) {
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    for (start, c) in text.char_indices() {
        let i = symbols.len();
        symbols.push(Symbol {
            start,
            len: c.len_utf8(),
            prev: i.checked_sub(1),
            next: if start + c.len_utf8() == text.len() { None } else { Some(i + 1) },
        });
    }
    if symbols.is_empty() {
        return;
    }
    let mut queue = BinaryHeap::with_capacity(symbols.len());
    let try_add = |queue: &mut BinaryHeap<Bigram>, symbols: &[Symbol], left: Option<usize>, right: Option<usize>| {
        let (Some(left), Some(right)) = (left, right) else { return };
        let (l, r) = (symbols[left], symbols[right]);
        let joined = &text[l.start..r.start + r.len];
        if let Some(id) = vocab.id(joined) {
            queue.push(Bigram { left, right, score: vocab.scores[id as usize], len: joined.len() });
        }
    };
    for i in 1..symbols.len() {
        try_add(&mut queue, &symbols, Some(i - 1), Some(i));
    }
    while let Some(bigram) = queue.pop() {
        let (l, r) = (symbols[bigram.left], symbols[bigram.right]);
        // Stale: one side already merged into something else.
        if l.len == 0 || r.len == 0 || l.len + r.len != bigram.len {
            continue;
        }
        symbols[bigram.left].len += r.len;
        symbols[bigram.right].len = 0;
        symbols[bigram.left].next = r.next;
        if let Some(next) = r.next {
            symbols[next].prev = Some(bigram.left);
        }
        try_add(&mut queue, &symbols, symbols[bigram.left].prev, Some(bigram.left));
        try_add(&mut queue, &symbols, Some(bigram.left), symbols[bigram.left].next);
    }
    let mut at = Some(0);
    while let Some(i) = at {
        let s = symbols[i];
        let piece = &text[s.start..s.start + s.len];
        match vocab.id(piece) {
            Some(id) => out.push(id),
            None => {
                for b in piece.bytes() {
                    if let Some(id) = vocab.byte_token(b).or(unk) {
                        out.push(id);
                    }
                }
            }
        }
        at = s.next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary: id = position.
    fn vocab(entries: &[(&str, f32)]) -> Vocab {
        let mut texts: Vec<String> = entries.iter().map(|(t, _)| t.to_string()).collect();
        let mut scores: Vec<f32> = entries.iter().map(|(_, s)| *s).collect();
        for b in 0..=255u8 {
            texts.push(format!("<0x{b:02X}>"));
            scores.push(0.0);
        }
        let types = (0..texts.len()).map(|i| if i < entries.len() { 1 } else { 6 }).collect();
        Vocab::new(texts, types, scores)
    }

    fn encode(v: &Vocab, text: &str, prefix: bool) -> Vec<u32> {
        let mut out = Vec::new();
        tokenize(v, &escape(text, prefix), None, &mut out);
        out
    }

    #[test]
    fn merges_the_best_scoring_pair_first() {
        // "abc": "bc" scores higher than "ab", so the result is a + bc, not ab + c.
        let v = vocab(&[("a", 0.0), ("b", 0.0), ("c", 0.0), ("ab", -2.0), ("bc", -1.0)]);
        assert_eq!(encode(&v, "abc", false), vec![0, 4]);
    }

    #[test]
    fn equal_scores_merge_the_leftmost_pair() {
        let v = vocab(&[("a", 0.0), ("ab", -1.0), ("ba", -1.0), ("b", 0.0)]);
        // "aba": ab and ba tie; the leftmost (ab) wins, leaving a.
        assert_eq!(encode(&v, "aba", false), vec![1, 0]);
    }

    #[test]
    fn merged_pieces_keep_merging() {
        let v = vocab(&[("▁", 0.0), ("h", 0.0), ("i", 0.0), ("hi", -1.0), ("▁hi", -0.5)]);
        assert_eq!(encode(&v, "hi", true), vec![4]);
        assert_eq!(encode(&v, "hi", false), vec![3]);
    }

    #[test]
    fn characters_without_tokens_fall_back_to_bytes() {
        let v = vocab(&[("a", 0.0)]);
        let first_byte = 1; // <0x00> follows the one entry
        let ids = encode(&v, "aé", false);
        assert_eq!(ids, vec![0, first_byte + 0xC3, first_byte + 0xA9]);
    }

    #[test]
    fn space_prefix_and_whitespace_escape() {
        assert_eq!(escape("a b", true), "▁a▁b");
        assert_eq!(escape("a b", false), "a▁b");
        assert_eq!(unescape("▁a▁b"), " a b");
    }

    #[test]
    fn long_inputs_are_not_quadratic() {
        let v = vocab(&[("a", 0.0), ("aa", -1.0), ("aaaa", -2.0)]);
        let text = "a".repeat(200_000);
        let started = std::time::Instant::now();
        let ids = encode(&v, &text, false);
        assert_eq!(ids.len(), 50_000);
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
    }
}
