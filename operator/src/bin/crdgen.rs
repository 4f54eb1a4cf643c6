//! `crdgen`: writes the InferenceDeployment CRD generated from the types.
//!
//! `crdgen` writes crds/infergate.dev_inferencedeployments.yaml of the workspace;
//! `crdgen -` prints it; `crdgen PATH` writes PATH.

use std::path::PathBuf;
use std::process::ExitCode;

use infergate_operator::crdgen::{crd_yaml, CRD_PATH};

fn main() -> ExitCode {
    let yaml = match crd_yaml() {
        Ok(yaml) => yaml,
        Err(e) => {
            eprintln!("crdgen: cannot serialize the CRD: {e}");
            return ExitCode::FAILURE;
        }
    };
    let target = std::env::args().nth(1);
    if target.as_deref() == Some("-") {
        print!("{yaml}");
        return ExitCode::SUCCESS;
    }
    let path = target
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(CRD_PATH));
    match std::fs::write(&path, yaml) {
        Ok(()) => {
            eprintln!("crdgen: wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: cannot write {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}
