//! The real command-line tools canopy drives, built by the suite from the
//! Go modules pinned in `tests/tools` (as the API server is): `kustomize`
//! and `helm`; and the `kubectl` tests edit live objects with, pinned in
//! `tests/kubectl`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `package` of the Go module in `module` (relative to the repository),
/// built once per test binary into `name` in the target's temp folder, with
/// the link flags `ldflags` makes from the module's folder.
fn built_once(
    cell: &'static OnceLock<PathBuf>,
    module: &str,
    package: &str,
    name: &str,
    ldflags: fn(&Path) -> String,
) -> &'static Path {
    cell.get_or_init(|| {
        let module = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(module);
        let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        super::apiserver::go_build_with(&module, package, &bin, &ldflags(&module));
        bin
    })
}

fn no_ldflags(_: &Path) -> String {
    String::new()
}

/// The link flags of Helm's own release build (its Makefile): its
/// version, and the Kubernetes version it renders for by default, one
/// major above the `k8s.io/client-go` it is built with, same minor. A
/// plain `go build` says v1.20.0 instead.
fn helm_ldflags(module: &Path) -> String {
    let version = super::apiserver::go_module_version(module, "helm.sh/helm/v3");
    let client_go = super::apiserver::go_module_version(module, "k8s.io/client-go");
    let mut parts = client_go.trim_start_matches('v').split('.');
    let major: u32 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .expect("client-go version");
    let minor = parts.next().expect("client-go minor");
    let mut flags = format!("-X helm.sh/helm/v3/internal/version.version={version}");
    for pkg in ["pkg/lint/rules", "pkg/chartutil"] {
        flags.push_str(&format!(
            " -X helm.sh/helm/v3/{pkg}.k8sVersionMajor={} -X helm.sh/helm/v3/{pkg}.k8sVersionMinor={minor}",
            major + 1
        ));
    }
    flags
}

/// Builds `kustomize` once per test binary and returns its path.
pub fn kustomize() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    built_once(
        &BIN,
        "tests/tools",
        "sigs.k8s.io/kustomize/kustomize/v5",
        "canopy-test-kustomize",
        no_ldflags,
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
        helm_ldflags,
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
        no_ldflags,
    )
}
