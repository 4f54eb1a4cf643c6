//! Where a model comes from: a local path, `file://`, or `hf://org/repo[@revision]/file`.

use std::path::PathBuf;

use hf_hub::{Cache, Repo, RepoType};
use infergate_protocol::model_source::{self as grammar, Context, Source};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A GGUF file or a directory with config.json, *.safetensors and tokenizer.json.
    Local(PathBuf),
    /// A file in a Hugging Face Hub repository, resolved through the local HF cache first.
    Hub { repo: String, revision: String, file: String },
}

impl ModelSource {
    /// Parses `--model` with the grammar the operator and the CRD's CEL rule share.
    pub fn parse(source: &str) -> Result<Self> {
        let parsed = grammar::parse(source, Context::Server).map_err(|e| Error::Config(format!("invalid {e}")))?;
        Ok(match parsed {
            Source::Hub { org, repo, revision, file } => ModelSource::Hub {
                repo: format!("{org}/{repo}"),
                revision: revision.unwrap_or("main").to_string(),
                file: file.to_string(),
            },
            Source::Path(path) => ModelSource::Local(PathBuf::from(path)),
            // The server context never yields a claim; the operator mounts it and passes its path.
            Source::Pvc { .. } => return Err(Error::Config(format!("invalid model source `{source}`: pvc://"))),
        })
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
    /// HF_HUB_OFFLINE=1 forbids downloads. For the first shard of a split GGUF
    /// (`name-00001-of-00003.gguf`) every shard is resolved, and the first one's path returned
    /// (the others lie beside it).
    pub fn resolve(&self) -> Result<PathBuf> {
        let offline =
            std::env::var("HF_HUB_OFFLINE").map(|v| v == "1" || v.eq_ignore_ascii_case("true")).unwrap_or(false);
        self.resolve_with(&Cache::from_env(), offline, true)
    }

    /// Like `resolve`, but of a split GGUF only the first shard, which holds all the
    /// metadata (tokenizer, chat template): what reading a model without its weights needs.
    pub fn resolve_metadata(&self) -> Result<PathBuf> {
        let offline =
            std::env::var("HF_HUB_OFFLINE").map(|v| v == "1" || v.eq_ignore_ascii_case("true")).unwrap_or(false);
        self.resolve_with(&Cache::from_env(), offline, false)
    }

    /// `resolve` against a given HF cache; `all_shards` false stops after a split's first shard.
    pub fn resolve_with(&self, cache: &Cache, offline: bool, all_shards: bool) -> Result<PathBuf> {
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
                let mut shards = split_shard_names(file).unwrap_or_else(|| vec![file.clone()]);
                if !all_shards {
                    shards.truncate(1);
                }
                let count = shards.len();
                let mut api = None;
                let mut paths = Vec::with_capacity(count);
                for (no, shard) in shards.iter().enumerate() {
                    let which = if count > 1 { format!(" (shard {} of {count})", no + 1) } else { String::new() };
                    if let Some(path) = cache.repo(hub_repo.clone()).get(shard) {
                        paths.push(path);
                        continue;
                    }
                    if offline {
                        return Err(Error::ModelLoad(format!(
                            "hf://{repo}/{shard}{which} (revision {revision}) is not in the HF cache {} and HF_HUB_OFFLINE is set",
                            cache.path().display()
                        )));
                    }
                    if api.is_none() {
                        let mut builder = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone());
                        if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
                            builder = builder.with_endpoint(endpoint);
                        }
                        api = Some(
                            builder
                                .build()
                                .map_err(|e| Error::ModelLoad(format!("cannot reach the Hugging Face Hub: {e}")))?,
                        );
                    }
                    let path =
                        api.as_ref().expect("built above").repo(hub_repo.clone()).get(shard).map_err(|e| {
                            Error::ModelLoad(format!("cannot download hf://{repo}/{shard}{which}: {e}"))
                        })?;
                    paths.push(path);
                }
                // The loader finds shards next to the first one; the cache keeps one snapshot
                // folder per revision, so they are siblings unless the revision moved meanwhile.
                if let Some(odd) = paths.iter().find(|p| p.parent() != paths[0].parent()) {
                    return Err(Error::ModelLoad(format!(
                        "the shards of hf://{repo}/{file} resolved to different folders ({} and {}); the revision moved while downloading",
                        paths[0].display(),
                        odd.display()
                    )));
                }
                Ok(paths.swap_remove(0))
            }
        }
    }
}

/// For the first shard of a split GGUF named as llama.cpp's gguf-split names them
/// (`<prefix>-00001-of-00003.gguf`), the names of all its shards, in order.
pub fn split_shard_names(file: &str) -> Option<Vec<String>> {
    let stem = file.strip_suffix(".gguf")?;
    let (left, count) = stem.rsplit_once("-of-")?;
    let (prefix, _) = left.rsplit_once('-')?;
    let count: usize = count.parse().ok()?;
    let name = |no: usize| format!("{prefix}-{no:05}-of-{count:05}.gguf");
    (count > 1 && !prefix.is_empty() && name(1) == file).then(|| (1..=count).map(name).collect())
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
    fn follows_the_shared_grammar_table() {
        for example in infergate_protocol::model_source::EXAMPLES {
            assert_eq!(ModelSource::parse(example.source).is_ok(), example.server, "{:?}", example.source);
        }
    }

    #[test]
    fn split_shard_names_follow_llama_cpp() {
        assert_eq!(
            split_shard_names("dir/m.Q4-00001-of-00003.gguf").unwrap(),
            ["dir/m.Q4-00001-of-00003.gguf", "dir/m.Q4-00002-of-00003.gguf", "dir/m.Q4-00003-of-00003.gguf"]
        );
        for not_first in
            ["m-00002-of-00003.gguf", "m-00001-of-00001.gguf", "m.gguf", "m-1-of-3.gguf", "-00001-of-00002.gguf"]
        {
            assert_eq!(split_shard_names(not_first), None, "{not_first}");
        }
    }

    #[test]
    fn hub_split_sources_resolve_every_shard_from_the_cache() {
        let home = std::env::temp_dir().join(format!("infergate-hf-split-{}", std::process::id()));
        let repo = home.join("models--org--repo");
        let snapshot = repo.join("snapshots/0123abcd");
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
        for no in [1, 2] {
            std::fs::write(snapshot.join(format!("m-{no:05}-of-00003.gguf")), b"x").unwrap();
        }
        let source = ModelSource::parse("hf://org/repo/m-00001-of-00003.gguf").unwrap();
        let cache = Cache::new(home.clone());
        assert_eq!(source.resolve_with(&cache, true, false).unwrap(), snapshot.join("m-00001-of-00003.gguf"));
        let err = source.resolve_with(&cache, true, true).unwrap_err().to_string();
        assert!(err.contains("m-00003-of-00003.gguf (shard 3 of 3)") && err.contains("HF_HUB_OFFLINE"), "{err}");
        std::fs::write(snapshot.join("m-00003-of-00003.gguf"), b"x").unwrap();
        assert_eq!(source.resolve_with(&cache, true, true).unwrap(), snapshot.join("m-00001-of-00003.gguf"));
        let _ = std::fs::remove_dir_all(&home);
    }

    #[test]
    fn served_name_drops_the_gguf_suffix() {
        assert_eq!(ModelSource::parse("/a/SmolLM2.Q4_1.gguf").unwrap().default_served_name(), "SmolLM2.Q4_1");
    }
}
