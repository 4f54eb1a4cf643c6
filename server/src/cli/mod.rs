//! Debugging subcommands of the server binary (`infergate-server tokenize|render-chat ...`):
//! they load only what they need (the tokenizer, the chat template) and print to stdout.

pub mod batch_check;
pub mod logits;
pub mod render_chat;
pub mod tokenize;

use std::ffi::OsString;

/// The subcommand named by the first argument, if any; `infergate-server --model ...` serves.
pub fn run_subcommand(args: &[OsString]) -> Option<i32> {
    match args.get(1).and_then(|a| a.to_str()) {
        Some("tokenize") => Some(tokenize::run(&args[1..])),
        Some("render-chat") => Some(render_chat::run(&args[1..])),
        Some("logits") => Some(logits::run(&args[1..])),
        Some("batch-check") => Some(batch_check::run(&args[1..])),
        _ => None,
    }
}

/// Runs one subcommand: parses `args` into `A` (clap prints help or the error: exit 0 or 2),
/// then `work`; a failure prints its first line (candle appends a backtrace to its errors
/// when RUST_BACKTRACE is set) as `infergate-server NAME: ...` and exits 1.
fn run_parsed<A: clap::Parser>(name: &str, args: &[OsString], work: impl FnOnce(&A) -> Result<(), String>) -> i32 {
    let args = match A::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    match work(&args) {
        Ok(()) => 0,
        Err(message) => {
            let first = message.lines().next().unwrap_or_default();
            eprintln!("infergate-server {name}: {first}");
            1
        }
    }
}
