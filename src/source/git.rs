//! Git: the revision a fleet folder is at, and a fleet folder read from a
//! commit's tree (no checkout).

use std::path::Path;
use std::sync::Arc;

use super::Revision;

/// The revision the fleet folder's repository is at, `dirty` when files
/// under the fleet folder differ from it; unversioned outside Git. canopy's
/// own state (`.canopy/`) does not count as a change.
pub fn revision(dir: &Path) -> Revision {
    let Ok(repo) = git2::Repository::discover(dir) else {
        return Revision::default();
    };
    let Ok(commit) = repo.head().and_then(|h| h.peel_to_commit()) else {
        return Revision::default();
    };
    let prefix = prefix_in(&repo, dir);
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true).recurse_untracked_dirs(true);
    if !prefix.is_empty() {
        opts.pathspec(&prefix);
    }
    let dirty = repo.statuses(Some(&mut opts)).is_ok_and(|st| {
        st.iter()
            .filter_map(|e| e.path().ok().map(str::to_string))
            .any(|p| !p.split('/').any(|part| part == ".canopy"))
    });
    Revision {
        commit: Some(commit.id().to_string()),
        tag: super::remote::tag_of(&repo, commit.id()),
        dirty,
    }
}

/// `dir` relative to the repository's working tree, `/`-separated ("" for
/// its root).
fn prefix_in(repo: &git2::Repository, dir: &Path) -> String {
    repo.workdir()
        .and_then(|w| {
            let d = dir.canonicalize().ok()?;
            let w = w.canonicalize().ok()?;
            d.strip_prefix(w)
                .ok()
                .map(|p| p.to_string_lossy().replace('\\', "/"))
        })
        .unwrap_or_default()
}

/// Why a fleet could not be read from Git.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{dir} is not inside a Git repository, so --base has nothing to compare with")]
    NotARepo { dir: String },
    #[error("unknown revision {rev:?} in {repo}: {detail}")]
    UnknownRevision {
        rev: String,
        repo: String,
        detail: String,
    },
    #[error("the fleet folder {path:?} does not exist at {rev}")]
    NoFleetAtRevision { path: String, rev: String },
    #[error("reading the repository at {rev}: {detail}")]
    Read { rev: String, detail: String },
    #[error("{url} is not a Git repository: {detail}\n  help: pass a repository folder or a URL (https://, ssh://, file://)")]
    Open { url: String, detail: String },
    #[error("--path {path:?} must be a folder inside the repository: relative, without `..`, `.` or `\\`")]
    BadPath { path: String },
    #[error("canopy's Git cache {path}: {detail}\n  help: make it writable, or point CANOPY_CACHE_DIR elsewhere")]
    Cache { path: String, detail: String },
    #[error("cannot fetch {url}: {detail}\n  help: check the URL and that this machine reaches it; nothing was applied")]
    Unreachable { url: String, detail: String },
    #[error("authentication to {url} failed: {detail}\n  help: for HTTPS set ${token_env} to a token (or configure a Git credential helper); for SSH load the key into ssh-agent or pass --ssh-key; nothing was applied")]
    Auth {
        url: String,
        detail: String,
        token_env: String,
    },
    #[error("the certificate of {url} is not trusted: {detail}\n  help: install the issuing CA (or point SSL_CERT_FILE at it); for SSH add the host to ~/.ssh/known_hosts")]
    Certificate { url: String, detail: String },
    #[error("unknown ref {reference:?} in {url}{}\n  help: pass a branch, tag or commit that exists", known_list(.known))]
    UnknownRef {
        reference: String,
        url: String,
        known: Vec<String>,
    },
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        String::new()
    } else {
        format!(" (it has: {})", known.join(", "))
    }
}

/// A fleet folder as it is at a revision.
#[derive(Debug)]
pub struct FleetAtRevision {
    /// `(path relative to the fleet folder, text)` of every YAML file
    /// outside dot-folders, sorted.
    pub files: Vec<(String, Vec<u8>)>,
    /// Every other file of the workload folders (`workloads/<name>/…`):
    /// what a kustomization there may read beside YAML.
    pub extra: Vec<(String, Vec<u8>)>,
    /// The commit the revision names.
    pub commit: String,
    /// Symbolic links, which are not followed at a revision.
    pub links: Vec<String>,
}

/// Reads the fleet folder `dir` (inside a working tree) at revision `rev`
/// from the object database (no checkout).
pub fn read_fleet_at(dir: &Path, rev: &str) -> Result<FleetAtRevision, GitError> {
    let repo = git2::Repository::discover(dir).map_err(|_| GitError::NotARepo {
        dir: dir.display().to_string(),
    })?;
    let repo_name = repo
        .workdir()
        .unwrap_or_else(|| repo.path())
        .display()
        .to_string();
    let commit = repo
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| GitError::UnknownRevision {
            rev: rev.to_string(),
            repo: repo_name.clone(),
            detail: e.message().to_string(),
        })?;
    read_tree_files(&repo, &commit, &prefix_in(&repo, dir), rev, None)
}

/// The blobs the last read of a revision took out of the object database,
/// by id: the next read copies an unchanged file's bytes from here instead
/// of inflating it again (a `watch` round reads the whole fleet folder each
/// time; at 100,000 clusters inflating its 22 MB was 70 ms of the round).
/// Only the last read's blobs are kept.
#[derive(Default)]
pub struct BlobCache(std::sync::Mutex<std::collections::HashMap<git2::Oid, Arc<[u8]>>>);

