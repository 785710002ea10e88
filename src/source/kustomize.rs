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
//!   names, in every field that names one (resources, bases, components,
//!   crds, configurations, generators, transformers, validators, patches,
//!   replacements, generator files, openapi), must be a file or folder of
//!   the workload's folder: anything kustomize would fetch (a URL, a Git
//!   spec in any of the spellings kustomize reads, [`is_remote`]), an
//!   absolute path, one that climbs out or one that is not there is refused
//!   before kustomize runs. kustomize then runs isolated and offline
//!   ([`super::run::offline`]: no Git transport, no reachable proxy), with
//!   its load restrictor keeping patches and generator files inside their
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

/// Whether kustomize would fetch `entry` rather than read a file of the
/// folder, as kustomize itself decides: any file it loads is fetched over
/// HTTP when the entry parses as an `http(s)` URL (Go's `url.Parse`: the
/// scheme in any case), and a base or component is cloned with Git, before
/// any local folder of that name is looked for, when the entry is a Git
/// spec: a `git::` prefix, a scheme (`ssh`, `https`, `http`, `file`), an
/// scp-like `user@host:path`, or `github.com/…` / `github.com:…` in any
/// case. Every scheme counts here, not only those kustomize knows today.
pub fn is_remote(entry: &str) -> bool {
    let lower = entry.to_ascii_lowercase();
    let rest = lower.strip_prefix("git::").unwrap_or(&lower);
    let scheme = rest.split_once(':').is_some_and(|(s, _)| {
        s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
    });
    let user_at = rest.split_once('@').is_some_and(|(u, _)| {
        u.starts_with(|c: char| c.is_ascii_alphabetic())
            && u.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    lower.starts_with("git::")
        || scheme
        || user_at
        || rest.starts_with("github.com/")
        || rest.starts_with("github.com:")
}

/// Fields of a kustomization whose entries are files or folders (a list of
/// strings).
const PATH_LISTS: [&str; 5] = ["resources", "bases", "components", "crds", "configurations"];
/// Fields whose entries are a file, a folder, or an object written inline.
const PATH_OR_INLINE_LISTS: [&str; 4] = [
    "generators",
    "transformers",
    "validators",
    "patchesStrategicMerge",
];
/// Fields whose entries are objects that may name a file in `path`.
const PATH_FIELD_LISTS: [&str; 3] = ["patches", "patchesJson6902", "replacements"];
/// Fields that would make kustomize run Helm.
const HELM_FIELDS: [&str; 3] = ["helmCharts", "helmChartInflationGenerator", "helmGlobals"];

/// Every file or folder a kustomization names, as (field, entry).
fn references(doc: &serde_yaml::Value) -> Vec<(String, String)> {
    use serde_yaml::Value as Y;
    let mut out = Vec::new();
    let list = |key: &str| doc.get(key).and_then(Y::as_sequence).into_iter().flatten();
    for key in PATH_LISTS {
        for e in list(key).filter_map(Y::as_str) {
            out.push((key.to_string(), e.to_string()));
        }
    }
    for key in PATH_OR_INLINE_LISTS {
        for e in list(key).filter_map(Y::as_str) {
            // An object written inline is YAML that reads as a mapping or
            // a list; a path reads as a plain string.
            let inline =
                serde_yaml::from_str::<Y>(e).is_ok_and(|v| v.is_mapping() || v.is_sequence());
            if !inline {
                out.push((key.to_string(), e.to_string()));
            }
        }
    }
    for key in PATH_FIELD_LISTS {
        for e in list(key) {
            if let Some(p) = e.get("path").and_then(Y::as_str) {
                out.push((format!("{key}[].path"), p.to_string()));
            }
        }
    }
    for key in ["configMapGenerator", "secretGenerator"] {
        for g in list(key) {
            let files = g
                .get("files")
                .and_then(Y::as_sequence)
                .into_iter()
                .flatten();
            for f in files.filter_map(Y::as_str) {
                // `key=path` or `path`.
                let path = f.split_once('=').map_or(f, |(_, p)| p);
                out.push((format!("{key}[].files"), path.to_string()));
            }
            let envs = g.get("envs").and_then(Y::as_sequence).into_iter().flatten();
            for e in envs.filter_map(Y::as_str) {
                out.push((format!("{key}[].envs"), e.to_string()));
            }
            if let Some(e) = g.get("env").and_then(Y::as_str) {
                out.push((format!("{key}[].env"), e.to_string()));
            }
        }
    }
    if let Some(p) = doc
        .get("openapi")
        .and_then(|o| o.get("path"))
        .and_then(Y::as_str)
    {
        out.push(("openapi.path".into(), p.to_string()));
    }
    out
}

/// Every reference of every kustomization in the workload's folder that
/// kustomize would fetch, or that is not a file or folder of the workload's
/// folder: (file, message). A name kustomize cannot find in the folder it
/// would try to fetch, so only what is there passes.
fn outside_references(dir: &str, files: &[(String, Vec<u8>)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let exists = |p: &str| {
        let below = format!("{p}/");
        files.iter().any(|(f, _)| f == p || f.starts_with(&below))
    };
    for (path, bytes) in files {
        let (folder, name) = path.rsplit_once('/').unwrap_or(("", path));
        if !KUSTOMIZATION_NAMES.contains(&name) {
            continue;
        }
        let Ok(doc) = serde_yaml::from_slice::<serde_yaml::Value>(bytes) else {
            // kustomize says what is wrong with it.
            continue;
        };
        for key in HELM_FIELDS {
            if doc.get(key).is_some() {
                out.push((
                    path.clone(),
                    format!(
                        "`{key}` is not supported: canopy does not run Helm from a kustomization"
                    ),
                ));
            }
        }
        for (key, entry) in references(&doc) {
            let shown = crate::core::names::shown(&entry);
            let inside = (!entry.starts_with('/'))
                .then(|| crate::core::paths::normalize(&format!("{folder}/{entry}")))
                .flatten()
                .filter(|p| p == dir || p.starts_with(&format!("{dir}/")));
            if is_remote(&entry) {
                out.push((
                    path.clone(),
                    format!("{key} entry \"{shown}\" is remote: canopy builds only what the repository holds and kustomize never fetches"),
                ));
            } else if inside.is_none() {
                out.push((
                    path.clone(),
                    format!("{key} entry \"{shown}\" leaves the workload's folder {dir}"),
                ));
            } else if !inside.as_deref().is_some_and(exists) {
                out.push((
                    path.clone(),
                    format!("{key} entry \"{shown}\" is no file or folder of the workload's folder (kustomize would try to fetch it)"),
                ));
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
    let home = tmp.path().join(".canopy-home");
    std::fs::create_dir_all(&home).map_err(|e| format!("a temporary folder: {e}"))?;
    let mut cmd = Command::new(&tool.bin);
    cmd.args(build_args(tool, &base.join(kdir)))
        .current_dir(base.join(dir));
    super::run::isolate(&mut cmd, &home);
    super::run::offline(&mut cmd);
    super::run::bounded(cmd, "kustomize build", base)
}

/// Builds `kdir` with the kustomize binary `bin` exactly as canopy runs it
/// (isolated, offline, `--` before the folder), but without the check of
/// every reference [`expand`] makes first: the second wall alone, so a
/// test can show that it holds by itself.
pub fn build_without_check(
    bin: &Path,
    dir: &str,
    kdir: &str,
    files: &[(String, Vec<u8>)],
) -> Result<String, String> {
    let tool = Tool {
        bin: bin.to_path_buf(),
        args: vec!["build"],
    };
    build(&tool, dir, kdir, files)
}

/// The build's arguments: the tool's own (`build`, or `kustomize` for
/// kubectl), kustomize's strictest load restrictor (no file outside the
/// kustomization's folder, also where that is its default), then `--` and
/// the folder.
fn build_args(tool: &Tool, folder: &Path) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = tool.args.iter().map(Into::into).collect();
    args.extend([
        "--load-restrictor".into(),
        "LoadRestrictionsRootOnly".into(),
        "--".into(),
        folder.into(),
    ]);
    args
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
    fn remote_spellings_are_found_as_kustomize_reads_them() {
        for remote in [
            "https://github.com/acme/base?ref=v1",
            "a@b/c",
            "HTTP://example.com/x.yaml",
            "http:example.com/x.yaml",
            "git::https://example.com/acme/base.git",
            "GIT::example.com/acme/base",
            "ssh://git@example.com/acme/base.git",
            "file:///srv/git/base.git",
            "github.com/acme/base",
            "GitHub.com/acme/base",
            "github.com:acme/base",
            "git@example.com:acme/base.git",
            "deploy-bot@example.com:acme/base",
        ] {
            assert!(is_remote(remote), "{remote}");
        }
        for local in [
            "../../base",
            "deployment.yaml",
            "base/github.com-notes",
            "overlays/prod",
            "1user@host:x",
        ] {
            assert!(!is_remote(local), "{local}");
        }
    }

    #[test]
    fn references_out_of_the_folder_are_found() {
        let there = |p: &str| (format!("workloads/app/{p}"), b"x".to_vec());
        let files = |text: &str| {
            vec![
                (
                    "workloads/app/overlays/prod/kustomization.yaml".to_string(),
                    text.as_bytes().to_vec(),
                ),
                there("base/kustomization.yaml"),
                there("overlays/prod/deployment.yaml"),
                there("overlays/prod/patch.yaml"),
                there("overlays/prod/app.env"),
                there("components/x/kustomization.yaml"),
            ]
        };
        let ok = files(
            "resources: [../../base, deployment.yaml]\ncomponents: [../../components/x]\n\
             patches: [{path: patch.yaml}, {patch: 'x: 1'}]\n\
             patchesStrategicMerge:\n  - patch.yaml\n  - |\n    apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: x}\n\
             configMapGenerator: [{name: c, files: [k=app.env], envs: [app.env]}]\n",
        );
        assert_eq!(outside_references("workloads/app", &ok), vec![]);
        for (text, says) in [
            (
                "resources: [../../../other]\n",
                "leaves the workload's folder",
            ),
            (
                "resources: [/etc/kubernetes]\n",
                "leaves the workload's folder",
            ),
            ("resources: [missing.yaml]\n", "no file or folder"),
            (
                "resources: [https://github.com/acme/base?ref=v1]\n",
                "is remote",
            ),
            ("bases: [github.com/acme/base]\n", "is remote"),
            ("components: [GitHub.com/acme/c]\n", "is remote"),
            (
                "resources: ['git::https://example.com/x.git']\n",
                "is remote",
            ),
            ("resources: ['git@example.com:acme/x.git']\n", "is remote"),
            ("generators: [https://example.com/g.yaml]\n", "is remote"),
            ("transformers: [https://example.com/t.yaml]\n", "is remote"),
            ("validators: [https://example.com/v.yaml]\n", "is remote"),
            ("crds: [https://example.com/crd.yaml]\n", "is remote"),
            (
                "configurations: [https://example.com/c.yaml]\n",
                "is remote",
            ),
            (
                "patches: [{path: 'https://example.com/p.yaml'}]\n",
                "is remote",
            ),
            (
                "patchesJson6902: [{path: 'https://example.com/p.yaml'}]\n",
                "is remote",
            ),
            (
                "patchesStrategicMerge: [https://example.com/p.yaml]\n",
                "is remote",
            ),
            (
                "replacements: [{path: 'https://example.com/r.yaml'}]\n",
                "is remote",
            ),
            (
                "openapi: {path: 'https://example.com/schema.json'}\n",
                "is remote",
            ),
            (
                "configMapGenerator: [{name: c, files: ['k=https://example.com/f']}]\n",
                "is remote",
            ),
            (
                "secretGenerator: [{name: c, envs: ['https://example.com/e']}]\n",
                "is remote",
            ),
            (
                "secretGenerator: [{name: c, env: ../../../../.env}]\n",
                "leaves the workload's folder",
            ),
            ("helmCharts: [{name: x}]\n", "`helmCharts` is not supported"),
        ] {
            let found = outside_references("workloads/app", &files(text));
            assert_eq!(found.len(), 1, "{text}: {found:?}");
            assert!(found[0].1.contains(says), "{text}: {}", found[0].1);
        }
    }

    #[test]
    fn the_folder_comes_after_a_double_dash() {
        let tool = Tool {
            bin: "kustomize".into(),
            args: vec!["build"],
        };
        let args = build_args(&tool, Path::new("/tmp/x/--enable-exec"));
        assert_eq!(
            args,
            [
                "build",
                "--load-restrictor",
                "LoadRestrictionsRootOnly",
                "--",
                "/tmp/x/--enable-exec"
            ]
            .map(std::ffi::OsString::from)
        );
    }
}
