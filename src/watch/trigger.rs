//! What wakes `canopy watch` up: file-system events on a local source (the
//! fleet folder, or a local repository's Git folder) and SIGINT/SIGTERM.
//! A remote is polled by the loop itself. Each source only sends an
//! [`Event`]; deciding what to do is the loop's job.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use notify::{EventKind, RecursiveMode, Watcher};

/// Something the watch loop must look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The source may have a new revision.
    SourceChanged,
    /// Stop after the clusters in flight.
    Stop,
}

/// Whether a path below the fleet folder can change the fleet: the loader
/// reads `.yaml`/`.yml` files (and `.yaml.j2` templates) outside
/// dot-folders (so canopy's own `.canopy/state` writes never wake the
/// loop); a kustomize workload reads any file of its folder (a generator's
/// `.env`), so every file below `workloads/<name>/` counts; and a folder may
/// be added, moved or removed.
pub fn fleet_path_matters(rel: &Path) -> bool {
    let hidden = rel.components().any(|c| match c {
        Component::Normal(n) => n.to_string_lossy().starts_with('.'),
        _ => false,
    });
    if hidden {
        return false;
    }
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.len() >= 3 && parts[0] == "workloads" {
        return true;
    }
    match rel.extension().and_then(|e| e.to_str()) {
        Some("j2") => crate::core::load::is_fleet_file(&parts.join("/")),
        Some(ext) => ext == "yaml" || ext == "yml",
        None => true,
    }
}

/// Whether a path below a Git folder can move a ref: refs, packed-refs,
/// HEAD; not objects being written, logs, the index or lock files.
pub fn git_path_matters(rel: &Path) -> bool {
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    !matches!(first.as_str(), "objects" | "logs" | "index" | "hooks") && !name.ends_with(".lock")
}

/// Watches `root` recursively and sends [`Event::SourceChanged`] for every
/// event on a path `matters` accepts (relative to `root`). The watcher
/// stops when the returned value is dropped.
pub fn watch_paths(
    root: &Path,
    matters: fn(&Path) -> bool,
    tx: Sender<Event>,
) -> notify::Result<notify::RecommendedWatcher> {
    let base: PathBuf = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if matches!(ev.kind, EventKind::Access(_)) {
            return;
        }
        let relevant = ev
            .paths
            .iter()
            .any(|p| p.strip_prefix(&base).map(matters).unwrap_or(false));
        if relevant {
            let _ = tx.send(Event::SourceChanged);
        }
    })?;
    watcher.watch(root, RecursiveMode::Recursive)?;
    Ok(watcher)
}

/// On the first SIGINT or SIGTERM, sets `stop` and sends [`Event::Stop`]:
/// the loop lets the clusters in flight finish and exits 0. A second signal
/// exits at once (every state file is still whole: each is replaced
/// atomically).
pub fn on_signals(stop: Arc<AtomicBool>, tx: Sender<Event>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(128 + sig);
            }
            let _ = tx.send(Event::Stop);
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_files_matter_state_does_not() {
        assert!(fleet_path_matters(Path::new("clusters/eu.yaml")));
        assert!(fleet_path_matters(Path::new("workloads/web/deploy.yml")));
        assert!(fleet_path_matters(Path::new(
            "workloads/web/deploy.yaml.j2"
        )));
        assert!(!fleet_path_matters(Path::new("notes/readme.j2")));
        // A kustomize workload's generator input.
        assert!(fleet_path_matters(Path::new(
            "workloads/shop/base/config.env"
        )));
        assert!(!fleet_path_matters(Path::new("docs/notes.txt")));
        assert!(!fleet_path_matters(Path::new(
            "workloads/shop/.cache/x.env"
        )));
        assert!(fleet_path_matters(Path::new("workloads/new-folder")));
        assert!(!fleet_path_matters(Path::new(
            ".canopy/state/clusters/eu.json"
        )));
        assert!(!fleet_path_matters(Path::new(".git/refs/heads/main")));
        assert!(!fleet_path_matters(Path::new("README.md")));
    }

    #[test]
    fn ref_moves_matter_objects_do_not() {
        assert!(git_path_matters(Path::new("refs/heads/main")));
        assert!(git_path_matters(Path::new("packed-refs")));
        assert!(git_path_matters(Path::new("HEAD")));
        assert!(!git_path_matters(Path::new("objects/ab/cdef")));
        assert!(!git_path_matters(Path::new("refs/heads/main.lock")));
        assert!(!git_path_matters(Path::new("logs/HEAD")));
        assert!(!git_path_matters(Path::new("index")));
    }
}
