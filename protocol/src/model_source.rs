//! The model-source grammar: where a model comes from, as the server's `--model` and the
//! CRD's `spec.model.source` spell it.
//!
//! ```text
//! hf://ORG/REPO[@REVISION]/PATH     a file in a Hugging Face Hub repository
//! file:///ABSOLUTE/PATH, /ABSOLUTE/PATH
//! pvc://CLAIM/PATH                  (spec only) a file in a PersistentVolumeClaim
//! RELATIVE/PATH                     (server only) a path on the server's machine
//! ```
//!
//! ORG, REPO and REVISION are made of `A-Z a-z 0-9 . _ -`; PATH has no empty or `..`
//! segments; CLAIM is a DNS-1123 label. [`EXAMPLES`] is the table every implementation of the
//! grammar is tested against: this parser, the server, the operator and the CRD's CEL rule
//! ([`CEL_PATTERN`]).

use std::fmt;

/// Where a source is given: the rules differ only in what a pod can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// The server's `--model`: no claims (the operator mounts them), relative paths allowed.
    Server,
    /// An InferenceDeployment's `spec.model.source`: a pod has no working directory to be
    /// relative to, and a claim is mounted by the operator.
    Spec,
}

/// A parsed source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source<'a> {
    Hub {
        org: &'a str,
        repo: &'a str,
        revision: Option<&'a str>,
        file: &'a str,
    },
    /// A filesystem path (the `file://` prefix removed).
    Path(&'a str),
    Pvc {
        claim: &'a str,
        path: &'a str,
    },
}

/// Why a source does not parse; the message names the grammar's rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError {
    pub source: String,
    pub reason: &'static str,
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "model source {:?}: {}", self.source, self.reason)
    }
}

impl std::error::Error for SourceError {}

/// Parses `source` as given in `context`.
pub fn parse(source: &str, context: Context) -> Result<Source<'_>, SourceError> {
    let invalid = |reason: &'static str| SourceError { source: source.to_string(), reason };
    if let Some(rest) = source.strip_prefix("hf://") {
        let mut parts = rest.splitn(3, '/');
        let (org, repo_rev, file) = match (parts.next(), parts.next(), parts.next()) {
            (Some(org), Some(repo_rev), Some(file)) => (org, repo_rev, file),
            _ => return Err(invalid("expected hf://org/repo[@revision]/file")),
        };
        let (repo, revision) = match repo_rev.split_once('@') {
            Some((repo, revision)) => (repo, Some(revision)),
            None => (repo_rev, None),
        };
        if !is_hub_name(org) || !is_hub_name(repo) {
            return Err(invalid("org and repo are made of letters, digits, '.', '_' and '-'"));
        }
        if revision.is_some_and(|r| !is_hub_name(r)) {
            return Err(invalid("the revision after @ is made of letters, digits, '.', '_' and '-'"));
        }
        check_path(file).map_err(invalid)?;
        return Ok(Source::Hub { org, repo, revision, file });
    }
    if let Some(rest) = source.strip_prefix("pvc://") {
        if context == Context::Server {
            return Err(invalid("pvc:// is for InferenceDeployments; the server reads the mounted path"));
        }
        let (claim, path) = rest.split_once('/').ok_or_else(|| invalid("expected pvc://claim/path"))?;
        if !is_dns1123_label(claim) {
            return Err(invalid("the claim name is not a valid DNS-1123 label"));
        }
        check_path(path).map_err(invalid)?;
        return Ok(Source::Pvc { claim, path });
    }
    if let Some(path) = source.strip_prefix("file://") {
        return absolute(path).map(Source::Path).ok_or_else(|| invalid("file:// needs an absolute path"));
    }
    if source.contains("://") {
        return Err(invalid("the schemes are hf://, file:// and pvc://"));
    }
    match context {
        Context::Spec => absolute(source)
            .map(Source::Path)
            .ok_or_else(|| invalid("expected hf://, pvc://, file:///path or an absolute path")),
        Context::Server if source.is_empty() => Err(invalid("empty")),
        Context::Server => Ok(Source::Path(source)),
    }
}

/// `/` followed by something.
fn absolute(path: &str) -> Option<&str> {
    (path.starts_with('/') && path.len() > 1).then_some(path)
}

