//! File tree → [`Fleet`]: find every YAML file, read canopy's documents with
//! their lines, and attach each workload's manifest files to it.
//!
//! Rules (kept in one place so the README can state them exactly):
//! - every `.yaml`/`.yml` file below the root is read, except in dot-folders,
//!   and every `.yaml.j2`/`.yml.j2` file below a workload folder
//!   ([`is_fleet_file`]);
//! - below `workloads/<name>/`, a file with an `apiVersion` line naming
//!   `canopy.dev/` holds canopy documents and any other file is a candidate
//!   manifest; a `.j2` file is always a manifest, and the only kind that is
//!   a template ([`ManifestFile::is_template`]); everywhere else every
//!   document must be a canopy document;
//! - a `Workload` lives in `workloads/<name>/`, one per folder, and is the
//!   only canopy document there: ownership follows folders, so a Cluster,
//!   Override, Defaults or Tenant in a workload's folder is an error.
//!
//! Loading never stops at the first problem: each bad document becomes a
//! diagnostic and the rest of the fleet is still read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use globset::{Glob, GlobSetBuilder};
use rayon::prelude::*;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::core::diag::{rel_path, Diagnostic, Diagnostics};
use crate::core::model::*;
use crate::core::yaml::{parse_with, Doc, Schema, YamlPath};

/// Why a fleet could not be read at all (as opposed to a fleet with problems,
/// which is a [`Diagnostics`] list).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("fleet directory {path}: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a directory: canopy reads a fleet from a folder")]
    NotADirectory { path: PathBuf },
}

/// The document envelope shared by every canopy kind.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Envelope<S> {
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(rename = "kind")]
    _kind: String,
    metadata: ObjectMeta,
    #[serde(default = "Option::default")]
    spec: Option<S>,
}

/// A file found below the root, before it is read.
struct Found {
    abs: PathBuf,
    rel: String,
}

/// What one file contributed.
#[derive(Default, Clone)]
pub(crate) struct FileResult {
    /// The file's repo-relative path.
    file: Option<String>,
    /// Shared: a kept file's clusters are handed to every load as they
    /// are, not copied.
    clusters: Vec<Arc<Cluster>>,
    workloads: Vec<Workload>,
    overrides: Vec<Override>,
    defaults: Vec<Defaults>,
    tenants: Vec<Tenant>,
    manifest: Option<(String, ManifestFile)>,
    /// A canopy document of this file could not be read, so what it would
    /// have defined is missing: follow-on errors about it are not reported.
    broken: bool,
    diags: Vec<Diagnostic>,
}

