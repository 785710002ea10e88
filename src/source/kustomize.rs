//! Kustomize as a workload's source: `spec.kustomize.path` names a
//! kustomization in the workload's folder, and the workload's manifests are
//! what the real `kustomize build` makes of it (as Argo CD and Flux run
//! kustomize), then namespaced, divided, overridden and labelled like any
//! plain manifest.
//!
//! - **Which binary.** `CANOPY_KUSTOMIZE` (a path), else `kustomize` on
//!   `PATH`, else `kubectl` on `PATH` (`kubectl kustomize`). None is an
//!   error naming the workload, with the install hint; nothing is applied.
//! - **What it reads.** Only the workload's folder, copied into a temporary
//!   folder (from the working tree, or from the Git revision's objects), so
//!   a revision renders the same wherever it is read. Every `resources`,
//!   `components`, `bases` and `crds` entry of every kustomization there
//!   must stay inside the folder: a remote base (a URL), an absolute path or
//!   one that climbs out is refused before kustomize runs, and kustomize's
//!   own load restrictor keeps patches and generator files inside their
//!   kustomization. `helmCharts` is refused (it would run Helm).
//! - **Once per input.** The output is kept by a hash of the binary, the
//!   kustomization's path and every byte of the folder, for the life of
//!   the process: a kustomization renders once per workload, whatever the
//!   number of clusters, and a `watch` round whose folder did not change
//!   does not run kustomize again.
//! - **Relays.** The handoff carries the output as a plain manifest of the
//!   workload (`kustomize-build.yaml` in the kustomization's folder), so a
//!   relay needs no kustomize and renders what the root renders.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use rayon::prelude::*;

use crate::core::diag::{Diagnostic, Diagnostics};
use crate::core::model::{Fleet, ManifestFile};

/// The file a kustomization's output is the text of, in its folder.
pub const BUILT: &str = "kustomize-build.yaml";
/// Outputs kept at most (all of them dropped when it is reached).
const CACHE_ENTRIES: usize = 256;

/// The files of a folder of the fleet, wherever the fleet is read from.
pub trait FolderFiles: Sync {
    /// Every file below `dir` (relative to the fleet root), as (path
    /// relative to the fleet root, bytes), outside dot-folders.
    fn folder(&self, dir: &str) -> Result<Vec<(String, Vec<u8>)>, String>;
}

/// A fleet folder on disk.
pub struct OnDisk<'a>(pub &'a Path);

impl FolderFiles for OnDisk<'_> {
    fn folder(&self, dir: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        let root = self.0.canonicalize().map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let walk = walkdir::WalkDir::new(self.0.join(dir))
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
        for entry in walk {
            let entry = entry.map_err(|e| e.to_string())?;
            if entry.file_type().is_dir() {
                continue;
            }
            let path = entry.path();
            let rel = crate::core::diag::rel_path(self.0, path);
            let real = path.canonicalize().map_err(|e| format!("{rel}: {e}"))?;
            if !real.starts_with(&root) || !real.is_file() {
                return Err(format!(
                    "{rel} is a link out of the fleet repository or not a regular file"
                ));
            }
            let bytes = std::fs::read(path).map_err(|e| format!("{rel}: {e}"))?;
            out.push((rel, bytes));
        }
        Ok(out)
    }
}

/// A fleet's files held in memory (a Git revision: its YAML files and the
/// other files of its workload folders).
pub struct InMemory(pub Vec<(String, Vec<u8>)>);

impl FolderFiles for InMemory {
    fn folder(&self, dir: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        let prefix = format!("{dir}/");
        Ok(self
            .0
            .iter()
            .filter(|(p, _)| p.starts_with(&prefix))
            .cloned()
            .collect())
    }
}

/// The binary that builds kustomizations, and the arguments before the
/// folder.
#[derive(Debug, Clone)]
struct Tool {
    bin: PathBuf,
    args: Vec<&'static str>,
}

