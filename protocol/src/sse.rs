//! Incremental parsing of an OpenAI-style server-sent-event stream.
//!
//! Bytes arrive in arbitrary pieces; [`LineSplitter`] turns them into complete lines and
//! [`EventReader`] turns lines into [`SseItem`]s: text-carrying chunks, usage, `[DONE]` and
//! errors (an `event: error` field, or a `data:` object with an `error` member, as both
//! infergate and llama-server send once the response headers are gone). [`StreamState`]
//! folds the items of one response into how it ended.

use serde_json::Value;

/// A line longer than this is dropped (no token event is that large; the bound keeps a
/// misbehaving server from growing a client's memory).
pub const MAX_LINE: usize = 1 << 20;

/// What one `data:` line of a completion stream means to a client.
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

/// Splits a byte stream into lines (`\n`, `\r\n` or `\r` terminated); a line longer than
/// [`MAX_LINE`] is dropped whole.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    /// The previous piece ended in `\r`: a `\n` starting the next piece belongs to it.
    pending_cr: bool,
    /// Skipping the rest of an oversized line.
    skipping: bool,
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
                b'\n' => self.end_line(&mut lines),
                b'\r' => {
                    self.end_line(&mut lines);
                    self.pending_cr = true;
                }
                _ if self.skipping => {}
                _ => {
                    self.buf.push(b);
                    if self.buf.len() > MAX_LINE {
                        self.buf.clear();
                        self.skipping = true;
                    }
                }
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

    fn end_line(&mut self, lines: &mut Vec<String>) {
        if std::mem::take(&mut self.skipping) {
            return;
        }
        lines.push(self.take());
    }

    fn take(&mut self) -> String {
        let line = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        line
    }
}

/// How one streamed response ended, as far as its body tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// `[DONE]` arrived.
    Done,
    /// The server reported an error inside the stream.
    Error(String),
    /// The body ended (or the client stopped reading) without `[DONE]` or an error.
    Cut,
}

/// The items of one response folded into what a client measures: text, token chunks, usage
/// and the ending. Feed it every item; items after the end are ignored.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StreamState {
    pub text: String,
    /// Chunks that carried text (one per token for infergate and llama-server).
    pub text_chunks: usize,
    pub completion_tokens: Option<u64>,
    pub prompt_tokens: Option<u64>,
    /// Reading the body failed after the headers (the connection broke): the stream is cut.
    pub broken: Option<String>,
    end: Option<StreamEnd>,
}

impl StreamState {
    /// Takes one item; true when it carried the stream's first text.
    pub fn observe(&mut self, item: SseItem) -> bool {
        if self.end.is_some() {
            return false;
        }
        match item {
            SseItem::Done => self.end = Some(StreamEnd::Done),
            SseItem::Error(e) => self.end = Some(StreamEnd::Error(e)),
            SseItem::Chunk { text, completion_tokens, prompt_tokens } => {
                self.completion_tokens = completion_tokens.or(self.completion_tokens);
                self.prompt_tokens = prompt_tokens.or(self.prompt_tokens);
                if !text.is_empty() {
                    self.text.push_str(&text);
                    self.text_chunks += 1;
                    return self.text_chunks == 1;
                }
            }
        }
        false
    }

    /// Whether `[DONE]` or an error ended the stream.
    pub fn ended(&self) -> bool {
        self.end.is_some()
    }

    /// How the stream ended; `Cut` while neither `[DONE]` nor an error came.
    pub fn end(&self) -> StreamEnd {
        self.end.clone().unwrap_or(StreamEnd::Cut)
    }
}

/// Bytes in, items out: a [`LineSplitter`] and an [`EventReader`] together.
#[derive(Debug, Default)]
pub struct SseDecoder {
    lines: LineSplitter,
    reader: EventReader,
}

impl SseDecoder {
    /// The events completed by `bytes`.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let lines = self.lines.push(bytes);
        lines.iter().filter_map(|line| self.reader.event(line)).collect()
    }

    /// The event of an unterminated last line, once the body is over.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let line = self.lines.finish()?;
        self.reader.event(&line)
    }
}

/// One `data:` line: its payload as sent, and what it means.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub data: String,
    pub item: SseItem,
}

/// Turns SSE lines into items, tracking the `event:` field of the current event.
#[derive(Debug, Default)]
pub struct EventReader {
    error_event: bool,
}

impl EventReader {
    /// Interprets one line; `None` for blank lines, comments and non-data fields.
    pub fn line(&mut self, line: &str) -> Option<SseItem> {
        self.event(line).map(|event| event.item)
    }

    /// `line` with the `data:` payload kept.
    pub fn event(&mut self, line: &str) -> Option<SseEvent> {
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
            "data" => Some(SseEvent { data: value.to_string(), item: parse_data(value, self.error_event) }),
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
    fn an_oversized_line_is_dropped_and_reading_goes_on() {
        let huge = format!("data: {{\"choices\":[{{\"text\":\"{}", "x".repeat(MAX_LINE + 10));
        let got =
            items(&[huge.as_bytes(), b"\"}]}\n\n", b"data: {\"choices\":[{\"text\":\"a\"}]}\n", b"data: [DONE]\n"]);
        assert_eq!(got, vec![chunk("a"), SseItem::Done]);
    }

    #[test]
    fn the_state_sees_the_first_text_once_and_the_ending() {
        let mut decoder = SseDecoder::default();
        let mut state = StreamState::default();
        let firsts: Vec<bool> = [
            &b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n"[..],
            b"data: {\"choices\":[{\"te",
            b"xt\":\"Hi\"}]}\r\n\r\ndata: {\"choices\":[{\"text\":\" there\"}]}\n\n",
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n",
        ]
        .iter()
        // Every event is observed (no short-circuit): `observe` accumulates the stream state.
        .map(|piece| {
            decoder.push(piece).into_iter().map(|event| state.observe(event.item)).collect::<Vec<_>>().contains(&true)
        })
        .collect();
        assert_eq!(firsts, vec![false, false, true, false]);
        assert_eq!((state.text.as_str(), state.text_chunks), ("Hi there", 2));
        assert_eq!((state.prompt_tokens, state.completion_tokens), (Some(3), Some(2)));
        assert_eq!(state.end(), StreamEnd::Done);
    }

    #[test]
    fn endings_are_told_apart() {
        let end = |pieces: &[&[u8]]| {
            let mut state = StreamState::default();
            for item in items(pieces) {
                state.observe(item);
            }
            state.end()
        };
        assert_eq!(end(&[b"data: {\"choices\":[{\"text\":\"a\"}]}\n\n"]), StreamEnd::Cut);
        assert_eq!(end(&[b""]), StreamEnd::Cut);
        let error = b"data: {\"error\":{\"message\":\"engine stopped\"}}\n\n";
        assert_eq!(end(&[error, b"data: [DONE]\n\n"]), StreamEnd::Error("engine stopped".into()));
        assert_eq!(end(&[b": keep-alive\n\n", b"data: [DONE]\n\n"]), StreamEnd::Done);
    }

    #[test]
    fn data_without_space() {
        let got = items(&[b"data:[DONE]\n"]);
        assert_eq!(got, vec![SseItem::Done]);
    }
}