/// Reads the fleet below `dir`. The fleet's name is the folder's name unless
/// `name` is given.
pub fn load(dir: &Path, name: Option<&str>) -> Result<(Fleet, Diagnostics), LoadError> {
    let root = dir.canonicalize().map_err(|source| LoadError::Root {
        path: dir.to_path_buf(),
        source,
    })?;
    if !root.is_dir() {
        return Err(LoadError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let mut diags = Diagnostics::default();
    let found = walk(&root, &mut diags);
    let files: Vec<(String, Vec<u8>)> = found
        .into_iter()
        .filter_map(|f| match std::fs::read(&f.abs) {
            Ok(bytes) => Some((f.rel, bytes)),
            Err(e) => {
                diags.push(
                    Diagnostic::error(format!("cannot read file: {e}"))
                        .in_file(&f.rel, 0)
                        .hint("make the file readable UTF-8 text, or move it out of the fleet"),
                );
                None
            }
        })
        .collect();
    let name = name
        .map(str::to_string)
        .unwrap_or_else(|| fleet_name_from_dir(&root));
    let (fleet, more) = load_files(name, files);
    diags.extend(more);
    Ok((fleet, diags))
}

/// Files read by the last load, by a hash of path and bytes, when a
/// long-running process asked to keep them ([`keep_parsed`]).
pub(crate) type Parsed = std::collections::HashMap<u64, Arc<FileResult>>;
static PARSED: std::sync::Mutex<Option<Parsed>> = std::sync::Mutex::new(None);

/// From now on, each load keeps what it read and the next one parses only
/// the files that changed (`watch` and the relay agent read a revision
/// again and again; a one-shot command has nothing to keep it for).
pub fn keep_parsed() {
    let mut p = PARSED.lock().expect("not poisoned");
    if p.is_none() {
        *p = Some(Parsed::new());
    }
}

/// Whether this process keeps what each load read ([`keep_parsed`]).
pub fn keeps_parsed() -> bool {
    PARSED.lock().expect("not poisoned").is_some()
}

/// Reads a fleet from `(repo-relative path, text)` pairs, wherever they came
/// from (the working tree, or a Git revision): the files below dot-folders
/// must already be left out, as [`load`] does.
pub fn load_files(name: String, files: Vec<(String, Vec<u8>)>) -> (Fleet, Diagnostics) {
    let kept = PARSED.lock().expect("not poisoned").take();
    let (fleet, diags, next) = load_files_keeping(name, files, kept);
    if let Some(next) = next {
        *PARSED.lock().expect("not poisoned") = Some(next);
    }
    (fleet, diags)
}

/// [`load_files`] with the files the last load read (`kept`; `None`:
/// parse every file, keep nothing), giving back what this one read.
pub(crate) fn load_files_keeping(
    name: String,
    files: Vec<(String, Vec<u8>)>,
    kept: Option<Parsed>,
) -> (Fleet, Diagnostics, Option<Parsed>) {
    let mut diags = Diagnostics::default();
    let parse = |rel: String, bytes: Vec<u8>| match decode(&rel, bytes) {
        Ok(text) => {
            let wdir = workload_dir_of(&rel);
            read_file(rel, text, wdir)
        }
        Err(d) => FileResult {
            file: Some(rel),
            broken: true,
            diags: vec![d],
            ..FileResult::default()
        },
    };
    let (results, next) = match kept {
        None => {
            let results: Vec<FileResult> = files
                .into_par_iter()
                .filter(|(rel, _)| is_fleet_file(rel))
                .map(|(rel, bytes)| parse(rel, bytes))
                .collect();
            (results, None)
        }
        // A file whose path and bytes are those of the last load is not
        // parsed again: its result is the same (reading a file is a pure
        // function of them).
        Some(before) => {
            let parsed: Vec<(u64, Arc<FileResult>)> = files
                .into_par_iter()
                .filter(|(rel, _)| is_fleet_file(rel))
                .map(|(rel, bytes)| {
                    let key = crate::core::hash::StableHasher::new()
                        .str(&rel)
                        .bytes(&bytes)
                        .finish();
                    match before.get(&key) {
                        Some(r) => (key, r.clone()),
                        None => (key, Arc::new(parse(rel, bytes))),
                    }
                })
                .collect();
            let results = parsed.iter().map(|(_, r)| (**r).clone()).collect();
            // Only this load's files are kept: the memory stays one fleet's.
            (results, Some(parsed.into_iter().collect()))
        }
    };
    let fleet = assemble(name, results, &mut diags);
    (fleet, diags, next)
}

/// A fleet file's bytes as text. The rule is the same for a folder and a
/// Git revision: UTF-8, or an error at the first invalid byte (replacing it
/// would make one commit load differently from its checkout). A NUL byte is
/// refused where the YAML is read.
fn decode(rel: &str, bytes: Vec<u8>) -> Result<String, Diagnostic> {
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        Diagnostic::error(format!(
            "not UTF-8 text: invalid byte at offset {at} (line {line})"
        ))
        .in_file(rel, line)
        .hint("save the file as UTF-8, or move it out of the fleet")
    })
}

/// A label-safe fleet name from the folder name.
pub fn fleet_name_from_dir(root: &Path) -> String {
    let raw = root
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut s: String = trimmed.chars().take(63).collect();
    if s.is_empty() {
        s = "fleet".into();
    }
    s
}

