//! The real command-line tools canopy drives, built by the suite from the
//! Go modules pinned in `tests/tools` (as the API server is): `kustomize`
//! and `helm`; and the `kubectl` tests edit live objects with, pinned in
//! `tests/kubectl`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `package` of the Go module in `module` (relative to the repository),
/// built once per test binary into `name` in the target's temp folder.
fn built_once(
    cell: &'static OnceLock<PathBuf>,
    module: &str,
    package: &str,
    name: &str,
) -> &'static Path {
    cell.get_or_init(|| {
        let module = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(module);
        let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        super::apiserver::go_build(&module, package, &bin);
        bin
    })
}

/// Builds `kustomize` once per test binary and returns its path.
pub fn kustomize() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    built_once(
        &BIN,
        "tests/tools",
        "sigs.k8s.io/kustomize/kustomize/v5",
        "canopy-test-kustomize",
    )
}

/// Builds `helm` (v3) once per test binary and returns its path.
pub fn helm() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    built_once(
        &BIN,
        "tests/tools",
        "helm.sh/helm/v3/cmd/helm",
        "canopy-test-helm",
    )
}

/// Builds `kubectl` (the API server's release) once per test binary and
/// returns its path: tests edit live objects with it as a user would.
pub fn kubectl() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    built_once(
        &BIN,
        "tests/kubectl",
        "k8s.io/kubernetes/cmd/kubectl",
        "canopy-test-kubectl",
    )
}
