//! `infergate-server tokenize --model M [--no-bos] [--no-parse-special] [--no-escape]`:
//! one text per stdin line, one line of space-separated token ids per text on stdout.
//!
//! The defaults are llama.cpp's `llama-tokenize`: BOS as the model declares
//! (`add_bos_token`), special-token strings parsed (`<|im_start|>` is one id), and the escapes
//! `\n \r \t \' \" \\ \xHH` processed, which is how a text with newlines fits on one line.
//! A line's trailing `\n` (or `\r\n`) is not part of its text. Only the tokenizer is loaded.

use std::ffi::OsString;
use std::io::{BufRead, BufWriter, ErrorKind, Write};

use clap::Parser;

use crate::model::{self, ModelSource};

#[derive(Debug, Parser)]
#[command(
    name = "infergate-server tokenize",
    bin_name = "infergate-server tokenize",
    about = "Token ids of each stdin line (one line of space-separated ids per input line)"
)]
struct Args {
    /// The model whose tokenizer to use (any `--model` source of the server).
    #[arg(long)]
    model: String,
    /// Never add BOS, even if the model asks for it.
    #[arg(long)]
    no_bos: bool,
    /// Parse special-token strings such as `<|im_start|>` into their ids (the default).
    #[arg(long, overrides_with = "no_parse_special")]
    parse_special: bool,
    /// Tokenize special-token strings as plain text.
    #[arg(long, overrides_with = "parse_special")]
    no_parse_special: bool,
    /// Process escapes such as `\n` in the input (the default).
    #[arg(long, overrides_with = "no_escape")]
    escape: bool,
    /// Take the input bytes as they are.
    #[arg(long, overrides_with = "escape")]
    no_escape: bool,
}

/// Exit status: 0 done, 1 the model or the input failed, 2 bad flags.
pub fn run(args: &[OsString]) -> i32 {
    super::run_parsed::<Args>("tokenize", args, tokenize)
}

fn tokenize(args: &Args) -> Result<(), String> {
    let source = ModelSource::parse(&args.model).map_err(|e| e.to_string())?;
    let frontend = model::load_text_frontend(&source).map_err(|e| e.to_string())?;
    let tokenizer = frontend.tokenizer;
    let (add_bos, parse_special, escape) = (!args.no_bos, !args.no_parse_special, !args.no_escape);

    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        let read = input.read_until(b'\n', &mut line).map_err(|e| format!("cannot read stdin: {e}"))?;
        if read == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let bytes = if escape { process_escapes(&line) } else { line.clone() };
        let text = String::from_utf8(bytes).map_err(|_| format!("line {number} is not valid UTF-8"))?;
        let ids = tokenizer.encode_with(&text, add_bos, parse_special).map_err(|e| format!("line {number}: {e}"))?;
        let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
        if let Err(e) = writeln!(out, "{}", ids.join(" ")) {
            return write_error(e);
        }
    }
    out.flush().or_else(write_error)
}

/// A closed stdout (`| head`) ends the run quietly.
fn write_error(e: std::io::Error) -> Result<(), String> {
    if e.kind() == ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(format!("cannot write stdout: {e}"))
    }
}

/// llama.cpp's `string_process_escapes`: `\n \r \t \' \" \\ \xHH`; any other backslash stays.
fn process_escapes(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' || i + 1 >= input.len() {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let c = input[i + 1];
        i += 2;
        match c {
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'\'' | b'"' | b'\\' => out.push(c),
            b'x' if hex_byte(input.get(i..i + 2)).is_some() => {
                out.extend(hex_byte(input.get(i..i + 2)));
                i += 2;
            }
            _ => out.extend_from_slice(&[b'\\', c]),
        }
    }
    out
}

fn hex_byte(digits: Option<&[u8]>) -> Option<u8> {
    let digits = digits.filter(|d| d.iter().all(u8::is_ascii_hexdigit))?;
    u8::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_follow_llama_cpp() {
        assert_eq!(process_escapes(br#"a\nb\tc\\d\'\"\r"#), b"a\nb\tc\\d'\"\r");
        assert_eq!(process_escapes(br"\x41\x4g\q\"), b"A\\x4g\\q\\");
        assert_eq!(process_escapes(br"\x4"), b"\\x4");
    }

    #[test]
    fn flags_parse_and_bad_flags_exit_2() {
        let args = Args::try_parse_from(["tokenize", "--model", "m", "--no-bos", "--no-parse-special"]).unwrap();
        assert!(args.no_bos && args.no_parse_special);
        let args = Args::try_parse_from(["tokenize", "--model", "m", "--no-parse-special", "--parse-special"]).unwrap();
        assert!(!args.no_parse_special);
        assert_eq!(run(&["tokenize".into(), "--bogus".into()]), 2);
        assert_eq!(run(&["tokenize".into()]), 2);
    }
}