fn walk(root: &Path, diags: &mut Diagnostics) -> Vec<Found> {
    let mut out = Vec::new();
    let walker = walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let file = e.path().map(|p| rel_path(root, p)).unwrap_or_default();
                diags.push(
                    Diagnostic::error(format!("cannot walk the fleet: {e}")).in_file(&file, 0),
                );
                continue;
            }
        };
        let path = entry.path();
        let rel = rel_path(root, path);
        if !is_fleet_file(&rel) {
            continue;
        }
        if entry.path_is_symlink() {
            // A link may point anywhere; only regular files inside the repo
            // are read.
            let refused = match path.canonicalize() {
                Ok(target) if !target.starts_with(root) => Some((
                    "symbolic link points outside the fleet repository".to_string(),
                    "canopy only reads files inside the repo root; copy the file in or remove the link",
                )),
                Ok(target) if !target.is_file() => Some((
                    "symbolic link points to something that is not a regular file (a folder, FIFO, socket or device)".to_string(),
                    "link a regular YAML file, or remove the link",
                )),
                Ok(_) => None,
                Err(e) => Some((
                    format!("symbolic link cannot be followed: {e}"),
                    "the link is dangling or part of a loop of links; point it at a file in the repo or remove it",
                )),
            };
            if let Some((what, hint)) = refused {
                diags.push(Diagnostic::error(what).in_file(&rel, 0).hint(hint));
                continue;
            }
        } else if entry.file_type().is_dir() {
            continue;
        } else if !entry.file_type().is_file() {
            // Reading a FIFO would wait forever; a device or socket is no
            // manifest. Git cannot hold them, so this is a local folder.
            diags.push(
                Diagnostic::error("not a regular file (a FIFO, socket or device)")
                    .in_file(&rel, 0)
                    .hint(
                        "canopy reads only regular files; remove it or rename it away from .yaml",
                    ),
            );
            continue;
        }
        out.push(Found {
            abs: path.to_path_buf(),
            rel,
        });
    }
    out
}

/// Whether the file at `rel` (relative to the fleet root, forward slashes)
/// is part of the fleet: YAML (`.yaml`, `.yml`), or a manifest template
/// (`.yaml.j2`, `.yml.j2`) below a workload folder. The folder, Git and
/// `watch` readers all ask this.
pub fn is_fleet_file(rel: &str) -> bool {
    rel.ends_with(".yaml")
        || rel.ends_with(".yml")
        || (is_template_file(rel) && workload_dir_of(rel).is_some())
}

/// Whether a file is a minijinja template: its name ends in `.yaml.j2` or
/// `.yml.j2`. Templating is asked for by name; every other manifest is
/// applied as written, `{{ … }}` and all (Prometheus rules, Alertmanager
/// and Grafana templates carry their own).
pub fn is_template_file(rel: &str) -> bool {
    rel.ends_with(".yaml.j2") || rel.ends_with(".yml.j2")
}

fn read_file(rel: String, text: String, workload_dir: Option<String>) -> FileResult {
    let mut res = FileResult {
        file: Some(rel.clone()),
        ..FileResult::default()
    };
    if let Some(dir) = &workload_dir {
        if is_template_file(&rel) || !declares_canopy_api(&text) {
            res.manifest = Some((dir.clone(), ManifestFile { path: rel, text }));
            return res;
        }
    }
    let docs = match parse_with(&text, true, Schema::Core) {
        Ok(d) => d,
        Err(e) => {
            res.broken = true;
            res.diags.push(
                Diagnostic::error(format!("malformed YAML: {}", e.message))
                    .in_file(&rel, e.line)
                    .hint(format!(
                        "fix the YAML syntax near line {}, column {}",
                        e.line, e.col
                    )),
            );
            return res;
        }
    };
    for doc in docs {
        if doc.value.is_null() {
            continue;
        }
        read_doc(&rel, workload_dir.as_deref(), doc, &mut res);
    }
    res.broken |= res.diags.iter().any(Diagnostic::is_error);
    res
}

