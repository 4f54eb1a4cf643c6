//! The model source grammar, checked before anything is deployed.
//!
//! The CRD's CEL rule only checks the scheme prefix; the shapes behind it (an hf:// source needs
//! org, repo and file; a pvc:// source needs a claim and a path) are checked here and reported
//! as an `InvalidSpec` condition instead of pods that crash-loop on load.

use std::fmt;

/// Where mounted claims appear in the pod.
pub const PVC_MOUNT_PATH: &str = "/mnt/model";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// `hf://org/repo/path/to/file`: downloaded by the server through hf-hub.
    HuggingFace { source: String },
    /// An absolute path inside the image (`/p` or `file:///p`).
    File { path: String },
    /// `pvc://claim/path`: the claim is mounted read-only at [`PVC_MOUNT_PATH`].
    Pvc { claim: String, path: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError(pub String);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ModelSource {
    pub fn parse(source: &str) -> Result<Self, SpecError> {
        let invalid = |why: &str| SpecError(format!("model.source {source:?}: {why}"));
        if let Some(rest) = source.strip_prefix("hf://") {
            let parts: Vec<&str> = rest.split('/').collect();
            if parts.len() < 3 || parts.iter().any(|p| p.is_empty()) {
                return Err(invalid("expected hf://org/repo/file"));
            }
            Ok(ModelSource::HuggingFace { source: source.to_string() })
        } else if let Some(rest) = source.strip_prefix("pvc://") {
            let (claim, path) = rest.split_once('/').ok_or_else(|| invalid("expected pvc://claim/path"))?;
            if !is_dns1123_label(claim) {
                return Err(invalid("the claim name is not a valid DNS-1123 label"));
            }
            check_relative_path(path).map_err(&invalid)?;
            Ok(ModelSource::Pvc { claim: claim.to_string(), path: path.to_string() })
        } else {
            let path = source.strip_prefix("file://").unwrap_or(source);
            if !path.starts_with('/') || path.len() < 2 {
                return Err(invalid("expected hf://, pvc://, file:///path or an absolute path"));
            }
            Ok(ModelSource::File { path: path.to_string() })
        }
    }

    /// The `--model` argument the server gets.
    pub fn server_arg(&self) -> String {
        match self {
            ModelSource::HuggingFace { source } => source.clone(),
            ModelSource::File { path } => path.clone(),
            ModelSource::Pvc { path, .. } => format!("{PVC_MOUNT_PATH}/{path}"),
        }
    }
}

fn check_relative_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() || path.starts_with('/') {
        return Err("expected a path inside the claim after pvc://claim/");
    }
    if path.split('/').any(|part| part == ".." || part.is_empty()) {
        return Err("the path inside the claim must not contain '..' or empty segments");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(
            ModelSource::parse("hf://org/repo/model.Q8_0.gguf").unwrap().server_arg(),
            "hf://org/repo/model.Q8_0.gguf"
        );
        assert_eq!(
            ModelSource::parse("file:///models/a.gguf").unwrap(),
            ModelSource::File { path: "/models/a.gguf".into() }
        );
        assert_eq!(ModelSource::parse("/models/a.gguf").unwrap().server_arg(), "/models/a.gguf");
        let pvc = ModelSource::parse("pvc://weights/llama/7b.gguf").unwrap();
        assert_eq!(pvc, ModelSource::Pvc { claim: "weights".into(), path: "llama/7b.gguf".into() });
        assert_eq!(pvc.server_arg(), "/mnt/model/llama/7b.gguf");
    }

    #[test]
    fn rejects_malformed_sources_with_a_message() {
        for bad in [
            "hf://org/repo",
            "hf://org//file.gguf",
            "file://relative.gguf",
            "models/a.gguf",
            "pvc://Weights/a.gguf",
            "pvc://weights",
            "pvc://weights/../etc/passwd",
            "s3://bucket/a.gguf",
            "",
        ] {
            let err = ModelSource::parse(bad).expect_err(bad);
            assert!(err.0.contains("model.source"), "{err}");
        }
    }
}
