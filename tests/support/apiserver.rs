//! Real Kubernetes API servers for the tests: `tests/apiserver` (Go) starts
//! an embedded etcd and a real kube-apiserver on 127.0.0.1 and writes a
//! kubeconfig. The harness is built once per test binary (`go build`, cached
//! in Go's build cache), and every server stops when its handle is dropped
//! or the test binary exits; either way the harness removes its folder.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A running API server; dropping it stops the server.
pub struct ApiServer {
    child: Child,
    /// Closing the server's stdin is its stop signal.
    stdin: Option<ChildStdin>,
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ApiServer {
    /// CPU seconds (user + system) the server process has used so far,
    /// etcd included: what a benchmark needs to tell a busy server from a
    /// slow client.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name, which is in parentheses.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<f64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
        (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
    }
}

fn go() -> PathBuf {
    for candidate in ["go", "/usr/local/go/bin/go"] {
        if Command::new(candidate)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return PathBuf::from(candidate);
        }
    }
    panic!("Go is needed to build the test API server (tests/apiserver); install Go 1.26 or newer");
}

/// `go build -o out package`, run in the Go module at `module`; panics
/// with Go's output when the build fails.
pub fn go_build(module: &Path, package: &str, out: &Path) {
    go_build_with(module, package, out, "");
}

/// [`go_build`] with `-ldflags` (link-time settings, as a release build
/// sets them).
pub fn go_build_with(module: &Path, package: &str, out: &Path, ldflags: &str) {
    let built = Command::new(go())
        .args(["build", "-ldflags", ldflags, "-o"])
        .arg(out)
        .arg(package)
        .current_dir(module)
        .output()
        .expect("go build runs");
    assert!(
        built.status.success(),
        "building {package} in {} failed:\n{}",
        module.display(),
        String::from_utf8_lossy(&built.stderr)
    );
}

/// The version of `module_path` the Go module in `module` builds with
/// (`go list -m`).
pub fn go_module_version(module: &Path, module_path: &str) -> String {
    let out = Command::new(go())
        .args(["list", "-f", "{{.Version}}", "-m", module_path])
        .current_dir(module)
        .output()
        .expect("go list runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Builds the harness once and returns its path.
pub fn harness() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/apiserver");
        let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("canopy-test-apiserver");
        // As Kubernetes' own build does (hack/lib/version.sh): without it,
        // /version says v0.0.0-master, which no real cluster does.
        let version = go_module_version(&src, "k8s.io/kubernetes");
        let mut parts = version.trim_start_matches('v').split('.');
        let (major, minor) = (parts.next().unwrap_or("1"), parts.next().unwrap_or("0"));
        let base = "k8s.io/component-base/version";
        go_build_with(
            &src,
            ".",
            &bin,
            &format!("-X {base}.gitVersion={version} -X {base}.gitMajor={major} -X {base}.gitMinor={minor}"),
        );
        bin
    })
}

/// Starts one API server and waits until it is ready. A start that fails
/// is tried again, twice: the harness picks free ports by binding and
/// releasing them, and with many servers starting at once another one
/// can take a port in between.
pub fn start() -> ApiServer {
    start_with(&[])
}

/// Starts one API server that serves every API group and version its
/// release has, alpha and beta included (the harness's `--all-apis`).
pub fn start_all_apis() -> ApiServer {
    start_with(&["--all-apis"])
}

fn start_with(args: &[&str]) -> ApiServer {
    let mut last = None;
    for _ in 0..3 {
        match try_start(args) {
            Ok(s) => return s,
            Err(e) => last = Some(e),
        }
    }
    panic!("{}", last.unwrap_or_default());
}

fn try_start(args: &[&str]) -> Result<ApiServer, String> {
    // Named so that a stray folder (a test killed before its server) is
    // easy to tell apart in the temp folder.
    let dir = tempfile::Builder::new()
        .prefix("canopy-apiserver-")
        .tempdir()
        .expect("temp dir");
    let mut child = Command::new(harness())
        .arg("--dir")
        .arg(dir.path())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the harness starts");
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the harness's first line");
    let kubeconfig = match line.trim().strip_prefix("READY ") {
        Some(path) => PathBuf::from(path),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the API server did not start (first line: {line:?})"
            ));
        }
    };
    Ok(ApiServer {
        child,
        stdin,
        kubeconfig,
        _dir: dir,
    })
}

/// Starts `n` API servers at once.
pub fn start_many(n: usize) -> Vec<ApiServer> {
    harness();
    let handles: Vec<_> = (0..n).map(|_| std::thread::spawn(start)).collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("server start"))
        .collect()
}
