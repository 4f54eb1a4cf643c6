//! Chat templates (`tokenizer.chat_template`) rendered with minijinja exactly as HF transformers
//! renders them (`transformers.utils.chat_template_utils.render_jinja_template`):
//!
//! * jinja2 `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)` with the
//!   `loopcontrols` extension and the `{% generation %}` block of its `AssistantTracker`
//!   (which renders its body unchanged), and jinja2's default of dropping one trailing newline;
//! * `tojson` is Python's `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
//!   sort_keys=False)`, `raise_exception(msg)` fails the render with `msg`, `strftime_now(fmt)`
//!   formats the render's "now";
//! * printed values read as Python's `str()` (`True`, `None`, `{'a': 1}`), as do `|string` and
//!   `|join`; `is sequence` holds for strings and mappings as in jinja2;
//! * the messages are the client's JSON with top-level `null` keys dropped and the reasoning
//!   fields aliased (`reasoning_content`, `thinking`, `reasoning`), as `apply_chat_template` does.
//!
//! The template is compiled once; a render builds one context and walks the compiled template.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use std::borrow::Cow;
use std::sync::Arc;

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Rest, ValueKind};
use minijinja::{Environment, Error as JinjaError, ErrorKind, State, Value};
use serde_json::Value as Json;

use super::TextTokenizer;
use crate::error::{Error, Result};

pub struct ChatTemplate {
    env: Environment<'static>,
    /// The template loops over a message's content (OpenAI's list of parts), as vLLM detects.
    takes_content_parts: bool,
    bos_token: String,
    eos_token: String,
}

/// What a render takes besides the messages.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderOptions<'a> {
    /// OpenAI function tools (`tools` in the template), `None` when the request has none.
    pub tools: Option<&'a [Json]>,
    /// Open the assistant's turn at the end (`add_generation_prompt`).
    pub add_generation_prompt: bool,
    /// What `strftime_now` formats, as UTC; `None` is the current time.
    pub now: Option<SystemTime>,
}

const TEMPLATE_NAME: &str = "chat";
/// The context variable `strftime_now` reads its time from (seconds since the epoch).
const NOW_VAR: &str = "__infergate_now";
/// The marker raise_exception's errors carry, so the template's own message is reported verbatim.
const RAISED: &str = "raise_exception";

impl ChatTemplate {
    pub fn new(source: &str, tokenizer: &TextTokenizer) -> Result<Self> {
        Self::with_tokens(source, tokenizer.bos_text(), tokenizer.eos_text())
    }

    pub fn with_tokens(source: &str, bos_token: String, eos_token: String) -> Result<Self> {
        let env = environment(source)
            .map_err(|e| Error::ModelLoad(format!("the chat template does not parse: {}", one_line(&e))))?;
        Ok(Self { env, takes_content_parts: rewrite_tags(source).1, bos_token, eos_token })
    }

    /// Whether the template reads a message's content as a list of parts (`{% for .. in
    /// message.content %}`); when not, the server joins text parts into one string first.
    pub fn takes_content_parts(&self) -> bool {
        self.takes_content_parts
    }

    /// Replaces the `bos_token` and `eos_token` the template sees.
    pub fn set_tokens(&mut self, bos_token: String, eos_token: String) {
        self.bos_token = bos_token;
        self.eos_token = eos_token;
    }

    /// Checks that `source` compiles, without tokens (for `--chat-template` at startup).
    pub fn check(source: &str) -> std::result::Result<(), String> {
        environment(source).map(|_| ()).map_err(|e| one_line(&e))
    }

    /// The prompt for `messages` (each a JSON object as the client sent it).
    pub fn render(&self, messages: &[Json], options: &RenderOptions<'_>) -> Result<String> {
        let template =
            self.env.get_template(TEMPLATE_NAME).map_err(|e| Error::Internal(format!("chat template missing: {e}")))?;
        let messages: Vec<Json> = messages.iter().map(normalize_message).collect();
        let now = options.now.unwrap_or_else(SystemTime::now);
        let now = match now.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
        };
        let ctx = minijinja::context! {
            messages => Value::from_serialize(&messages),
            tools => options.tools.map(Value::from_serialize).unwrap_or(Value::from(())),
            documents => Value::from(()),
            add_generation_prompt => options.add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
            __infergate_now => now,
        };
        template.render(ctx).map_err(|e| Error::Template(describe(&e)))
    }
}

/// The template's own message for raise_exception, else minijinja's description with its place.
fn describe(e: &JinjaError) -> String {
    if let (ErrorKind::InvalidOperation, Some(detail)) = (e.kind(), e.detail()) {
        if let Some(message) = detail.strip_prefix(RAISED).and_then(|d| d.strip_prefix(": ")) {
            return message.to_string();
        }
    }
    one_line(e)
}

