//! Incremental parsing of an OpenAI-style server-sent-event stream.
//!
//! Bytes arrive in arbitrary pieces; [`LineSplitter`] turns them into complete lines and
//! [`EventReader`] turns lines into [`SseItem`]s: text-carrying chunks, usage, `[DONE]` and
//! errors (an `event: error` field, or a `data:` object with an `error` member, as both
//! infergate and llama-server send once the response headers are gone).

use serde_json::Value;

/// What one `data:` line of a completion stream means to the load generator.
#[derive(Debug, Clone, PartialEq)]
pub enum SseItem {
    /// The `[DONE]` sentinel: the stream ended normally.
    Done,
    /// A chunk. `text` is the generated text it carries (empty for role-only, finish-reason
    /// or usage-only chunks); `completion_tokens`/`prompt_tokens` come from a `usage` member.
    Chunk { text: String, completion_tokens: Option<u64>, prompt_tokens: Option<u64> },
    /// The server reported an error inside the stream.
    Error(String),
}

/// Interprets the payload of one `data:` line. `error_event` is true when the event's
/// `event:` field was `error`.
pub fn parse_data(payload: &str, error_event: bool) -> SseItem {
    let payload = payload.trim();
    if payload == "[DONE]" {
        return SseItem::Done;
    }
    let value: Value = match serde_json::from_str(payload) {
        Ok(v) => v,
        Err(_) if error_event => return SseItem::Error(payload.to_string()),
        Err(e) => return SseItem::Error(format!("malformed SSE data ({e}): {payload:.200}")),
    };
    if let Some(err) = value.get("error").filter(|e| !e.is_null()) {
        let msg = err.get("message").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| err.to_string());
        return SseItem::Error(msg);
    }
    if error_event {
        return SseItem::Error(value.to_string());
    }
    let mut text = String::new();
    if let Some(choices) = value.get("choices").and_then(Value::as_array) {
        for choice in choices {
            // /v1/completions carries `text`; /v1/chat/completions carries `delta.content`.
            if let Some(t) = choice.get("text").and_then(Value::as_str) {
                text.push_str(t);
            } else if let Some(t) = choice.pointer("/delta/content").and_then(Value::as_str) {
                text.push_str(t);
            }
        }
    }
    let usage = value.get("usage").filter(|u| u.is_object());
    let field = |name: &str| usage.and_then(|u| u.get(name)).and_then(Value::as_u64);
    SseItem::Chunk { text, completion_tokens: field("completion_tokens"), prompt_tokens: field("prompt_tokens") }
}

/// Splits a byte stream into lines (`\n`, `\r\n` or `\r` terminated).
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    /// The previous piece ended in `\r`: a `\n` starting the next piece belongs to it.
    pending_cr: bool,
}

impl LineSplitter {
    /// Adds `bytes` and returns every line completed by them, without terminators.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in bytes {
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => lines.push(self.take()),
                b'\r' => {
                    lines.push(self.take());
                    self.pending_cr = true;
                }
                _ => self.buf.push(b),
            }
        }
        lines
    }

    /// Returns what is left without a terminator (a stream cut mid-line), if anything.
    pub fn finish(&mut self) -> Option<String> {
        if self.buf.is_empty() {
            None
        } else {
            Some(self.take())
        }
    }

    fn take(&mut self) -> String {
        let line = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        line
    }
}

/// Turns SSE lines into items, tracking the `event:` field of the current event.
#[derive(Debug, Default)]
pub struct EventReader {
    error_event: bool,
}

