//! Helpers shared by the integration tests: small fleets written to temp
//! folders, and running the real `canopy` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use canopy::diag::Diagnostics;
use canopy::pipeline::check_all;
use canopy::render::{render_all, Renderer};

/// A fleet in a temp folder, from (path, text) pairs.
pub fn fleet(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().expect("has parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
    dir
}

/// Two clusters (root `hub`, child `edge`) and one workload `web` with a
/// Deployment: the base most bad-input tests modify.
pub fn base() -> Vec<(&'static str, String)> {
    vec![
        (
            "clusters.yaml",
            "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: hub\n  labels: {tier: hub}\n---\napiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: edge\n  labels: {tier: edge}\nspec:\n  parent: hub\n".to_string(),
        ),
        (
            "workloads/web/workload.yaml",
            "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: web\nspec:\n  namespace: shop\n".to_string(),
        ),
        (
            "workloads/web/deployment.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 4\n  template:\n    spec:\n      containers:\n        - name: web\n          image: nginx:1.27\n".to_string(),
        ),
    ]
}

/// The base fleet with some files replaced or added.
pub fn with(changes: &[(&'static str, &str)]) -> tempfile::TempDir {
    let mut files = base();
    for (path, text) in changes {
        files.retain(|(p, _)| p != path);
        files.push((path, text.to_string()));
    }
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    fleet(&refs)
}

/// Every diagnostic of loading, validating, placing and rendering `dir`, as
/// printed (`error: file:line: path: message` + help).
pub fn problems(dir: &Path) -> Vec<String> {
    let (checked, diags) = check_all(dir, Some("test")).expect("fleet folder loads");
    let diags: Diagnostics = match checked {
        None => diags,
        Some(checked) => match render_all(&Renderer::new(&checked), None) {
            Ok(_) => diags,
            Err(d) => d,
        },
    };
    diags.0.iter().map(|d| d.to_string()).collect()
}

/// The one error among `problems`, failing the test if there is not exactly one.
pub fn the_error(dir: &Path) -> String {
    let errs: Vec<String> = problems(dir)
        .into_iter()
        .filter(|p| p.starts_with("error"))
        .collect();
    assert_eq!(errs.len(), 1, "expected exactly one error, got {errs:#?}");
    errs.into_iter().next().expect("one")
}

pub fn canopy_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_canopy"))
}

pub fn run(args: &[&str]) -> Output {
    Command::new(canopy_bin())
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("canopy runs")
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
