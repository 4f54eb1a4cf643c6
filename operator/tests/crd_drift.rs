//! Every committed copy of the CRD (crds/ and the Helm chart's crds/) must be exactly what the
//! types generate.

use infergate_operator::crdgen::{crd_yaml, CHART_CRD_PATH, CRD_PATH};

#[test]
fn committed_crds_match_the_types() {
    let generated = crd_yaml().expect("CRD serializes");
    for relative in [CRD_PATH, CHART_CRD_PATH] {
        let path = package_dir().join("..").join(relative);
        let committed =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        assert!(
            committed == generated,
            "{relative} drifted from operator/src/crd.rs; regenerate every copy with `make crds`"
        );
    }
}

#[test]
fn committed_crd_is_a_crd_for_infd() {
    let path = package_dir().join("..").join(CRD_PATH);
    let text = std::fs::read_to_string(path).expect("committed CRD");
    let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        serde_saphyr::from_str(&text).expect("committed file parses as a CRD");
    assert_eq!(crd.spec.group, "infergate.dev");
    assert_eq!(crd.spec.names.short_names, Some(vec!["infd".to_string()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
    let columns: Vec<&str> = version.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
    assert_eq!(columns, ["ACTIVE", "PREVIEW", "PHASE", "STEP", "READY", "P95-TTFT", "ERRORS", "AGE"]);
}

/// The package's folder: cargo sets CARGO_MANIFEST_DIR when it runs the binary; the build-time
/// value is only a fallback, since a build cache shared between checkouts can hand this binary
/// to another checkout than the one it was compiled in.
fn package_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
