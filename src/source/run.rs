//! Running an outside tool canopy drives (`kustomize`, `helm`): with a
//! time limit, a bound on what it may print, and its messages cleaned of
//! the temporary folder it ran in, so an error names the repository's paths.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Most of a tool's output kept (a larger one is an error).
pub const MAX_OUTPUT: usize = 64 << 20;
/// How long one run may take.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `cmd` (its program named `what` in messages) to completion and
/// returns what it printed; a failure gives its first 20 lines of errors.
/// Paths under `base` (the temporary folder it works in) are shown
/// relative to it.
pub fn bounded(mut cmd: Command, what: &str, base: &Path) -> Result<String, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", cmd.get_program().to_string_lossy()))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let n = (&mut stdout)
            .take(MAX_OUTPUT as u64 + 1)
            .read_to_end(&mut buf);
        // Drain the rest so the child is not blocked on a full pipe.
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        n.map(|_| buf)
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(1 << 20).read_to_end(&mut buf);
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        buf
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() > TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{what} ran longer than {}s and was stopped",
                    TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for {what}: {e}")),
        }
    };
    let out = out_reader
        .join()
        .map_err(|_| format!("reading {what}'s output"))?
        .map_err(|e| format!("reading {what}'s output: {e}"))?;
    let err = err_reader.join().unwrap_or_default();
    if !status.success() {
        let shown = String::from_utf8_lossy(&err)
            .replace(&format!("{}/", base.display()), "")
            .replace(&base.display().to_string(), ".");
        let shown = shown.trim().lines().take(20).collect::<Vec<_>>().join("\n");
        return Err(format!("{what} failed: {shown}"));
    }
    if out.len() > MAX_OUTPUT {
        return Err(format!("{what} wrote more than {} MiB", MAX_OUTPUT >> 20));
    }
    String::from_utf8(out).map_err(|_| format!("{what}'s output is not UTF-8"))
}

/// Writes `files` (paths relative to `base`) under `base`.
pub fn write_tree(base: &Path, files: &[(String, Vec<u8>)]) -> Result<(), String> {
    for (path, bytes) in files {
        let to = base.join(path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&to, bytes).map_err(|e| format!("{}: {e}", to.display()))?;
    }
    Ok(())
}

/// The first executable file called `name` in `PATH`.
pub fn on_path(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