fn read_doc(rel: &str, workload_dir: Option<&str>, doc: Doc, res: &mut FileResult) {
    let source = Arc::new(Source {
        file: rel.to_string(),
        doc,
    });
    let value = &source.doc.value;
    let here = |p: &str| source.loc_str(p);
    if !value.is_object() {
        res.diags.push(
            Diagnostic::error(
                "a document must be a mapping with apiVersion, kind, metadata and spec",
            )
            .at(&here("")),
        );
        return;
    }
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version.is_empty() || kind.is_empty() {
        res.diags.push(
            Diagnostic::error("document has no apiVersion or kind")
                .at(&here(""))
                .hint(format!("start every canopy document with `apiVersion: {API_VERSION}` and a kind (Cluster, Workload, Override or Defaults)")),
        );
        return;
    }
    if group_of(api_version) != GROUP {
        let hint = match workload_dir {
            Some(_) => "put Kubernetes manifests in their own files; a file with a canopy.dev/ apiVersion is read as canopy documents".to_string(),
            None => "Kubernetes manifests belong in a workload folder, workloads/<name>/, next to its Workload document".to_string(),
        };
        res.diags.push(
            Diagnostic::error(format!(
                "unknown kind {kind} ({api_version}) outside a workload's manifests"
            ))
            .at(&here("kind"))
            .hint(hint),
        );
        return;
    }
    if api_version != API_VERSION {
        res.diags.push(
            Diagnostic::error(format!("unsupported apiVersion {api_version}"))
                .at(&here("apiVersion"))
                .hint(format!("this canopy reads {API_VERSION}")),
        );
        return;
    }
    // Ownership follows folders: a workload's folder is its team's (and a
    // tenant's), everything else the platform's. A Cluster, Override,
    // Defaults or Tenant there would let whoever owns the folder add a
    // cluster with credentials of their own and be sent other teams'
    // workloads, or move their objects anywhere.
    if let (Some(dir), "Cluster" | "Override" | "Defaults" | "Tenant") = (workload_dir, kind) {
        let what = match kind {
            "Cluster" => "clusters",
            "Override" => "overrides",
            "Defaults" => "defaults",
            _ => "tenants",
        };
        res.diags.push(
            Diagnostic::error(format!(
                "a {kind} document must live outside workloads/: workloads are their team's, {what} the platform's"
            ))
            .at(&here("kind"))
            .hint(format!(
                "move it out of {dir}/ (clusters/, overrides/ or the repository's root), where the platform's owners review it"
            )),
        );
        return;
    }
    match kind {
        "Cluster" => {
            if let Some((meta, spec)) = typed::<ClusterSpec>(&source, res) {
                res.clusters.push(Arc::new(Cluster {
                    meta,
                    spec: spec.unwrap_or_default(),
                    source: source.clone(),
                }));
            }
        }
        "Workload" => {
            let Some(dir) = workload_dir else {
                res.diags.push(
                    Diagnostic::error("a Workload must live in its own folder under workloads/")
                        .at(&here("kind"))
                        .hint("move this document to workloads/<name>/workload.yaml, beside its manifests"),
                );
                return;
            };
            if let Some((meta, spec)) = typed::<WorkloadSpec>(&source, res) {
                res.workloads.push(Workload {
                    meta,
                    spec: spec.unwrap_or_default(),
                    dir: dir.to_string(),
                    manifests: Vec::new(),
                    source: source.clone(),
                    helm_inputs: Default::default(),
                });
            }
        }
        "Override" => {
            if let Some((meta, spec)) = typed::<OverrideSpec>(&source, res) {
                let Some(spec) = spec else {
                    res.diags.push(
                        Diagnostic::error("an Override needs a spec with patches")
                            .at(&here(""))
                            .hint(
                                "add spec.patches: a list of jsonPatch, mergePatch or image items",
                            ),
                    );
                    return;
                };
                res.overrides.push(Override {
                    meta,
                    spec,
                    source: source.clone(),
                });
            }
        }
        "Defaults" => {
            if let Some((meta, spec)) = typed::<DefaultsSpec>(&source, res) {
                res.defaults.push(Defaults {
                    meta,
                    spec: spec.unwrap_or_default(),
                    source: source.clone(),
                });
            }
        }
        "Tenant" => {
            if let Some((meta, spec)) = typed::<TenantSpec>(&source, res) {
                let Some(spec) = spec else {
                    res.diags.push(
                        Diagnostic::error("a Tenant needs a spec")
                            .at(&here("kind"))
                            .hint("say which workloads it owns and which namespaces they may write to: spec: {workloads: [...], namespaces: [...]}"),
                    );
                    return;
                };
                res.tenants.push(Tenant {
                    meta,
                    spec,
                    source: source.clone(),
                });
            }
        }
        other => res.diags.push(
            Diagnostic::error(format!("unknown kind {other:?}"))
                .at(&here("kind"))
                .hint("canopy.dev/v1alpha1 kinds are Cluster, Workload, Override, Defaults and Tenant"),
        ),
    }
}

