//! The real command-line tools canopy drives, built by the suite from the
//! Go modules pinned in `tests/tools` (as the API server is): `kustomize`
//! and `helm`; and the `kubectl` tests edit live objects with, pinned in
//! `tests/kubectl`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Builds `kustomize` once per test binary and returns its path.
pub fn kustomize() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let module = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tools");
        let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("canopy-test-kustomize");
        super::apiserver::go_build(&module, "sigs.k8s.io/kustomize/kustomize/v5", &bin);
        bin
    })
}

/// Builds `helm` (v3) once per test binary and returns its path.
pub fn helm() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let module = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tools");
        let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("canopy-test-helm");
        super::apiserver::go_build(&module, "helm.sh/helm/v3/cmd/helm", &bin);
        bin
    })
}

/// Builds `kubectl` (the API server's release) once per test binary and
/// returns its path: tests edit live objects with it as a user would.
pub fn kubectl() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let module = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/kubectl");
        let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("canopy-test-kubectl");
        super::apiserver::go_build(&module, "k8s.io/kubernetes/cmd/kubectl", &bin);
        bin
    })
}
