//! Helpers shared by the integration tests: small fleets written to temp
//! folders, and running the real `canopy` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use canopy::core::diag::Diagnostics;
use canopy::core::render::{render_all, Renderer};
use canopy::source::input::check_all;

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
    let input = canopy::source::input::Input::Dir(dir.to_path_buf());
    let (checked, diags) =
        check_all(&input, Some("test"), &Default::default()).expect("fleet folder loads");
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

/// Copies a folder tree (the fleet-example, into a temp dir a test may edit).
pub fn copy_dir(src: &Path, dst: &Path) {
    for entry in walkdir::WalkDir::new(src) {
        let entry = entry.expect("walk");
        let rel = entry.path().strip_prefix(src).expect("prefix");
        if rel
            .components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
        {
            continue;
        }
        let to = dst.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&to).expect("mkdir");
        } else {
            std::fs::copy(entry.path(), &to).expect("copy");
        }
    }
}

/// A private copy of fleet-example in a temp dir.
pub fn example_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("fleet-example");
    copy_dir(&repo_root().join("fleet-example"), &dir);
    (tmp, dir)
}

/// Every state file's bytes, by cluster name.
pub fn state_files(state: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(state.join("clusters")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = name.strip_suffix(".json") {
                out.insert(n.to_string(), std::fs::read(e.path()).expect("read"));
            }
        }
    }
    out
}

/// Runs canopy and returns (exit code, stdout, stderr).
pub fn canopy(args: &[&str]) -> (i32, String, String) {
    let out = run(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Edits one cluster's state file as JSON, behind canopy's back.
pub fn edit_state(state: &Path, cluster: &str, f: impl FnOnce(&mut serde_json::Value)) {
    let path = state.join("clusters").join(format!("{cluster}.json"));
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("state file")).expect("JSON");
    f(&mut v);
    std::fs::write(&path, serde_json::to_vec(&v).expect("JSON")).expect("write");
}

/// The key of an object in a state file's `objects` map.
pub fn obj_id(group: &str, kind: &str, ns: &str, name: &str) -> String {
    format!("{group}/{kind}/{ns}/{name}")
}

/// Removes the `staging` cluster from a copy of fleet-example, with the
/// override and the placement entry that name it (validation refuses
/// references to a missing cluster).
pub fn remove_staging(fleet: &Path) {
    std::fs::remove_file(fleet.join("clusters/staging.yaml")).expect("staging cluster");
    std::fs::remove_file(fleet.join("overrides/staging.yaml")).expect("staging override");
    let web = fleet.join("workloads/web/workload.yaml");
    let text = std::fs::read_to_string(&web).expect("web workload");
    let without = text.replace("      names: [staging]\n", "");
    assert_ne!(text, without, "web names staging");
    std::fs::write(&web, without).expect("write");
}

/// Commits everything in the repository's working tree; returns the commit.
pub fn commit_all(repo: &git2::Repository, message: &str) -> String {
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.update_all(["*"], None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("canopy tests", "tests@canopy.invalid").unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap()
        .to_string()
}

/// A new repository at `dir` whose first branch is `main`.
pub fn init_main(dir: &Path) -> git2::Repository {
    let mut opts = git2::RepositoryInitOptions::new();
    opts.initial_head("main");
    git2::Repository::init_opts(dir, &opts).unwrap()
}

/// Runs canopy with extra environment variables (and `HOME`, the Git
/// cache and the state home moved into `home`, so nothing of the machine's
/// own configuration or caches is used); returns (exit code, stdout, stderr).
pub fn canopy_in(home: &Path, envs: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let out = Command::new(canopy_bin())
        .args(args)
        .current_dir(home)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("CANOPY_CACHE_DIR", home.join("cache"))
        .env("XDG_STATE_HOME", home.join("state-home"))
        .env_remove("CANOPY_GIT_TOKEN")
        .env_remove("SSH_AUTH_SOCK")
        .envs(envs.iter().copied())
        .output()
        .expect("canopy runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `CMD --repo REPO --ref REF --path fleet --state STATE`: a command on the
/// fleet kept in `fleet/` of a repository.
pub fn on_repo<'a>(
    cmd: &'a str,
    repo: &'a str,
    reference: &'a str,
    state: &'a str,
) -> Vec<&'a str> {
    vec![
        cmd, "--repo", repo, "--ref", reference, "--path", "fleet", "--state", state,
    ]
}

/// A repository at `dir` holding fleet-example in `fleet/`, committed on
/// `main`; returns the repository and the commit.
pub fn repo_with_fleet(dir: &Path) -> (git2::Repository, String) {
    let repo = init_main(dir);
    copy_dir(&repo_root().join("fleet-example"), &dir.join("fleet"));
    let sha = commit_all(&repo, "fleet");
    (repo, sha)
}

/// A "billion laughs" YAML mapping: ten anchors `l0`…`l9`, each a list of
/// ten aliases to the one before (10^10 leaves from about 600 bytes), each
/// line indented by `indent`.
pub fn alias_bomb(indent: &str) -> String {
    let mut text = format!("{indent}l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let refs = vec![format!("*l{}", i - 1); 10].join(", ");
        text.push_str(&format!("{indent}l{i}: &l{i} [{refs}]\n"));
    }
    text
}

/// Compares `actual` with the snapshot `tests/golden/NAME`;
/// `UPDATE_GOLDEN=1` rewrites it instead (review the diff before
/// committing).
pub fn golden(name: &str, actual: &str) {
    let path = repo_root().join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} missing: run the test with UPDATE_GOLDEN=1",
            path.display()
        )
    });
    if expected != actual {
        let diff = similar::TextDiff::from_lines(expected.as_str(), actual)
            .unified_diff()
            .header("golden", "actual")
            .to_string();
        panic!("{name} differs from its snapshot:\n{diff}");
    }
}