fn one_line(e: &JinjaError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text.replace('\n', " ")
}

/// `apply_chat_template`'s normalization: top-level `null`s dropped, reasoning fields aliased.
fn normalize_message(message: &Json) -> Json {
    let Json::Object(map) = message else { return message.clone() };
    let mut out: serde_json::Map<String, Json> =
        map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect();
    let reasoning = ["reasoning_content", "thinking", "reasoning"].iter().find_map(|k| out.get(*k).cloned());
    if let Some(reasoning) = reasoning {
        // Python: {"thinking": r, **message, "reasoning_content": r}
        let mut aliased = serde_json::Map::new();
        aliased.insert("thinking".into(), reasoning.clone());
        for (k, v) in std::mem::take(&mut out) {
            aliased.insert(k, v);
        }
        aliased.insert("reasoning_content".into(), reasoning);
        out = aliased;
    }
    Json::Object(out)
}

fn environment(source: &str) -> std::result::Result<Environment<'static>, JinjaError> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    // HF templates call Python string and dict methods (.strip(), .startswith(), .items(), ...).
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    minijinja_contrib::add_to_environment(&mut env);
    env.set_formatter(|out, _state, value| {
        match value.as_str() {
            Some(s) if value.kind() == ValueKind::String => out.write_str(s)?,
            _ => {
                let mut text = String::new();
                py_str(&mut text, value);
                out.write_str(&text)?;
            }
        }
        Ok(())
    });
    env.add_function("raise_exception", |message: Value| -> std::result::Result<Value, JinjaError> {
        let mut text = String::new();
        py_str(&mut text, &message);
        Err(JinjaError::new(ErrorKind::InvalidOperation, format!("{RAISED}: {text}")))
    });
    env.add_function("strftime_now", |state: &State, format: String| -> std::result::Result<String, JinjaError> {
        let now = state.lookup(NOW_VAR).and_then(|v| i64::try_from(v).ok()).unwrap_or(0);
        Ok(strftime(&format, now))
    });
    env.add_filter("tojson", tojson);
    env.add_filter("string", |value: &Value| -> String {
        let mut text = String::new();
        py_str(&mut text, value);
        text
    });
    env.add_filter("join", join);
    // jinja2's trim: str(value).strip(chars)
    env.add_filter("trim", |value: &Value, chars: Option<String>| -> String {
        let mut text = String::new();
        py_str(&mut text, value);
        match chars {
            Some(chars) => text.trim_matches(|c| chars.contains(c)).to_string(),
            None => text.trim().to_string(),
        }
    });
    // len(): 0 for undefined (jinja2's Undefined has a length), an error for None and generators
    let length = |value: &Value| -> std::result::Result<Value, JinjaError> {
        if value.is_undefined() {
            return Ok(Value::from(0));
        }
        match value.len() {
            Some(n) if !is_generator(value) => Ok(Value::from(n)),
            _ => Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                format!("object of type '{}' has no len()", py_type(value)),
            )),
        }
    };
    env.add_filter("length", length);
    env.add_filter("count", length);
    // jinja2's select/map/... return generators: truthy, no len(), not JSON serializable.
    env.add_filter("map", |state: &State, value: Value, args: Rest<Value>| {
        lazy(value, |v| minijinja::filters::map(state, v, args))
    });
    env.add_filter("select", |state: &State, value: Value, test: Option<String>, args: Rest<Value>| {
        lazy(value, |v| minijinja::filters::select(state, v, test.map(Cow::Owned), args))
    });
    env.add_filter("reject", |state: &State, value: Value, test: Option<String>, args: Rest<Value>| {
        lazy(value, |v| minijinja::filters::reject(state, v, test.map(Cow::Owned), args))
    });
    env.add_filter(
        "selectattr",
        |state: &State, value: Value, attr: String, test: Option<String>, args: Rest<Value>| {
            lazy(value, |v| minijinja::filters::selectattr(state, v, Cow::Owned(attr), test.map(Cow::Owned), args))
        },
    );
    env.add_filter(
        "rejectattr",
        |state: &State, value: Value, attr: String, test: Option<String>, args: Rest<Value>| {
            lazy(value, |v| minijinja::filters::rejectattr(state, v, Cow::Owned(attr), test.map(Cow::Owned), args))
        },
    );
    env.add_filter("reverse", |value: Value| -> std::result::Result<Value, JinjaError> {
        if value.kind() == ValueKind::String {
            return minijinja::filters::reverse(&value);
        }
        let mut items: Vec<Value> = check_iterable(value)?.try_iter()?.collect();
        items.reverse();
        Ok(generator(items))
    });
    // `for x in EXPR` over None (or a number) fails in Python; see rewrite_for_loops.
    env.add_filter(PY_ITER, check_iterable);
    env.add_test("sequence", |value: &Value| {
        matches!(value.kind(), ValueKind::Seq | ValueKind::String | ValueKind::Map) && !is_generator(value)
    });
    env.add_test("iterable", |value: &Value| match value.kind() {
        ValueKind::None => false,
        ValueKind::Undefined => true,
        _ => value.try_iter().is_ok(),
    });
    env.add_filter(MARKUP_ESCAPE, markup_escape);
    env.add_template_owned(TEMPLATE_NAME, rewrite_markup_concat(&rewrite_tags(source).0))?;
    Ok(env)
}