/// Deserializes a document into its typed envelope; a failure becomes a
/// diagnostic at the failing field's line.
fn typed<S: DeserializeOwned>(
    source: &Arc<Source>,
    res: &mut FileResult,
) -> Option<(ObjectMeta, Option<S>)> {
    match serde_path_to_error::deserialize::<_, Envelope<S>>(&source.doc.value) {
        Ok(env) => Some((env.metadata, env.spec)),
        Err(err) => {
            let path = YamlPath::from_serde(err.path());
            let inner = err.into_inner().to_string();
            let hint = if inner.contains("unknown field") {
                "remove the field or fix its spelling; see schemas/ for every allowed field"
            } else if inner.contains("unknown variant") {
                "use one of the values listed"
            } else if inner.contains("missing field") {
                "add the missing field"
            } else {
                "fix the value's type; see schemas/ for the expected shape"
            };
            res.diags
                .push(Diagnostic::error(inner).at(&source.loc(&path)).hint(hint));
            None
        }
    }
}

fn assemble(name: String, results: Vec<FileResult>, diags: &mut Diagnostics) -> Fleet {
    let mut fleet = Fleet {
        name,
        ..Fleet::default()
    };
    let mut manifests: BTreeMap<String, Vec<ManifestFile>> = BTreeMap::new();
    let mut broken_dirs: BTreeSet<String> = BTreeSet::new();
    for r in results {
        if r.broken {
            fleet.incomplete = true;
            if let Some(dir) = workload_dir_of(r.file.as_deref().unwrap_or("")) {
                broken_dirs.insert(dir);
            }
        }
        fleet.clusters.extend(r.clusters);
        fleet.workloads.extend(r.workloads);
        fleet.overrides.extend(r.overrides);
        fleet.defaults.extend(r.defaults);
        fleet.tenants.extend(r.tenants);
        if let Some((dir, m)) = r.manifest {
            manifests.entry(dir).or_default().push(m);
        }
        for d in r.diags {
            diags.push(d);
        }
    }
    fleet.clusters.sort_by(|a, b| {
        a.name()
            .cmp(b.name())
            .then_with(|| a.source.file.cmp(&b.source.file))
    });
    fleet
        .workloads
        .sort_by(|a, b| a.name().cmp(b.name()).then_with(|| a.dir.cmp(&b.dir)));
    fleet.tenants.sort_by(|a, b| {
        a.name()
            .cmp(b.name())
            .then_with(|| a.source.file.cmp(&b.source.file))
    });
    fleet
        .overrides
        .sort_by(|a, b| (a.spec.priority, a.name()).cmp(&(b.spec.priority, b.name())));

    let mut seen_dirs: BTreeMap<String, String> = BTreeMap::new();
    for w in &mut fleet.workloads {
        if let Some(first) = seen_dirs.get(&w.dir) {
            diags.push(
                Diagnostic::error(format!(
                    "second Workload {:?} in folder {}: {first:?} is already there",
                    w.name(),
                    w.dir
                ))
                .at(&w.source.loc_str("metadata.name"))
                .hint("give each workload its own folder under workloads/"),
            );
            continue;
        }
        seen_dirs.insert(w.dir.clone(), w.name().to_string());
        if w.spec.kustomize.is_some() && w.spec.helm.is_some() {
            diags.push(
                Diagnostic::error("spec.kustomize and spec.helm cannot both be set")
                    .at(&w.source.loc_str("spec.helm"))
                    .hint("a workload has one source: split it into two workloads"),
            );
            continue;
        }
        if let Some(tool) = [
            w.spec.kustomize.as_ref().map(|_| "kustomize"),
            w.spec.helm.as_ref().map(|_| "helm"),
        ]
        .into_iter()
        .flatten()
        .next()
        {
            // The folder's files are the tool's input; its output becomes
            // the manifests (`source::kustomize`, `source::helm`).
            if !w.spec.manifests.is_empty() {
                let hint = if tool == "helm" {
                    "a Helm workload's manifests are what `helm template` makes; put the files in the chart's templates/ instead"
                } else {
                    "a kustomize workload's manifests are what `kustomize build` makes; list the files in the kustomization's resources instead"
                };
                diags.push(
                    Diagnostic::error(format!("spec.manifests and spec.{tool} cannot both be set"))
                        .at(&w.source.loc_str("spec.manifests"))
                        .hint(hint),
                );
            }
            continue;
        }
        let candidates = manifests.get(&w.dir).map(Vec::as_slice).unwrap_or(&[]);
        w.manifests = select_manifests(w, candidates, diags);
    }
    for (dir, files) in &manifests {
        if !seen_dirs.contains_key(dir) && !broken_dirs.contains(dir) {
            diags.push(
                Diagnostic::error(format!("folder {dir} has manifests but no Workload document"))
                    .in_file(&files[0].path, 0)
                    .hint(format!("add {dir}/workload.yaml with `kind: Workload`, or move the files out of workloads/")),
            );
        }
    }
    fleet
}