/// The largest other file of a workload folder read at a revision: a
/// kustomization's inputs are text, and a larger blob is left out (kustomize
/// then names it as missing).
const EXTRA_MAX: usize = 8 << 20;

/// Every YAML file below `prefix` (outside dot-folders) in `commit`'s tree,
/// and the other files of its workload folders;
/// `rev` is how errors name the revision.
pub fn read_tree_files(
    repo: &git2::Repository,
    commit: &git2::Commit<'_>,
    prefix: &str,
    rev: &str,
    cache: Option<&BlobCache>,
) -> Result<FleetAtRevision, GitError> {
    let read_err = |e: git2::Error| GitError::Read {
        rev: rev.to_string(),
        detail: e.message().to_string(),
    };
    let missing = || GitError::NoFleetAtRevision {
        path: prefix.to_string(),
        rev: rev.to_string(),
    };
    let root = commit.tree().map_err(read_err)?;
    let tree = if prefix.is_empty() {
        root
    } else {
        root.get_path(Path::new(prefix))
            .map_err(|_| missing())?
            .to_object(repo)
            .and_then(|o| o.peel_to_tree())
            .map_err(|_| missing())?
    };
    let mut files = Vec::new();
    let mut extra = Vec::new();
    let mut links = Vec::new();
    let mut failure = None;
    let before = cache.map(|c| std::mem::take(&mut *c.0.lock().unwrap_or_else(|p| p.into_inner())));
    let mut kept = std::collections::HashMap::new();
    // A blob's bytes, unless it is larger than `max`; from the last read
    // when it had the same blob.
    let mut blob = |id: git2::Oid, max: usize| -> Result<Option<Vec<u8>>, git2::Error> {
        if let Some(b) = before.as_ref().and_then(|m| m.get(&id)) {
            kept.insert(id, b.clone());
            return Ok(Some(b.to_vec()));
        }
        let found = repo.find_blob(id)?;
        if found.size() > max {
            return Ok(None);
        }
        if cache.is_some() {
            kept.insert(id, Arc::from(found.content()));
        }
        Ok(Some(found.content().to_vec()))
    };
    tree.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
        let name = entry.name().unwrap_or("");
        if name.starts_with('.') {
            return git2::TreeWalkResult::Skip;
        }
        let path = format!("{parent}{name}");
        if entry.kind() != Some(git2::ObjectType::Blob) {
            return git2::TreeWalkResult::Ok;
        }
        if !crate::core::load::is_fleet_file(&path) {
            // A workload folder's other files, for kustomize (links are
            // not followed at a revision).
            if path.starts_with("workloads/")
                && path.matches('/').count() >= 2
                && entry.filemode() != 0o120000
            {
                match blob(entry.id(), EXTRA_MAX) {
                    Ok(Some(bytes)) => extra.push((path, bytes)),
                    Ok(None) => {}
                    Err(e) => {
                        failure = Some(e);
                        return git2::TreeWalkResult::Abort;
                    }
                }
            }
            return git2::TreeWalkResult::Ok;
        }
        if entry.filemode() == 0o120000 {
            links.push(path);
            return git2::TreeWalkResult::Ok;
        }
        match blob(entry.id(), usize::MAX) {
            // Bytes as they are: load refuses invalid UTF-8, as it does
            // for a folder.
            Ok(Some(bytes)) => files.push((path, bytes)),
            Ok(None) => {}
            Err(e) => {
                failure = Some(e);
                return git2::TreeWalkResult::Abort;
            }
        }
        git2::TreeWalkResult::Ok
    })
    .map_err(read_err)?;
    if let Some(e) = failure {
        return Err(read_err(e));
    }
    if let Some(c) = cache {
        *c.0.lock().unwrap_or_else(|p| p.into_inner()) = kept;
    }
    files.sort();
    extra.sort();
    Ok(FleetAtRevision {
        files,
        extra,
        commit: commit.id().to_string(),
        links,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(repo: &git2::Repository, files: &[(&str, &str)]) -> git2::Oid {
        let dir = repo.workdir().unwrap();
        for (path, text) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let mut index = repo.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@canopy.invalid").unwrap();
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, "c", &tree, &parents)
            .unwrap()
    }

    /// A read that takes unchanged blobs from the last read's cache gives
    /// exactly what a read from the object database gives, and the cache
    /// then holds this revision's blobs only.
    #[test]
    fn the_blob_cache_changes_nothing_read() {
        let d = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(d.path()).unwrap();
        let first = commit(
            &repo,
            &[
                ("fleet/clusters.yaml", "kind: Cluster\n"),
                ("fleet/workloads/app/app.yaml", "kind: ConfigMap\n"),
                ("fleet/workloads/app/notes.txt", "a"),
            ],
        );
        let second = commit(
            &repo,
            &[
                ("fleet/workloads/app/app.yaml", "kind: Secret\n"),
                ("fleet/workloads/app/notes.txt", "b"),
            ],
        );
        let cache = BlobCache::default();
        let read = |oid, cache| {
            let c = repo.find_commit(oid).unwrap();
            read_tree_files(&repo, &c, "fleet", "r", cache).unwrap()
        };
        let plain = |oid| {
            let r: FleetAtRevision = read(oid, None);
            (r.files, r.extra)
        };
        for oid in [first, second, second, first] {
            let cached = read(oid, Some(&cache));
            assert_eq!((cached.files, cached.extra), plain(oid));
            assert_eq!(cache.0.lock().unwrap().len(), 3, "this revision's blobs");
        }
    }
}
