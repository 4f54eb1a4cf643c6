//! Where a model comes from: a local path, `file://`, or `hf://org/repo[@revision]/file`.

use std::path::PathBuf;

use hf_hub::{Cache, Repo, RepoType};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A GGUF file or a directory with config.json, *.safetensors and tokenizer.json.
    Local(PathBuf),
    /// A file in a Hugging Face Hub repository, resolved through the local HF cache first.
    Hub { repo: String, revision: String, file: String },
}

impl ModelSource {
    pub fn parse(source: &str) -> Result<Self> {
        let invalid = |why: &str| Error::Config(format!("invalid model source `{source}`: {why}"));
        if let Some(rest) = source.strip_prefix("hf://") {
            let parts: Vec<&str> = rest.splitn(3, '/').collect();
            if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
                return Err(invalid("expected hf://org/repo/file.gguf"));
            }
            let (name, revision) = match parts[1].split_once('@') {
                Some((name, rev)) if !rev.is_empty() => (name, rev.to_string()),
                Some(_) => return Err(invalid("empty revision after @")),
                None => (parts[1], "main".to_string()),
            };
            return Ok(ModelSource::Hub {
                repo: format!("{}/{}", parts[0], name),
                revision,
                file: parts[2].to_string(),
            });
        }
        if let Some(path) = source.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(invalid("file:// needs an absolute path"));
            }
            return Ok(ModelSource::Local(PathBuf::from(path)));
        }
        if source.contains("://") {
            return Err(invalid("supported schemes are hf:// and file://, or a plain path"));
        }
        if source.is_empty() {
            return Err(invalid("empty"));
        }
        Ok(ModelSource::Local(PathBuf::from(source)))
    }

    /// A short name to serve the model under (`/v1/models`).
    pub fn default_served_name(&self) -> String {
        let raw = match self {
            ModelSource::Local(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            ModelSource::Hub { file, .. } => file.rsplit('/').next().unwrap_or(file).to_string(),
        };
        raw.strip_suffix(".gguf").unwrap_or(&raw).to_string()
    }

    /// A local path to the model: the HF cache (HF_HOME) is used before any download, and
    /// HF_HUB_OFFLINE=1 forbids downloads.
    pub fn resolve(&self) -> Result<PathBuf> {
        match self {
            ModelSource::Local(path) => {
                if path.exists() {
                    Ok(path.clone())
                } else {
                    Err(Error::ModelLoad(format!("model path {} does not exist", path.display())))
                }
            }
            ModelSource::Hub { repo, revision, file } => {
                let hub_repo = Repo::with_revision(repo.clone(), RepoType::Model, revision.clone());
                if let Some(path) = Cache::from_env().repo(hub_repo.clone()).get(file) {
                    return Ok(path);
                }
                let offline = std::env::var("HF_HUB_OFFLINE")
                    .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
                    .unwrap_or(false);
                if offline {
                    return Err(Error::ModelLoad(format!(
                        "hf://{repo}/{file} (revision {revision}) is not in the HF cache {} and HF_HUB_OFFLINE is set",
                        Cache::from_env().path().display()
                    )));
                }
                let api = hf_hub::api::sync::ApiBuilder::from_env()
                    .build()
                    .map_err(|e| Error::ModelLoad(format!("cannot reach the Hugging Face Hub: {e}")))?;
                api.repo(hub_repo)
                    .get(file)
                    .map_err(|e| Error::ModelLoad(format!("cannot download hf://{repo}/{file}: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hub_sources_with_and_without_revision() {
        assert_eq!(
            ModelSource::parse("hf://HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smol.Q4_1.gguf").unwrap(),
            ModelSource::Hub {
                repo: "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF".into(),
                revision: "main".into(),
                file: "smol.Q4_1.gguf".into()
            }
        );
        assert_eq!(
            ModelSource::parse("hf://org/repo@v2/sub/dir/model.gguf").unwrap(),
            ModelSource::Hub { repo: "org/repo".into(), revision: "v2".into(), file: "sub/dir/model.gguf".into() }
        );
    }

    #[test]
    fn parses_local_sources() {
        assert_eq!(ModelSource::parse("file:///m/x.gguf").unwrap(), ModelSource::Local("/m/x.gguf".into()));
        assert_eq!(ModelSource::parse("models/x.gguf").unwrap(), ModelSource::Local("models/x.gguf".into()));
    }

    #[test]
    fn rejects_malformed_sources() {
        for bad in
            ["hf://org", "hf://org/repo", "hf://org//f.gguf", "s3://bucket/x", "file://relative", "", "hf://o/r@/f"]
        {
            assert!(ModelSource::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn served_name_drops_the_gguf_suffix() {
        assert_eq!(ModelSource::parse("/a/SmolLM2.Q4_1.gguf").unwrap().default_served_name(), "SmolLM2.Q4_1");
    }
}