/// The filter `for` loops iterate through, which fails on what Python cannot iterate.
const PY_ITER: &str = "__infergate_iter";

/// A jinja2 generator (the result of `map`, `select`, ...).
#[derive(Debug)]
struct Generator(Vec<Value>);

impl Object for Generator {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Iterable
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.clone())
    }
    fn is_true(self: &Arc<Self>) -> bool {
        true
    }
    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<generator object>")
    }
}

fn generator(items: Vec<Value>) -> Value {
    Value::from_object(Generator(items))
}

/// jinja2's `map`/`select`/...: `if seq: for item in seq: yield ...`, so a falsy input is empty.
fn lazy(
    value: Value,
    f: impl FnOnce(Value) -> std::result::Result<Vec<Value>, JinjaError>,
) -> std::result::Result<Value, JinjaError> {
    if !value.is_true() {
        return Ok(generator(Vec::new()));
    }
    f(check_iterable(value)?).map(generator)
}

fn is_generator(value: &Value) -> bool {
    value.downcast_object_ref::<Generator>().is_some()
}

/// Python's type name of a value, for error messages.
fn py_type(value: &Value) -> &'static str {
    if is_generator(value) {
        return "generator";
    }
    match value.kind() {
        ValueKind::Undefined => "Undefined",
        ValueKind::None => "NoneType",
        ValueKind::Bool => "bool",
        ValueKind::Number if value.is_integer() => "int",
        ValueKind::Number => "float",
        ValueKind::String => "str",
        ValueKind::Seq => "list",
        ValueKind::Map => "dict",
        _ => "object",
    }
}

/// `iter(value)`: None, booleans and numbers are not iterable in Python.
fn check_iterable(value: Value) -> std::result::Result<Value, JinjaError> {
    match value.kind() {
        ValueKind::None | ValueKind::Bool | ValueKind::Number => {
            Err(JinjaError::new(ErrorKind::InvalidOperation, format!("'{}' object is not iterable", py_type(&value))))
        }
        _ => Ok(value),
    }
}

