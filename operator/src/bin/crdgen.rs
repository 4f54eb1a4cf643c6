//! `crdgen`: writes the InferenceDeployment CRD generated from the types.
//!
//! `crdgen` writes every committed copy (crds/ and the Helm chart's crds/) of the workspace;
//! `crdgen -` prints it; `crdgen PATH` writes PATH only.

use std::path::PathBuf;
use std::process::ExitCode;

use infergate_operator::crdgen::{crd_yaml, CRD_PATHS};

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
    let workspace = package_dir().join("..");
    let paths = match target {
        Some(path) => vec![PathBuf::from(path)],
        None => CRD_PATHS.iter().map(|p| workspace.join(p)).collect(),
    };
    for path in paths {
        if let Err(e) = std::fs::write(&path, &yaml) {
            eprintln!("crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("crdgen: wrote {}", path.display());
    }
    ExitCode::SUCCESS
}

/// The package's folder: cargo sets CARGO_MANIFEST_DIR when it runs the binary; the build-time
/// value is only a fallback, since a build cache shared between checkouts can hand this binary
/// to another checkout than the one it was compiled in.
fn package_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
