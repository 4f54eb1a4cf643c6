//! Debugging subcommands of the server binary (`infergate-server tokenize|render-chat ...`):
//! they load only what they need (the tokenizer, the chat template) and print to stdout.

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
        _ => None,
    }
}
