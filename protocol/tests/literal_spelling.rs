//! No crate spells a shared name by hand: a metric name or a server environment variable written
//! inside a string literal anywhere in the workspace's Rust sources outside this crate (tests
//! included) fails this test. Names are used through `infergate_protocol::{metrics,
//! server_flags}`, so a rename is one edit and a reader of a series can never drift from its
//! writer.
//!
//! What counts as a spelling, inside any string literal (plain, raw, byte, and so format strings):
//! - a metric's full name (`infergate_…`), alone or with a histogram's `_bucket`/`_sum`/`_count`,
//!   at any position (`"sum(rate(infergate_requests_total{{…"` counts);
//! - a metric's short name after an interpolated prefix (`"{PREFIX}_requests_total"`,
//!   `"{}_requests_total"`);
//! - a server environment variable as a whole word (`"set MAX_BATCH_SIZE"` counts,
//!   `"MAX_BATCH_SIZE_X"` and `"--max-batch-size"` do not).
//!
//! Comments (doc comments included) are prose and are not scanned. Files that are not Rust are
//! out of scope: the chart's Grafana dashboards are hand-written JSON, checked query by query
//! against these constants by `operator/tests/dashboard_metrics.rs`; the READMEs document them.

use std::path::{Path, PathBuf};

use infergate_protocol::{metrics, server_flags};

/// Directories never scanned: build output, VCS data, and this crate (the one place the
/// names are written).
const SKIPPED: &[&str] = &["target", ".git", "protocol", "node_modules"];