/// Applies `spec.manifests` globs to the folder's candidate files.
fn select_manifests(
    w: &Workload,
    candidates: &[ManifestFile],
    diags: &mut Diagnostics,
) -> Vec<ManifestFile> {
    let prefix = format!("{}/", w.dir);
    let local = |m: &ManifestFile| m.path.strip_prefix(&prefix).unwrap_or(&m.path).to_string();
    if w.spec.manifests.is_empty() {
        return candidates.to_vec();
    }
    let mut chosen = vec![false; candidates.len()];
    for (i, pattern) in w.spec.manifests.iter().enumerate() {
        let loc = w.source.loc(&YamlPath::parse("spec.manifests").index(i));
        if escapes_root(pattern) {
            diags.push(
                Diagnostic::error(format!("manifest glob {pattern:?} escapes the repo root"))
                    .at(&loc)
                    .hint("globs are relative to the workload's folder and may not use `..` or start with `/`"),
            );
            continue;
        }
        let glob = match Glob::new(pattern) {
            Ok(g) => g,
            Err(e) => {
                diags.push(Diagnostic::error(format!("invalid glob {pattern:?}: {e}")).at(&loc));
                continue;
            }
        };
        let set = GlobSetBuilder::new()
            .add(glob)
            .build()
            .expect("one valid glob");
        let mut hit = false;
        for (j, m) in candidates.iter().enumerate() {
            if set.is_match(local(m)) {
                chosen[j] = true;
                hit = true;
            }
        }
        if !hit {
            diags.push(
                Diagnostic::error(format!("manifest glob {pattern:?} matches no file in {}", w.dir))
                    .at(&loc)
                    .hint("check the pattern; files with a canopy.dev/ apiVersion are canopy documents, not manifests"),
            );
        }
    }
    for (j, m) in candidates.iter().enumerate() {
        if !chosen[j] {
            diags.push(
                Diagnostic::warning(format!(
                    "{} is in workload {:?}'s folder but matches none of its spec.manifests",
                    m.path,
                    w.name()
                ))
                .in_file(&m.path, 0)
                .hint("add it to spec.manifests or move it out of the folder"),
            );
        }
    }
    candidates
        .iter()
        .zip(chosen)
        .filter(|(_, c)| *c)
        .map(|(m, _)| m.clone())
        .collect()
}

