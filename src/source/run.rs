//! Running an outside tool canopy drives (`kustomize`, `helm`): with an
//! environment of its own, a time limit, a bound on what it may print, and
//! its messages cleaned of the temporary folder it ran in, so an error
//! names the repository's paths.
//!
//! What such a tool reads comes from the fleet, which a pull request's
//! author writes, and it runs on the machine that holds every cluster's
//! credentials. So it gets none of canopy's environment ([`isolate`]): not
//! `KUBECONFIG`, cloud or Git credentials, `SSH_AUTH_SOCK`, canopy's own
//! settings; only `PATH`, a private home and the Go runtime's tuning. A
//! tool that must not reach the network at all (a render: `helm
//! template`, `kustomize build`) is also pointed at a proxy that does not
//! exist and may use no Git transport ([`offline`]).

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

/// Variables passed through to a tool: where programs are, and how the Go
/// runtime both tools are written in is tuned (none of them is a secret).
const PASSED: [&str; 5] = ["PATH", "TMPDIR", "GOGC", "GOMEMLIMIT", "GOMAXPROCS"];

/// Clears `cmd`'s environment but for [`PASSED`], and gives it `home` (an
/// empty folder of the run's own) as `HOME` and the XDG folders below it,
/// so it reads no user's configuration, plugins or credentials.
pub fn isolate(cmd: &mut Command, home: &Path) {
    cmd.env_clear();
    for name in PASSED {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    cmd.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_DATA_HOME", home.join(".local/share"));
}

/// A proxy address nothing listens on (port 9, discard, closed on any
/// machine that does not run the ancient service).
const NO_PROXY_THERE: &str = "http://127.0.0.1:9";

/// On top of [`isolate`]: every HTTP(S) request of the tool goes to a proxy
/// that is not there, and Git (which kustomize runs for a remote base) may
/// use no transport, not even `file`, and reads no configuration. canopy
/// refuses remote references before a tool runs; this is the second wall.
pub fn offline(cmd: &mut Command) {
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env(name, NO_PROXY_THERE);
    }
    cmd.env("NO_PROXY", "")
        .env("no_proxy", "")
        .env("GIT_ALLOW_PROTOCOL", "none")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_SSH_COMMAND", "false");
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What a tool given `cmd`'s environment sees, as (name, value).
    fn env_of(cmd: &Command) -> Vec<(String, String)> {
        let out = {
            let mut c = Command::new("/usr/bin/env");
            c.env_clear();
            for (k, v) in cmd.get_envs() {
                if let Some(v) = v {
                    c.env(k, v);
                }
            }
            c.output().expect("env runs")
        };
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_tool_gets_none_of_canopys_environment() {
        // The test's own environment stands for the runner's: whatever is
        // in it, only the passed names and the private home arrive.
        let home = Path::new("/nonexistent/home");
        let mut cmd = Command::new("true");
        isolate(&mut cmd, home);
        offline(&mut cmd);
        let env = env_of(&cmd);
        let allowed = |k: &str| {
            PASSED.contains(&k)
                || k == "HOME"
                || k.starts_with("XDG_")
                || k.starts_with("GIT_")
                || k.to_ascii_lowercase().ends_with("_proxy")
        };
        for (k, _) in &env {
            assert!(allowed(k), "{k} reached the tool");
        }
        let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert_eq!(get("HOME"), Some("/nonexistent/home"));
        assert_eq!(get("HTTPS_PROXY"), Some(NO_PROXY_THERE));
        assert_eq!(get("GIT_ALLOW_PROTOCOL"), Some("none"));
        assert_eq!(get("PATH").is_some(), std::env::var_os("PATH").is_some());
    }
}