/// Files allowed to spell a name, each with why. Empty: every former spelling now goes through
/// the constants.
const ALLOWED: &[(&str, &str)] = &[];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !SKIPPED.contains(&name.as_str()) && !name.starts_with("target") {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// One string literal of a source file: the line it starts on (1-based) and its text between
/// the quotes, escapes left as written.
#[derive(Debug, PartialEq)]
struct Literal {
    line: usize,
    text: String,
}

/// The string literals of Rust source `src`: plain, raw (`r#"…"#`), byte and C strings. Comments
/// (line, nested block) are skipped, as are char literals and lifetimes.
fn string_literals(src: &str) -> Vec<Literal> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    // Whether the previous character continues an identifier: `r"` after `fo` is `for"`… no
    // literal prefix then.
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let after_ident = i > 0 && ident(chars[i - 1]);
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        line += usize::from(chars[i] == '\n');
                        i += 1;
                    }
                }
            }
            // Raw strings: r"…", r#"…"#, br"…", cr#"…"#.
            'r' | 'b' | 'c' if !after_ident && raw_start(&chars, i).is_some() => {
                let (hashes, open) = raw_start(&chars, i).unwrap_or_default();
                let start_line = line;
                let mut j = open + 1;
                let mut text = String::new();
                while j < chars.len() {
                    if chars[j] == '"' && (1..=hashes).all(|h| chars.get(j + h) == Some(&'#')) {
                        break;
                    }
                    line += usize::from(chars[j] == '\n');
                    text.push(chars[j]);
                    j += 1;
                }
                out.push(Literal { line: start_line, text });
                i = j + 1 + hashes;
            }
            // Plain strings, and b"…" / c"…" (the prefix letter is skipped as an identifier).
            '"' => {
                let start_line = line;
                let mut j = i + 1;
                let mut text = String::new();
                while j < chars.len() && chars[j] != '"' {
                    if chars[j] == '\\' {
                        text.push(chars[j]);
                        j += 1;
                    }
                    if let Some(&ch) = chars.get(j) {
                        line += usize::from(ch == '\n');
                        text.push(ch);
                    }
                    j += 1;
                }
                out.push(Literal { line: start_line, text });
                i = j + 1;
            }
            // A char literal ('x', '\n', '\u{1F600}', '"') or a lifetime ('a): only the literal
            // is skipped whole, so `'"'` never opens a string.
            '\'' => {
                if next == Some('\\') {
                    // Past the backslash and the escaped character (which may be `'`).
                    let mut j = i + 3;
                    while j < chars.len() && chars[j] != '\'' {
                        j += 1;
                    }
                    i = j + 1;
                } else if chars.get(i + 2) == Some(&'\'') {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// At a raw string's prefix (`r`, `br`, `cr`): its number of `#`s and the index of its opening
/// quote.
fn raw_start(chars: &[char], at: usize) -> Option<(usize, usize)> {
    let mut j = at;
    if matches!(chars.get(j), Some('b' | 'c')) {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while chars.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (chars.get(j) == Some(&'"')).then_some((hashes, j))
}

/// The words of a literal with the character before each: runs of `[A-Za-z0-9_:]` (a metric
/// name, an environment variable, a PromQL series with its `_bucket` suffix).
fn words(text: &str) -> Vec<(Option<char>, &str)> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = Vec::new();
    let mut start = None;
    let mut before = None;
    for (i, c) in text.char_indices() {
        match (word(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((before, &text[s..i]));
                start = None;
            }
            _ => {}
        }
        if start.is_none() {
            before = Some(c);
        }
    }
    if let Some(s) = start {
        out.push((before, &text[s..]));
    }
    out
}

/// The shared names `text` spells by hand.
fn spelled_names(text: &str) -> Vec<&'static str> {
    let mut found = Vec::new();
    for (before, word) in words(text) {
        for series in metrics::ALL {
            let after_prefix = before == Some('}') && word.strip_prefix('_').is_some_and(|w| names(w, series.short));
            if names(word, series.full) || after_prefix {
                found.push(series.full);
            }
        }
        for flag in server_flags::ALL {
            if word == flag.env {
                found.push(flag.env);
            }
        }
    }
    found.dedup();
    found
}

/// Whether `word` is the series `name` or one of its histogram sub-series.
fn names(word: &str, name: &str) -> bool {
    word.strip_prefix(name).is_some_and(|rest| ["", "_bucket", "_sum", "_count"].contains(&rest))
}

/// Every hand spelling in the Rust sources under `root`, as `path:line: name`.
fn spellings_under(root: &Path) -> (usize, Vec<String>) {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let mut found = Vec::new();
    for file in &files {
        let shown = file.strip_prefix(root).unwrap_or(file).display().to_string();
        if ALLOWED.iter().any(|(path, _)| shown == *path) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for literal in string_literals(&text) {
            for name in spelled_names(&literal.text) {
                found.push(format!("{shown}:{}: {name}", literal.line));
            }
        }
    }
    (files.len(), found)
}

#[test]
fn shared_names_are_never_string_literals_outside_the_protocol_crate() {
    let root = package_dir().join("..");
    let (files, found) = spellings_under(&root);
    assert!(files > 50, "found only {files} Rust files under {}", root.display());
    assert!(found.is_empty(), "spelled by hand (use infergate_protocol instead):\n{}", found.join("\n"));
}

/// The scanner finds what the test is for, wherever it sits in a literal, and nothing in
/// comments or code.
#[test]
fn the_scanner_finds_names_inside_every_kind_of_literal() {
    let planted = r###"
// "infergate_requests_total" in a comment is prose.
/* nested /* "infergate_requests_total" */ still a comment */
const LIFETIME: &'static str = "plain";
let quote = '"'; let escaped = '\''; let q = "not infergate_requests_totally a name";
let a = "infergate_requests_total";
let b = format!("sum(rate(infergate_time_to_first_token_seconds_bucket{{ns=\"{ns}\"}}[1m]))");
let c = r#"up and infergate_num_requests_waiting"#;
let d = format!("{PREFIX}_batch_size");
let e = "unset MAX_BATCH_SIZE first";
let f = b"PORT";
let g = "REPORT and --max-batch-size and MAX_BATCH_SIZE_X are not env names";
let h = "multi
line \" infergate_requests_total_sum";
"###;
    let found: Vec<(usize, &str)> = string_literals(planted)
        .iter()
        .flat_map(|l| spelled_names(&l.text).into_iter().map(move |n| (l.line, n)))
        .collect();
    assert_eq!(
        found,
        vec![
            (6, metrics::REQUESTS.full),
            (7, metrics::TIME_TO_FIRST_TOKEN.full),
            (8, metrics::REQUESTS_WAITING.full),
            (9, metrics::BATCH_SIZE.full),
            (10, server_flags::MAX_BATCH_SIZE.env),
            (11, server_flags::PORT.env),
            (13, metrics::REQUESTS.full),
        ]
    );
}

/// The package's folder: cargo sets CARGO_MANIFEST_DIR when it runs the binary; the build-time
/// value is only a fallback, since a build cache shared between checkouts can hand this binary
/// to another checkout than the one it was compiled in.
fn package_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