/// Whether a file declares canopy documents: a line with `apiVersion` and
/// `canopy.dev/`. Text only, because manifests may be templates that do not
/// parse yet; a manifest's `canopy.dev/...` label or annotation does not count.
pub fn declares_canopy_api(text: &str) -> bool {
    text.lines().any(|l| {
        l.find("apiVersion")
            .is_some_and(|i| l[i..].contains("canopy.dev/"))
    })
}

/// `workloads/<name>` for a file inside a workload folder.
fn workload_dir_of(rel: &str) -> Option<String> {
    let parts: Vec<&str> = rel.split('/').collect();
    (parts.len() >= 3 && parts[0] == "workloads").then(|| format!("workloads/{}", parts[1]))
}

/// A pattern that could name a file outside the workload folder.
pub fn escapes_root(pattern: &str) -> bool {
    pattern.starts_with('/')
        || pattern.starts_with('\\')
        || pattern.split(['/', '\\']).any(|p| p == "..")
        || (pattern.len() > 1 && pattern.as_bytes()[1] == b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_patterns() {
        assert!(escapes_root("../secrets/*.yaml"));
        assert!(escapes_root("a/../../b.yaml"));
        assert!(escapes_root("/etc/passwd"));
        assert!(!escapes_root("*.yaml"));
        assert!(!escapes_root("base/**/*.yaml"));
        assert!(!escapes_root("..hidden.yaml"));
    }

    #[test]
    fn canopy_files_are_told_by_their_api_version() {
        assert!(declares_canopy_api(
            "apiVersion: canopy.dev/v1alpha1\nkind: Workload\n"
        ));
        assert!(declares_canopy_api(
            "- {apiVersion: \"canopy.dev/v1alpha1\", kind: Override}\n"
        ));
        assert!(!declares_canopy_api(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  annotations: {canopy.dev/prune: disabled}\n"
        ));
    }

    #[test]
    fn only_workloads_live_in_workload_folders() {
        let doc = |kind: &str| {
            format!("apiVersion: canopy.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: x}}\nspec: {{}}\n")
        };
        let files = |extra: &str| {
            vec![
                (
                    "clusters.yaml".to_string(),
                    doc("Cluster").replace("name: x", "name: prod").into_bytes(),
                ),
                (
                    "workloads/app/workload.yaml".to_string(),
                    doc("Workload").replace("name: x", "name: app").into_bytes(),
                ),
                (
                    "workloads/app/cm.yaml".to_string(),
                    b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n".to_vec(),
                ),
                (
                    "workloads/app/extra.yaml".to_string(),
                    extra.as_bytes().to_vec(),
                ),
            ]
        };
        for kind in ["Cluster", "Override", "Defaults", "Tenant"] {
            let (fleet, diags) = load_files("f".into(), files(&doc(kind)));
            let errors: Vec<String> = diags.errors().map(|d| d.to_string()).collect();
            assert_eq!(errors.len(), 1, "{kind}: {errors:?}");
            assert!(
                errors[0].contains("workloads/app/extra.yaml:2")
                    && errors[0]
                        .contains(&format!("a {kind} document must live outside workloads/")),
                "{kind}: {}",
                errors[0]
            );
            assert_eq!(
                fleet.clusters.len(),
                1,
                "{kind}: only the platform's cluster"
            );
            assert!(
                fleet.overrides.is_empty() && fleet.tenants.is_empty() && fleet.defaults.is_empty()
            );
            assert_eq!(fleet.workloads.len(), 1);
        }
    }

    #[test]
    fn fleet_name_is_label_safe() {
        assert_eq!(fleet_name_from_dir(Path::new("/x/My Fleet!")), "my-fleet");
        assert_eq!(
            fleet_name_from_dir(Path::new("/x/fleet-example")),
            "fleet-example"
        );
    }

    mod incremental {
        use super::super::*;
        use proptest::prelude::*;

        /// A file of the fleet, by kind and a variant number (so edits
        /// change its text, sometimes into something broken).
        fn text(kind: u8, n: u8) -> String {
            match kind % 5 {
                0 => format!("apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: c{n}}}\n"),
                1 => format!("apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: e{n}, labels: {{v: x{n}}}}}\nspec: {{parent: c{}}}\n", n % 3),
                2 => format!("apiVersion: canopy.dev/v1alpha1\nkind: Override\nmetadata: {{name: o{n}}}\nspec:\n  patches:\n    - image: {{registry: r{n}.example.com}}\n"),
                3 => format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm{n}}}\ndata: {{k: \"{n}\"}}\n"),
                _ => format!("kind: [unclosed {n}\n"),
            }
        }

        /// Everything a load gives, in a fixed order (a document's line
        /// index is a hash map: its Debug order is not).
        fn canon(f: &Fleet) -> String {
            let src = |s: &Source| {
                let lines: BTreeMap<String, usize> = s
                    .doc
                    .lines
                    .iter()
                    .map(|(k, v)| (format!("{k:?}"), *v))
                    .collect();
                format!("{} {} {} {lines:?}", s.file, s.doc.line, s.doc.value)
            };
            let mut out = format!("{} {} {}\n", f.name, f.incomplete, f.slice);
            for c in &f.clusters {
                out += &format!("C {:?} {:?} {}\n", c.meta, c.spec, src(&c.source));
            }
            for w in &f.workloads {
                out += &format!(
                    "W {:?} {:?} {} {:?} {}\n",
                    w.meta,
                    w.spec,
                    w.dir,
                    w.manifests,
                    src(&w.source)
                );
            }
            for o in &f.overrides {
                out += &format!("O {:?} {:?} {}\n", o.meta, o.spec, src(&o.source));
            }
            for d in &f.defaults {
                out += &format!("D {:?} {:?} {}\n", d.meta, d.spec, src(&d.source));
            }
            for t in &f.tenants {
                out += &format!("T {:?} {:?} {}\n", t.meta, t.spec, src(&t.source));
            }
            out
        }

        fn path(slot: u8, kind: u8) -> String {
            match kind % 5 {
                3 => format!("workloads/w{}/m{slot}.yaml", slot % 2),
                _ => format!("f{slot}.yaml"),
            }
        }

        proptest! {
            /// Over random edit sequences (a file changed, added, removed
            /// or left), a load that parses only what changed gives exactly
            /// what a load that parses everything gives.
            #[test]
            fn a_load_that_keeps_what_it_read_equals_a_full_load(
                edits in proptest::collection::vec((0u8..8, 0u8..5, 0u8..6, any::<bool>()), 1..25),
            ) {
                let workload = |i: u8| (
                    format!("workloads/w{i}/workload.yaml"),
                    format!("apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata: {{name: w{i}}}\n").into_bytes(),
                );
                let mut files: BTreeMap<String, Vec<u8>> = [workload(0), workload(1)].into_iter().collect();
                let mut kept = Some(Parsed::new());
                for (slot, kind, n, remove) in edits {
                    let p = path(slot, kind);
                    if remove {
                        files.remove(&p);
                    } else {
                        files.insert(p, text(kind, n).into_bytes());
                    }
                    let all: Vec<(String, Vec<u8>)> = files.clone().into_iter().collect();
                    let (full, full_d, none) = load_files_keeping("f".into(), all.clone(), None);
                    prop_assert!(none.is_none());
                    let (inc, inc_d, next) = load_files_keeping("f".into(), all, kept.take());
                    prop_assert_eq!(canon(&full), canon(&inc));
                    prop_assert_eq!(full_d.sorted().0, inc_d.sorted().0);
                    kept = next;
                }
            }
        }
    }
}
