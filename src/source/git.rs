//! Git: the revision a fleet folder is at (recorded with every apply).

use std::path::Path;

/// The commit the fleet folder's repository is at, with `-dirty` when files
/// under the fleet folder differ from it; `unversioned` outside Git. canopy's
/// own state (`.canopy/`) does not count as a change.
pub fn revision(dir: &Path) -> String {
    let Ok(repo) = git2::Repository::discover(dir) else {
        return "unversioned".into();
    };
    let Ok(commit) = repo.head().and_then(|h| h.peel_to_commit()) else {
        return "unversioned".into();
    };
    let sha = commit.id().to_string();
    let prefix = repo
        .workdir()
        .and_then(|w| {
            dir.canonicalize().ok().and_then(|d| {
                d.strip_prefix(w.canonicalize().ok()?)
                    .ok()
                    .map(|p| p.to_path_buf())
            })
        })
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .unwrap_or_default();
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
    if dirty {
        format!("{sha}-dirty")
    } else {
        sha
    }
}

/// Why a fleet could not be read at a revision.
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
}

/// A fleet folder as it is at a revision.
#[derive(Debug)]
pub struct FleetAtRevision {
    /// `(path relative to the fleet folder, text)` of every YAML file
    /// outside dot-folders.
    pub files: Vec<(String, String)>,
    /// The commit the revision names.
    pub commit: String,
    /// Symbolic links, which are not followed at a revision.
    pub links: Vec<String>,
}

/// Reads the fleet folder at revision `rev` from the object database (no
/// checkout).
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
    let read_err = |e: git2::Error| GitError::Read {
        rev: rev.to_string(),
        detail: e.message().to_string(),
    };
    let prefix = repo
        .workdir()
        .and_then(|w| {
            let d = dir.canonicalize().ok()?;
            let w = w.canonicalize().ok()?;
            d.strip_prefix(w)
                .ok()
                .map(|p| p.to_string_lossy().replace('\\', "/"))
        })
        .unwrap_or_default();
    let root = commit.tree().map_err(read_err)?;
    let tree = if prefix.is_empty() {
        root
    } else {
        let entry = root
            .get_path(Path::new(&prefix))
            .map_err(|_| GitError::NoFleetAtRevision {
                path: prefix.clone(),
                rev: rev.to_string(),
            })?;
        entry
            .to_object(&repo)
            .and_then(|o| o.peel_to_tree())
            .map_err(|_| GitError::NoFleetAtRevision {
                path: prefix.clone(),
                rev: rev.to_string(),
            })?
    };
    let mut files = Vec::new();
    let mut links = Vec::new();
    let mut failure = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
        let name = entry.name().unwrap_or("");
        if name.starts_with('.') {
            return git2::TreeWalkResult::Skip;
        }
        let path = format!("{parent}{name}");
        if entry.kind() != Some(git2::ObjectType::Blob)
            || !(name.ends_with(".yaml") || name.ends_with(".yml"))
        {
            return git2::TreeWalkResult::Ok;
        }
        if entry.filemode() == 0o120000 {
            links.push(path);
            return git2::TreeWalkResult::Ok;
        }
        match repo.find_blob(entry.id()) {
            Ok(blob) => files.push((path, String::from_utf8_lossy(blob.content()).into_owned())),
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
    files.sort();
    Ok(FleetAtRevision {
        files,
        commit: commit.id().to_string(),
        links,
    })
}