impl EventReader {
    /// Interprets one line; `None` for blank lines, comments and non-data fields.
    pub fn line(&mut self, line: &str) -> Option<SseItem> {
        if line.is_empty() {
            // Blank line: end of one event; the next starts without an event type.
            self.error_event = false;
            return None;
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => {
                self.error_event = value.trim() == "error";
                None
            }
            "data" => Some(parse_data(value, self.error_event)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(stream: &[&[u8]]) -> Vec<SseItem> {
        let mut split = LineSplitter::default();
        let mut reader = EventReader::default();
        let mut out = Vec::new();
        for piece in stream {
            for line in split.push(piece) {
                out.extend(reader.line(&line));
            }
        }
        if let Some(line) = split.finish() {
            out.extend(reader.line(&line));
        }
        out
    }

    fn chunk(text: &str) -> SseItem {
        SseItem::Chunk { text: text.into(), completion_tokens: None, prompt_tokens: None }
    }

    #[test]
    fn done_sentinel() {
        assert_eq!(parse_data("[DONE]", false), SseItem::Done);
        assert_eq!(parse_data(" [DONE] ", false), SseItem::Done);
    }

    #[test]
    fn completion_text_chunk() {
        let p = r#"{"id":"x","object":"text_completion","choices":[{"index":0,"text":" Paris","finish_reason":null}]}"#;
        assert_eq!(parse_data(p, false), chunk(" Paris"));
    }

    #[test]
    fn chat_delta_chunk() {
        let p = r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#;
        assert_eq!(parse_data(p, false), chunk("Hi"));
        let role_only = r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#;
        assert_eq!(parse_data(role_only, false), chunk(""));
    }

    #[test]
    fn usage_chunk() {
        let p = r#"{"choices":[],"usage":{"prompt_tokens":101,"completion_tokens":128,"total_tokens":229}}"#;
        assert_eq!(
            parse_data(p, false),
            SseItem::Chunk { text: String::new(), completion_tokens: Some(128), prompt_tokens: Some(101) }
        );
        let null_usage = r#"{"choices":[{"text":"a"}],"usage":null}"#;
        assert_eq!(parse_data(null_usage, false), chunk("a"));
    }

    #[test]
    fn error_object_in_data() {
        let p = r#"{"error":{"message":"engine stopped","type":"server_error","code":503}}"#;
        assert_eq!(parse_data(p, false), SseItem::Error("engine stopped".into()));
        let bare = r#"{"error":"boom"}"#;
        assert_eq!(parse_data(bare, false), SseItem::Error("\"boom\"".into()));
    }

    #[test]
    fn error_event_field() {
        let got = items(&[b"event: error\ndata: {\"message\":\"x\"}\n\n"]);
        assert_eq!(got, vec![SseItem::Error(r#"{"message":"x"}"#.into())]);
        let plain = items(&[b"event: error\ndata: overloaded\n\n"]);
        assert_eq!(plain, vec![SseItem::Error("overloaded".into())]);
    }

    #[test]
    fn malformed_json_is_error() {
        assert!(matches!(parse_data("{not json", false), SseItem::Error(_)));
    }

    #[test]
    fn stream_split_across_pieces_and_crlf() {
        let got = items(&[
            b"data: {\"choices\":[{\"text\":\"A\"}]}\r",
            b"\n\r\ndata: {\"choi",
            b"ces\":[{\"text\":\"B\"}]}\n\n: keep-alive comment\n\ndata: [DONE]\n\n",
        ]);
        assert_eq!(got, vec![chunk("A"), chunk("B"), SseItem::Done]);
    }

    #[test]
    fn error_event_type_resets_after_blank_line() {
        let got = items(&[b"event: error\ndata: bad\n\ndata: {\"choices\":[{\"text\":\"ok\"}]}\n\n"]);
        assert_eq!(got, vec![SseItem::Error("bad".into()), chunk("ok")]);
    }

    #[test]
    fn unterminated_last_line_is_parsed() {
        let got = items(&[b"data: [DONE]"]);
        assert_eq!(got, vec![SseItem::Done]);
    }

    #[test]
    fn data_without_space() {
        let got = items(&[b"data:[DONE]\n"]);
        assert_eq!(got, vec![SseItem::Done]);
    }
}