fn is_hub_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_path(path: &str) -> Result<(), &'static str> {
    if path.split('/').any(|segment| segment.is_empty() || segment == "..") {
        return Err("the path has an empty or '..' segment");
    }
    Ok(())
}

fn is_dns1123_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

/// The grammar in [`Context::Spec`] as one RE2 pattern, for the CRD's CEL rule
/// (`self.matches(...)`). No backslashes: CEL string literals would need them doubled.
pub const CEL_PATTERN: &str = concat!(
    "^(",
    "hf://[A-Za-z0-9._-]+/[A-Za-z0-9._-]+(@[A-Za-z0-9._-]+)?",
    "(/([^/.][^/]*|[.][^/.][^/]*|[.][.][^/]+|[.]))+",
    "|(file://)?/.+",
    "|pvc://[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?",
    "(/([^/.][^/]*|[.][^/.][^/]*|[.][.][^/]+|[.]))+",
    ")$"
);

/// The CEL rule's message.
pub const CEL_MESSAGE: &str =
    "model.source must be hf://org/repo[@revision]/file, file:///path, an absolute path or pvc://claim/path";

/// One row of the grammar's table: whether `source` is valid for a spec and for the server.
#[derive(Debug, Clone, Copy)]
pub struct Example {
    pub source: &'static str,
    pub spec: bool,
    pub server: bool,
}

const fn ex(source: &'static str, spec: bool, server: bool) -> Example {
    Example { source, spec, server }
}

/// The table every implementation of the grammar is checked against.
pub const EXAMPLES: &[Example] = &[
    ex("hf://org/repo/model.Q8_0.gguf", true, true),
    ex("hf://HuggingFaceTB/SmolLM2-135M-Instruct/dir/model.gguf", true, true),
    ex("hf://org/repo@v1.0/model.gguf", true, true),
    ex("hf://org/repo@main/sub/dir/model-00001-of-00002.gguf", true, true),
    ex("hf://org/repo@/model.gguf", false, false),
    ex("hf://org/repo", false, false),
    ex("hf://org//model.gguf", false, false),
    ex("hf://org/repo/", false, false),
    ex("hf://org/repo/a//b.gguf", false, false),
    ex("hf://org/repo/../secret.gguf", false, false),
    ex("hf://org/re po/model.gguf", false, false),
    ex("hf://org/repo@v 1/model.gguf", false, false),
    ex("hf://", false, false),
    ex("file:///models/a.gguf", true, true),
    ex("file://relative.gguf", false, false),
    ex("file:///", false, false),
    ex("/models/a.gguf", true, true),
    ex("/", false, true),
    ex("models/a.gguf", false, true),
    ex("a.gguf", false, true),
    ex("pvc://weights/llama/7b.gguf", true, false),
    ex("pvc://weights-1/7b.gguf", true, false),
    ex("pvc://Weights/a.gguf", false, false),
    ex("pvc://-weights/a.gguf", false, false),
    ex("pvc://weights", false, false),
    ex("pvc://weights/", false, false),
    ex("pvc://weights/../etc/passwd", false, false),
    ex("pvc://weights/a/../../b", false, false),
    ex("pvc://weights/.hidden/a.gguf", true, false),
    ex("s3://bucket/a.gguf", false, false),
    ex("", false, false),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_follows_the_table() {
        for e in EXAMPLES {
            assert_eq!(parse(e.source, Context::Spec).is_ok(), e.spec, "spec: {:?}", e.source);
            assert_eq!(parse(e.source, Context::Server).is_ok(), e.server, "server: {:?}", e.source);
        }
    }

    #[test]
    fn parts_are_split_where_the_grammar_says() {
        assert_eq!(
            parse("hf://org/repo@v1/sub/m.gguf", Context::Server),
            Ok(Source::Hub { org: "org", repo: "repo", revision: Some("v1"), file: "sub/m.gguf" })
        );
        assert_eq!(parse("file:///m/a.gguf", Context::Spec), Ok(Source::Path("/m/a.gguf")));
        assert_eq!(parse("pvc://w/a/b.gguf", Context::Spec), Ok(Source::Pvc { claim: "w", path: "a/b.gguf" }));
        let err = parse("hf://org/repo@/f", Context::Spec).unwrap_err();
        assert!(err.to_string().contains("revision"), "{err}");
    }
}