/// Rewrites what minijinja lacks or reads differently, tag by tag:
/// * `{% generation %}...{% endgeneration %}` renders its body unchanged in transformers; the
///   same as `{% if true %}...{% endif %}`, whitespace control included;
/// * `{% for x in EXPR %}` iterates `(EXPR)|__infergate_iter`, which fails on None as Python does
///   (minijinja iterates None as empty).
///
/// Also says whether a loop iterates over something's `content`.
fn rewrite_tags(source: &str) -> (String, bool) {
    let mut loops_over_content = false;
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return (out, loops_over_content);
        };
        let inner = &tag[2..end];
        let (open, body) = match inner.strip_prefix(['-', '+']) {
            Some(b) => (&inner[..1], b),
            None => ("", inner),
        };
        let (body, close) = match body.strip_suffix(['-', '+']) {
            Some(b) => (b, &body[body.len() - 1..]),
            None => (body, ""),
        };
        let replacement = match body.trim() {
            "generation" => Some("if true".to_string()),
            "endgeneration" => Some("endif".to_string()),
            b if b.starts_with("for ") => rewrite_for(b)
                .inspect(|(_, expr)| {
                    loops_over_content |= expr.contains("content");
                })
                .map(|(r, _)| r),
            _ => None,
        };
        match replacement {
            Some(r) => {
                let _ = write!(out, "{{%{open} {r} {close}%}}");
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    (out, loops_over_content)
}

/// `for TARGET in EXPR [if COND] [recursive]` with EXPR wrapped in the iteration check.
fn rewrite_for(body: &str) -> Option<(String, String)> {
    let bytes = body.as_bytes();
    let word_at = |i: usize, word: &str| {
        body[i..].starts_with(word)
            && (i == 0 || !is_ident(bytes[i - 1]))
            && bytes.get(i + word.len()).is_none_or(|b| !is_ident(*b))
    };
    let (mut depth, mut quote, mut expr_start, mut expr_end) = (0i32, None::<u8>, None, None);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == b'\\' {
                i += 1;
            } else if b == q {
                quote = None;
            }
        } else {
            match b {
                b'\'' | b'"' => quote = Some(b),
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth -= 1,
                _ if depth == 0 && expr_start.is_none() && word_at(i, "in") => {
                    expr_start = Some(i + 2);
                    i += 2;
                    continue;
                }
                _ if depth == 0 && expr_start.is_some() && (word_at(i, "if") || word_at(i, "recursive")) => {
                    expr_end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        i += 1;
    }
    let start = expr_start?;
    let end = expr_end.unwrap_or(body.len());
    let expr = body[start..end].trim();
    if expr.is_empty() {
        return None;
    }
    Some((format!("{} ({expr})|{PY_ITER} {}", &body[..start], &body[end..]), expr.to_string()))
}

/// The filter that escapes a string added to a `|safe` one.
const MARKUP_ESCAPE: &str = "__infergate_markup_escape";

/// markupsafe's `escape` of what is added to a Markup string; safe strings stay as they are.
fn markup_escape(value: Value) -> Value {
    match value.as_str() {
        Some(s) if value.kind() == ValueKind::String && !value.is_safe() => {
            let mut out = String::with_capacity(s.len());
            for c in s.chars() {
                match c {
                    '&' => out.push_str("&amp;"),
                    '<' => out.push_str("&lt;"),
                    '>' => out.push_str("&gt;"),
                    '"' => out.push_str("&#34;"),
                    '\'' => out.push_str("&#39;"),
                    c => out.push(c),
                }
            }
            Value::from_safe_string(out)
        }
        _ => value,
    }
}

/// In jinja2, `"a"|safe + b` is a Markup string plus a str: `b` is HTML-escaped (even without
/// autoescape); minijinja's `+` joins plainly. For a `{{ ... }}` whose top level is a chain of
/// `+` with a `|safe` operand, the other operands are wrapped in the escape filter.
fn rewrite_markup_concat(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start + 2]);
        let tail = &rest[start + 2..];
        let Some(end) = find_outside_strings(tail, "}}") else {
            out.push_str(tail);
            return out;
        };
        let inner = &tail[..end];
        let (open, body) = match inner.strip_prefix(['-', '+']) {
            Some(b) => (&inner[..1], b),
            None => ("", inner),
        };
        let (body, close) = match body.strip_suffix(['-', '+']) {
            Some(b) => (b, &body[body.len() - 1..]),
            None => (body, ""),
        };
        match body.contains("safe").then(|| escape_markup_chain(body)).flatten() {
            Some(rewritten) => {
                let _ = write!(out, "{open} {rewritten} {close}");
            }
            None => out.push_str(inner),
        }
        out.push_str("}}");
        rest = &tail[end + 2..];
    }
    out.push_str(rest);
    out
}

fn find_outside_strings(text: &str, needle: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut quote = None::<u8>;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(_) if b == b'\\' => i += 1,
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if text[i..].starts_with(needle) => return Some(i),
            None => {}
        }
        i += 1;
    }
    None
}

/// Splits `expr` at its top-level `+`; when one operand ends in `|safe` and nothing of lower
/// precedence is at the top level, wraps the others in the escape filter.
fn escape_markup_chain(expr: &str) -> Option<String> {
    let bytes = expr.as_bytes();
    let (mut depth, mut quote, mut cut) = (0i32, None::<u8>, 0usize);
    let mut operands = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(_) if b == b'\\' => i += 1,
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'\'' | b'"' => quote = Some(b),
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth -= 1,
                b'+' if depth == 0 => {
                    operands.push(&expr[cut..i]);
                    cut = i + 1;
                }
                b'-' | b'~' | b'<' | b'>' | b'=' | b'!' if depth == 0 => return None,
                _ if depth == 0
                    && (i == 0 || !is_ident(bytes[i - 1]))
                    && ["if", "and", "or", "not", "in", "is"]
                        .iter()
                        .any(|w| expr[i..].starts_with(w) && bytes.get(i + w.len()).is_none_or(|c| !is_ident(*c))) =>
                {
                    return None
                }
                _ => {}
            },
        }
        i += 1;
    }
    operands.push(&expr[cut..]);
    let is_safe = |op: &str| op.split_whitespace().collect::<String>().ends_with("|safe");
    if operands.len() < 2 || !operands.iter().any(|op| is_safe(op)) || operands.iter().any(|op| op.trim().is_empty()) {
        return None;
    }
    let parts: Vec<String> = operands
        .iter()
        .map(|op| if is_safe(op) { op.trim().to_string() } else { format!("({})|{MARKUP_ESCAPE}", op.trim()) })
        .collect();
    Some(parts.join(" + "))
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// jinja2's `join`: items as Python `str()`, optionally an attribute of each.
fn join(value: &Value, d: Option<String>, kwargs: Kwargs) -> std::result::Result<String, JinjaError> {
    let attribute: Option<Value> = kwargs.get("attribute")?;
    kwargs.assert_all_used()?;
    let d = d.unwrap_or_default();
    let mut out = String::new();
    if value.is_undefined() {
        return Ok(out);
    }
    let value = check_iterable(value.clone())?;
    if let Some(s) = value.as_str() {
        // join over a string's characters
        for (i, c) in s.chars().enumerate() {
            if i > 0 {
                out.push_str(&d);
            }
            out.push(c);
        }
        return Ok(out);
    }
    for (i, item) in value.try_iter()?.enumerate() {
        if i > 0 {
            out.push_str(&d);
        }
        let item = match &attribute {
            Some(a) => match a.as_str() {
                Some(name) => name.split('.').fold(item, |v, part| v.get_attr(part).unwrap_or(Value::UNDEFINED)),
                None => item.get_item(a).unwrap_or(Value::UNDEFINED),
            },
            None => item,
        };
        py_str(&mut out, &item);
    }
    Ok(out)
}

