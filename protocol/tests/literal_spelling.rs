//! No crate spells a shared name by hand: a metric name or a server environment variable written
//! as a string literal anywhere in the workspace outside this crate fails this test. Names are
//! used through `infergate_protocol::{metrics, server_flags}`, so a rename is one edit and a
//! reader of a series can never drift from its writer.

use std::path::{Path, PathBuf};

use infergate_protocol::{metrics, server_flags};

/// Directories never scanned: build output, VCS data, and this crate (the one place the
/// names are written).
const SKIPPED: &[&str] = &["target", ".git", "protocol", "node_modules"];

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

/// The spellings that count as writing `name` by hand: the quoted name itself, and a quoted
/// string starting with it and going on as a series selector or a histogram's sub-series.
fn spellings(name: &str, series: bool) -> Vec<String> {
    let mut out = vec![format!("\"{name}\"")];
    if series {
        for suffix in ["{", "_bucket", "_sum", "_count"] {
            out.push(format!("\"{name}{suffix}"));
        }
    }
    out
}

#[test]
fn shared_names_are_never_string_literals_outside_the_protocol_crate() {
    let root = package_dir().join("..");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 50, "found only {} Rust files under {}", files.len(), root.display());
    let mut needles: Vec<(String, String)> = Vec::new();
    for series in metrics::ALL {
        needles.extend(spellings(series.full, true).into_iter().map(|s| (s, series.full.to_string())));
    }
    for flag in server_flags::ALL {
        needles.extend(spellings(flag.env, false).into_iter().map(|s| (s, flag.env.to_string())));
    }
    let mut found = Vec::new();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for (no, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (needle, name) in &needles {
                if line.contains(needle.as_str()) {
                    found.push(format!("{}:{}: {name}", file.strip_prefix(&root).unwrap_or(file).display(), no + 1));
                }
            }
        }
    }
    assert!(found.is_empty(), "spelled by hand (use infergate_protocol instead):\n{}", found.join("\n"));
}

/// The package's folder: cargo sets CARGO_MANIFEST_DIR when it runs the binary; the build-time
/// value is only a fallback, since a build cache shared between checkouts can hand this binary
/// to another checkout than the one it was compiled in.
fn package_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