fn tool() -> Result<Tool, String> {
    if let Some(p) = std::env::var_os("CANOPY_KUSTOMIZE").filter(|p| !p.is_empty()) {
        let bin = PathBuf::from(p);
        return if bin.is_file() {
            Ok(Tool {
                bin,
                args: vec!["build"],
            })
        } else {
            Err(format!(
                "CANOPY_KUSTOMIZE names {}, which is not a file",
                bin.display()
            ))
        };
    }
    if let Some(bin) = super::run::on_path("kustomize") {
        return Ok(Tool {
            bin,
            args: vec!["build"],
        });
    }
    if let Some(bin) = super::run::on_path("kubectl") {
        return Ok(Tool {
            bin,
            args: vec!["kustomize"],
        });
    }
    Err("no kustomize binary: neither `kustomize` nor `kubectl` is on PATH".into())
}

/// The folder of the kustomization of a workload in `dir`, relative to
/// the fleet root; `None` when `path` leaves the workload's folder.
pub fn kustomization_dir(dir: &str, path: &str) -> Option<String> {
    crate::core::paths::inside(dir, path)
}

const KUSTOMIZATION_NAMES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Every reference of every kustomization in the workload's folder that
/// would leave it: (file, message).
fn outside_references(dir: &str, files: &[(String, Vec<u8>)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, bytes) in files {
        let (folder, name) = path.rsplit_once('/').unwrap_or(("", path));
        if !KUSTOMIZATION_NAMES.contains(&name) {
            continue;
        }
        let Ok(doc) = serde_yaml::from_slice::<serde_yaml::Value>(bytes) else {
            // kustomize says what is wrong with it.
            continue;
        };
        for key in ["helmCharts", "helmChartInflationGenerator", "helmGlobals"] {
            if doc.get(key).is_some() {
                out.push((
                    path.clone(),
                    format!(
                        "`{key}` is not supported: canopy does not run Helm from a kustomization"
                    ),
                ));
            }
        }
        for key in ["resources", "components", "bases", "crds"] {
            let Some(list) = doc.get(key).and_then(serde_yaml::Value::as_sequence) else {
                continue;
            };
            for entry in list.iter().filter_map(serde_yaml::Value::as_str) {
                let remote = entry.contains("://")
                    || entry.starts_with("git@")
                    || entry.starts_with("github.com/")
                    || entry.starts_with("gitlab.com/")
                    || entry.starts_with("bitbucket.org/");
                let inside = !entry.starts_with('/')
                    && crate::core::paths::normalize(&format!("{folder}/{entry}"))
                        .is_some_and(|p| p == dir || p.starts_with(&format!("{dir}/")));
                if remote {
                    out.push((
                        path.clone(),
                        format!("{key} entry {entry:?} is remote: canopy builds only what the repository holds"),
                    ));
                } else if !inside {
                    out.push((
                        path.clone(),
                        format!("{key} entry {entry:?} leaves the workload's folder {dir}"),
                    ));
                }
            }
        }
    }
    out
}

/// Outputs by input, for the life of the process.
fn cache() -> &'static Mutex<HashMap<u64, Result<String, String>>> {
    static CACHE: OnceLock<Mutex<HashMap<u64, Result<String, String>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Runs the build of `kdir` (relative to the fleet root) over the
/// workload folder `dir`'s `files`, copied into a temporary folder.
fn build(
    tool: &Tool,
    dir: &str,
    kdir: &str,
    files: &[(String, Vec<u8>)],
) -> Result<String, String> {
    let tmp = tempfile::tempdir().map_err(|e| format!("a temporary folder: {e}"))?;
    // The copy is named as the workload's folder, so kustomize's messages
    // name the repository's paths once the temporary prefix is cut.
    let base = tmp.path();
    super::run::write_tree(base, files)?;
    let mut cmd = Command::new(&tool.bin);
    cmd.args(&tool.args)
        .arg(base.join(kdir))
        .current_dir(base.join(dir));
    super::run::bounded(cmd, "kustomize build", base)
}

/// The YAML files of a revision's workload folders, kept for kustomize
/// before the loader takes the files (a copy of the workloads' manifests,
/// not of the clusters' documents).
pub fn workload_files(files: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    files
        .iter()
        .filter(|(p, _)| p.starts_with("workloads/"))
        .cloned()
        .collect()
}

