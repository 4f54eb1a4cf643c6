//! Incremental detokenization with stop strings: text leaves only when it is final.

use crate::error::Result;
use crate::model::TextTokenizer;

pub struct TextStream {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
    stops: Vec<String>,
    /// Decoded text that may still turn out to be the start of a stop string.
    held: String,
}

/// What one new token adds to the output.
#[derive(Debug, Default, PartialEq)]
pub struct Delta {
    pub text: String,
    /// A stop string was found; `text` ends right before it.
    pub stopped: bool,
}

impl TextStream {
    pub fn new(stops: Vec<String>) -> Self {
        Self { ids: Vec::new(), prefix_offset: 0, read_offset: 0, stops, held: String::new() }
    }

    pub fn push(&mut self, token: u32, tokenizer: &TextTokenizer) -> Result<Delta> {
        self.ids.push(token);
        // Decode a window so multi-byte characters split across tokens come out whole.
        let prefix = tokenizer.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let full = tokenizer.decode(&self.ids[self.prefix_offset..])?;
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') && full.is_char_boundary(prefix.len()) {
            self.held.push_str(&full[prefix.len()..]);
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
        }
        Ok(self.release())
    }

    /// Everything still held, at the end of generation.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    fn release(&mut self) -> Delta {
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let text = self.held[..at].to_string();
            self.held.clear();
            return Delta { text, stopped: true };
        }
        let keep = self.stops.iter().map(|s| partial_suffix_len(&self.held, s)).max().unwrap_or(0);
        let cut = self.held.len() - keep;
        let text = self.held[..cut].to_string();
        self.held.drain(..cut);
        Delta { text, stopped: false }
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`.
fn partial_suffix_len(text: &str, stop: &str) -> usize {
    let max = stop.len().saturating_sub(1).min(text.len());
    (1..=max)
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && stop.starts_with(&text[text.len() - n..]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut s = TextStream::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            s.held.push_str(p);
            let d = s.release();
            out.push_str(&d.text);
            if d.stopped {
                return (out, true);
            }
        }
        out.push_str(&s.finish());
        (out, false)
    }

    #[test]
    fn stop_string_split_across_tokens_is_caught() {
        assert_eq!(feed(&["\n\n"], &["Paris", ".\n", "\nMore"]), ("Paris.".to_string(), true));
        assert_eq!(feed(&["END"], &["aE", "N", "Dzz"]), ("a".to_string(), true));
    }

    #[test]
    fn partial_match_that_diverges_is_released() {
        assert_eq!(feed(&["END"], &["aE", "N", "x"]), ("aENx".to_string(), false));
    }

    #[test]
    fn partial_suffix_respects_char_boundaries() {
        assert_eq!(partial_suffix_len("caf\u{e9}", "\u{e9}t\u{e9}"), 2);
        assert_eq!(partial_suffix_len("abc", "zz"), 0);
    }
}
