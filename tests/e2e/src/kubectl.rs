//! `kubectl` and `helm`, the real clients users run, against the local cluster.

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
        run_client("kubectl", &self.kubeconfig, args, stdin).await
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

/// `helm` with the cluster's kubeconfig.
pub async fn helm(kubeconfig: &Path, args: &[&str]) -> Result<String> {
    run_client("helm", kubeconfig, args, None).await
}

async fn run_client(program: &str, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut command = tokio::process::Command::new(program);
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(Error::io(format!("running {program}")))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await.map_err(Error::io(format!("writing to {program}")))?;
    }
    let output = child.wait_with_output().await.map_err(Error::io(format!("waiting for {program}")))?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if output.status.success() {
        Ok(text)
    } else {
        Err(Error::Command { command: format!("{program} {}", args.join(" ")), output: text.trim().to_string() })
    }
}