/// Builds every kustomize workload of `fleet` and makes its output the
/// workload's one manifest; errors name the workload's kustomization.
pub fn expand(fleet: &mut Fleet, files: &dyn FolderFiles) -> Diagnostics {
    let mut diags = Diagnostics::default();
    let wanted: Vec<(usize, String, String)> = fleet
        .workloads
        .iter()
        .enumerate()
        .filter_map(|(i, w)| {
            let k = w.spec.kustomize.as_ref()?;
            Some((i, w.dir.clone(), k.path.clone()))
        })
        .collect();
    if wanted.is_empty() {
        return diags;
    }
    let tool = tool();
    let results: Vec<(usize, Result<ManifestFile, Diagnostic>)> = wanted
        .par_iter()
        .map(|(i, dir, path)| {
            let w = &fleet.workloads[*i];
            let loc = w.source.loc_str("spec.kustomize.path");
            let fail = |msg: String, hint: &str| Diagnostic::error(msg).at(&loc).hint(hint.to_string());
            let Some(kdir) = kustomization_dir(dir, path) else {
                return (*i, Err(fail(
                    format!("kustomize path {path:?} leaves the workload's folder {dir}"),
                    "the kustomization and everything it uses live inside the workload's folder",
                )));
            };
            let tool = match &tool {
                Ok(t) => t,
                Err(e) => {
                    return (*i, Err(fail(
                        format!("workload {:?} is built with kustomize: {e}", w.name()),
                        "install kustomize (https://kubectl.docs.kubernetes.io/installation/kustomize/) or kubectl, or set CANOPY_KUSTOMIZE to its path",
                    )))
                }
            };
            let files = match files.folder(dir) {
                Ok(f) => f,
                Err(e) => return (*i, Err(fail(format!("cannot read {dir}: {e}"), "fix or remove the file"))),
            };
            if let Some((file, msg)) = outside_references(dir, &files).into_iter().next() {
                return (*i, Err(Diagnostic::error(msg).in_file(&file, 0).hint(
                    "put the bases and components the workload uses inside its folder (copy a shared base in, or vendor a remote one)",
                )));
            }
            let mut h = crate::core::hash::StableHasher::new();
            h.str(&tool.bin.display().to_string()).str(&kdir).usize(files.len());
            for (p, b) in &files {
                h.str(p).usize(b.len()).bytes(b);
            }
            let key = h.finish();
            let cached = cache().lock().expect("not poisoned").get(&key).cloned();
            let built = match cached {
                Some(r) => r,
                None => {
                    let r = build(tool, dir, &kdir, &files);
                    let mut c = cache().lock().expect("not poisoned");
                    // A long `watch` sees many revisions: keep the cache
                    // bounded (the current ones are built again once).
                    if c.len() >= CACHE_ENTRIES {
                        c.clear();
                    }
                    c.insert(key, r.clone());
                    r
                }
            };
            match built {
                Ok(text) => (*i, Ok(ManifestFile { path: format!("{kdir}/{BUILT}"), text })),
                Err(e) => (*i, Err(Diagnostic::error(e).in_file(&format!("{kdir}/kustomization.yaml"), 0).hint(
                    "run `kustomize build` on the folder to see the whole error",
                ))),
            }
        })
        .collect();
    let by: BTreeMap<usize, Result<ManifestFile, Diagnostic>> = results.into_iter().collect();
    for (i, r) in by {
        match r {
            Ok(m) => fleet.workloads[i].manifests = vec![m],
            Err(d) => diags.push(d),
        }
    }
    diags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_out_of_the_folder_are_found() {
        let k = |text: &str| {
            (
                "workloads/app/overlays/prod/kustomization.yaml".to_string(),
                text.as_bytes().to_vec(),
            )
        };
        let ok = k("resources: [../../base, deployment.yaml]\ncomponents: [../../components/x]\n");
        assert!(outside_references("workloads/app", &[ok]).is_empty());
        for (text, says) in [
            (
                "resources: [../../../other]\n",
                "leaves the workload's folder",
            ),
            (
                "resources: [/etc/kubernetes]\n",
                "leaves the workload's folder",
            ),
            (
                "resources: [https://github.com/acme/base?ref=v1]\n",
                "is remote",
            ),
            ("bases: [github.com/acme/base]\n", "is remote"),
            ("helmCharts: [{name: x}]\n", "`helmCharts` is not supported"),
        ] {
            let found = outside_references("workloads/app", &[k(text)]);
            assert_eq!(found.len(), 1, "{text}");
            assert!(found[0].1.contains(says), "{text}: {}", found[0].1);
        }
    }
}
