//! `infergate-server render-chat`: being written (issue 11).

use std::ffi::OsString;

pub fn run(_args: &[OsString]) -> i32 {
    eprintln!("infergate-server render-chat: not available in this build yet");
    2
}
