//! Writing canopy's own files safely in a folder that a repository (or
//! another user) may have tampered with. The state folder can hold Secret
//! data, so it is private (0700, files 0600); it is canopy's own, so a
//! symbolic link in it is refused rather than followed (a committed
//! `.canopy/state/clusters -> /elsewhere` would otherwise send every
//! cluster's objects there); and a replace is atomic and durable: written to
//! a new temporary file, fsynced, renamed over, the folder fsynced, and the
//! temporary file removed if anything fails.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Prefix-free marker of temporary files: `.NAME.tmp-PID`.
const TMP: &str = ".tmp-";

/// Creates `dir` (and missing parents) private to the user, and refuses it
/// if it is a symbolic link. A folder that was there already, made by an
/// older canopy or by hand, is made private too (0700): it may hold
/// Secret data.
pub fn own_dir(dir: &Path) -> io::Result<()> {
    no_link(dir)?;
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)?;
    no_link(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let perms = std::fs::metadata(dir)?.permissions();
        if perms.mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}

/// An error if a folder of `path` below `root`, or `path` itself, is a
/// symbolic link: a state folder inside a fleet repository must stay there,
/// and a committed `.canopy -> /elsewhere` would send its writes out. Paths
/// are compared as written (made absolute, not resolved); a `path` outside
/// `root` is not checked here (the user chose it).
pub fn no_link_below(root: &Path, path: &Path) -> io::Result<()> {
    let (Ok(root), Ok(path)) = (std::path::absolute(root), std::path::absolute(path)) else {
        return Ok(());
    };
    let Ok(below) = path.strip_prefix(&root) else {
        return Ok(());
    };
    let mut at = root.clone();
    for part in below.components() {
        at.push(part);
        no_link(&at)?;
    }
    Ok(())
}

/// An error if `path` is a symbolic link (a missing path is fine).
pub fn no_link(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is a symbolic link, and canopy does not follow links in its state folder (a state folder is never committed; remove the link)",
                path.display()
            ),
        )),
        _ => Ok(()),
    }
}

/// Options that open a file without following a symbolic link at its
/// path, created private to the user.
pub fn private() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    o
}

/// Reads `path` without following a symbolic link.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut f = private().read(true).open(path)?;
    let mut out = Vec::new();
    io::Read::read_to_end(&mut f, &mut out)?;
    Ok(out)
}

/// Replaces `dir/name` with `bytes`, atomically and durably (see the module
/// docs); `dir` must exist.
pub fn replace(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}{TMP}{}", std::process::id()));
    let written = (|| {
        // create_new: never reuse (or follow) whatever sits at the path.
        let mut f = private().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, dir.join(name))?;
        // The rename itself must reach the disk before success is reported.
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Removes `dir/name` if it is there; a link is removed, never followed.
/// The removal is fsynced like a replace, so a record that says "done" by
/// being gone stays gone after a crash.
pub fn remove(dir: &Path, name: &str) -> io::Result<()> {
    match std::fs::remove_file(dir.join(name)) {
        Ok(()) => File::open(dir)?.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes the temporary files an interrupted writer left in `dir`. Call it
/// only while holding the folder's lock: no other writer is then at work.
pub fn sweep(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(TMP) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_is_private_and_leaves_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        own_dir(&dir).unwrap();
        replace(&dir, "a.json", b"{}").unwrap();
        replace(&dir, "a.json", b"[1]").unwrap();
        assert_eq!(read(&dir.join("a.json")).unwrap(), b"[1]");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.json"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir.join("a.json")), 0o600);
            assert_eq!(mode(&dir), 0o700);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_link_anywhere_below_the_fleet_is_refused_and_an_open_folder_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let fleet = d.path().join("fleet");
        let elsewhere = d.path().join("elsewhere");
        std::fs::create_dir_all(&fleet).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        let state = fleet.join(".canopy/state");
        assert!(no_link_below(&fleet, &state).is_ok(), "nothing there yet");
        std::os::unix::fs::symlink(&elsewhere, fleet.join(".canopy")).unwrap();
        let e = no_link_below(&fleet, &state).unwrap_err();
        assert!(e.to_string().contains(".canopy is a symbolic link"), "{e}");
        // Outside the fleet, the user's own choice stands.
        assert!(no_link_below(&fleet, &elsewhere.join("state")).is_ok());
        // A folder left open by hand is made private.
        let open = d.path().join("open");
        std::fs::create_dir_all(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        own_dir(&open).unwrap();
        assert_eq!(
            std::fs::metadata(&open).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[cfg(unix)]
    #[test]
    fn links_are_refused_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("target"), "keep").unwrap();
        let dir = d.path().join("state");
        own_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("clusters")).unwrap();
        let err = own_dir(&dir.join("clusters")).unwrap_err().to_string();
        assert!(err.contains("is a symbolic link"), "{err}");
        std::os::unix::fs::symlink(outside.join("target"), dir.join("lock")).unwrap();
        assert!(private().write(true).open(dir.join("lock")).is_err());
        assert!(read(&dir.join("lock")).is_err());
        assert_eq!(
            std::fs::read_to_string(outside.join("target")).unwrap(),
            "keep"
        );
    }

    #[test]
    fn a_failed_replace_removes_its_temporary_file_and_sweep_removes_stale_ones() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        // Renaming a file over a folder fails after the temporary file exists.
        std::fs::create_dir(dir.join("x.json")).unwrap();
        assert!(replace(dir, "x.json", b"{}").is_err());
        std::fs::write(dir.join(".y.json.tmp-999999"), "").unwrap();
        std::fs::write(dir.join("keep.json"), "").unwrap();
        let tmp_left = || {
            std::fs::read_dir(dir)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .contains(".tmp-")
                })
                .count()
        };
        assert_eq!(tmp_left(), 1, "only the stale one");
        sweep(dir);
        assert_eq!(tmp_left(), 0);
        assert!(dir.join("keep.json").exists());
    }
}
