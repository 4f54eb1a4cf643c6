//! Reading a streaming completion as it arrives: when the first token came, and how the
//! stream ended. Pure; the probe feeds it the body's chunks.

use serde_json::Value;

use crate::analysis::ProbeOutcome;

/// A `data:` line longer than this is dropped (no token event is that large; the bound keeps a
/// misbehaving server from growing the probe's memory).
const MAX_LINE: usize = 1 << 20;

/// The state of one SSE body read so far.
#[derive(Debug, Default)]
pub struct SseReader {
    /// Bytes of the line not yet terminated by `\n`.
    pending: Vec<u8>,
    /// Skipping the rest of an oversized line.
    skipping: bool,
    first_token: bool,
    done: bool,
    error: bool,
}

impl SseReader {
    /// Feeds one chunk; true when this chunk held the stream's first token.
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        let had_token = self.first_token;
        let mut rest = chunk;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            let (line, after) = rest.split_at(newline);
            if !self.skipping {
                self.pending.extend_from_slice(line);
                let complete = std::mem::take(&mut self.pending);
                self.line(&complete);
            }
            self.skipping = false;
            rest = &after[1..];
        }
        if !self.skipping {
            self.pending.extend_from_slice(rest);
            if self.pending.len() > MAX_LINE {
                self.pending.clear();
                self.skipping = true;
            }
        }
        !had_token && self.first_token
    }

    /// How the stream ended, once the body is over.
    pub fn outcome(&self) -> ProbeOutcome {
        if self.error {
            ProbeOutcome::StreamError
        } else if self.done {
            ProbeOutcome::Ok
        } else {
            ProbeOutcome::CutStream
        }
    }

    fn line(&mut self, line: &[u8]) {
        let Ok(line) = std::str::from_utf8(line) else {
            return;
        };
        let Some(payload) = line.trim_end_matches('\r').strip_prefix("data:") else {
            return;
        };
        let payload = payload.trim();
        if payload == "[DONE]" {
            self.done = true;
            return;
        }
        let Ok(event) = serde_json::from_str::<Value>(payload) else {
            return;
        };
        if event.get("error").is_some() {
            self.error = true;
        } else if has_token(&event) {
            self.first_token = true;
        }
    }
}

/// A completions chunk with text (`choices[].text`) or a chat chunk with content
/// (`choices[].delta.content`); the chat role-only opening chunk has none.
fn has_token(event: &Value) -> bool {
    let non_empty = |v: &Value| v.as_str().is_some_and(|s| !s.is_empty());
    event["choices"]
        .as_array()
        .is_some_and(|choices| choices.iter().any(|c| non_empty(&c["text"]) || non_empty(&c["delta"]["content"])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(chunks: &[&str]) -> (Vec<bool>, ProbeOutcome) {
        let mut reader = SseReader::default();
        let firsts = chunks.iter().map(|c| reader.push(c.as_bytes())).collect();
        (firsts, reader.outcome())
    }

    #[test]
    fn the_first_token_is_seen_once_even_split_across_chunks() {
        let (firsts, outcome) = read(&[
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"choices\":[{\"te",
            "xt\":\"Hi\"}]}\r\n\r\ndata: {\"choices\":[{\"text\":\" there\"}]}\n\n",
            "data: [DONE]\n\n",
        ]);
        assert_eq!(firsts, vec![false, false, true, false]);
        assert_eq!(outcome, ProbeOutcome::Ok);
    }

    #[test]
    fn endings_are_told_apart() {
        assert_eq!(read(&["data: {\"choices\":[{\"text\":\"a\"}]}\n\n"]).1, ProbeOutcome::CutStream);
        assert_eq!(read(&[""]).1, ProbeOutcome::CutStream);
        let error = "data: {\"error\":{\"message\":\"engine stopped\"}}\n\n";
        assert_eq!(read(&["data: {\"choices\":[{\"text\":\"a\"}]}\n\n", error]).1, ProbeOutcome::StreamError);
        assert_eq!(read(&[error, "data: [DONE]\n\n"]).1, ProbeOutcome::StreamError);
        // Comments and keep-alives are not events.
        assert_eq!(read(&[": keep-alive\n\n", "data: [DONE]\n\n"]), (vec![false, false], ProbeOutcome::Ok));
    }

    #[test]
    fn an_oversized_line_is_dropped_and_reading_goes_on() {
        let mut reader = SseReader::default();
        let huge = format!("data: {{\"choices\":[{{\"text\":\"{}", "x".repeat(MAX_LINE + 10));
        assert!(!reader.push(huge.as_bytes()));
        assert!(!reader.push(b"\"}]}\n\n"));
        assert!(reader.push(b"data: {\"choices\":[{\"text\":\"a\"}]}\n"));
        reader.push(b"data: [DONE]\n");
        assert_eq!(reader.outcome(), ProbeOutcome::Ok);
    }
}