/// A cluster's objects in a local-backend state folder, by id.
pub fn state_objects(state: &Path, cluster: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(state.join(format!("clusters/{cluster}.json"))).unwrap(),
    )
    .unwrap();
    v["objects"].clone()
}

/// A cluster's objects without what the store stamps on them (uid,
/// resourceVersion, generation, creation time).
pub fn held(state: &Path, cluster: &str) -> serde_json::Value {
    let mut objs = state_objects(state, cluster);
    for o in objs.as_object_mut().unwrap().values_mut() {
        let meta = o["metadata"].as_object_mut().unwrap();
        for k in ["uid", "resourceVersion", "generation", "creationTimestamp"] {
            meta.remove(k);
        }
    }
    objs
}

/// A relay that needs no outside tool: `relayed` (a fleet whose cluster
/// `relay` is a relay) is applied at the root with `env` (the tool), the
/// relay's agent runs once with nothing on its PATH, and `flat` (the same
/// fleet without the relay) is applied directly; each of `leaves` (below
/// the relay) must hold the same objects either way.
pub fn relay_renders_as_direct(
    home: &Path,
    env: &[(&str, &str)],
    relayed: &Path,
    relay: &str,
    flat: &Path,
    leaves: &[&str],
) {
    let s = |p: &Path| p.to_str().expect("UTF-8 path").to_string();
    let (root, own, direct) = (home.join("root"), home.join(relay), home.join("direct"));
    let (code, out, err) = canopy_in(
        home,
        env,
        &[
            "apply",
            &s(relayed),
            "--state",
            &s(&root),
            "--timeout",
            "0s",
        ],
    );
    assert_eq!(code, 4, "no agent yet: {out}{err}");
    let empty = home.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, out, err) = canopy_in(
        home,
        &[("PATH", &s(&empty))],
        &[
            "agent",
            "--cluster",
            relay,
            "--local",
            &s(&root),
            "--state",
            &s(&own),
            "--once",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = canopy_in(
        home,
        env,
        &[
            "apply",
            &s(flat),
            "--state",
            &s(&direct),
            "--fleet-name",
            "fleet",
        ],
    );
    assert_eq!(code, 0, "{out}");
    for c in leaves {
        assert_eq!(held(&own, c), held(&direct, c), "{c}");
    }
}
