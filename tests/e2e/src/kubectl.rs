//! `kubectl`, the real client users run, against the local cluster.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct Kubectl {
    pub kubeconfig: PathBuf,
}

impl Kubectl {
    /// Runs `kubectl args` with `stdin`; the combined output on success, an error carrying it
    /// otherwise.
    pub async fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut command = tokio::process::Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(Error::io("running kubectl"))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).await.map_err(Error::io("writing to kubectl"))?;
        }
        let output = child.wait_with_output().await.map_err(Error::io("waiting for kubectl"))?;
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        if output.status.success() {
            Ok(text)
        } else {
            Err(Error::Command { command: format!("kubectl {}", args.join(" ")), output: text.trim().to_string() })
        }
    }

    /// `kubectl apply -f -` of a manifest (YAML or JSON).
    pub async fn apply(&self, namespace: &str, manifest: &str) -> Result<String> {
        self.run(&["apply", "-n", namespace, "-f", "-"], Some(manifest)).await
    }

    pub async fn apply_file(&self, namespace: &str, path: &Path) -> Result<String> {
        let path = path.to_string_lossy();
        self.run(&["apply", "-n", namespace, "-f", &path], None).await
    }
}