/// Python's `str(value)`.
pub fn py_str(out: &mut String, value: &Value) {
    match value.kind() {
        ValueKind::String => out.push_str(value.as_str().unwrap_or_default()),
        ValueKind::Undefined => {}
        _ => py_repr(out, value),
    }
}

/// Python's `repr(value)` for JSON-like values.
fn py_repr(out: &mut String, value: &Value) {
    match value.kind() {
        ValueKind::Undefined => {}
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number => py_number(out, value, false),
        ValueKind::String => py_repr_str(out, value.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            if let Ok(iter) = value.try_iter() {
                for (i, item) in iter.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    py_repr(out, &item);
                }
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            if let Ok(iter) = value.try_iter() {
                for (i, key) in iter.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    py_repr(out, &key);
                    out.push_str(": ");
                    py_repr(out, &value.get_item(&key).unwrap_or(Value::UNDEFINED));
                }
            }
            out.push('}');
        }
        _ => {
            let _ = write!(out, "{value}");
        }
    }
}

fn py_number(out: &mut String, value: &Value, json: bool) {
    if let Some(f) = value.as_f64_if_float() {
        py_float(out, f, json);
    } else {
        let _ = write!(out, "{value}");
    }
}

trait FloatOf {
    fn as_f64_if_float(&self) -> Option<f64>;
}

impl FloatOf for Value {
    fn as_f64_if_float(&self) -> Option<f64> {
        if self.is_integer() {
            return None;
        }
        f64::try_from(self.clone()).ok()
    }
}

