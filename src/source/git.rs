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
