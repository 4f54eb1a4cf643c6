//! A spec's model source, checked before anything is deployed.
//!
//! The grammar is `infergate_protocol::model_source`, the same the server parses `--model`
//! with and the CRD's CEL rule follows; what the rule lets through is checked again here
//! (an older CRD may still be installed) and reported as an `InvalidSpec` condition instead of
//! pods that crash-loop on load.

use std::fmt;

use infergate_protocol::model_source::{self as grammar, Context, Source};

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
    /// Parses a spec's source with the grammar the server and the CRD's CEL rule share.
    pub fn parse(source: &str) -> Result<Self, SpecError> {
        let parsed = grammar::parse(source, Context::Spec)
            .map_err(|e| SpecError(format!("model.source {:?}: {}", e.source, e.reason)))?;
        Ok(match parsed {
            Source::Hub { .. } => ModelSource::HuggingFace { source: source.to_string() },
            Source::Path(path) => ModelSource::File { path: path.to_string() },
            Source::Pvc { claim, path } => ModelSource::Pvc { claim: claim.to_string(), path: path.to_string() },
        })
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
    fn follows_the_shared_table_with_a_message() {
        for example in grammar::EXAMPLES {
            match ModelSource::parse(example.source) {
                Ok(_) => assert!(example.spec, "{:?} admitted", example.source),
                Err(err) => {
                    assert!(!example.spec, "{:?} refused: {err}", example.source);
                    assert!(err.0.contains("model.source"), "{err}");
                }
            }
        }
    }
}