/// Python's `float.__repr__` (json.dumps uses it too, with `Infinity`/`NaN`).
fn py_float(out: &mut String, f: f64, json: bool) {
    if f.is_nan() {
        out.push_str(if json { "NaN" } else { "nan" });
        return;
    }
    if f.is_infinite() {
        out.push_str(match (json, f > 0.0) {
            (true, true) => "Infinity",
            (true, false) => "-Infinity",
            (false, true) => "inf",
            (false, false) => "-inf",
        });
        return;
    }
    if f == 0.0 {
        out.push_str(if f.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    // Shortest round-trip digits, then Python's layout: plain for 1e-4 <= |f| < 1e16.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    if f < 0.0 {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        if point <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-point) as usize));
            out.push_str(&digits);
        } else if point as usize >= digits.len() {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', point as usize - digits.len()));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..point as usize]);
            out.push('.');
            out.push_str(&digits[point as usize..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
}

fn py_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    !(c.is_control()
        || c.is_whitespace()
        || matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}'))
}

/// Python's `repr(str)`: single quotes unless the text has `'` and no `"`.
fn py_repr_str(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !py_printable(c) => {
                let n = c as u32;
                let _ = if n < 0x100 {
                    write!(out, "\\x{n:02x}")
                } else if n < 0x10000 {
                    write!(out, "\\u{n:04x}")
                } else {
                    write!(out, "\\U{n:08x}")
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
fn tojson(
    value: &Value,
    ensure_ascii: Option<Value>,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> std::result::Result<Value, JinjaError> {
    let pick = |positional: Option<Value>, name: &str| -> std::result::Result<Option<Value>, JinjaError> {
        let named: Option<Value> = kwargs.get(name)?;
        Ok(named.or(positional))
    };
    let ensure_ascii = pick(ensure_ascii, "ensure_ascii")?.is_some_and(|v| v.is_true());
    let indent = match pick(indent, "indent")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                let n = i64::try_from(v).map_err(|_| {
                    JinjaError::new(ErrorKind::InvalidOperation, "tojson: indent must be an int or a str")
                })?;
                Some(" ".repeat(n.max(0) as usize))
            }
        },
    };
    let (item_sep, key_sep) = match pick(None, "separators")? {
        Some(v) if !v.is_none() => {
            let parts: Vec<Value> = v.try_iter()?.collect();
            match parts.as_slice() {
                [a, b] => (a.to_string(), b.to_string()),
                _ => return Err(JinjaError::new(ErrorKind::InvalidOperation, "tojson: separators must be a pair")),
            }
        }
        _ => (if indent.is_some() { "," } else { ", " }.to_string(), ": ".to_string()),
    };
    let sort_keys = pick(None, "sort_keys")?.is_some_and(|v| v.is_true());
    kwargs.assert_all_used()?;
    let dumper = Dumper { ensure_ascii, indent, item_sep, key_sep, sort_keys };
    let mut out = String::new();
    dumper.dump(&mut out, value, 0)?;
    Ok(Value::from(out))
}

struct Dumper {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

impl Dumper {
    fn newline(&self, out: &mut String, depth: usize) {
        if let Some(indent) = &self.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(indent);
            }
        }
    }

    fn dump(&self, out: &mut String, value: &Value, depth: usize) -> std::result::Result<(), JinjaError> {
        if is_generator(value) {
            return Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                "Object of type generator is not JSON serializable",
            ));
        }
        match value.kind() {
            ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number => py_number(out, value, true),
            ValueKind::String => self.string(out, value.as_str().unwrap_or_default()),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = value.try_iter()?.collect();
                if items.is_empty() {
                    out.push_str("[]");
                    return Ok(());
                }
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(out, depth + 1);
                    self.dump(out, item, depth + 1)?;
                }
                self.newline(out, depth);
                out.push(']');
            }
            ValueKind::Map => {
                let mut entries: Vec<(String, Value)> = Vec::new();
                for key in value.try_iter()? {
                    let item = value.get_item(&key).unwrap_or(Value::UNDEFINED);
                    let key = match key.kind() {
                        ValueKind::String => key.as_str().unwrap_or_default().to_string(),
                        ValueKind::None => "null".into(),
                        ValueKind::Bool => if key.is_true() { "true" } else { "false" }.into(),
                        ValueKind::Number => {
                            let mut k = String::new();
                            py_number(&mut k, &key, true);
                            k
                        }
                        _ => {
                            return Err(JinjaError::new(
                                ErrorKind::InvalidOperation,
                                "keys must be str, int, float, bool or None",
                            ))
                        }
                    };
                    entries.push((key, item));
                }
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                if entries.is_empty() {
                    out.push_str("{}");
                    return Ok(());
                }
                out.push('{');
                for (i, (key, item)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(out, depth + 1);
                    self.string(out, key);
                    out.push_str(&self.key_sep);
                    self.dump(out, item, depth + 1)?;
                }
                self.newline(out, depth);
                out.push('}');
            }
            ValueKind::Undefined => {
                return Err(JinjaError::new(
                    ErrorKind::InvalidOperation,
                    "Object of type Undefined is not JSON serializable",
                ))
            }
            _ => {
                return Err(JinjaError::new(
                    ErrorKind::InvalidOperation,
                    format!("Object of type {} is not JSON serializable", value.kind()),
                ))
            }
        }
        Ok(())
    }

    fn string(&self, out: &mut String, s: &str) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c if self.ensure_ascii && !c.is_ascii() => {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        let _ = write!(out, "\\u{unit:04x}");
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// Python's `datetime.strftime` for a naive UTC time, `secs` after the epoch (C locale).
pub fn strftime(format: &str, secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (hour, minute, second) = (tod / 3600, tod % 3600 / 60, tod % 60);
    let (year, month, day) = civil_from_days(days);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday; 0 = Monday
    let yday = days - days_from_civil(year, 1, 1) + 1;
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(spec) = chars.next() else {
            out.push('%');
            break;
        };
        let _ = match spec {
            'Y' => write!(out, "{year}"),
            'y' => write!(out, "{:02}", year.rem_euclid(100)),
            'm' => write!(out, "{month:02}"),
            'd' => write!(out, "{day:02}"),
            'e' => write!(out, "{day:2}"),
            'B' => write!(out, "{}", MONTHS[month as usize - 1]),
            'b' | 'h' => write!(out, "{}", &MONTHS[month as usize - 1][..3]),
            'A' => write!(out, "{}", DAYS[weekday]),
            'a' => write!(out, "{}", &DAYS[weekday][..3]),
            'w' => write!(out, "{}", (weekday + 1) % 7),
            'u' => write!(out, "{}", weekday + 1),
            'j' => write!(out, "{yday:03}"),
            'H' => write!(out, "{hour:02}"),
            'I' => write!(out, "{hour12:02}"),
            'M' => write!(out, "{minute:02}"),
            'S' => write!(out, "{second:02}"),
            'p' => write!(out, "{}", if hour < 12 { "AM" } else { "PM" }),
            'f' => write!(out, "000000"),
            'F' => write!(out, "{year}-{month:02}-{day:02}"),
            'T' => write!(out, "{hour:02}:{minute:02}:{second:02}"),
            'R' => write!(out, "{hour:02}:{minute:02}"),
            'D' => write!(out, "{month:02}/{day:02}/{:02}", year.rem_euclid(100)),
            'c' => write!(
                out,
                "{} {} {day:2} {hour:02}:{minute:02}:{second:02} {year}",
                &DAYS[weekday][..3],
                &MONTHS[month as usize - 1][..3]
            ),
            'x' => write!(out, "{month:02}/{day:02}/{:02}", year.rem_euclid(100)),
            'X' => write!(out, "{hour:02}:{minute:02}:{second:02}"),
            'n' => {
                out.push('\n');
                Ok(())
            }
            't' => {
                out.push('\t');
                Ok(())
            }
            'z' | 'Z' => Ok(()),
            '%' => write!(out, "%"),
            other => write!(out, "%{other}"),
        };
    }
    out
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `--now`: RFC 3339 (`2024-07-26T10:30:00Z`, an offset, or a bare date) or Unix seconds.
pub fn parse_now(text: &str) -> std::result::Result<SystemTime, String> {
    let bad = || format!("`{text}` is neither RFC 3339 (2024-07-26T10:30:00Z) nor Unix seconds");
    let text = text.trim();
    let secs: i64 = if let Ok(n) = text.parse::<i64>() {
        n
    } else {
        let (date, time) = match text.split_once(['T', 't', ' ']) {
            Some((d, t)) => (d, Some(t)),
            None => (text, None),
        };
        let mut parts = date.split('-');
        let (Some(y), Some(m), Some(d), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let (y, m, d): (i64, u32, u32) =
            (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
            return Err(bad());
        }
        let mut secs = days_from_civil(y, m, d) * 86_400;
        if let Some(time) = time {
            let (clock, offset) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
                (c, 0)
            } else if let Some(i) = time.rfind(['+', '-']) {
                let (c, o) = time.split_at(i);
                let sign = if o.starts_with('-') { -1 } else { 1 };
                let (oh, om) = o[1..].split_once(':').ok_or_else(bad)?;
                let oh: i64 = oh.parse().map_err(|_| bad())?;
                let om: i64 = om.parse().map_err(|_| bad())?;
                (c, sign * (oh * 3600 + om * 60))
            } else {
                (time, 0)
            };
            let mut hms = clock.split(':');
            let h: i64 = hms.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
            let mi: i64 = hms.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
            let s: f64 = hms.next().unwrap_or("0").parse().map_err(|_| bad())?;
            if hms.next().is_some() || h > 23 || mi > 59 || !(0.0..61.0).contains(&s) {
                return Err(bad());
            }
            secs += h * 3600 + mi * 60 + s as i64 - offset;
        }
        secs
    };
    Ok(if secs >= 0 {
        UNIX_EPOCH + std::time::Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - std::time::Duration::from_secs(secs.unsigned_abs())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(source: &str, messages: Json) -> Result<String> {
        let t = ChatTemplate::with_tokens(source, "<s>".into(), "</s>".into()).unwrap();
        let messages = messages.as_array().unwrap().clone();
        t.render(&messages, &RenderOptions { add_generation_prompt: true, ..Default::default() })
    }

    #[test]
    fn renders_chatml_with_generation_prompt() {
        let source = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | trim }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let out = render(source, json!([{"role": "user", "content": " hi "}])).unwrap();
        assert_eq!(out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn python_string_methods_and_raise_exception_work() {
        let source = "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}{{ messages[0].content.strip().upper() }}";
        assert_eq!(render(source, json!([{"role": "user", "content": " a b "}])).unwrap(), "A B");
        let err = render(source, json!([{"role": "assistant", "content": "x"}])).unwrap_err();
        assert_eq!(err.to_string(), "the chat template failed: first message must be from the user");
    }

    #[test]
    fn trim_and_lstrip_blocks_and_one_trailing_newline_dropped() {
        let source = "{% for m in messages %}\n    {% if true %}\n[{{ m.role }}]\n    {% endif %}\n{% endfor %}\nend\n";
        assert_eq!(
            render(source, json!([{"role": "user"}, {"role": "assistant"}])).unwrap(),
            "[user]\n[assistant]\nend"
        );
    }

    #[test]
    fn tojson_is_python_json_dumps() {
        let source = "{{ messages[0] | tojson }}|{{ messages[0] | tojson(indent=2) }}|{{ messages[0] | tojson(separators=(',', ':'), sort_keys=true) }}|{{ messages[0].z | tojson(ensure_ascii=true) }}";
        let out =
            render(source, json!([{"z": "é<&>\n", "a": [1, 2.5, 1e-5, 1e16, true, null], "e": {}, "l": []}])).unwrap();
        assert_eq!(
            out,
            concat!(
                r#"{"z": "é<&>\n", "a": [1, 2.5, 1e-05, 1e+16, true, null], "e": {}, "l": []}|"#,
                "{\n  \"z\": \"é<&>\\n\",\n  \"a\": [\n    1,\n    2.5,\n    1e-05,\n    1e+16,\n    true,\n    null\n  ],\n  \"e\": {},\n  \"l\": []\n}|",
                r#"{"a":[1,2.5,1e-05,1e+16,true,null],"e":{},"l":[],"z":"é<&>\n"}|"#,
                r#""\u00e9<&>\n""#
            )
        );
    }

    #[test]
    fn printed_values_read_as_python_str() {
        let source = "{{ true }} {{ none }} {{ 1.0 }} {{ messages[0] }} {{ messages[0].b | string }} {{ [1, 'x'] | join(',') }} {{ messages[0].c }}";
        let out = render(source, json!([{"a": "it's", "b": [true, null, 0.1], "c": 3}])).unwrap();
        assert_eq!(out, r#"True None 1.0 {'a': "it's", 'b': [True, None, 0.1], 'c': 3} [True, None, 0.1] 1,x 3"#);
    }

    #[test]
    fn generation_tags_render_their_body() {
        let source =
            "{% for m in messages %}{%- generation -%}\n  <{{ m.content }}>\n{%- endgeneration %}\n{% endfor %}";
        assert_eq!(render(source, json!([{"content": "a"}, {"content": "b"}])).unwrap(), "<a><b>");
    }

    #[test]
    fn loop_controls_and_key_order_are_kept() {
        let source = "{% for k, v in messages[0].items() %}{% if k == 'stop' %}{% break %}{% endif %}{{ k }}={{ v }};{% endfor %}";
        assert_eq!(render(source, json!([{"zeta": 1, "alpha": 2, "stop": 3, "beta": 4}])).unwrap(), "zeta=1;alpha=2;");
    }

    #[test]
    fn strftime_now_formats_the_given_time() {
        let t = ChatTemplate::with_tokens(
            "{{ strftime_now('%d %b %Y %H:%M:%S %A %j %B %I%p') }}",
            String::new(),
            String::new(),
        )
        .unwrap();
        let now = parse_now("2024-07-26T13:05:09Z").unwrap();
        let out = t.render(&[], &RenderOptions { now: Some(now), ..Default::default() }).unwrap();
        assert_eq!(out, "26 Jul 2024 13:05:09 Friday 208 July 01PM");
        assert_eq!(parse_now("1721999109").unwrap(), now);
        assert_eq!(parse_now("2024-07-26T15:05:09+02:00").unwrap(), now);
        assert!(parse_now("yesterday").is_err());
    }

    #[test]
    fn null_keys_are_dropped_and_tools_passed() {
        let source = "{{ messages[0].content is defined }} {{ tools[0].function.name }} {{ tools is none }}";
        let t = ChatTemplate::with_tokens(source, String::new(), String::new()).unwrap();
        let tools = vec![json!({"type": "function", "function": {"name": "f"}})];
        let out = t
            .render(
                &[json!({"role": "assistant", "content": null})],
                &RenderOptions { tools: Some(&tools), ..Default::default() },
            )
            .unwrap();
        assert_eq!(out, "False f False");
    }

    #[test]
    fn strings_added_to_safe_strings_are_escaped_as_markup_does() {
        let source =
            "{{- 'a<'|safe + messages[0].x + '>'|safe + messages[0] | tojson -}}|{{ messages[0].x ~ 'y'|safe }}";
        assert_eq!(
            render(source, json!([{"x": "\"&'"}])).unwrap(),
            "a<&#34;&amp;&#39;>{&#34;x&#34;: &#34;\\&#34;&amp;&#39;&#34;}|\"&'y"
        );
    }

    #[test]
    fn a_template_that_does_not_parse_is_refused() {
        assert!(ChatTemplate::check("{% if %}").is_err());
        assert!(ChatTemplate::check("{% generation %}x{% endgeneration %}").is_ok());
    }
}
